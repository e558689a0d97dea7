r"""Neighbors of a block of target atoms among all atoms, exactly, without the full edge list.

:class:`BlockNeighbors` builds a cell list once (cells of side ``r``, per graph of ``batch``) and answers
"all sources within ``r`` of the targets ``t0 .. t1 - 1``" block by block, in plain PyTorch on any
device. It returns the same edges as :func:`pamnet_fast.ops.radius_graph` (or
:func:`~pamnet_fast.ops.knn_graph` with ``r``) restricted to those targets: the same exact distance
test (:func:`pamnet_fast.ops.geometry.pair_distance` ``<= r`` in the dtype of ``pos``, applied as a
bit-exact threshold on the squared distance), the same order (by target, then source) and, for kNN,
the same tie rule (by distance, then smaller index). Memory is O(block edges), never O(E).
"""
from __future__ import annotations

import itertools
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..ops.geometry import pair_distance, squared_distance
from .graphs import csr_pointer

# Cells are r / 2 wide: the 125 offsets (-2 .. 2)^3 cover every ball of radius r, with 15.6 r^3 of
# candidate volume per target (27 r^3 with cells r wide) for the 4.2 r^3 of the ball.
_CELLS_PER_R = 2
_OFFSETS = torch.tensor(list(itertools.product(range(-_CELLS_PER_R, _CELLS_PER_R + 1), repeat=3)),
                        dtype=torch.long)


def squared_threshold(r: float, dtype: torch.dtype) -> float:
    """Largest ``s`` (in ``dtype``) with ``correctly_rounded_sqrt(s) <= r`` rounded to ``dtype``: the
    comparison ``d2 <= s`` is then bit-for-bit ``pair_distance <= r`` (sqrt is monotone)."""
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    rr = np_dtype(r)
    t = np_dtype(rr * rr)
    inf = np_dtype(np.inf)
    while t > 0 and np.sqrt(t) > rr:
        t = np.nextafter(t, np_dtype(0))
    while t < inf and np.sqrt(np.nextafter(t, inf)) <= rr:
        t = np.nextafter(t, inf)
    return float(t)


class BlockNeighbors:
    r"""Cell list over ``pos [N, 3]`` (per graph of a sorted ``batch [N]``) for block-wise neighbor
    queries: sources :math:`j \ne i` of the same graph with :math:`\|p_i - p_j\| \le r`, kept to the
    ``k`` nearest (ties by index) when ``k`` is given.

    ``max_num_neighbors``: a target with more neighbors raises ``ValueError`` (as
    :func:`pamnet_fast.ops.radius_graph` does). Build cost O(N log N); memory O(N).
    """

    def __init__(self, pos: Tensor, r: float, batch: Optional[Tensor] = None, k: Optional[int] = None,
                 max_num_neighbors: Optional[int] = None):
        if pos.dim() != 2 or pos.size(1) != 3 or not pos.is_floating_point():
            raise ValueError(f"BlockNeighbors: pos must be a float [N, 3] tensor, got {tuple(pos.shape)} "
                             f"{pos.dtype}")
        if not r > 0:
            raise ValueError(f"BlockNeighbors: r must be > 0, got {r}")
        if not bool(torch.isfinite(pos).all()):
            raise ValueError("BlockNeighbors: pos has non-finite coordinates")
        self.pos = pos = pos.detach().contiguous()
        self.r, self.k, self.max_num_neighbors = float(r), k, max_num_neighbors
        self.n = n = pos.size(0)
        dev = pos.device
        self.batch = (torch.zeros(n, dtype=torch.long, device=dev) if batch is None
                      else batch.to(device=dev, dtype=torch.long))
        if n and bool((self.batch[1:] < self.batch[:-1]).any()):
            raise ValueError("BlockNeighbors: batch must be sorted (graphs contiguous)")
        self.threshold = torch.tensor(squared_threshold(r, pos.dtype), dtype=pos.dtype, device=dev)
        self.r_t = torch.tensor(r, dtype=pos.dtype, device=dev)
        if n == 0:
            return
        # Integer cell coordinates relative to each graph's lower corner; each graph its own grid.
        num_graphs = int(self.batch[-1]) + 1
        lo = torch.full((num_graphs, 3), float("inf"), dtype=pos.dtype, device=dev)
        lo = lo.scatter_reduce(0, self.batch[:, None].expand(-1, 3), pos, "amin")
        cell = torch.floor((pos - lo[self.batch]) * (_CELLS_PER_R / self.r)).long()
        dims = torch.zeros(num_graphs, 3, dtype=torch.long, device=dev)
        dims = dims.scatter_reduce(0, self.batch[:, None].expand(-1, 3), cell + 1, "amax")
        size = dims.prod(1)
        if float(size.double().sum()) > 2.0 ** 62:
            raise ValueError("BlockNeighbors: the structure spans too many cells of side r")
        self.base = torch.cumsum(size, 0) - size       # first cell id of each graph
        self.dims, self.cell = dims, cell
        key = self._key(cell, self.batch)
        self.sorted_key, self.order = torch.sort(key, stable=True)   # atoms by cell, then index
        total_cells = int(self.base[-1] + size[-1])
        # (cell, index) as one sorted int64 when it fits: counts of the sources below an index per cell
        self.cell_index = self.sorted_key * n + self.order if total_cells < 2 ** 62 // max(n, 1) else None

    def _key(self, cell: Tensor, graph: Tensor) -> Tensor:
        d = self.dims[graph]
        return self.base[graph] + (cell[:, 0] * d[:, 1] + cell[:, 1]) * d[:, 2] + cell[:, 2]

    def _cell_ranges(self, targets: Tensor, offsets: Tensor, lower: bool):
        """For each target and each of ``offsets [K, 3]``: the target and the range ``[start, end)`` of
        ``order`` holding the atoms of that neighbor cell (``lower``: only those with smaller index)."""
        graph = self.batch[targets]
        cell = self.cell[targets].unsqueeze(1) + offsets                      # [B, K, 3]
        ok = ((cell >= 0) & (cell < self.dims[graph].unsqueeze(1))).all(-1)   # [B, K]
        tgt = targets.unsqueeze(1).expand_as(ok)[ok]
        key = self._key(cell[ok], graph.unsqueeze(1).expand_as(ok)[ok])
        start = torch.searchsorted(self.sorted_key, key)
        if lower and self.cell_index is not None:
            end = torch.searchsorted(self.cell_index, key * self.n + tgt)
        else:
            end = torch.searchsorted(self.sorted_key, key, right=True)
        return tgt, start, end

    def _candidates(self, targets: Tensor, offsets: Tensor, lower: bool) -> Tuple[Tensor, Tensor]:
        """(target, source) pairs with the source in a cell ``offsets`` away from the target's."""
        tgt, start, end = self._cell_ranges(targets, offsets, lower)
        count = end - start
        total = int(count.sum())
        first = torch.cumsum(count, 0) - count
        slot = torch.arange(total, device=targets.device) - first.repeat_interleave(count, output_size=total)
        src = self.order[start.repeat_interleave(count, output_size=total) + slot]
        return tgt.repeat_interleave(count, output_size=total), src

    def _search(self, t0: int, t1: int, lower: bool = False) -> Tuple[Tensor, Tensor]:
        """All (src, dst) within r for targets in [t0, t1) (``lower``: only src < dst), unsorted,
        self pairs excluded. Offsets go in 5 groups (bounded candidate memory, few Python steps)."""
        targets = torch.arange(t0, t1, device=self.pos.device)
        srcs, dsts = [], []
        for offsets in _OFFSETS.to(self.pos.device).chunk(5):
            tgt, src = self._candidates(targets, offsets, lower)
            keep = (src < tgt) if lower else (tgt != src)
            tgt, src = tgt[keep], src[keep]
            keep = squared_distance(self.pos[tgt], self.pos[src]) <= self.threshold
            srcs.append(src[keep])
            dsts.append(tgt[keep])
        return torch.cat(srcs), torch.cat(dsts)

    def candidate_counts(self, lower: bool = False, block: int = 8192) -> Tensor:
        """An upper bound ``[N]`` on the neighbors of every target (``lower``: of sources with a
        smaller index): the atoms of the cells searched, without any distance (cheap)."""
        out = torch.zeros(self.n, dtype=torch.long, device=self.pos.device)
        offsets = _OFFSETS.to(self.pos.device)
        for t0 in range(0, self.n, block):
            targets = torch.arange(t0, min(t0 + block, self.n), device=self.pos.device)
            tgt, start, end = self._cell_ranges(targets, offsets, lower)
            out.index_add_(0, tgt, end - start)
        return out.clamp(max=self.k) if self.k is not None else out

    def counts(self, block: int = 4096) -> Tensor:
        """Neighbors of every target ``[N]`` (within r, capped at k): a search pass keeping no edges."""
        out = torch.zeros(self.n, dtype=torch.long, device=self.pos.device)
        for t0 in range(0, self.n, block):
            t1 = min(t0 + block, self.n)
            _, dst = self._search(t0, t1)
            out[t0:t1] = torch.bincount(dst - t0, minlength=t1 - t0)
        self._check_max(out)
        return out.clamp(max=self.k) if self.k is not None else out

    def _check_max(self, counts: Tensor) -> None:
        mnn = self.max_num_neighbors
        if mnn is not None and counts.numel() and int(counts.max()) > mnn:
            raise ValueError(
                f"radius_graph: a node has {int(counts.max())} neighbors within r={self.r}, more than "
                f"max_num_neighbors={mnn}; raise max_num_neighbors or pass truncate=True to keep the "
                f"nearest ones")

    def edges(self, t0: int, t1: int, pos: Optional[Tensor] = None, lower: bool = False
              ) -> Tuple[Tensor, Tensor, Tensor]:
        """Edges into the targets ``t0 .. t1 - 1``: ``(src [Eb], ptr [t1 - t0 + 1], dist [Eb])``,
        sorted by target then source, ``ptr`` relative to ``t0``. ``dist`` is computed from ``pos``
        when given (the same coordinates, e.g. requiring grad), else from the detached copy.
        ``lower`` (radius only): only the sources with a smaller index (one edge per pair)."""
        if lower and self.k is not None:
            raise ValueError("BlockNeighbors.edges: lower=True needs a symmetric (radius) graph")
        src, dst = self._search(t0, t1, lower)
        key = (dst - t0) * self.n + src
        key, perm = torch.sort(key)
        src, dst = src[perm], dst[perm]
        dist = pair_distance(self.pos[dst], self.pos[src])
        if self.k is not None:
            # k nearest by (distance, index): order by (target, distance, source), rank, keep < k.
            by = torch.argsort(dist, stable=True)
            by = by[torch.argsort(dst[by], stable=True)]
            ptr = self._ptr(dst - t0, t1 - t0)
            rank = torch.arange(by.numel(), device=by.device) - ptr[dst[by] - t0]
            keep = torch.zeros_like(dst, dtype=torch.bool)
            keep[by[rank < self.k]] = True
            src, dst, dist = src[keep], dst[keep], dist[keep]
        ptr = self._ptr(dst - t0, t1 - t0)
        if self.k is None and not lower:
            self._check_max(ptr[1:] - ptr[:-1])
        if pos is not None:
            dist = pair_distance(pos[dst], pos[src])
        return src, ptr, dist

    @staticmethod
    def _ptr(local_dst: Tensor, n: int) -> Tensor:
        """CSR pointer of the sorted local targets (:func:`pamnet_fast.nn.graphs.csr_pointer`)."""
        return csr_pointer(local_dst, n)
