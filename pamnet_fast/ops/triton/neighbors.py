"""Radius and k-nearest-neighbor graphs on the GPU: GRAPHS, BIN, SLOTS, COUNT, one scan, FILL (with an
in-tile sort).

Design (radius graph, at most one device->host read: the edge total and largest count, together)
----------------------------------------------------------------------------------------------
* Grids without the host (:mod:`.neighbor_grid`). A graph is a run of equal batch values; it is
  known by its first node ``p`` (its row), so per-graph tables have ``N`` rows and nothing waits for
  the graph count or needs dense graph ids. GRAPHS (one Triton kernel) walks each graph: its
  bounding box, its size ``N_g``, the row of each of its nodes and its uniform grid of cubic cells of
  edge ``h_g = max(r * (1 + 2^-10), L_g / (M_g^(1/3) - 1))``, ``L_g`` its longest extent and
  ``M_g = 2 N_g + 8``: at most ``M_g <= 10 N_g`` cells, keyed from ``10 p``, so the grids of all
  graphs fit in ``10 N`` keys without a prefix sum. Cells are keyed
  ``10 p + (cx * ny + cy) * nz + cz``: the three cells along z next to a cell are adjacent keys, so
  its 27 neighbor cells are 9 runs of slots.
* BIN (Triton): the key of every node (float64 arithmetic, clamped, NaN-safe). One stable
  ``torch.sort`` of the ``N`` keys orders the nodes by cell (ascending index inside a cell). SLOTS
  (Triton): the positions in slot order and every cell's first slot (a binary search per cell). No
  per-cell Python loop, no candidate lists.
* COUNT (Triton): one program per ``BLOCK_T`` consecutive slots (neighbors in space); each target
  lane decodes its cell and scans its 9 runs in ``[BLOCK_T, BLOCK_C]`` distance tiles. Counts are
  stored per target (original index); the edge total and the largest count are accumulated by two
  integer atomics per program (exact in any order).
* Scan: ``ptr = cumsum([0, counts])`` (the CSR pointer of the output). The one read: the edge total
  and the largest count, to size the output and to raise on ``max_num_neighbors``.
* FILL (Triton): the same scan writes each hit (source, target) at ``ptr[i] + running count``, then,
  after a CTA barrier, the program reloads its targets' lists ``[rows, SEG]`` (``SEG`` the next power of
  two of the largest count) and sorts them by source in registers (``tl.sort``) before storing them
  back. A cell scan cannot emit sources in index order (27 sorted runs), so each list is put in order
  where it was written, while it is in L1/L2: no global sort of the edge list, no second pass over
  it. Lists longer than ``SORT_MAX`` (very dense graphs) fall back to one ``torch.sort`` of the keys.
* ``max_num_neighbors`` over the limit: ``ValueError`` (the reference's message), or with
  ``truncate=True`` the nearest (ties: smaller index) by stable sorts: a rare path that reads more.
* Launches of a call: GRAPHS, BIN, SLOTS, COUNT, FILL (5 Triton kernels) and 5 torch ops (one
  scratch allocation carved into every table, the key sort, ``ptr`` and its cumsum, the output),
  whatever the number of graphs; one graph of more than 1,024 atoms without a batch adds TILES
  (its box in parallel, see :mod:`.neighbor_grid`). ``tests/test_triton_neighbors.py`` pins them
  and the reads.
* Registers (ptxas for sm_90a, without a GPU): GRAPHS 128 (8 warps; 72 reducing TILES' boxes),
  TILES 48, BIN 60, SLOTS 30; COUNT
  16 x 32 tile 168; FILL + sort 216 at SEG = 64, 64 and 16 bytes of spills at SEG = 2048 (8 warps);
  the float64 FILL with distances (kNN) 255 and spills, as before. (A 32 x 32 COUNT tile took 255
  registers and spilled.) The PTX of FILL + sort has plain (coherent) ``ld.global`` after
  ``bar.sync``, no ``ld.global.nc``, no ``fma``, ``sqrt.rn``.
* ``check_values=False`` with NaN/inf positions or an unsorted batch: no kernel reads or writes out
  of bounds (:mod:`.neighbor_grid`: NaN left out of boxes, non-finite extents give one cell, cell
  coordinates clamped, at most ``M_g`` cells per grid by an integer cap); NaN/inf distances are never
  ``<= r``, so the edges are the reference's; runs of equal batch values are the graphs.

kNN: an expanding radius, one device->host read per round (plus one at the start for the initial
radius, from the boxes of GRAPHS). Each round bins for radius ``R`` and counts every open target; a
target is done when it has at least ``min(k, graph size - self)`` candidates within ``R`` (then its
k nearest, ties by index, are among them: exact), or when ``R`` reached ``r``. Done targets are
filled (masked FILL with distances) and their k nearest selected by stable sorts and scattered to
their final places without a read; ``R`` doubles for the others (infinite past twice the largest
graph diagonal, which ends the loop).

Exactness and FMA
-----------------
Distances are ``sqrt((dx*dx + dy*dy) + dz*dz)`` with ``d = pos_j - pos_i`` in the dtype of ``pos``,
compared ``<= r`` with ``r`` rounded to that dtype, like :func:`pamnet_fast.ops.reference.pair_distance`.
Compiled for a GPU, two things could make a distance differ from the CPU's in the last bit (which
matters only for pairs within ~1 ulp of ``r``): (1) Triton contracts ``dx*dx + dy*dy`` into an FMA by
default; (2) ``tl.sqrt`` is ``sqrt.approx.f32``. So these kernels are launched with
``enable_fp_fusion=False`` (no contraction, ``ptxas --fmad=false``) and float32 uses ``tl.sqrt_rn``
(IEEE; float64 ``sqrt`` is always IEEE). ``tests/test_triton_compile.py`` compiles them for sm_90 and checks
the PTX (no ``fma``, ``sqrt.rn``). ``r`` reaches them as the bits of its value in the dtype of
``pos`` (an int argument: a float one would be rounded to float32). Cells are ``r * (1 + 2^-10)``
wide and binned in float64, so rounding never hides a neighbor cell. (Established under the
interpreter and by compiling to PTX; the GPU check is ``benchmarks/gpu_check.py``.)
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import checks, validate
from ..geometry import rounded_cutoff
from . import neighbor_grid
from .neighbor_grid import Workspace, float_bits, from_bits

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


@triton.jit(do_not_specialize=["r_bits"])
def _scan_kernel(pos_ptr, key_ptr, order_ptr, row_ptr, dims_ptr, cell_start_ptr, r_bits, active_ptr,
                 ptr_ptr, count_ptr, totals_ptr, out_src_ptr, out_dst_ptr, out_dist_ptr, n,
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
    g = tl.load(row_ptr + tgt, mask=tmask, other=0)  # graph row: its cells are the keys from 10 g
    nx = tl.load(dims_ptr + g * 4, mask=tmask, other=1)
    ny = tl.load(dims_ptr + g * 4 + 1, mask=tmask, other=1)
    nz = tl.load(dims_ptr + g * 4 + 2, mask=tmask, other=1)
    base = g * 10
    local = tl.load(key_ptr + slot, mask=tmask, other=0) - base
    cz = local % nz
    cy = (local // nz) % ny
    cx = local // (nz * ny)
    z0 = tl.maximum(cz - 1, 0)
    z1 = tl.minimum(cz + 1, nz - 1)
    tx = tl.load(pos_ptr + slot * 3, mask=tmask, other=0.0)
    ty = tl.load(pos_ptr + slot * 3 + 1, mask=tmask, other=0.0)
    tz = tl.load(pos_ptr + slot * 3 + 2, mask=tmask, other=0.0)
    r = from_bits(r_bits, IS_F64)
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
        count = tl.where(tmask, count, 0).to(tl.int64)
        tl.store(count_ptr + tgt, count, mask=slot < n)  # inactive targets: 0
        # integer atomics: the same totals in any order
        tl.atomic_add(totals_ptr, tl.sum(count, axis=0))
        tl.atomic_max(totals_ptr + 1, tl.max(count, axis=0))


class _Grid(NamedTuple):
    ws: Workspace  # boxes, cells per axis, graph row of each node, cell table, sorted positions
    order: Tensor  # [N] slot -> node (by cell, ascending node inside a cell)
    key: Tensor    # [N] cell key of each slot, non-decreasing


def _grid(pos: Tensor, batch: Optional[Tensor], ws: Workspace, h: float) -> _Grid:
    """Bin the nodes into per-graph grids of cells at least ``h`` wide (GRAPHS, BIN, sort, SLOTS)."""
    return _Grid(ws, *neighbor_grid.launch_grid(_launch, pos, batch, ws, h))


def _scan(grid: _Grid, r: float, loop: bool, active: Optional[Tensor] = None,
          ptr: Optional[Tensor] = None, total: int = 0, seg: int = 0, with_dist: bool = False):
    """COUNT (``ptr`` None): neighbor counts in ``grid.ws.counts[1:]``, their sum and maximum in
    ``grid.ws.totals``. FILL: ``(edge_index [2, total], dist)`` at ``ptr`` (lists sorted by source
    when ``0 < seg``; ``dist`` only ``with_dist``). ``r``: rounded to the dtype of pos."""
    ws = grid.ws
    n, dev, dtype = grid.order.numel(), ws.pos.device, ws.pos.dtype
    fill = ptr is not None
    ei = dist = ws.counts  # (COUNT writes no edges: placeholders for the output pointers)
    if fill:
        ei = torch.empty(2, total, dtype=torch.int64, device=dev)
        dist = torch.empty(total, dtype=dtype, device=dev) if with_dist else ei
        if total == 0:
            return ei, dist
        rows = max(1, min(BLOCK_T, FILL_TILE // max(seg, 1)))
        block_c = min(256, FILL_TILE // rows)
    else:
        ptr = ws.counts
        rows, block_c = BLOCK_T, BLOCK_C
    _launch(_scan_kernel, (triton.cdiv(n, rows),), ws.pos, grid.key, grid.order, ws.row, ws.dims,
            ws.cell_start, float_bits(r, dtype), active if active is not None else ws.row, ptr,
            ws.counts[1:], ws.totals, ei[0], ei[1], dist, n,
            LOOP=bool(loop), FILL=fill, SORT=seg > 0, WITH_DIST=with_dist, HAS_ACTIVE=active is not None,
            IS_F64=dtype == torch.float64, BLOCK_T=rows, BLOCK_C=block_c, SEG=max(seg, 1),
            num_warps=4 if seg <= 1024 else 8, enable_fp_fusion=False)
    return (ei, dist) if fill else None


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


def _batch(batch: Optional[Tensor]) -> Optional[Tensor]:
    return None if batch is None else batch.contiguous()


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
    r_dtype = rounded_cutoff(r, pos.dtype)
    ws = neighbor_grid.workspace(pos)
    grid = _grid(pos, _batch(batch), ws, r_dtype * _CELL_MARGIN)
    _scan(grid, r_dtype, loop)
    ptr = torch.empty(n + 1, dtype=torch.int64, device=pos.device)
    torch.cumsum(ws.counts, 0, out=ptr)  # counts[0] is 0
    total, max_count = _read(ws.totals)  # the one device->host read
    over = 0 <= max_num_neighbors < max_count
    if over and not truncate:
        raise ValueError(
            f"radius_graph: a node has {max_count} neighbors within r={r}, more than "
            f"max_num_neighbors={max_num_neighbors}; raise max_num_neighbors or pass truncate=True "
            f"to keep the nearest ones")
    if not over and max_count <= SORT_MAX:
        seg = triton.next_power_of_2(max(max_count, 1))
        return _scan(grid, r_dtype, loop, ptr=ptr, total=total, seg=seg)[0], ptr
    ei, dist = _scan(grid, r_dtype, loop, ptr=ptr, total=total, with_dist=over)
    src, dst = ei[0], ei[1]
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
    pos, batch = pos.contiguous(), _batch(batch)
    ws = neighbor_grid.workspace(pos)
    neighbor_grid.launch_graphs(_launch, pos, batch, ws, 1.0)  # boxes and sizes: the first radius
    size = ws.dims[:, 3]
    need = (size[ws.row] - (0 if loop else 1)).clamp(max=k)  # candidates that make a target done
    diag = ws.box[:, 4:7].norm(dim=1)
    # Initial radius: the k-NN radius of a uniform box, smallest over graphs with extent.
    est = 0.4 * diag * ((k + 1) / size.clamp(min=1).to(torch.float64)) ** (1.0 / 3.0)
    est = torch.where((size > 1) & (diag > 0), est, math.inf)
    radius, diag_max = _read(torch.stack([est.min(), diag.max()]))
    if not math.isfinite(radius):
        radius = 1.0
    r_cap = math.inf if r is None else rounded_cutoff(r, pos.dtype)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    # slot t * k + rank of target t, and one spare slot (n * k) for the entries past the k nearest
    slots = torch.full((n * k + 1,), -1, dtype=torch.int64, device=dev)
    while True:
        radius = min(radius, r_cap)
        final = radius >= r_cap
        r_dtype = rounded_cutoff(radius, pos.dtype)
        grid = _grid(pos, batch, ws, r_dtype * _CELL_MARGIN)
        _scan(grid, r_dtype, loop, active=active)
        counts = ws.counts[1:]
        done = active if final else active & (counts >= need)
        ptr = _csr(counts * done)
        active = active & ~done
        total, still_open = _read(torch.stack([ptr[-1], active.sum()]))  # one read per round
        ei, dist = _scan(grid, r_dtype, loop, active=done, ptr=ptr, total=total, with_dist=True)
        src, dst = ei[0], ei[1]
        o = _nearest_order(dst, src, dist)
        d = dst[o]
        rank = torch.arange(total, device=dev) - ptr[d]
        # The k nearest of each done target go to its k slots; the others to a spare slot.
        slot = torch.where(rank < k, d * k + rank, n * k)
        slots.index_put_((slot,), src[o])
        if not still_open:
            break
        radius *= 2.0
        if radius > 2.0 * diag_max:
            radius = math.inf
    src_out = slots[:-1]
    # Targets with fewer than k neighbors within r leave -1 slots: drop them, sort each list by source.
    dst_out = torch.arange(n * k, device=dev) // k
    key = torch.where(src_out >= 0, dst_out * n + src_out, n * n)
    key = torch.sort(key).values
    ptr = _csr((src_out.view(n, k) >= 0).sum(1))
    total = _read(ptr[-1:])[0]
    key = key[:total]
    return torch.stack([key % n, key // n]), ptr

