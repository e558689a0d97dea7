"""Metrics files (CSV + JSON) and PNG plots (matplotlib, Agg backend)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..data.cache import atomic_write


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def write_metrics(history: List[dict], out_dir, stem: str = "metrics") -> None:
    """Write the per-epoch history to ``metrics.csv`` and ``metrics.json`` (rewritten from the full
    history each epoch, so a resumed run has exactly one row per epoch)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(out / f"{stem}.json", json.dumps(history, indent=1))
    keys: List[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    import io
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for row in history:
        w.writerow(row)
    _atomic_write_text(out / f"{stem}.csv", buf.getvalue())


def write_predictions(rows, path) -> None:
    """rows: (position, idx, true values, predicted values) -> CSV."""
    k = len(rows[0][2]) if rows else 1
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["position", "idx"] + [f"true_{j}" for j in range(k)] + [f"pred_{j}" for j in range(k)])
        for pos, idx, yt, yp in rows:
            w.writerow([pos, idx] + [repr(v) for v in yt] + [repr(v) for v in yp])


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def plot_learning_curves(history: List[dict], path, unit: str = "", title: str = "") -> Optional[Path]:
    if not history:
        return None
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    tr = [h.get("train_mae") for h in history]
    va = [h.get("val_mae") for h in history]
    if any(v is not None for v in tr):
        ax.plot(ep, [np.nan if v is None else v for v in tr], "o-", ms=3, label="train MAE")
    if any(v is not None for v in va):
        ax.plot(ep, [np.nan if v is None else v for v in va], "s-", ms=3, label="val MAE (EMA)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"MAE [{unit}]" if unit else "MAE")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(ep, [h.get("lr", np.nan) for h in history], color="gray", lw=1, alpha=0.6, label="lr")
    ax2.set_ylabel("learning rate", color="gray")
    ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_parity(y_true: Sequence[float], y_pred: Sequence[float], path, unit: str = "",
                title: str = "test set") -> Optional[Path]:
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if y_true.size == 0:
        return None
    plt = _plt()
    mae = float(np.abs(y_true - y_pred).mean())
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y_true, y_pred, s=3, alpha=0.4, rasterized=True)
    lo = float(min(y_true.min(), y_pred.min()))
    hi = float(max(y_true.max(), y_pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    u = f" [{unit}]" if unit else ""
    ax.set_xlabel("true" + u)
    ax.set_ylabel("predicted" + u)
    ax.set_title(f"{title}: MAE = {mae:.4g}{' ' + unit if unit else ''} (n={y_true.size})")
    ax.set_aspect("equal", adjustable="box")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
