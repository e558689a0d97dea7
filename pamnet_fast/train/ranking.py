r"""Decoy-ranking metrics of RNA-Puzzles scoring (PAMNet paper, Fig. 2; ARES, Townshend et al. 2021).

For each held-out puzzle ``p`` with models ``m`` (true RMSD ``r_m``, score ``s_m``; lower score = predicted
closer to the native), models ranked by ascending score, near-native = RMSD below ``near_native`` (2 Å):

* ``frac_best_near_native``: fraction of puzzles whose best-scored model is near-native;
* ``frac_top{k}_near_native``: fraction with a near-native model among the ``k`` best-scored (k = 10);
* ``geo_mean_rank``: :math:`\exp(\overline{\log \rho_p})`, ``ρ_p`` the rank (1 = best) of the
  best-scored near-native model, over puzzles that have one;
* ``mean_spearman``: Spearman correlation of score and RMSD, averaged over puzzles.

:func:`random_ranking_metrics` gives the exact expectation of the same quantities for a random order,
the reference any scorer has to beat.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np


def _check(scores, rmsds) -> Tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    r = np.asarray(rmsds, dtype=np.float64).reshape(-1)
    if s.shape != r.shape or s.size == 0:
        raise ValueError(f"ranking: need as many scores as RMSDs (>0), got {s.size} and {r.size}")
    if not (np.isfinite(s).all() and np.isfinite(r).all()):
        raise ValueError("ranking: scores and RMSDs must be finite")
    return s, r


def puzzle_ranking(scores, rmsds, near_native: float = 2.0, top: int = 10) -> Dict[str, float]:
    """Metrics of one puzzle: ``best_near_native`` (0/1), ``top_near_native`` (0/1), ``rank`` of the
    best-scored near-native (NaN without one), ``spearman``, ``n``, ``n_near_native``. Ties in score
    are broken by the model's position (a stable sort), so a constant scorer is not rewarded."""
    from scipy.stats import spearmanr
    s, r = _check(scores, rmsds)
    order = np.argsort(s, kind="stable")
    nn = r[order] < near_native
    rank = float(np.argmax(nn) + 1) if nn.any() else math.nan
    rho = float(spearmanr(s, r).statistic) if s.size > 2 and np.ptp(s) > 0 and np.ptp(r) > 0 else math.nan
    return {"best_near_native": float(nn[0]), "top_near_native": float(nn[:top].any()), "rank": rank,
            "spearman": rho, "n": int(s.size), "n_near_native": int(nn.sum())}


def _summarize(rows: Mapping[str, Dict[str, float]], top: int) -> Dict[str, object]:
    ranks = [v["rank"] for v in rows.values() if not math.isnan(v["rank"])]
    rhos = [v["spearman"] for v in rows.values() if not math.isnan(v["spearman"])]
    return {"puzzles": len(rows),
            "frac_best_near_native": float(np.mean([v["best_near_native"] for v in rows.values()])),
            f"frac_top{top}_near_native": float(np.mean([v["top_near_native"] for v in rows.values()])),
            "geo_mean_rank": float(np.exp(np.mean(np.log(ranks)))) if ranks else math.nan,
            "mean_spearman": float(np.mean(rhos)) if rhos else math.nan,
            "per_puzzle": dict(rows)}


def ranking_metrics(groups: Mapping[str, Tuple[Sequence[float], Sequence[float]]], near_native: float = 2.0,
                    top: int = 10) -> Dict[str, object]:
    """The paper's three metrics (and the mean Spearman) over puzzles: ``groups[p] = (scores, rmsds)``."""
    if not groups:
        raise ValueError("ranking_metrics: no puzzles")
    return _summarize({p: puzzle_ranking(s, r, near_native, top) for p, (s, r) in groups.items()}, top)


def random_ranking_metrics(groups: Mapping[str, Sequence[float]], near_native: float = 2.0,
                           top: int = 10) -> Dict[str, object]:
    """Exact expectations for a uniformly random order; ``groups[p]`` = the RMSDs of puzzle ``p``.
    With ``n`` models of which ``k`` near-native, the first near-native is at rank ``ρ`` with
    probability ``C(n-ρ, k-1) / C(n, k)``; ``geo_mean_rank`` is ``exp`` of the mean over puzzles of
    ``E[log ρ]``."""
    rows = {}
    for p, r in groups.items():
        r = np.asarray(r, dtype=np.float64).reshape(-1)
        n, k = r.size, int((r < near_native).sum())
        if k == 0:
            rows[p] = {"best_near_native": 0.0, "top_near_native": 0.0, "rank": math.nan,
                       "spearman": 0.0, "n": n, "n_near_native": 0}
            continue
        prob = np.array([math.comb(n - rho, k - 1) / math.comb(n, k) for rho in range(1, n - k + 2)])
        rows[p] = {"best_near_native": k / n, "top_near_native": 1.0 - math.comb(n - k, min(top, n)) / math.comb(n, min(top, n)),
                   "rank": float(np.exp((prob * np.log(np.arange(1, n - k + 2))).sum())),
                   "spearman": 0.0, "n": n, "n_near_native": k}
    return _summarize(rows, top)
