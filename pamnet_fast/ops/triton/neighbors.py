"""Radius and k-nearest-neighbor graphs on the GPU: a cell list built with torch, Triton COUNT and FILL.

Design
------
* Cell list (torch, float64 host math on the device): nodes are keyed by (graph, cell) with cells of
  edge ``h = r * (1 + 2^-10)`` relative to each graph's bounding-box corner, and sorted by key
  (``torch.sort(stable=True)``). Cell keys are dense per dimension but the lookup is sparse
  (``searchsorted`` on the sorted keys), so the grid is never allocated; each dimension is capped at
  ``2^20`` cells (fewer with many graphs, so keys fit in int64) by enlarging ``h`` for huge coordinates.
  For every non-empty cell, the 27 neighbor cells are 9 contiguous ranges of the sorted nodes (the
  three cells along z are adjacent keys), found by ``searchsorted`` and flattened into one candidate
  list per cell (CSR, about 27 N entries), so a tile runs a single loop over its candidates.
* Tiles: the targets of one cell are cut into tiles of ``BLOCK_T`` nodes; one program per tile scans
  its cell's candidate list in chunks of ``BLOCK_C``, a ``[BLOCK_T, BLOCK_C]`` distance tile at a time.
  COUNT stores the neighbor count of each target (no atomics); an exclusive cumsum gives exact
  offsets; FILL writes each target's neighbors at its offset (a row-wise cumsum of the hit mask
  compacts them) with their distances. A final ``torch.sort`` of the int64 keys ``target * N + source``
  (unique, so deterministic) gives the reference order: by target, then source.
* ``max_num_neighbors``: the largest count raises the reference's ``ValueError``, or with
  ``truncate=True`` keeps the nearest (ties: smaller index) by three stable sorts.
* kNN: an expanding radius. Each round builds the cell list for radius ``R`` and counts the
  candidates of the targets still open; a target is done when it has at least
  ``min(k, graph size - self)`` candidates within ``R`` (then its k nearest, ties by index, are among
  them: exact), or when ``R`` reached ``r``. Done targets are filled and their k nearest selected by
  stable sorts; ``R`` doubles for the others (infinite past twice the largest graph diagonal, which
  ends the loop). Each round costs O(N log N) for the cell list plus O(open targets x candidates).

Exactness and FMA
-----------------
Distances are ``sqrt((dx*dx + dy*dy) + dz*dz)`` with ``d = pos_j - pos_i`` in the dtype of ``pos``,
compared ``<= r`` with ``r`` rounded to that dtype, like :func:`pamnet_fast.ops.reference.pair_distance`.
Compiled for a GPU, two things could make a distance differ from the CPU's in the last bit (which
matters only for pairs within ~1 ulp of ``r``): (1) Triton contracts ``dx*dx + dy*dy`` into an FMA by
default (``enable_fp_fusion``, default on in Triton 3.9); (2) ``tl.sqrt`` is ``sqrt.approx.f32``. So
these kernels are launched with ``enable_fp_fusion=False`` (no LLVM contraction, ``ptxas --fmad=false``)
and float32 uses ``tl.sqrt_rn`` (IEEE round-to-nearest; float64 ``sqrt`` is always IEEE). Compiling
for sm_90 without a GPU shows the effect: 32 ``fma.rn`` in the PTX with fusion on, none with it off,
and ``sqrt.rn.f32``/``sqrt.rn.f64`` (``tests/test_triton.py`` checks this). Every operation is then
rounded as on the CPU and the GPU edge set equals the CPU's bit for bit. (Correctness was established
under the interpreter and by compiling to PTX; no GPU run was available when this was written.)
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import validate
from ._common import scalars

BLOCK_T = 32   # targets per tile (all from one cell)
BLOCK_C = 64   # candidates per chunk
_CELL_MARGIN = 1.0 + 2.0 ** -10  # cell edge slightly above r: rounding never hides a neighbor cell


@triton.jit
def _pair_kernel(pos_ptr, r_ptr, tgt_ptr, tile_start_ptr, tile_end_ptr, tile_cell_ptr, cand_ptr_ptr,
                 cand_ptr, count_ptr, offset_ptr, out_src_ptr, out_dist_ptr,
                 LOOP: tl.constexpr, FILL: tl.constexpr, IS_F64: tl.constexpr,
                 BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    tile = tl.program_id(0)
    t0 = tl.load(tile_start_ptr + tile)
    t1 = tl.load(tile_end_ptr + tile)
    cell = tl.load(tile_cell_ptr + tile)
    slot = t0 + tl.arange(0, BLOCK_T)
    tmask = slot < t1
    tgt = tl.load(tgt_ptr + slot, mask=tmask, other=-1)
    tx = tl.load(pos_ptr + tgt * 3, mask=tmask, other=0.0)
    ty = tl.load(pos_ptr + tgt * 3 + 1, mask=tmask, other=0.0)
    tz = tl.load(pos_ptr + tgt * 3 + 2, mask=tmask, other=0.0)
    r = tl.load(r_ptr)
    count = tl.zeros([BLOCK_T], dtype=tl.int64)
    if FILL:
        base = tl.load(offset_ptr + slot, mask=tmask, other=0)
    c0 = tl.load(cand_ptr_ptr + cell)
    c1 = tl.load(cand_ptr_ptr + cell + 1)
    for j0 in range(c0, c1, BLOCK_C):
        jj = j0 + tl.arange(0, BLOCK_C)
        cmask = jj < c1
        cand = tl.load(cand_ptr + jj, mask=cmask, other=-2)
        cx = tl.load(pos_ptr + cand * 3, mask=cmask, other=0.0)
        cy = tl.load(pos_ptr + cand * 3 + 1, mask=cmask, other=0.0)
        cz = tl.load(pos_ptr + cand * 3 + 2, mask=cmask, other=0.0)
        dx = cx[None, :] - tx[:, None]
        dy = cy[None, :] - ty[:, None]
        dz = cz[None, :] - tz[:, None]
        sq = dx * dx + dy * dy
        sq = sq + dz * dz
        if IS_F64:
            dist = tl.sqrt(sq)
        else:
            dist = tl.sqrt_rn(sq)
        hit = (dist <= r) & tmask[:, None] & cmask[None, :]
        if not LOOP:
            hit = hit & (cand[None, :] != tgt[:, None])
        hit64 = hit.to(tl.int64)
        if FILL:
            out = base[:, None] + count[:, None] + tl.cumsum(hit64, axis=1) - 1
            tl.store(out_src_ptr + out, tl.broadcast_to(cand[None, :], [BLOCK_T, BLOCK_C]), mask=hit)
            tl.store(out_dist_ptr + out, dist, mask=hit)
        count += tl.sum(hit64, axis=1)
    if not FILL:
        tl.store(count_ptr + slot, count, mask=tmask)


class _Cells(NamedTuple):
    order: Tensor   # [N] sorted position -> node
    pos: Tensor     # [N, 3] positions in sorted order (dtype of pos)
    cell: Tensor    # [N] cell id (0..C-1) of each sorted node, non-decreasing
    cand_ptr: Tensor  # [C + 1] CSR pointer of each cell's candidates
    cand: Tensor      # sorted positions of the nodes of the 27 cells around each cell


def _dense_graphs(batch: Optional[Tensor], n: int, device):
    """Graph id of each node as 0..G-1 (graphs as given by the sorted batch vector), and G."""
    if batch is None:
        return torch.zeros(n, dtype=torch.int64, device=device), 1
    _, graph = torch.unique_consecutive(batch, return_inverse=True)
    return graph.to(torch.int64), int(graph[-1]) + 1


def _boxes(p64: Tensor, graph: Tensor, num_graphs: int):
    idx = graph[:, None].expand(-1, 3)
    lo = torch.full((num_graphs, 3), math.inf, dtype=p64.dtype, device=p64.device)
    hi = torch.full((num_graphs, 3), -math.inf, dtype=p64.dtype, device=p64.device)
    lo = lo.scatter_reduce(0, idx, p64, "amin")
    hi = hi.scatter_reduce(0, idx, p64, "amax")
    return lo, hi


def _build_cells(pos: Tensor, graph: Tensor, num_graphs: int, h: float) -> _Cells:
    dev = pos.device
    p64 = pos.to(torch.float64)
    lo, hi = _boxes(p64, graph, num_graphs)
    ext = (hi - lo).amax(0)  # per dimension, largest over graphs
    cap = max(3, min(2 ** 20, int((2.0 ** 62 / num_graphs) ** (1.0 / 3.0))))
    h = max(h, float(ext.max()) / (cap - 2), 1e-300)
    dims = (torch.nan_to_num(ext / h, nan=0.0, posinf=0.0).floor().to(torch.int64) + 1).clamp_(max=cap)
    c = torch.nan_to_num((p64 - lo[graph]) / h, nan=0.0, posinf=0.0).floor().to(torch.int64)
    c = torch.minimum(c.clamp_(min=0), dims - 1)
    nx, ny, nz = (int(v) for v in dims.tolist())
    key = ((graph * nx + c[:, 0]) * ny + c[:, 1]) * nz + c[:, 2]
    key_sorted, order = torch.sort(key, stable=True)
    _, cell, counts = torch.unique_consecutive(key_sorted, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    rep = order[first]
    g_c, cc = graph[rep], c[rep]
    zlo = (cc[:, 2] - 1).clamp(min=0)
    zhi = (cc[:, 2] + 1).clamp(max=nz - 1)
    ranges = torch.zeros(counts.numel(), 9, 2, dtype=torch.int64, device=dev)
    k = 0

    for ax in (-1, 0, 1):
        for ay in (-1, 0, 1):
            x, y = cc[:, 0] + ax, cc[:, 1] + ay
            valid = (x >= 0) & (x < nx) & (y >= 0) & (y < ny)
            row = (g_c * nx + x) * ny + y
            s = torch.searchsorted(key_sorted, row * nz + zlo)
            e = torch.searchsorted(key_sorted, row * nz + zhi, right=True)
            ranges[:, k, 0] = torch.where(valid, s, 0)
            ranges[:, k, 1] = torch.where(valid, e, 0)
            k += 1
    # Flatten the 9 ranges of each cell into one candidate list (one loop per tile on the device).
    start, length = ranges[..., 0].reshape(-1), (ranges[..., 1] - ranges[..., 0]).reshape(-1)
    total = int(length.sum())
    seg = torch.repeat_interleave(torch.arange(length.numel(), device=dev), length, output_size=total)
    first_out = torch.cumsum(length, 0) - length
    cand = start[seg] + torch.arange(total, device=dev) - first_out[seg]
    cand_ptr = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=dev)
    torch.cumsum(length.view(-1, 9).sum(1), 0, out=cand_ptr[1:])
    return _Cells(order, pos[order].contiguous(), cell.to(torch.int64), cand_ptr, cand)


def _tiles(tcell: Tensor):
    """Tiles of at most BLOCK_T consecutive targets of one cell; ``tcell`` is non-decreasing."""
    dev = tcell.device
    _, cnt = torch.unique_consecutive(tcell, return_counts=True)
    gstart = torch.cumsum(cnt, 0) - cnt
    ntile = (cnt + BLOCK_T - 1) // BLOCK_T
    num = int(ntile.sum())
    tg = torch.repeat_interleave(torch.arange(cnt.numel(), device=dev), ntile, output_size=num)
    tfirst = torch.cumsum(ntile, 0) - ntile
    start = gstart[tg] + (torch.arange(num, device=dev) - tfirst[tg]) * BLOCK_T
    end = torch.minimum(start + BLOCK_T, gstart[tg] + cnt[tg])
    return start.contiguous(), end.contiguous(), tcell[start].contiguous()


def _search(cells: _Cells, r_t: Tensor, tgt: Tensor, loop: bool, counts: Optional[Tensor] = None):
    """COUNT (``counts is None``): neighbors of each target of ``tgt`` (sorted positions, ascending).
    FILL: their sorted positions and distances, target by target, ``counts`` long each."""
    dev = tgt.device
    fill = counts is not None
    if fill:
        offsets = torch.cumsum(counts, 0) - counts
        total = int(counts.sum())
        out_src = torch.empty(total, dtype=torch.int64, device=dev)
        out_dist = torch.empty(total, dtype=cells.pos.dtype, device=dev)
        if total == 0:
            return out_src, out_dist
        count_buf = offsets  # unused by FILL
    else:
        count_buf = torch.zeros(tgt.numel(), dtype=torch.int64, device=dev)
        offsets = out_src = out_dist = count_buf
        if tgt.numel() == 0:
            return count_buf
    start, end, tcell = _tiles(cells.cell[tgt])
    _pair_kernel[(start.numel(),)](
        cells.pos, r_t, tgt, start, end, tcell, cells.cand_ptr, cells.cand, count_buf, offsets, out_src, out_dist,
        LOOP=bool(loop), FILL=fill, IS_F64=cells.pos.dtype == torch.float64,
        BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C, num_warps=4, enable_fp_fusion=False)
    return (out_src, out_dist) if fill else count_buf


def _nearest(seg: Tensor, src: Tensor, dist: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` nearest entries of each segment, ties by the smaller source index."""
    o = torch.sort(src, stable=True).indices
    o = o[torch.sort(dist[o], stable=True).indices]
    o = o[torch.sort(seg[o], stable=True).indices]
    s = seg[o]
    rank = torch.arange(s.numel(), device=s.device) - torch.searchsorted(s, s)
    return o[rank < k]


def _finish(src: Tensor, dst: Tensor, n: int):
    key = torch.sort(dst * n + src).values
    src, dst = key % n, key // n
    ptr = torch.zeros(n + 1, dtype=torch.int64, device=src.device)
    torch.cumsum(torch.bincount(dst, minlength=n), 0, out=ptr[1:])
    return torch.stack([src, dst]), ptr


def _empty(pos: Tensor):
    return (torch.zeros(2, 0, dtype=torch.int64, device=pos.device),
            torch.zeros(1, dtype=torch.int64, device=pos.device))


def radius_graph(pos: Tensor, r: float, batch: Optional[Tensor], loop: bool, max_num_neighbors: int,
                 truncate: bool):
    """Schema kernel of ``pamnet_fast::radius_graph``: ``(edge_index [2, E], ptr [N + 1])``."""
    validate.radius_graph(pos, r, batch, max_num_neighbors)
    n = pos.size(0)
    if n == 0:
        return _empty(pos)
    pos = pos.contiguous()
    graph, num_graphs = _dense_graphs(batch, n, pos.device)
    r_t = scalars(pos, r)
    cells = _build_cells(pos, graph, num_graphs, float(r_t) * _CELL_MARGIN)
    tgt = torch.arange(n, device=pos.device)
    counts = _search(cells, r_t, tgt, loop)
    max_count = int(counts.max())
    if 0 <= max_num_neighbors < max_count and not truncate:
        raise ValueError(
            f"radius_graph: a node has {max_count} neighbors within r={r}, more than "
            f"max_num_neighbors={max_num_neighbors}; raise max_num_neighbors or pass truncate=True "
            f"to keep the nearest ones")
    src_s, dist = _search(cells, r_t, tgt, loop, counts)
    dst_s = torch.repeat_interleave(tgt, counts, output_size=src_s.numel())
    if 0 <= max_num_neighbors < max_count:
        keep = _nearest(dst_s, cells.order[src_s], dist, max_num_neighbors)
        src_s, dst_s = src_s[keep], dst_s[keep]
    return _finish(cells.order[src_s], cells.order[dst_s], n)


def knn_graph(pos: Tensor, k: int, batch: Optional[Tensor], r: Optional[float], loop: bool):
    """Schema kernel of ``pamnet_fast::knn_graph``: the k nearest (ties by index) within ``r``."""
    validate.knn_graph(pos, k, batch, r)
    n = pos.size(0)
    if n == 0:
        return _empty(pos)
    dev = pos.device
    pos = pos.contiguous()
    graph, num_graphs = _dense_graphs(batch, n, dev)
    sizes = torch.bincount(graph, minlength=num_graphs)
    need = (sizes[graph] - (0 if loop else 1)).clamp(max=k)  # candidates that make a target done
    lo, hi = _boxes(pos.to(torch.float64), graph, num_graphs)
    diag = (hi - lo).norm(dim=1)
    r_cap = math.inf if r is None else float(scalars(pos, r))
    # Initial radius: the k-NN radius of a uniform box, smallest over graphs with extent.
    est = 0.4 * diag * ((k + 1) / sizes.to(torch.float64)) ** (1.0 / 3.0)
    est = est[(sizes > 1) & (diag > 0)]
    radius = float(est.min()) if est.numel() else 1.0
    diag_max = float(diag.max())
    active = torch.arange(n, device=dev)
    srcs, dsts = [], []
    while active.numel():
        radius = min(radius, r_cap)
        final = radius >= r_cap
        r_t = scalars(pos, radius)
        cells = _build_cells(pos, graph, num_graphs, float(r_t) * _CELL_MARGIN)
        inverse = torch.empty_like(cells.order)
        inverse[cells.order] = torch.arange(n, device=dev)
        tgt = torch.sort(inverse[active]).values
        counts = _search(cells, r_t, tgt, loop)
        done = torch.ones_like(counts, dtype=torch.bool) if final else counts >= need[cells.order[tgt]]
        tgt_done = tgt[done]
        if tgt_done.numel():
            c_done = counts[done]
            src_s, dist = _search(cells, r_t, tgt_done, loop, c_done)
            seg = torch.repeat_interleave(torch.arange(tgt_done.numel(), device=dev), c_done,
                                          output_size=src_s.numel())
            keep = _nearest(seg, cells.order[src_s], dist, k)
            srcs.append(cells.order[src_s[keep]])
            dsts.append(cells.order[tgt_done[seg[keep]]])
        active = cells.order[tgt[~done]]
        radius *= 2.0
        if radius > 2.0 * diag_max:
            radius = math.inf
    if not srcs:
        return _empty(pos)
    return _finish(torch.cat(srcs), torch.cat(dsts), n)
