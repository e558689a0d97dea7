"""Radius and k-nearest-neighbor graphs on the GPU: BIN, COUNT, one scan, FILL (with an in-tile sort).

Design (radius graph, at most one device->host read: the edge total and largest count, together)
----------------------------------------------------------------------------------------------
* Grids without the host. Graph ids are ``cumsum(batch changes)``; per-graph arrays are sized ``N``
  (an upper bound on the number of graphs), so nothing waits for the graph count. Each graph gets a
  uniform grid over its bounding box with cubic cells of edge
  ``h_g = max(r * (1 + 2^-10), L_g / (M_g^(1/3) - 1))``, ``L_g`` its longest extent and
  ``M_g = 2 N_g + 8``: then each axis has ``floor(ext / h_g) + 1 <= M_g^(1/3)`` cells, so the grid of
  a graph has at most ``M_g`` cells and all grids fit in ``10 N`` cells, allocated without a read.
  Cells are keyed ``base_g + (cx * ny + cy) * nz + cz``: the three cells along z next to a cell are
  adjacent keys, so its 27 neighbor cells are 9 runs of slots.
* BIN (Triton): the key of every node (float64 arithmetic, clamped, NaN-safe). One stable
  ``torch.sort`` of the ``N`` keys orders the nodes by cell (ascending index inside a cell), and one
  ``searchsorted`` gives every cell's first slot. No per-cell Python loop, no candidate lists.
* COUNT (Triton): one program per ``BLOCK_T`` consecutive slots (neighbors in space); each target
  lane decodes its cell and scans its 9 runs in ``[BLOCK_T, BLOCK_C]`` distance tiles. Counts are
  stored per target (original index): no atomics.
* Scan: ``ptr = cumsum(counts)`` (the CSR pointer of the output). The one read: ``ptr[-1]`` and the
  largest count, to size the output and to raise on ``max_num_neighbors``.
* FILL (Triton): the same scan writes each hit (source, target) at ``ptr[i] + running count``, then,
  after a CTA barrier, the program reloads its targets' lists ``[rows, SEG]`` (``SEG`` the next power of
  two of the largest count) and sorts them by source in registers (``tl.sort``) before storing them
  back. A cell scan cannot emit sources in index order (27 sorted runs), so each list is put in order
  where it was written, while it is in L1/L2: no global sort of the edge list, no second pass over
  it. Lists longer than ``SORT_MAX`` (very dense graphs) fall back to one ``torch.sort`` of the keys.
* ``max_num_neighbors`` over the limit: ``ValueError`` (the reference's message), or with
  ``truncate=True`` the nearest (ties: smaller index) by stable sorts: a rare path that reads more.
* Launches: CELLS (the grid sizes of every graph), BIN, COUNT, FILL (4 Triton kernels) plus about
  twenty small torch ops (graph ids, boxes, the key sort, searchsorted, the scan);
  ``tests/test_triton.py`` counts them and the reads.
* Registers (ptxas for sm_90a, without a GPU): BIN 58; COUNT 16 x 32 tile 162 (float64: 188); FILL +
  sort 188 / 193 / 114 / 64 at SEG = 32 / 64 / 256 / 1024, 128 at SEG = 4096 (8 warps); no spills.
  (A 32 x 32 COUNT tile took 255 registers and spilled.) The PTX of FILL + sort has plain (coherent)
  ``ld.global`` after ``bar.sync``, no ``ld.global.nc``, no ``fma``, ``sqrt.rn``.

kNN: an expanding radius, one device->host read per round (plus one at the start for the initial
radius). Each round bins for radius ``R`` and counts every open target; a target is done when it has
at least ``min(k, graph size - self)`` candidates within ``R`` (then its k nearest, ties by index, are
among them: exact), or when ``R`` reached ``r``. Done targets are filled (masked FILL with distances)
and their k nearest selected by stable sorts and scattered to their final places without a read;
``R`` doubles for the others (infinite past twice the largest graph diagonal, which ends the loop).

Exactness and FMA
-----------------
Distances are ``sqrt((dx*dx + dy*dy) + dz*dz)`` with ``d = pos_j - pos_i`` in the dtype of ``pos``,
compared ``<= r`` with ``r`` rounded to that dtype, like :func:`pamnet_fast.ops.reference.pair_distance`.
Compiled for a GPU, two things could make a distance differ from the CPU's in the last bit (which
matters only for pairs within ~1 ulp of ``r``): (1) Triton contracts ``dx*dx + dy*dy`` into an FMA by
default; (2) ``tl.sqrt`` is ``sqrt.approx.f32``. So these kernels are launched with
``enable_fp_fusion=False`` (no contraction, ``ptxas --fmad=false``) and float32 uses ``tl.sqrt_rn``
(IEEE; float64 ``sqrt`` is always IEEE). ``tests/test_triton.py`` compiles them for sm_90 and checks
the PTX (no ``fma``, ``sqrt.rn``). Cells are ``r * (1 + 2^-10)`` wide and binned in float64, so
rounding never hides a neighbor cell. (Established under the interpreter and by compiling to PTX; the
GPU check is ``benchmarks/gpu_check.py``.)
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import checks, validate
from ._common import scalars

BLOCK_T = 16     # targets per COUNT program (consecutive slots: neighbors in space)
BLOCK_C = 32     # candidates per distance tile of COUNT
FILL_TILE = 512  # elements of a FILL distance tile: rows * BLOCK_C (162 registers, no spills at 512)
SORT_MAX = 4096  # longest list sorted in registers by FILL; longer ones use one global sort
_CELL_MARGIN = 1.0 + 2.0 ** -10  # cell edge slightly above r: rounding never hides a neighbor cell
_PAD = tl.constexpr(2 ** 62)  # sorts after every node index


def _launch(kernel, grid, *args, **meta):
    """Every Triton launch of this module goes through here (the tests count them)."""
    kernel[grid](*args, **meta)


def _read(t: Tensor) -> list:
    """The device->host reads of this module (the tests count them)."""
    return t.tolist()


@triton.jit
def _cells_kernel(ext_ptr, size_ptr, h, edge_ptr, dims_ptr, cells_ptr, n, BLOCK: tl.constexpr):
    """Per graph row g (of N): the cell edge ``h_g = max(h, L_g / (M_g^(1/3) - 1) * (1 + 1e-6))``,
    the cells per axis ``floor(ext / h_g) + 1`` and their product (0 for unused rows): the grid sizes
    of the module docstring in one launch instead of a score of small torch ops. ``h`` arrives as
    float32 (a kernel float argument): still above ``r`` by ~2^-10, all that the grid needs."""
    g = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = g < n
    ex = tl.load(ext_ptr + g * 3, mask=m, other=0.0)
    ey = tl.load(ext_ptr + g * 3 + 1, mask=m, other=0.0)
    ez = tl.load(ext_ptr + g * 3 + 2, mask=m, other=0.0)
    size = tl.load(size_ptr + g, mask=m, other=0)
    longest = tl.maximum(tl.maximum(ex, ey), ez)
    root = tl.exp(tl.log((2 * size + 8).to(tl.float64)) / 3.0)  # >= 2: M_g >= 8
    edge = tl.maximum(longest / (root - 1.0) * (1.0 + 1e-6), tl.zeros([BLOCK], dtype=tl.float64) + h)
    nx = tl.floor(ex / edge).to(tl.int64) + 1
    ny = tl.floor(ey / edge).to(tl.int64) + 1
    nz = tl.floor(ez / edge).to(tl.int64) + 1
    tl.store(edge_ptr + g, edge, mask=m)
    tl.store(dims_ptr + g * 3, nx, mask=m)
    tl.store(dims_ptr + g * 3 + 1, ny, mask=m)
    tl.store(dims_ptr + g * 3 + 2, nz, mask=m)
    tl.store(cells_ptr + g, tl.where(size > 0, nx * ny * nz, 0), mask=m)


@triton.jit
def _bin_kernel(pos_ptr, graph_ptr, lo_ptr, h_ptr, dims_ptr, base_ptr, key_ptr, n, BLOCK: tl.constexpr):
    """key[i] = base[g] + (cx * ny + cy) * nz + cz, the cell of node i in the grid of its graph g."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    g = tl.load(graph_ptr + i, mask=m, other=0)
    h = tl.load(h_ptr + g, mask=m, other=1.0)
    local = tl.zeros([BLOCK], dtype=tl.int64)
    for a in tl.static_range(3):
        p = tl.load(pos_ptr + i * 3 + a, mask=m, other=0.0).to(tl.float64)
        lo = tl.load(lo_ptr + g * 3 + a, mask=m, other=0.0)
        dim = tl.load(dims_ptr + g * 3 + a, mask=m, other=1)
        c = tl.floor((p - lo) / h)
        top = (dim - 1).to(tl.float64)
        c = tl.where(c > 0, c, 0.0)  # also NaN (inf / inf, 0 * inf)
        c = tl.where(c < top, c, top)
        local = local * dim + c.to(tl.int64)
    tl.store(key_ptr + i, tl.load(base_ptr + g, mask=m, other=0) + local, mask=m)


@triton.jit
def _scan_kernel(pos_ptr, key_ptr, order_ptr, graph_ptr, dims_ptr, base_ptr, cell_start_ptr, r_ptr,
                 active_ptr, ptr_ptr, count_ptr, out_src_ptr, out_dst_ptr, out_dist_ptr, n,
                 LOOP: tl.constexpr, FILL: tl.constexpr, SORT: tl.constexpr, WITH_DIST: tl.constexpr,
                 HAS_ACTIVE: tl.constexpr, IS_F64: tl.constexpr, BLOCK_T: tl.constexpr,
                 BLOCK_C: tl.constexpr, SEG: tl.constexpr):
    """COUNT (``FILL`` false): neighbors of each target. FILL: write them at ``ptr[target]``, sorted
    by source when ``SORT``. Targets are the slots (cell order) of this program's tile; ``pos`` is
    in slot order and ``order`` maps a slot to its node."""
    slot = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    tmask = slot < n
    tgt = tl.load(order_ptr + slot, mask=tmask, other=0)
    if HAS_ACTIVE:
        tmask = tmask & (tl.load(active_ptr + tgt, mask=tmask, other=0) != 0)
    g = tl.load(graph_ptr + tgt, mask=tmask, other=0)
    nx = tl.load(dims_ptr + g * 3, mask=tmask, other=1)
    ny = tl.load(dims_ptr + g * 3 + 1, mask=tmask, other=1)
    nz = tl.load(dims_ptr + g * 3 + 2, mask=tmask, other=1)
    base = tl.load(base_ptr + g, mask=tmask, other=0)
    local = tl.load(key_ptr + slot, mask=tmask, other=0) - base
    cz = local % nz
    cy = (local // nz) % ny
    cx = local // (nz * ny)
    z0 = tl.maximum(cz - 1, 0)
    z1 = tl.minimum(cz + 1, nz - 1)
    tx = tl.load(pos_ptr + slot * 3, mask=tmask, other=0.0)
    ty = tl.load(pos_ptr + slot * 3 + 1, mask=tmask, other=0.0)
    tz = tl.load(pos_ptr + slot * 3 + 2, mask=tmask, other=0.0)
    r = tl.load(r_ptr)
    count = tl.zeros([BLOCK_T], dtype=tl.int32)
    if FILL:
        at = tl.load(ptr_ptr + tgt, mask=tmask, other=0)
    for q in range(9):  # the 9 rows of 3 cells along z (a loop, not unrolled: fewer registers)
        x = cx + (q // 3 - 1)
        y = cy + (q % 3 - 1)
        valid = tmask & (x >= 0) & (x < nx) & (y >= 0) & (y < ny)
        row = base + (x * ny + y) * nz
        s = tl.load(cell_start_ptr + row + z0, mask=valid, other=0)
        length = tl.load(cell_start_ptr + row + z1 + 1, mask=valid, other=0) - s
        for j0 in range(0, tl.max(length, axis=0), BLOCK_C):
            jj = j0 + tl.arange(0, BLOCK_C)
            cmask = jj[None, :] < length[:, None]
            cand = s[:, None] + jj[None, :]
            dx = tl.load(pos_ptr + cand * 3, mask=cmask, other=0.0) - tx[:, None]
            dy = tl.load(pos_ptr + cand * 3 + 1, mask=cmask, other=0.0) - ty[:, None]
            dz = tl.load(pos_ptr + cand * 3 + 2, mask=cmask, other=0.0) - tz[:, None]
            sq = dx * dx + dy * dy
            sq = sq + dz * dz
            if IS_F64:
                dist = tl.sqrt(sq)
            else:
                dist = tl.sqrt_rn(sq)
            hit = (dist <= r) & cmask
            if not LOOP:
                hit = hit & (cand != slot[:, None])
            hit32 = hit.to(tl.int32)
            if FILL:
                out = at[:, None] + (count[:, None] + tl.cumsum(hit32, axis=1) - 1)
                src = tl.load(order_ptr + cand, mask=hit, other=0)
                tl.store(out_src_ptr + out, src, mask=hit)
                tl.store(out_dst_ptr + out, tl.broadcast_to(tgt[:, None], [BLOCK_T, BLOCK_C]), mask=hit)
                if WITH_DIST:
                    tl.store(out_dist_ptr + out, dist, mask=hit)
            count += tl.sum(hit32, axis=1)
    if FILL:
        if SORT:
            # The lists were written by this program: after the barrier its threads see each
            # other's stores. Sort them by source in registers and store them back.
            tl.debug_barrier()
            k = tl.arange(0, SEG)
            lmask = tmask[:, None] & (k[None, :] < count[:, None])
            lst = tl.load(out_src_ptr + at[:, None] + k[None, :], mask=lmask, other=_PAD)
            lst = tl.sort(lst, dim=1)
            tl.store(out_src_ptr + at[:, None] + k[None, :], lst, mask=lmask)
    else:
        tl.store(count_ptr + tgt, count.to(tl.int64), mask=tmask)


class _Grid(NamedTuple):
    order: Tensor       # [N] slot -> node (by cell, ascending node inside a cell)
    key: Tensor         # [N] cell key of each slot, non-decreasing
    pos: Tensor         # [N, 3] positions in slot order (dtype of pos)
    dims: Tensor        # [N, 3] cells per axis of each graph (rows past the graph count unused)
    base: Tensor        # [N] first cell key of each graph
    cell_start: Tensor  # [10 N + 2] first slot of each cell key


class _Graphs(NamedTuple):
    graph: Tensor  # [N] dense graph id 0.. of each node
    lo: Tensor     # [N, 3] float64 box corner of each graph
    ext: Tensor    # [N, 3] float64 box extent of each graph (0 where unused or not finite)
    size: Tensor   # [N] atoms of each graph


def _graphs(pos: Tensor, batch: Optional[Tensor]) -> _Graphs:
    """Dense graph ids and per-graph boxes, in arrays of N rows (no read of the graph count)."""
    n, dev = pos.size(0), pos.device
    graph = torch.zeros(n, dtype=torch.int64, device=dev)
    if batch is not None and n > 1:
        torch.cumsum(batch[1:] != batch[:-1], 0, out=graph[1:])
    p64 = pos.to(torch.float64)
    idx = graph[:, None].expand(-1, 3)
    lo = torch.full((n, 3), math.inf, dtype=torch.float64, device=dev).scatter_reduce_(0, idx, p64, "amin")
    hi = torch.full((n, 3), -math.inf, dtype=torch.float64, device=dev).scatter_reduce_(0, idx, p64, "amax")
    size = torch.zeros(n, dtype=torch.int64, device=dev).index_add_(0, graph, torch.ones_like(graph))
    ext = torch.nan_to_num(hi - lo, nan=0.0, posinf=0.0, neginf=0.0)
    return _Graphs(graph, torch.nan_to_num(lo, nan=0.0, posinf=0.0, neginf=0.0), ext, size)


def _grid(pos: Tensor, gr: _Graphs, h: float) -> _Grid:
    """Bin the nodes into per-graph grids of cells at least ``h`` wide (see the module docstring)."""
    n, dev = pos.size(0), pos.device
    # Each axis then has floor(ext / edge) + 1 <= max_cells^(1/3) cells (1e-6: rounding of the root).
    edge = torch.empty(n, dtype=torch.float64, device=dev)
    dims = torch.empty(n, 3, dtype=torch.int64, device=dev)
    cells = torch.empty(n, dtype=torch.int64, device=dev)
    _launch(_cells_kernel, (triton.cdiv(n, 256),), gr.ext, gr.size, h, edge, dims, cells, n, BLOCK=256)
    base = torch.cumsum(cells, 0) - cells
    key = torch.empty(n, dtype=torch.int64, device=dev)
    _launch(_bin_kernel, (triton.cdiv(n, 256),), pos, gr.graph, gr.lo, edge, dims, base, key, n, BLOCK=256)
    key_sorted, order = torch.sort(key, stable=True)
    cell_start = torch.searchsorted(key_sorted, torch.arange(10 * n + 2, device=dev))
    return _Grid(order, key_sorted, pos[order].contiguous(), dims, base, cell_start)


def _scan(grid: _Grid, gr: _Graphs, r_t: Tensor, loop: bool, active: Optional[Tensor] = None,
          ptr: Optional[Tensor] = None, total: int = 0, seg: int = 0, with_dist: bool = False):
    """COUNT (``ptr`` None): ``[N]`` neighbor counts. FILL: ``(src, dst, dist)`` of ``total`` edges
    at ``ptr`` (lists sorted by source when ``0 < seg``; ``dist`` only ``with_dist``)."""
    n, dev = grid.order.numel(), grid.pos.device
    fill = ptr is not None
    act = active if active is not None else grid.order
    if fill:
        src = torch.empty(total, dtype=torch.int64, device=dev)
        dst = torch.empty(total, dtype=torch.int64, device=dev)
        dist = torch.empty(total if with_dist else 0, dtype=grid.pos.dtype, device=dev)
        if total == 0:
            return src, dst, dist
        rows = max(1, min(BLOCK_T, FILL_TILE // max(seg, 1)))
        block_c = min(256, FILL_TILE // rows)
        count = src
    else:
        count = torch.zeros(n, dtype=torch.int64, device=dev)
        src = dst = dist = ptr = count
        rows, block_c = BLOCK_T, BLOCK_C
    _launch(_scan_kernel, (triton.cdiv(n, rows),), grid.pos, grid.key, grid.order, gr.graph, grid.dims,
            grid.base, grid.cell_start, r_t, act, ptr, count, src, dst, dist if with_dist else src, n,
            LOOP=bool(loop), FILL=fill, SORT=seg > 0, WITH_DIST=with_dist, HAS_ACTIVE=active is not None,
            IS_F64=grid.pos.dtype == torch.float64, BLOCK_T=rows, BLOCK_C=block_c, SEG=max(seg, 1),
            num_warps=4 if seg <= 1024 else 8, enable_fp_fusion=False)
    return (src, dst, dist) if fill else count


def _rounded(r: float, dtype) -> float:
    """``r`` rounded to ``dtype``, on the host (no read of the device copy)."""
    if dtype != torch.float32:
        return float(r)
    with np.errstate(over="ignore"):
        return float(np.float32(r))


def _csr(counts: Tensor) -> Tensor:
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=counts.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr


def _sort_edges(src: Tensor, dst: Tensor, n: int):
    """Edges sorted by (target, source) and the CSR pointer, without a read (the fallback order)."""
    key = torch.sort(dst * n + src).values
    dst = key // n
    ptr = torch.searchsorted(dst, torch.arange(n + 1, device=dst.device))
    return torch.stack([key % n, dst]), ptr


def _nearest_order(dst: Tensor, src: Tensor, dist: Tensor) -> Tensor:
    """Permutation sorting the entries by (target, distance, source)."""
    o = torch.sort(src, stable=True).indices
    o = o[torch.sort(dist[o], stable=True).indices]
    return o[torch.sort(dst[o], stable=True).indices]


def _empty(pos: Tensor):
    return (torch.zeros(2, 0, dtype=torch.int64, device=pos.device),
            torch.zeros(1, dtype=torch.int64, device=pos.device))


def radius_graph(pos: Tensor, r: float, batch: Optional[Tensor], loop: bool, max_num_neighbors: int,
                 truncate: bool, check_values: bool = True):
    """Schema kernel of ``pamnet_fast::radius_graph``: ``(edge_index [2, E], ptr [N + 1])``. One host
    read (the edge total), and one more for the value checks with ``check_values``."""
    validate.radius_graph(pos, r, batch, max_num_neighbors, values=check_values)
    checks.not_capturing("radius_graph", pos, "sizing the edge list")
    n = pos.size(0)
    if n == 0:
        return _empty(pos)
    pos = pos.contiguous()
    gr = _graphs(pos, batch)
    r_t = scalars(pos, r)
    grid = _grid(pos, gr, _rounded(r, pos.dtype) * _CELL_MARGIN)
    counts = _scan(grid, gr, r_t, loop)
    ptr = _csr(counts)
    total, max_count = _read(torch.stack([ptr[-1], counts.max()]))  # the one device->host read
    over = 0 <= max_num_neighbors < max_count
    if over and not truncate:
        raise ValueError(
            f"radius_graph: a node has {max_count} neighbors within r={r}, more than "
            f"max_num_neighbors={max_num_neighbors}; raise max_num_neighbors or pass truncate=True "
            f"to keep the nearest ones")
    if not over and max_count <= SORT_MAX:
        seg = triton.next_power_of_2(max(max_count, 1))
        src, dst, _ = _scan(grid, gr, r_t, loop, ptr=ptr, total=total, seg=seg)
        return torch.stack([src, dst]), ptr
    src, dst, dist = _scan(grid, gr, r_t, loop, ptr=ptr, total=total, with_dist=over)
    if not over:
        return _sort_edges(src, dst, n)
    # Truncation (rare): the max_num_neighbors nearest of each target, ties by the smaller index.
    o = _nearest_order(dst, src, dist)
    rank = torch.arange(total, device=pos.device) - ptr[dst[o]]
    keep = o[rank < max_num_neighbors]
    return _sort_edges(src[keep], dst[keep], n)


def knn_graph(pos: Tensor, k: int, batch: Optional[Tensor], r: Optional[float], loop: bool):
    """Schema kernel of ``pamnet_fast::knn_graph``: the k nearest (ties by index) within ``r``."""
    validate.knn_graph(pos, k, batch, r)
    checks.not_capturing("knn_graph", pos, "sizing the edge list")
    n = pos.size(0)
    if n == 0:
        return _empty(pos)
    dev = pos.device
    pos = pos.contiguous()
    gr = _graphs(pos, batch)
    need = (gr.size[gr.graph] - (0 if loop else 1)).clamp(max=k)  # candidates that make a target done
    diag = gr.ext.norm(dim=1)
    # Initial radius: the k-NN radius of a uniform box, smallest over graphs with extent.
    est = 0.4 * diag * ((k + 1) / gr.size.clamp(min=1).to(torch.float64)) ** (1.0 / 3.0)
    est = torch.where((gr.size > 1) & (diag > 0), est, math.inf)
    radius, diag_max = _read(torch.stack([est.min(), diag.max()]))
    if not math.isfinite(radius):
        radius = 1.0
    r_cap = math.inf if r is None else _rounded(r, pos.dtype)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    src_out = torch.full((n * k,), -1, dtype=torch.int64, device=dev)  # slot t * k + rank of target t
    while True:
        radius = min(radius, r_cap)
        final = radius >= r_cap
        r_t = scalars(pos, radius)
        grid = _grid(pos, gr, _rounded(radius, pos.dtype) * _CELL_MARGIN)
        counts = _scan(grid, gr, r_t, loop, active=active)
        done = active if final else active & (counts >= need)
        ptr = _csr(torch.where(done, counts, 0))
        active = active & ~done
        total, still_open = _read(torch.stack([ptr[-1], active.sum()]))  # one read per round
        src, dst, dist = _scan(grid, gr, r_t, loop, active=done, ptr=ptr, total=total, with_dist=True)
        o = _nearest_order(dst, src, dist)
        d = dst[o]
        rank = torch.arange(total, device=dev) - ptr[d]
        # The k nearest of each done target go to its k slots; the others to a spare slot.
        slot = torch.where(rank < k, d * k + rank, n * k)
        spare = torch.cat([src_out, src_out.new_empty(1)])
        spare.index_put_((slot,), src[o])
        src_out = spare[:-1]
        if not still_open:
            break
        radius *= 2.0
        if radius > 2.0 * diag_max:
            radius = math.inf
    # Targets with fewer than k neighbors within r leave -1 slots: drop them, sort each list by source.
    dst_out = torch.arange(n * k, device=dev) // k
    key = torch.where(src_out >= 0, dst_out * n + src_out, n * n)
    key = torch.sort(key).values
    counts = torch.minimum(_csr_counts(src_out, n, k), torch.tensor(k, device=dev))
    ptr = _csr(counts)
    total = _read(ptr[-1:])[0]
    key = key[:total]
    return torch.stack([key % n, key // n]), ptr


def _csr_counts(src_out: Tensor, n: int, k: int) -> Tensor:
    return (src_out.view(n, k) >= 0).sum(1)
