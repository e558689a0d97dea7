"""The cell grids of the neighbor search (:mod:`.neighbors`): GRAPHS (with TILES), BIN and SLOTS
kernels and the one scratch allocation they share.

* GRAPHS: one program per ``ROWS`` rows ``p``. Where node ``p`` starts a graph (a run of equal batch
  values: the batch is sorted when the values are checked), the program walks the graph in tiles of
  ``BLOCK`` nodes: its bounding box, its atom count, and the row ``p`` written to each of its nodes.
  Then its grid: cubic cells of edge ``h_g = max(h, L_g / (M_g^(1/3) - 1) * (1 + 1e-6))``, ``L_g``
  the longest extent, ``M_g = 2 N_g + 8``, and ``n_a = min(floor(ext_a / h_g) + 1, k_g)`` cells per
  axis with ``k_g`` the largest integer with ``k_g^3 <= M_g`` (the cap never binds for finite boxes; it
  keeps NaN/inf boxes in bounds). The cells of the graph at row ``p`` are the keys
  ``[10 p, 10 p + M_g)``: the next graph starts at ``p + N_g`` and ``M_g <= 10 N_g``, so grids never
  overlap and no prefix sum over the graphs is needed; every key is ``< 10 N`` (``N`` nodes: the
  graph at ``p`` has ``N_g <= N - p``). One program walks a whole graph: a graph of ``N_g`` atoms
  takes ``N_g / BLOCK`` steps, small graphs one. Without a batch (one graph, e.g. a ribosome) and
  more than ``BLOCK`` nodes, TILES first reduces every tile of ``BLOCK`` nodes in parallel (its box,
  row 0 for its nodes) and the program of row 0 reduces the tile boxes: one step per ``BLOCK``
  tiles instead of a serial walk of ``N / BLOCK`` steps (165k atoms: 162), for one launch more.
* BIN: the key ``10 g + (cx * ny + cy) * nz + cz`` of every node (float64, clamped, NaN-safe).
* (``torch.sort`` of the keys, in :mod:`.neighbors`.)
* SLOTS: the positions in slot (cell) order, and the first slot of every cell key ``0..10 N`` by a
  binary search in the sorted keys: the table that the scans read 27 neighbor cells from.

Non-finite positions (``check_values=False``): a NaN coordinate is left out of the box, an infinite
one makes the extent non-finite, which gives the graph a single cell; BIN clamps every cell
coordinate (NaN to 0) into the grid. So keys stay in their graph's range and no kernel reads or
writes out of bounds; NaN distances are never ``<= r`` (no edge, as in the reference).
"""
from __future__ import annotations

import struct
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

_INF = tl.constexpr(float("inf"))
CELLS_PER_NODE = 10  # key space of the grids: 10 N (see the module docstring)
BOX_COLS = 8         # box table: lo xyz, cell edge, extent xyz, unused (float64)
GRAPH_ROWS = 16     # rows per GRAPHS program
GRAPH_BLOCK = 1024  # nodes per step of a GRAPHS program along its graph
GRAPH_WARPS = 8
DIMS_COLS = 4        # dims table: cells along x, y, z; atoms of the graph (0 unless p starts one)


class Workspace(NamedTuple):
    """Views of one int64 allocation (one ``torch.empty`` instead of one per array)."""
    box: Tensor         # [N, 8] float64, by graph row (see BOX_COLS)
    dims: Tensor        # [N, 4] int64, by graph row (see DIMS_COLS)
    row: Tensor         # [N] graph row (first node of its graph) of each node
    key: Tensor         # [N] cell key of each node
    totals: Tensor      # [2] edge total and largest count, accumulated by COUNT
    counts: Tensor      # [N + 1] 0, then the neighbor count of each node (ptr = cumsum)
    cell_start: Tensor  # [10 N + 1] first slot of each cell key
    pos: Tensor         # [N, 3] positions in slot order (dtype of pos)
    tiles: Tensor       # [ceil(N / GRAPH_BLOCK), 8] per tile: lo xyz, inf, hi xyz, -inf (dtype of pos)


def workspace(pos: Tensor) -> Workspace:
    n = pos.size(0)
    # (totals and counts are one block [3 + N], whose head GRAPHS, or TILES before it, zeroes)
    tiles = triton.cdiv(n, GRAPH_BLOCK)
    sizes = [n * BOX_COLS, n * DIMS_COLS, n, n, 2, n + 1, CELLS_PER_NODE * n + 1,
             -(-3 * n * pos.element_size() // 8), tiles * 8 * pos.element_size() // 8]
    ws = torch.empty(sum(sizes), dtype=torch.int64, device=pos.device)
    parts, at = [], 0
    for s in sizes:
        parts.append(ws[at:at + s])
        at += s
    box, dims, row, key, totals, counts, cell_start, spos, tile_box = parts
    return Workspace(box.view(torch.float64).view(n, BOX_COLS), dims.view(n, DIMS_COLS), row, key,
                     totals, counts, cell_start, spos.view(pos.dtype)[:3 * n].view(n, 3),
                     tile_box.view(pos.dtype).view(tiles, 8))


def float_bits(x: float, dtype) -> int:
    """The bits of ``x`` in ``dtype`` as an int kernel argument: exact where a Python float argument
    would be rounded to float32 (kernels read it back with :func:`from_bits`)."""
    if dtype == torch.float64:
        return struct.unpack("<q", struct.pack("<d", x))[0]
    return struct.unpack("<i", struct.pack("<f", x))[0]  # x: already a float32 value


@triton.jit
def from_bits(bits, IS_F64: tl.constexpr):
    if IS_F64:
        x = bits.to(tl.int64).to(tl.float64, bitcast=True)
    else:
        x = bits.to(tl.int32).to(tl.float32, bitcast=True)
    return x


@triton.jit
def _zero_totals(totals_ptr):
    """COUNT's totals and, right after them, the 0 before its counts (ptr = cumsum)."""
    tl.store(totals_ptr + tl.arange(0, 4), tl.zeros([4], dtype=tl.int64), mask=tl.arange(0, 4) < 3)


@triton.jit
def _tiles_kernel(pos_ptr, tiles_ptr, row_ptr, totals_ptr, n, BLOCK: tl.constexpr):
    """One graph (no batch): the box of the finite coordinates of tile ``t``'s ``BLOCK`` nodes
    (``tiles[t]``: lo xyz, inf, hi xyz, -inf; +-inf where none is finite) and row 0 for its nodes."""
    pid = tl.program_id(0)
    if pid == 0:
        _zero_totals(totals_ptr)
    j = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = j < n
    tl.store(row_ptr + j, tl.zeros([BLOCK], dtype=tl.int64), mask=m)
    cols = tl.arange(0, 4)
    pm = m[:, None] & (cols[None, :] < 3)
    x = tl.load(pos_ptr + j[:, None] * 3 + cols[None, :], mask=pm, other=0.0)
    ok = pm & (x == x)  # NaN stays out of the box
    tl.store(tiles_ptr + pid * 8 + cols, tl.min(tl.where(ok, x, _INF), axis=0))
    tl.store(tiles_ptr + pid * 8 + 4 + cols, tl.max(tl.where(ok, x, -_INF), axis=0))


@triton.jit(do_not_specialize=["h_bits", "num_tiles"])
def _graphs_kernel(pos_ptr, batch_ptr, h_bits, box_ptr, dims_ptr, row_ptr, totals_ptr, n,
                   tiles_ptr, num_tiles, HAS_BATCH: tl.constexpr, TILED: tl.constexpr,
                   ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """Rows ``p`` of this program: box, atoms and grid of the graph that starts at ``p``, and the row
    of its nodes (module docstring); rows that start no graph: 0 atoms, one cell. ``TILED`` (one
    graph, no batch): the box from TILES' ``num_tiles`` tile boxes, which also wrote the rows."""
    pid = tl.program_id(0)
    if pid == 0 and not TILED:
        _zero_totals(totals_ptr)
    h = from_bits(h_bits, True)
    lanes = tl.arange(0, BLOCK)
    for q in range(ROWS):
        p = pid.to(tl.int64) * ROWS + q
        if p < n:
            if HAS_BATCH:
                b0 = tl.load(batch_ptr + p)
                start = (p == 0) | (tl.load(batch_ptr + p - 1, mask=p > 0, other=0) != b0)
            else:
                start = p == 0
            cols = tl.arange(0, 4)
            size = tl.zeros([], dtype=tl.int64)
            lo = tl.zeros([4], dtype=tl.float64)
            ext = tl.zeros([4], dtype=tl.float64)
            if start:
                # (min and max in the dtype of pos: exact, and half the registers for float32)
                lo_t = tl.full([BLOCK, 4], _INF, dtype=pos_ptr.dtype.element_ty)
                hi_t = tl.full([BLOCK, 4], -_INF, dtype=pos_ptr.dtype.element_ty)
                j0 = p
                end = tl.zeros([], dtype=tl.int64) + n
                more = p < n
                if TILED:  # the tile boxes, BLOCK at a time, instead of the nodes
                    more = p < 0
                    t0 = 0
                    while t0 < num_tiles:
                        t = t0 + lanes
                        tm = (t < num_tiles)[:, None] & (cols[None, :] < 3)
                        lo_t = tl.minimum(lo_t, tl.load(tiles_ptr + t[:, None] * 8 + cols[None, :],
                                                        mask=tm, other=_INF))
                        hi_t = tl.maximum(hi_t, tl.load(tiles_ptr + t[:, None] * 8 + 4 + cols[None, :],
                                                        mask=tm, other=-_INF))
                        t0 += BLOCK
                while more:  # tiles of the graph, until the batch value changes
                    j = j0 + lanes
                    m = j < n
                    if HAS_BATCH:
                        b = tl.load(batch_ptr + j, mask=m, other=0)
                        end = tl.min(tl.where(m & (b != b0), j, n))
                    inside = m & (j < end)
                    tl.store(row_ptr + j, tl.zeros([BLOCK], dtype=tl.int64) + p, mask=inside)
                    pm = inside[:, None] & (cols[None, :] < 3)
                    x = tl.load(pos_ptr + j[:, None] * 3 + cols[None, :], mask=pm, other=0.0)
                    ok = pm & (x == x)  # NaN stays out of the box
                    lo_t = tl.minimum(lo_t, tl.where(ok, x, _INF))
                    hi_t = tl.maximum(hi_t, tl.where(ok, x, -_INF))
                    j0 += BLOCK
                    more = (end == n) & (j0 < n)
                size = end - p
                lo = tl.min(lo_t, axis=0).to(tl.float64)  # [4]: x, y, z, inf
                ext = tl.max(hi_t, axis=0).to(tl.float64) - lo
                ext = tl.where((cols < 3) & (ext >= 0) & (ext < _INF), ext, 0.0)  # NaN, inf: one cell
                lo = tl.where((cols < 3) & (tl.abs(lo) < _INF), lo, 0.0)  # (no finite coordinate)
            longest = tl.max(ext, axis=0)
            cap = 2 * size + 8  # M_g
            root = tl.exp(tl.log(cap.to(tl.float64)) / 3.0)  # >= 2
            k = tl.floor(root).to(tl.int64)
            k = tl.where(k * k * k > cap, k - 1, k)
            k = tl.where((k + 1) * (k + 1) * (k + 1) <= cap, k + 1, k)
            edge = tl.maximum(longest / (root - 1.0) * (1.0 + 1e-6), h)
            c = tl.floor(ext / edge)
            c = tl.where(c > 0, c, 0.0)  # also NaN (edge 0)
            c = tl.where(c < (k - 1).to(tl.float64), c, (k - 1).to(tl.float64))
            dims = tl.where(cols < 3, c.to(tl.int64) + 1, size)
            tl.store(box_ptr + p * 8 + cols, tl.where(cols < 3, lo, edge))
            tl.store(box_ptr + p * 8 + 4 + cols, ext)
            tl.store(dims_ptr + p * 4 + cols, dims)


@triton.jit
def _bin_kernel(pos_ptr, row_ptr, box_ptr, dims_ptr, key_ptr, n, BLOCK: tl.constexpr):
    """key[i] = 10 g + (cx * ny + cy) * nz + cz, the cell of node i in the grid of its graph row g."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    g = tl.load(row_ptr + i, mask=m, other=0)
    h = tl.load(box_ptr + g * 8 + 3, mask=m, other=1.0)
    local = tl.zeros([BLOCK], dtype=tl.int64)
    for a in tl.static_range(3):
        p = tl.load(pos_ptr + i * 3 + a, mask=m, other=0.0).to(tl.float64)
        lo = tl.load(box_ptr + g * 8 + a, mask=m, other=0.0)
        dim = tl.load(dims_ptr + g * 4 + a, mask=m, other=1)
        c = tl.floor((p - lo) / h)
        top = (dim - 1).to(tl.float64)
        c = tl.where(c > 0, c, 0.0)  # also NaN (inf / inf, 0 * inf)
        c = tl.where(c < top, c, top)
        local = local * dim + c.to(tl.int64)
    tl.store(key_ptr + i, g * 10 + local, mask=m)


@triton.jit
def _slots_kernel(pos_ptr, order_ptr, key_ptr, pos_out_ptr, cell_start_ptr, n, num_cells, steps,
                  BLOCK: tl.constexpr):
    """Slots ``c < N``: ``pos_out[c] = pos[order[c]]``. Cells ``c < num_cells``: ``cell_start[c]`` is
    the first slot whose key is ``>= c`` (binary search in ``steps = bit_length(N)`` halvings)."""
    c = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    sm = c < n
    node = tl.load(order_ptr + c, mask=sm, other=0)
    for a in tl.static_range(3):
        tl.store(pos_out_ptr + c * 3 + a, tl.load(pos_ptr + node * 3 + a, mask=sm), mask=sm)
    cm = c < num_cells
    lo = tl.zeros([BLOCK], dtype=tl.int64)
    hi = tl.zeros([BLOCK], dtype=tl.int64) + n
    for _ in range(steps):
        open_ = cm & (lo < hi)
        mid = (lo + hi) // 2
        right = tl.load(key_ptr + mid, mask=open_, other=0) < c
        lo = tl.where(open_ & right, mid + 1, lo)
        hi = tl.where(open_ & ~right, mid, hi)
    tl.store(cell_start_ptr + c, lo, mask=cm)


def launch_graphs(launch, pos: Tensor, batch, ws: Workspace, h: float) -> None:
    """GRAPHS: boxes, atoms and grid sizes of the graphs, the graph row of each node (into ``ws``).
    ``launch``: the launcher of :mod:`.neighbors` (the tests count its calls)."""
    n = pos.size(0)
    num_tiles = ws.tiles.size(0)
    tiled = batch is None and num_tiles > 1
    if tiled:
        launch(_tiles_kernel, (num_tiles,), pos, ws.tiles, ws.row, ws.totals, n, BLOCK=GRAPH_BLOCK,
               num_warps=GRAPH_WARPS)
    launch(_graphs_kernel, (triton.cdiv(n, GRAPH_ROWS),), pos, batch if batch is not None else pos,
           float_bits(h, torch.float64), ws.box, ws.dims, ws.row, ws.totals, n, ws.tiles, num_tiles,
           HAS_BATCH=batch is not None, TILED=tiled, ROWS=GRAPH_ROWS, BLOCK=GRAPH_BLOCK,
           num_warps=GRAPH_WARPS, enable_fp_fusion=False)


def launch_grid(launch, pos: Tensor, batch, ws: Workspace, h: float) -> tuple:
    """GRAPHS, BIN, the key sort, SLOTS: ``(order, sorted keys)``; ``ws`` holds the rest."""
    n = pos.size(0)
    launch_graphs(launch, pos, batch, ws, h)
    launch(_bin_kernel, (triton.cdiv(n, 256),), pos, ws.row, ws.box, ws.dims, ws.key, n, BLOCK=256,
           enable_fp_fusion=False)
    key, order = torch.sort(ws.key, stable=True)  # nodes by cell, ascending index inside a cell
    num_cells = ws.cell_start.numel()
    launch(_slots_kernel, (triton.cdiv(num_cells, 256),), pos, order, key, ws.pos, ws.cell_start, n,
           num_cells, n.bit_length(), BLOCK=256, enable_fp_fusion=False)
    return order, key
