r"""RNA 3D structure scoring (PAMNet paper, RNA-Puzzles): predict a model's RMSD to the unknown native.

The task: decoys of the 21 RNA-Puzzles natives (:class:`~pamnet_fast.data.rna_decoys.RNADecoys`, a
substitute for FARFAR2) labelled with their RMSD, split leave-puzzles-out (every form of a puzzle in one
split; RNA-Puzzle 13 always held out, so its real predicted models are an external test), learned with
smooth L1. Scores are predicted RMSDs (lower = closer to native), ranked with
:mod:`pamnet_fast.train.ranking`.

Distance-only baselines (no angles), to show what PAMNet's angle-aware local plex adds:

* :func:`contact_score`: minus the mean number of heavy atoms within 10 Å (compact = native-like),
  not trained;
* :class:`DistanceHistogramRidge`: ridge regression of RMSD on per-atom counts of C/N/O pairs in 1 Å
  distance bins up to 20 Å (the global plex's information without any message passing), trained on
  the same training decoys, ridge strength chosen on the validation puzzles.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

NEAR_NATIVE = 2.0  # Å


def rna_decoy_task(root: Optional[str], split_seed: int = 42, limit: Optional[int] = None,
                   cache_dir: Optional[str] = None, verbose: bool = True, decoys_per_native: int = 40):
    """The ``rna_decoys`` training task: ``limit`` (tests) caps the decoys per native."""
    from ..data.rna_decoys import RNADecoys, leave_puzzles_out
    from .datasets import TaskData, subsets
    if root is None:
        from ..data.errors import InputDataError
        raise InputDataError("dataset rna_decoys needs --root: the directory of the RNA-Puzzles natives in TU "
                         "format (e.g. ../shared/data/rna_puzzles_native)")
    n = decoys_per_native if limit is None else int(limit)
    ds = RNADecoys(root, n, seed=0, cache_dir=cache_dir, verbose=verbose)
    groups = leave_puzzles_out(ds.puzzles, seed=split_seed)
    split = {k: ds.indices_of_puzzles(v) for k, v in groups.items()}
    tr, va, te = subsets(ds, split)
    summary = (f"{ds.summary()}; leave-puzzles-out split (seed {split_seed}): train puzzles "
               f"{','.join(groups['train'])} | val {','.join(groups['val'])} | test {','.join(groups['test'])}")
    return TaskData(tr, va, te, target_name="rmsd", unit="Å", element_ref=False, loss="smooth_l1",
                    summary=summary, full=ds, meta={"puzzle_split": groups, "decoys_per_native": n},
                    # whole RNAs of up to ~4k atoms: 128 of them in one evaluation batch ran out of memory
                    train_defaults={"eval_batch_size": 8})


# ----------------------------------------------------------------------------- distance-only baselines
ELEMENT_PAIRS = ((6, 6), (6, 7), (6, 8), (7, 7), (7, 8), (8, 8))


def contact_score(pos: Tensor, cutoff: float = 10.0) -> float:
    """Minus the mean number of other atoms within ``cutoff`` Å (lower = more compact)."""
    from .. import ops
    ei = ops.radius_graph(pos.double(), cutoff)
    return -float(ei.size(1)) / max(1, pos.size(0))


def distance_histogram(pos: Tensor, z: Tensor, cutoff: float = 20.0, bins: int = 20) -> np.ndarray:
    """Per-atom counts of atom pairs by element pair (C/N/O) and distance bin: ``[6 * bins]``."""
    n = pos.size(0)
    kind = torch.full((max(int(z.max()) + 1, 9),), -1, dtype=torch.long)
    kind[torch.tensor([6, 7, 8])] = torch.arange(3)
    t = kind[z]
    if bool((t < 0).any()):
        raise ValueError("distance_histogram: only C, N, O atoms are supported")
    pair_type = torch.tensor([[0, 1, 2], [1, 3, 4], [2, 4, 5]])  # CC CN CO / NN NO / OO
    from .. import ops
    ei = ops.radius_graph(pos.double(), cutoff)
    ei = ei[:, ei[0] < ei[1]]  # each unordered pair once
    d = (pos[ei[0]].double() - pos[ei[1]].double()).norm(dim=1)
    b = (d / cutoff * bins).long().clamp_(max=bins - 1)
    counts = torch.bincount(pair_type[t[ei[0]], t[ei[1]]] * bins + b, minlength=len(ELEMENT_PAIRS) * bins)
    return counts.double().numpy() / max(1, n)


class DistanceHistogramRidge:
    """Ridge regression ``RMSD ≈ w · standardize(h) + b`` on :func:`distance_histogram` features."""

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def fit(self, X: np.ndarray, y: np.ndarray) -> "DistanceHistogramRidge":
        self.mu, self.sd = X.mean(0), X.std(0) + 1e-12
        Xs = (X - self.mu) / self.sd
        self.b = float(y.mean())
        A = Xs.T @ Xs + self.alpha * np.eye(Xs.shape[1])
        self.w = np.linalg.solve(A, Xs.T @ (y - self.b))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mu) / self.sd) @ self.w + self.b


def fit_histogram_baseline(X_tr, y_tr, X_va, y_va, alphas: Sequence[float] = (0.01, 0.1, 1, 10, 100, 1000)):
    """The ridge strength with the lowest validation MAE, refit on the training set."""
    best = None
    for a in alphas:
        m = DistanceHistogramRidge(a).fit(X_tr, y_tr)
        mae = float(np.abs(m.predict(X_va) - y_va).mean())
        if best is None or mae < best[0]:
            best = (mae, a, m)
    return best[2], {"alpha": best[1], "val_mae": best[0]}


def group_by_puzzle(puzzles: Sequence[str], scores: Sequence[float], rmsds: Sequence[float]) -> Dict[str, tuple]:
    """``{puzzle: (scores, rmsds)}`` for :func:`~pamnet_fast.train.ranking.ranking_metrics`."""
    out: Dict[str, List[list]] = {}
    for p, s, r in zip(puzzles, scores, rmsds):
        out.setdefault(p, [[], []])
        out[p][0].append(float(s))
        out[p][1].append(float(r))
    return {p: (np.array(s), np.array(r)) for p, (s, r) in out.items()}
