"""Triton neighbor search (radius and kNN graphs) against the reference twins: exact edge sets, batches,
real structures, and the launch and read budget.

Shared setup and the interpreter's rules: ``_triton_util``.
"""
import math

import pytest
import torch

triton = pytest.importorskip("triton")

from _triton_util import (DEV, DTYPES, KERNELS, REF, _batch_systems, _close, _graphs_equal, _random_pos,
                          reference, tk)

pytestmark = pytest.mark.triton


# --- radius graph ---

@pytest.mark.parametrize("dtype", DTYPES)
def test_radius_graph_random(dtype):
    pos = _random_pos(120, 5.0, dtype, 0)
    got = KERNELS["radius_graph"](pos.to(DEV), 1.3, None, False, -1, False)
    want = reference.radius_graph(pos, 1.3)
    assert want[0].size(1) > 200
    _graphs_equal(got, want)
    # a smaller radius gives a different graph (the comparison can fail)
    smaller = KERNELS["radius_graph"](pos.to(DEV), 1.0, None, False, -1, False)[0]
    assert smaller.size(1) < got[0].size(1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_radius_graph_batch_loop_int32(dtype):
    pos = _random_pos(150, 4.0, dtype, 1)
    batch = torch.tensor([0] * 40 + [2] * 1 + [3] * 79 + [7] * 30)
    got = tk.radius_graph(pos.to(DEV), 1.5, batch.int().to(DEV), loop=True, return_ptr=True,
                          return_dist=True)
    want = reference.radius_graph(pos, 1.5, batch, loop=True)
    _graphs_equal(got[:2], want)
    _close(got[2], reference.pair_distance(pos[want[0][1]], pos[want[0][0]]))
    # no edge crosses graphs
    assert torch.equal(batch[got[0][0].cpu()], batch[got[0][1].cpu()])


def test_radius_graph_edge_cases():
    for n in (0, 1):
        pos = torch.rand(n, 3)
        for loop in (False, True):
            _graphs_equal(tk.radius_graph(pos.to(DEV), 1.0, loop=loop, return_ptr=True),
                          reference.radius_graph(pos, 1.0, loop=loop))
    # coincident atoms, and atoms far apart (the cell grid is capped at 2^20 cells per dimension)
    pos = torch.tensor([[0.0, 0, 0]] * 4 + [[0.5, 0, 0], [3e7, 1e7, -2e7], [3e7, 1e7, -2e7 + 0.5]],
                       dtype=torch.float64)
    _graphs_equal(KERNELS["radius_graph"](pos.to(DEV), 1.0, None, False, -1, False),
                  reference.radius_graph(pos, 1.0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_radius_graph_pairs_at_exactly_r(dtype):
    # integer grid: many pairs at distance exactly 2 (and sqrt(2), sqrt(5), ...)
    g = torch.arange(4, dtype=dtype)
    pos = torch.cartesian_prod(g, g, g)[::2].contiguous()
    at_r = KERNELS["radius_graph"](pos.to(DEV), 2.0, None, False, -1, False)
    _graphs_equal(at_r, reference.radius_graph(pos, 2.0))
    below = float(torch.nextafter(torch.tensor(2.0, dtype=dtype), torch.tensor(0.0, dtype=dtype)))
    just_below = KERNELS["radius_graph"](pos.to(DEV), below, None, False, -1, False)
    _graphs_equal(just_below, reference.radius_graph(pos, below))
    assert just_below[0].size(1) < at_r[0].size(1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_radius_graph_max_num_neighbors(dtype):
    g = torch.arange(4, dtype=dtype)
    pos = torch.cat([torch.cartesian_prod(g, g, g), _random_pos(20, 3.0, dtype, 2)])  # ties + random
    batch = torch.tensor([0] * 64 + [1] * 20)
    with pytest.raises(ValueError) as want:
        REF["radius_graph"](pos, 1.5, batch, False, 4, False)
    with pytest.raises(ValueError) as got:
        KERNELS["radius_graph"](pos.to(DEV), 1.5, batch.to(DEV), False, 4, False)
    assert str(got.value) == str(want.value)
    assert "max_num_neighbors=4" in str(got.value)
    for m in (0, 4, 7):
        _graphs_equal(KERNELS["radius_graph"](pos.to(DEV), 1.5, batch.to(DEV), False, m, True),
                      reference.radius_graph(pos, 1.5, batch, False, m, True))
    # enough room: no error, nothing dropped
    _graphs_equal(KERNELS["radius_graph"](pos.to(DEV), 1.5, batch.to(DEV), False, 100, False),
                  reference.radius_graph(pos, 1.5, batch))


def test_radius_graph_bad_input():
    pos = torch.rand(5, 3, device=DEV)
    with pytest.raises(ValueError):
        KERNELS["radius_graph"](pos, -1.0, None, False, -1, False)
    with pytest.raises(ValueError):
        KERNELS["radius_graph"](torch.rand(5, 2, device=DEV), 1.0, None, False, -1, False)
    with pytest.raises(ValueError):
        KERNELS["radius_graph"](pos, 1.0, torch.tensor([1, 0, 0, 0, 0], device=DEV), False, -1, False)
    bad = pos.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError):
        tk.radius_graph(bad, 1.0)
    with pytest.raises(ValueError):
        tk.radius_graph(pos, 1.0, max_num_neighbors=-3)
    with pytest.raises(TypeError):
        tk.radius_graph(pos.int(), 1.0)


# --- kNN graph ---

@pytest.mark.parametrize("dtype", DTYPES)
def test_knn_graph_random(dtype):
    pos = _random_pos(100, 5.0, dtype, 3)
    got = KERNELS["knn_graph"](pos.to(DEV), 6, None, None, False)
    _graphs_equal(got, reference.knn_graph(pos, 6))
    assert got[0].size(1) == 600
    other = KERNELS["knn_graph"](pos.to(DEV), 5, None, None, False)[0]
    assert other.size(1) == 500


@pytest.mark.parametrize("dtype", DTYPES)
def test_knn_graph_batch_radius_loop(dtype):
    # graphs of 1, 3 (< k) and many atoms, an outlier (the search radius must grow), int32 batch
    pos = _random_pos(90, 4.0, dtype, 4)
    pos[60] = torch.tensor([40.0, -30.0, 25.0], dtype=dtype)
    batch = torch.tensor([0] + [1] * 3 + [4] * 56 + [5] * 30)
    for r, loop in ((None, True), (1.2, False)):
        got = tk.knn_graph(pos.to(DEV), 5, batch.int().to(DEV), r=r, loop=loop, return_ptr=True)
        _graphs_equal(got, reference.knn_graph(pos, 5, batch, r, loop))


def test_knn_graph_ties_and_coincident():
    g = torch.arange(4, dtype=torch.float32)
    pos = torch.cat([torch.cartesian_prod(g, g, g), torch.zeros(3, 3)])  # many equal distances
    for k in (1, 7):
        _graphs_equal(KERNELS["knn_graph"](pos.to(DEV), k, None, None, False),
                      reference.knn_graph(pos, k))
    _graphs_equal(KERNELS["knn_graph"](pos.to(DEV), 6, None, 1.0, False), reference.knn_graph(pos, 6, r=1.0))
    for n in (0, 1):
        _graphs_equal(tk.knn_graph(torch.rand(n, 3, device=DEV), 3, return_ptr=True),
                      reference.knn_graph(torch.rand(n, 3), 3))


def test_knn_graph_bad_input():
    pos = torch.rand(5, 3, device=DEV)
    with pytest.raises((ValueError, TypeError)):
        KERNELS["knn_graph"](pos, 0, None, None, False)
    with pytest.raises(ValueError):
        KERNELS["knn_graph"](pos, 3, None, -2.0, False)
    with pytest.raises(ValueError):
        tk.knn_graph(pos, 3, torch.tensor([0, 0, 1], device=DEV))


# --- neighbor search: batches, list sorting paths, real structures, launch and read budget ---

@pytest.mark.parametrize("dtype", DTYPES)
def test_neighbor_search_batch_of_many_systems(dtype):
    # 12 systems of 1..33 atoms in one launch sequence (grids per graph, keys never collide)
    sizes = [1 + (7 * g) % 40 for g in range(12)]
    pos, batch = _batch_systems(sizes, 3.0, dtype, 5)
    _graphs_equal(KERNELS["radius_graph"](pos.to(DEV), 1.2, batch.to(DEV), False, -1, False),
                  reference.radius_graph(pos, 1.2, batch))
    _graphs_equal(KERNELS["knn_graph"](pos.to(DEV), 4, batch.to(DEV), None, False),
                  reference.knn_graph(pos, 4, batch))


@pytest.mark.slow
def test_radius_graph_sort_paths(monkeypatch):
    from pamnet_fast.ops.triton import neighbors as nb
    pos = _random_pos(90, 3.0, torch.float32, 6)
    want = reference.radius_graph(pos, 2.5)
    # long lists (SEG = 128: 4 target rows per program), then the global-sort fallback
    assert int((want[1][1:] - want[1][:-1]).max()) > 64
    _graphs_equal(KERNELS["radius_graph"](pos.to(DEV), 2.5, None, False, -1, False), want)
    monkeypatch.setattr(nb, "SORT_MAX", 8)
    _graphs_equal(KERNELS["radius_graph"](pos.to(DEV), 2.5, None, False, -1, False), want)


@pytest.mark.slow
def test_neighbor_search_real_rna(shared_data):
    from pamnet_fast.data.structures import read_tu_structures
    s = read_tu_structures(str(shared_data / "rna_puzzles_native"))[0]
    pos = s.pos[:200].to(torch.float32)
    for r in (8.0,):
        _graphs_equal(KERNELS["radius_graph"](pos.to(DEV), r, None, False, -1, False),
                      reference.radius_graph(pos, r))
    _graphs_equal(KERNELS["knn_graph"](pos.to(DEV), 8, None, None, False), reference.knn_graph(pos, 8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_graph_box_by_tiles_equals_the_walk(dtype, monkeypatch):
    """One graph without a batch and more than one tile of nodes: TILES reduces the tiles in
    parallel and GRAPHS the tile boxes (two steps here: 19 tiles of 16 nodes), instead of walking
    the nodes. Boxes, grid sizes and rows equal those of the walk (the same graph given as a batch
    of zeros), NaN and infinite coordinates included, and so do the edges."""
    from pamnet_fast.ops.triton import neighbor_grid as ng
    monkeypatch.setattr(ng, "GRAPH_BLOCK", 16)
    pos = _random_pos(300, 6.0, dtype, 21)
    pos[290] = torch.tensor([20.0, -3.0, 9.0])  # the box's corner in tile 18, past the first step
    bad = pos.clone()
    bad[5, 0], bad[40, 2], bad[299] = math.nan, math.inf, -math.inf
    launched = []

    def launch(kernel, grid, *args, **meta):
        launched.append(kernel.fn.__name__)
        kernel[grid](*args, **meta)
    for p in (pos, bad, torch.full((20, 3), math.nan, dtype=dtype)):
        p = p.to(DEV)
        tables = []
        for batch in (None, torch.zeros(p.size(0), dtype=torch.long, device=DEV)):
            launched.clear()
            ws = ng.workspace(p)
            ng.launch_graphs(launch, p, batch, ws, 0.7)
            tables.append((ws.box[0].clone(), ws.dims[0].clone(), ws.row.clone(), ws.totals.clone(),
                           ws.counts[0].clone(), list(launched)))
        (box, dims, row, totals, zero, names), (box_w, dims_w, row_w, totals_w, zero_w, names_w) = tables
        assert names == ["_tiles_kernel", "_graphs_kernel"] and names_w == ["_graphs_kernel"]
        assert torch.equal(box.nan_to_num(), box_w.nan_to_num()) and torch.equal(dims, dims_w), (box, box_w)
        assert torch.equal(row, row_w) and not row.any()
        assert not totals.any() and not totals_w.any() and zero == 0 and zero_w == 0
    _graphs_equal(KERNELS["radius_graph"](bad.to(DEV), 1.0, None, False, -1, False, False),
                  reference.radius_graph(bad, 1.0))


def test_neighbor_search_launch_and_read_budget(monkeypatch):
    """radius_graph: 5 Triton launches (GRAPHS, BIN, SLOTS, COUNT, FILL), 5 torch ops (the scratch
    allocation, the key sort, ptr and its cumsum, the output) and one device->host read (the edge
    total and the largest count), for one graph or a batch alike; kNN: GRAPHS and one read at the
    start, then one read and 5 launches per round. Validation (which reads the batch vector) is
    excluded here: it is the same for every backend."""
    import types
    from pamnet_fast.ops.triton import neighbors as nb
    launches, reads = [], []
    launch, read = nb._launch, nb._read
    from torch.utils._python_dispatch import _disable_current_modes

    from pamnet_fast.host_syncs import _VIEWS, HostSyncCounter

    def counted_launch(kernel, *args, **meta):
        launches.append(kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__)
        with _disable_current_modes():  # the interpreter's own tensor work is not the launcher's
            launch(kernel, *args, **meta)

    monkeypatch.setattr(nb, "_launch", counted_launch)
    monkeypatch.setattr(nb, "_read", lambda t: (reads.append(t.numel()), read(t))[1])
    monkeypatch.setattr(nb, "validate", types.SimpleNamespace(radius_graph=lambda *a, **k: None,
                                                              knn_graph=lambda *a, **k: None))
    pos, batch = _batch_systems([16, 1, 24], 2.5, torch.float32, 8)
    for b in (None, batch):
        launches.clear(), reads.clear()
        counter = HostSyncCounter(python_reads=False)  # reads: counted by _read
        with counter.mode:
            got = nb.radius_graph(pos, 1.1, b, False, -1, False)
        _graphs_equal(got, reference.radius_graph(pos, 1.1, b))
        assert counter.syncs == [], counter.syncs
        assert reads == [2], reads
        assert launches == ["_graphs_kernel", "_bin_kernel", "_slots_kernel", "_scan_kernel",
                            "_scan_kernel"], launches
        # was 32 ops (34 with a batch) around 4 launches
        kernel_ops = {name: c for name, c in counter.op_counts.items() if name not in _VIEWS}
        assert kernel_ops == {"empty": 3, "sort": 1, "cumsum": 1}, kernel_ops
        assert counter.kernel_ops + len(launches) == 10
        if b is None:
            continue
        launches.clear(), reads.clear()
        counter = HostSyncCounter(python_reads=False)  # reads: counted by _read
        with counter.mode:
            got = nb.knn_graph(pos, 5, b, None, False)
        _graphs_equal(got, reference.knn_graph(pos, 5, b))
        assert counter.syncs == [], counter.syncs
        rounds = launches.count("_bin_kernel")
        assert rounds >= 1 and len(launches) == 1 + 5 * rounds, launches
        assert len(reads) == 2 + rounds, (reads, rounds)


def test_radius_graph_without_value_checks_is_safe_on_bad_values():
    """``check_values=False`` on values the checks would reject: NaN and infinite positions give the
    reference's edges (non-finite distances are never ``<= r``; the grid of such a graph is one
    cell), and an unsorted batch with negative values still gives a well-formed graph whose edges
    join nodes of one run of equal batch values (no read or write out of bounds)."""
    pos = _random_pos(60, 3.0, torch.float64, 12)
    pos[3, 0], pos[17, 2], pos[40] = math.nan, math.inf, -math.inf
    batch = torch.tensor([0] * 30 + [1] * 30)
    for b in (None, batch):
        got = KERNELS["radius_graph"](pos.to(DEV), 1.2, None if b is None else b.to(DEV), True, -1, False,
                                      False)
        _graphs_equal(got, reference.radius_graph(pos, 1.2, b, loop=True))
    # (all-NaN graphs too: the box of a graph without a finite coordinate)
    nan_pos = torch.full((5, 3), math.nan)
    _graphs_equal(KERNELS["radius_graph"](nan_pos.to(DEV), 1.0, None, False, -1, False, False),
                  reference.radius_graph(nan_pos, 1.0))
    unsorted = torch.tensor([3, 3, -1, -1, 0, 3, 3, 2] * 5 + [7] * 20)
    runs = torch.cat([torch.zeros(1, dtype=torch.long), (unsorted[1:] != unsorted[:-1]).long().cumsum(0)])
    ei, ptr = KERNELS["radius_graph"](pos.to(DEV), 1.5, unsorted.to(DEV), False, -1, False, False)
    ei, ptr = ei.cpu(), ptr.cpu()
    assert ptr[0] == 0 and ptr[-1] == ei.size(1) and bool((ptr[1:] >= ptr[:-1]).all())
    assert torch.equal(runs[ei[0]], runs[ei[1]])
    want = reference.radius_graph(pos, 1.5, runs)  # the runs as graphs
    _graphs_equal((ei, ptr), want)
