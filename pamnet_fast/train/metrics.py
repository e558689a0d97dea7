"""Regression metrics reported by the trainer and ``pamnet-fast evaluate``."""
from __future__ import annotations

import math

import numpy as np


def regression_metrics(y_true, y_pred) -> dict:
    """MAE, RMSE, Pearson R, Spearman rho and SD for 1-D arrays of targets and predictions.

    ``sd`` is the standard deviation of the residuals of the least-squares line ``y ~ a * pred + b``
    (the "SD" of the protein-ligand affinity literature, e.g. PAMNet's Table 2):
    :math:`\\sqrt{\\sum (y - a p - b)^2 / (n - 1)}`. Correlations are NaN for fewer than two points or
    a constant input.
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"regression_metrics: {y.size} targets but {p.size} predictions")
    n = y.size
    out = {"n": int(n), "mae": float("nan"), "rmse": float("nan"), "pearson_r": float("nan"),
           "spearman_rho": float("nan"), "sd": float("nan")}
    if n == 0:
        return out
    err = p - y
    out["mae"] = float(np.abs(err).mean())
    out["rmse"] = float(math.sqrt((err ** 2).mean()))
    if n >= 2 and p.std() > 0 and y.std() > 0:
        out["pearson_r"] = float(np.corrcoef(p, y)[0, 1])
        out["spearman_rho"] = float(np.corrcoef(_ranks(p), _ranks(y))[0, 1])
        a, b = np.polyfit(p, y, 1)
        out["sd"] = float(math.sqrt(((y - a * p - b) ** 2).sum() / (n - 1)))
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as in Spearman's rho."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.arange(x.size, dtype=np.float64)
    xs = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and xs[j + 1] == xs[i]:
            j += 1
        if j > i:
            ranks[order[i:j + 1]] = 0.5 * (i + j)
        i = j + 1
    return ranks
