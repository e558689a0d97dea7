r"""Conformation losses and metrics of PhysChem.

Conn-k (the authors' ``H_ADJ3`` loss, k = 3): with :math:`C = \mathbb{1}[(A + I)^k > 0]` the pairs
within k bonds (per molecule) and :math:`\hat C = D^{-1/2} C D^{-1/2}` (:math:`D` its row sums),

.. math::
    L_{\text{conn}}(x, y) = \frac{1}{N} \sum_{i,j} \hat C_{ij} \big(\|x_i - x_j\| - \|y_i - y_j\|\big)^2,
    \qquad L = \sum_{s=0}^{S-1} \frac{1.6^s}{\sum_t 1.6^t} L_{\text{conn}}(x^{(s)}, y)

over the conformations :math:`x^{(s)}` PhysNet goes through (the later ones weigh more), with
:math:`N` the atoms of the batch. Both depend on distances only, so they are invariant to rotating,
translating or reflecting either conformation.

Kabsch-RMSD: the RMSD after the optimal rotation (SVD; the sign of the smallest singular direction
fixed so that reflections are excluded) of each centred molecule. DL-RS: the root mean square of the
distance-matrix difference, :math:`\sqrt{\frac{1}{n^2} \sum_{ij} (\|x_i - x_j\| - \|y_i - y_j\|)^2}` per
molecule (the authors take the square root of the batch mean instead).
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import torch
from torch import Tensor

from .graph import segment_sum


class ConnPairs(NamedTuple):
    """Pairs (i, j), i != j, within k bonds and their weights :math:`\\hat C_{ij} / N`."""
    i: Tensor
    j: Tensor
    w: Tensor


def _dense_slots(batch: Tensor, num_graphs: int, counts: Optional[Tensor] = None,
                 max_atoms: Optional[int] = None, slot: Optional[Tensor] = None):
    """``(counts, starts, slot, max_atoms)``; ``counts [G]``, ``max_atoms`` and ``slot [N]`` (each
    atom's place in its molecule) when the caller has them (a :class:`~.graph.MolBatch`: its
    ``atom_slot``): otherwise they are read from the device, or computed. ``starts`` (the first atom
    of each molecule) is ``None`` when ``slot`` is given."""
    if counts is None:
        counts = torch.bincount(batch, minlength=num_graphs)
    if max_atoms is None:
        max_atoms = int(counts.max()) if counts.numel() else 0
    starts = None
    if slot is None:
        starts = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])
        slot = torch.arange(batch.numel(), device=batch.device) - starts[batch]
    return counts, starts, slot, max_atoms


def conn_pairs(edge_index: Tensor, batch: Tensor, num_graphs: int, k: int = 3,
               counts: Optional[Tensor] = None, max_atoms: Optional[int] = None) -> ConnPairs:
    """The Conn-k pair list of a batch (bonds ``edge_index``, both directions); ``counts``,
    ``max_atoms``: see :func:`_dense_slots`. One host read (the pairs are cut by ``nonzero``)."""
    counts, starts, slot, n = _dense_slots(batch, num_graphs, counts, max_atoms)
    adj = torch.zeros(num_graphs, n, n, dtype=torch.float64, device=batch.device)
    src, dst = edge_index[0].long(), edge_index[1].long()
    adj[batch[dst], slot[dst], slot[src]] = 1.0
    valid = torch.arange(n, device=batch.device)[None] < counts[:, None]              # [G, n]
    adj = adj + torch.diag_embed(valid.double())
    reach = adj
    for _ in range(k - 1):
        reach = (reach @ adj).clamp(max=1.0)
    deg = reach.sum(2).clamp(min=1.0)
    norm = reach / (deg[:, :, None].sqrt() * deg[:, None, :].sqrt())
    g, a, b = torch.nonzero(reach * (1 - torch.eye(n, dtype=torch.float64, device=batch.device)), as_tuple=True)
    return ConnPairs(starts[g] + a, starts[g] + b, norm[g, a, b] / max(1, batch.numel()))


def conn_loss(x: Tensor, y: Tensor, pairs: ConnPairs) -> Tensor:
    """Conn-k loss of one conformation ``x [N, 3]`` against ``y [N, 3]``."""
    dx = (x[pairs.i] - x[pairs.j]).norm(dim=-1)
    dy = (y[pairs.i] - y[pairs.j]).norm(dim=-1)
    return (pairs.w.to(dx.dtype) * (dx - dy) ** 2).sum()


def step_weights(num: int, base: float = 1.6) -> List[float]:
    w = [base ** s for s in range(num)]
    return [v / sum(w) for v in w]


def hierarchical_conn_loss(xs: List[Tensor], y: Tensor, pairs: ConnPairs, base: float = 1.6) -> Tensor:
    """The 1.6^s-weighted Conn-k loss over the conformations ``xs`` (first to last)."""
    return sum(w * conn_loss(x, y, pairs) for w, x in zip(step_weights(len(xs), base), xs))


def kabsch_rmsd(x: Tensor, y: Tensor, batch: Tensor, num_graphs: int, counts: Optional[Tensor] = None,
                max_atoms: Optional[int] = None, slot: Optional[Tensor] = None) -> Tensor:
    """Per-molecule RMSD ``[G]`` of ``x`` onto ``y`` after the optimal proper rotation (``counts``,
    ``max_atoms``, ``slot``: see :func:`_dense_slots`)."""
    counts, _, slot, n = _dense_slots(batch, num_graphs, counts, max_atoms, slot)
    cnt = counts.clamp(min=1).to(x.dtype)[:, None]
    xc = x - (segment_sum(x, batch, num_graphs) / cnt)[batch]
    yc = y - (segment_sum(y, batch, num_graphs) / cnt)[batch]
    xd = x.new_zeros(num_graphs, n, 3)
    yd = y.new_zeros(num_graphs, n, 3)
    xd[batch, slot] = xc
    yd[batch, slot] = yc
    h = xd.transpose(1, 2) @ yd                                                     # [G, 3, 3]
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], 1))
    rot = vt.transpose(1, 2) @ fix @ u.transpose(1, 2)                              # x -> y
    diff = (xd @ rot.transpose(1, 2)) - yd
    return ((diff ** 2).sum((1, 2)) / cnt[:, 0]).sqrt()


def distance_rmse(x: Tensor, y: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Per-molecule DL-RS ``[G]``: RMS of the distance-matrix difference over all n^2 pairs."""
    counts, _, slot, n = _dense_slots(batch, num_graphs)
    xd = x.new_zeros(num_graphs, n, 3)
    yd = y.new_zeros(num_graphs, n, 3)
    xd[batch, slot] = x
    yd[batch, slot] = y
    mask = (torch.arange(n, device=x.device)[None] < counts[:, None]).to(x.dtype)
    m2 = mask[:, :, None] * mask[:, None]
    diff = (torch.cdist(xd, xd) - torch.cdist(yd, yd)) * m2
    return ((diff ** 2).sum((1, 2)) / (counts.to(x.dtype) ** 2).clamp(min=1)).sqrt()
