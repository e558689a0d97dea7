"""Triton kernels against the reference twins.

Without a GPU, ``conftest.py`` sets ``TRITON_INTERPRET=1`` before anything imports Triton, and the
kernels run on CPU tensors through Triton's interpreter (slow: sizes here are small). With a GPU the
same tests run the compiled kernels on CUDA tensors.
"""
import importlib
import math
import warnings

import pytest
import torch

triton = pytest.importorskip("triton")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pamnet_fast.ops import library, reference
    from pamnet_fast.ops import triton as tk

pytestmark = pytest.mark.triton

DEV = "cuda" if torch.cuda.is_available() else "cpu"
KERNELS = tk.KERNELS
REF = library.REFERENCE_IMPLS
DTYPES = (torch.float32, torch.float64)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _close(actual, expected, dtype=None):
    """float32: 1e-5 relative; float64: 1e-12 relative (absolute floor scaled by the largest value)."""
    expected = expected.to(actual.dtype).cpu()
    actual = actual.cpu()
    tol = 1e-5 if (dtype or actual.dtype) == torch.float32 else 1e-12
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


def _equal(actual, expected):
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert torch.equal(actual.cpu(), expected.cpu())


def _graphs_equal(got, want):
    for a, b in zip(got, want):
        _equal(a, b)


def test_kernels_cover_every_schema():
    assert set(KERNELS) == set(library.SCHEMAS)
    assert all(callable(f) for f in KERNELS.values())


# --- radius graph ---

def _random_pos(n, box, dtype, seed):
    return (torch.rand(n, 3, generator=_gen(seed), dtype=torch.float64) * box).to(dtype)


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

def _batch_systems(sizes, box, dtype, seed):
    pos = _random_pos(sum(sizes), box, dtype, seed)
    ids = [g * 3 for g, s in enumerate(sizes) for _ in range(s)]  # non-contiguous graph ids
    return pos, torch.tensor(ids)


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


# --- host reads of every launcher, and the model on the Triton kernels (the CUDA path) ---

def _interpreter_outside_modes(monkeypatch, launches=None):
    """Triton's interpreter runs a kernel as torch ops on CPU tensors: run them outside the dispatch
    modes (``HostSyncCounter``) so that only the launcher's own work is counted, and record the name
    of each launched kernel in ``launches``."""
    import triton.runtime.interpreter as interpreter
    from torch.utils._python_dispatch import _disable_current_modes
    run = interpreter.InterpretedFunction.run

    def quiet_run(self, *args, **kwargs):
        if launches is not None:
            launches.append(self.fn.__name__)
        with _disable_current_modes():
            return run(self, *args, **kwargs)
    monkeypatch.setattr(interpreter.InterpretedFunction, "run", quiet_run)


def _reads_of(fn, *args):
    """The device reads (``.tolist()``, ``.item()``, ``bool()``, ...) made by ``fn(*args)``."""
    from pamnet_fast.host_syncs import HostSyncCounter
    with HostSyncCounter() as counter:
        fn(*args)
    return counter.syncs


def test_launcher_host_reads_with_and_without_value_checks(monkeypatch):
    """With ``check_values=False`` the float ops read nothing from the device (CUDA-graph
    capturable); with the checks, one read each. The graph ops read their output sizes once, and
    the checks add one read."""
    _interpreter_outside_modes(monkeypatch)
    g = _gen(11)
    ei = _edges(40, 3.0, 1.2, 6)
    ptr = torch.searchsorted(ei[1], torch.arange(41))
    src = ei[0]
    e = src.numel()
    a, b = torch.randn(40, 8, generator=g), torch.randn(e, 8, generator=g)
    p, q = torch.randn(40, 8, generator=g), torch.randn(40, 8, generator=g)
    row = torch.arange(e) // 2
    dist, angle = torch.rand(e, generator=g) * 4, torch.rand(e, generator=g) * 3
    zeros = library.reference.spherical_bessel_zeros(3, 2)
    calls = {
        "segment_gather_mul": (KERNELS["segment_gather_mul"], a, src, b, ptr),
        "fused_edge_message": (KERNELS["fused_edge_message"], p, q, b, b, ptr, src, None),
        "fused_edge_message[edge_row]": (KERNELS["fused_edge_message"], p, q, b[: e // 2 + 1],
                                         b[: e // 2 + 1], ptr, src, row),
        "bessel_basis": (KERNELS["bessel_basis"], dist, torch.arange(1.0, 5.0) * math.pi, 5.0, 6),
        "spherical_basis": (KERNELS["spherical_basis"], dist, angle, zeros, 5.0, 6),
    }
    for name, (fn, *args) in calls.items():
        args = [t.to(DEV) if isinstance(t, torch.Tensor) else t for t in args]
        assert _reads_of(fn, *args, False) == [], name
        assert len(_reads_of(fn, *args, True)) == 1, name
    pos = _random_pos(40, 3.0, torch.float64, 6).to(DEV)
    assert len(_reads_of(KERNELS["radius_graph"], pos, 1.2, None, False, -1, False, False)) == 1
    assert len(_reads_of(KERNELS["radius_graph"], pos, 1.2, None, False, -1, False, True)) == 2
    assert len(_reads_of(KERNELS["triplets"], ei.to(DEV), 40, False, False)) == 1
    assert len(_reads_of(KERNELS["triplets"], ei.to(DEV), 40, False, True)) == 2
    # with the sizes counted by the caller: no read of its own (one, to verify them, with checks)
    sizes = library.reference.triplets(ei, 40, False)
    sizes = [sizes[0].numel(), sizes[3].numel()]
    assert _reads_of(KERNELS["triplets"], ei.to(DEV), 40, False, False, sizes) == []
    assert len(_reads_of(KERNELS["triplets"], ei.to(DEV), 40, False, True, sizes)) == 2
    # backward kernels never read
    out_g = torch.randn(40, 8, generator=g).to(DEV)
    assert _reads_of(KERNELS["segment_gather_mul_backward"], out_g, a, src, b, ptr, True, True) == []
    assert _reads_of(KERNELS["fused_edge_message_backward"], out_g, p, q, b, b, ptr, src, None,
                     [True] * 4) == []


@pytest.fixture(scope="module")
def qm9_small():
    from torch_geometric.data import Batch
    from test_nn_common import qm9_molecules
    return Batch.from_data_list(qm9_molecules(8, min_atoms=1))  # float64 positions


def _route_ops_to_triton(monkeypatch, launches):
    """The public ops call the Triton kernels (on CPU tensors: the interpreter; forward only), and
    every kernel launch is recorded. On CUDA the dispatcher already does it."""
    import importlib
    import types
    if DEV == "cuda":
        return
    ns = types.SimpleNamespace(**{n: KERNELS[n] for n in library.FORWARD_OPS})
    for module in ("message", "basis", "graph", "triplets"):
        monkeypatch.setattr(importlib.import_module(f"pamnet_fast.ops.{module}"), "_ops", lambda: ns)
    _interpreter_outside_modes(monkeypatch, launches)


@pytest.mark.parametrize("name", ["PAMNet", "PAMNetS"])
def test_model_on_triton_kernels_reads_and_launches(name, qm9_small, monkeypatch):
    """PAMNet's CUDA path, run through the Triton kernels: graph building reads the device twice
    (the input checks with the bond list's and its triplet lists' sizes; the radius graph's edge
    total), the forward given the graphs never, and each fused op is one kernel launch. The result
    equals the CPU kernels'."""
    from pamnet_fast.host_syncs import HostSyncCounter
    from pamnet_fast.nn import PAMNet, PAMNetConfig, PAMNetS
    torch.manual_seed(0)
    n_layer = 2
    model = {"PAMNet": PAMNet, "PAMNetS": PAMNetS}[name](PAMNetConfig.qm9(dim=32, n_layer=n_layer))
    model = model.double().eval()
    with torch.no_grad():
        want = model(qm9_small)
    model, data = model.to(DEV), qm9_small.to(DEV)
    launches = []
    _route_ops_to_triton(monkeypatch, launches)
    with torch.no_grad():
        with HostSyncCounter() as counter:
            graphs = model.build_graphs(data)
        assert counter.syncs == ["tolist"] * 2, counter.syncs
        launches.clear()
        with HostSyncCounter() as counter:
            got = model(data, graphs)
    assert counter.syncs == [], counter.syncs
    if DEV == "cpu":
        # per layer: global edge sum, local edge sum + gate sum, angle sum(s); two basis kernels
        per_layer = 4
        bases = 2 + (2 if name == "PAMNet" else 1)
        assert len(launches) == n_layer * per_layer + bases, launches
    _close(got, want, torch.float64)


@pytest.mark.parametrize("name", ["PAMNet", "PAMNetS"])
def test_model_float32_on_triton_kernels_with_dense_layers(name, qm9_small, monkeypatch):
    """float32 PAMNet with every op on its Triton kernel, the dense layers included (the CUDA path of
    a forward given the graphs): each Linear+SiLU is one launch instead of ``addmm``/``mm`` and
    ``silu``, and the residual blocks' second one also takes their ``add``; the other launches do
    not change. The result equals the C++/oneDNN path's within float32 rounding."""
    from pamnet_fast.host_syncs import HostSyncCounter
    from pamnet_fast.nn import PAMNet, PAMNetConfig, PAMNetS
    torch.manual_seed(0)
    n_layer = 2
    model = {"PAMNet": PAMNet, "PAMNetS": PAMNetS}[name](PAMNetConfig.qm9(dim=32, n_layer=n_layer))
    model, data = model.eval().to(DEV), qm9_small.to(DEV)
    data.pos = data.pos.float()
    with torch.no_grad():
        graphs = model.build_graphs(data)
        want = model(data, graphs)
    launches, counts = [], {}
    _route_ops_to_triton(monkeypatch, launches)
    for dense in (False, True):
        if dense:
            _route_dense_to_triton(monkeypatch)
        elif DEV == "cpu":  # ops.linear as on CUDA (F.linear), linear_silu not yet on Triton
            monkeypatch.setattr(importlib.import_module("pamnet_fast.ops.dense"), "_fast", lambda *a: False)
        with torch.no_grad():
            model(data, graphs)  # the first call also fills the bases' constant caches
        launches.clear()
        with torch.no_grad(), HostSyncCounter() as counter:
            got = model(data, graphs)
        counts[dense] = (counter.kernel_ops, list(launches), counter.syncs)
        _close(got, want, torch.float32)
    (ops_before, before, _), (ops_after, after, syncs) = counts[False], counts[True]
    assert syncs == []
    dense_launches = after.count("_linear_act_kernel")
    assert [k for k in after if k != "_linear_act_kernel"] == before
    print(name, "dense launches", dense_launches, "aten ops", ops_before, "->", ops_after)
    # per layer: the global and the local plex 11 each (mlp_x1, mlp_x2, 3 Res x 2, mlp_out x 3) and
    # the angle MLP's 2; the shared basis projections: 4 (PAMNet: rbf_g, rbf_l, sbf1, sbf2) or 3
    assert dense_launches == n_layer * (11 + 11 + 2) + (4 if name == "PAMNet" else 3)
    # a launch replaces addmm/mm + silu by one allocation (new_empty; no kernel on CUDA), the
    # residual blocks' second launches (3 per plex layer) also an add
    assert ops_before - ops_after == dense_launches + n_layer * 2 * 3


@pytest.mark.skipif(DEV != "cuda", reason="CUDA graphs need a GPU")
def test_model_forward_captures_in_a_cuda_graph(qm9_small):
    """The forward given the graphs reads nothing from the device, so it can be recorded in a CUDA
    graph; the replay equals the eager forward, also for a second batch of the same shapes."""
    from pamnet_fast.nn import PAMNet, PAMNetConfig, capture_forward
    torch.manual_seed(0)
    model = PAMNet(PAMNetConfig.qm9(dim=32, n_layer=2)).double().to(DEV).eval()
    data = qm9_small.to(DEV)
    captured = capture_forward(model, data)
    with torch.no_grad():
        want = model(data)
    _close(captured(data).clone(), want, torch.float64)
    moved = data.clone()
    moved.pos = data.pos * 1.01  # same graphs' shapes? not guaranteed: rebuild and compare shapes
    graphs = model.build_graphs(moved)
    try:
        got = captured(moved, graphs).clone()
    except ValueError:
        return  # other edge counts: refused with a clear error, as documented
    with torch.no_grad():
        _close(got, model(moved, graphs), torch.float64)


@pytest.mark.skipif(DEV != "cuda", reason="CUDA graphs need a GPU")
def test_compiled_model_replays_as_cuda_graph(qm9_small):
    """compile_model(mode="reduce-overhead"): Inductor's CUDA-graph trees record the compiled
    forward (warm-up, record, replay); every call equals the eager forward."""
    from pamnet_fast.nn import PAMNet, PAMNetConfig, compile_model
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = PAMNet(PAMNetConfig.qm9(dim=32, n_layer=2)).to(DEV).eval()
    data = qm9_small.to(DEV)
    data.pos = data.pos.float()
    graphs = model.build_graphs(data)
    compiled = compile_model(model, mode="reduce-overhead", dynamic=False)
    with torch.no_grad():
        want = model(data, graphs)
        for _ in range(3):
            got = compiled(data, graphs).clone()
            _close(got, want, torch.float32)
    torch._dynamo.reset()

# --- triplets ---

def _edges(n, box, r, seed):
    return reference.radius_graph(_random_pos(n, box, torch.float64, seed), r)[0]


@pytest.mark.parametrize("include_self_pairs", (False, True))
def test_triplets_random(include_self_pairs):
    ei = _edges(60, 4.0, 1.2, 5)
    got = KERNELS["triplets"](ei.to(DEV), 62, include_self_pairs)  # two isolated extra nodes
    want = REF["triplets"](ei, 62, include_self_pairs)
    assert want[0].numel() > 100
    _graphs_equal(got, want)
    other = KERNELS["triplets"](ei.to(DEV), 62, not include_self_pairs)
    assert other[3].numel() != got[3].numel()


def test_triplets_int32_duplicates_and_empty():
    # duplicate edges and self loops, target-sorted
    ei = torch.tensor([[1, 2, 2, 0, 3, 0, 1, 1, 2], [0, 0, 0, 1, 1, 2, 2, 3, 3]])
    got = tk.triplets(ei.int().to(DEV), 5, include_self_pairs=True)
    _graphs_equal(got, reference.triplets(ei, 5, True))
    _graphs_equal(tk.triplets(ei.to(DEV), 5), reference.triplets(ei, 5))
    empty = torch.zeros(2, 0, dtype=torch.long)
    _graphs_equal(tk.triplets(empty.to(DEV), 3), reference.triplets(empty, 3))


@pytest.mark.parametrize("include_self_pairs", (False, True))
def test_triplets_with_sizes_given(include_self_pairs):
    """Sizes from ``ops.triplet_sizes`` give the same lists without a read; wrong sizes are an
    error with the value checks, and without them never make the kernel write past the lists."""
    from pamnet_fast import ops
    ei = _edges(60, 4.0, 1.2, 5).to(DEV)
    want = REF["triplets"](ei.cpu(), 60, include_self_pairs)
    sizes = ops.triplet_sizes(ei, 60, include_self_pairs=include_self_pairs).tolist()
    assert sizes == [want[0].numel(), want[3].numel()]
    for check in (False, True):
        _graphs_equal(KERNELS["triplets"](ei, 60, include_self_pairs, check, sizes), want)
    wrong = [sizes[0] - 7, sizes[1]]
    with pytest.raises(ValueError, match=r"triplets: sizes says \[.*\] triplets"):
        KERNELS["triplets"](ei, 60, include_self_pairs, True, wrong)
    cut = KERNELS["triplets"](ei, 60, include_self_pairs, False, wrong)  # trusted: cut, in bounds
    assert cut[0].numel() == wrong[0] and torch.equal(cut[3].cpu(), want[3])


def test_triplets_bad_input():
    with pytest.raises(ValueError):
        KERNELS["triplets"](torch.tensor([[0, 1], [1, 0]], device=DEV), 2, False)  # not sorted
    with pytest.raises(ValueError):
        KERNELS["triplets"](torch.tensor([[0], [5]], device=DEV), 3, False)
    with pytest.raises(ValueError):
        KERNELS["triplets"](torch.zeros(2, 0, dtype=torch.long, device=DEV), -1, False)
    with pytest.raises(TypeError):
        tk.triplets(torch.zeros(2, 0, device=DEV), 3)


# --- segment_gather_mul and fused_edge_message ---

def _csr(num_rows, max_len, num_src, seed, index_dtype=torch.long):
    gen = _gen(seed)
    lens = torch.randint(0, max_len + 1, (num_rows,), generator=gen)
    lens[0] = 0  # an empty segment
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)])
    src = torch.randint(0, num_src, (int(ptr[-1]),), generator=gen)
    return ptr.to(index_dtype), src.to(index_dtype)


def _randn(*shape, dtype, seed):
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", (torch.int32, torch.int64))
def test_segment_gather_mul(dtype, index_dtype):
    ptr, src = _csr(40, 9, 25, 6, index_dtype)
    a, b = _randn(25, 12, dtype=dtype, seed=7), _randn(src.numel(), 12, dtype=dtype, seed=8)
    got = tk.segment_gather_mul(a.to(DEV), src.to(DEV), b.to(DEV), ptr.to(DEV))
    want = reference.segment_gather_mul(a, src.long(), b, ptr.long())
    _close(got, want)
    assert got[0].abs().max() == 0  # empty segment
    g = _randn(40, 12, dtype=dtype, seed=9)
    for need_a, need_b in ((True, True), (True, False), (False, True)):
        got = KERNELS["segment_gather_mul_backward"](g.to(DEV), a.to(DEV), src.to(DEV), b.to(DEV),
                                                    ptr.to(DEV), need_a, need_b)
        want = REF["segment_gather_mul_backward"](g, a, src, b, ptr, need_a, need_b)
        for x, y in zip(got, want):
            assert x.shape == y.shape
            _close(x, y)


def _op_names(fn, *args):
    from pamnet_fast.host_syncs import HostSyncCounter
    with HostSyncCounter() as counter:
        out = fn(*args)
    return out, counter.op_names


def test_backward_with_transposes_built_once(monkeypatch):
    """The message ops' backward given the transposed CSRs (``ops.transposed_csr``, built once per
    batch by the models) gives the same bits as the one that builds them, without sorting."""
    from pamnet_fast import ops
    _interpreter_outside_modes(monkeypatch)
    ptr, src = _csr(40, 9, 25, 6)
    e = src.numel()
    a, b = _randn(25, 12, dtype=torch.float32, seed=7), _randn(e, 12, dtype=torch.float32, seed=8)
    g = _randn(40, 12, dtype=torch.float32, seed=9)
    ptr, src, a, b, g = (t.to(DEV) for t in (ptr, src, a, b, g))
    t_src = ops.transposed_csr(src, 25, ptr)
    bwd = KERNELS["segment_gather_mul_backward"]
    want, names = _op_names(bwd, g, a, src, b, ptr, True, True)
    assert "sort" in names
    got, names = _op_names(bwd, g, a, src, b, ptr, True, True, t_src)
    assert "sort" not in names and all(torch.equal(x, y) for x, y in zip(got, want))
    # fused_edge_message: q's rows (src) and the shared rows of r and s (edge_row)
    p, q = _randn(40, 12, dtype=torch.float32, seed=10).to(DEV), a
    row = (torch.arange(e, device=DEV) * 7) % 11
    r, s_ = _randn(11, 12, dtype=torch.float32, seed=11).to(DEV), _randn(11, 12, dtype=torch.float32, seed=12).to(DEV)
    t_row = ops.transposed_csr(row, 11, ptr)
    bwd = KERNELS["fused_edge_message_backward"]
    want, names = _op_names(bwd, g, p, q, r, s_, ptr, src, row, [True] * 4)
    assert names.count("sort") == 2
    got, names = _op_names(bwd, g, p, q, r, s_, ptr, src, row, [True] * 4, t_src, t_row)
    assert "sort" not in names and all(torch.equal(x, y) for x, y in zip(got, want))
    _close(got[1], REF["fused_edge_message_backward"](g.cpu(), p.cpu(), q.cpu(), r.cpu(), s_.cpu(),
                                                      ptr.cpu(), src.cpu(), row.cpu(), [True] * 4)[1])
    with pytest.raises(ValueError, match="src_transpose must have 2 \\* "):
        KERNELS["fused_edge_message"](p, q, r, s_, ptr, src, row, False, t_src[:-1], t_row)


def test_segment_gather_mul_wide_features_and_determinism():
    ptr, src = _csr(5, 20, 4, 10)  # few sources: long transposed segments
    a, b = _randn(4, 150, dtype=torch.float32, seed=11), _randn(src.numel(), 150, dtype=torch.float32, seed=12)
    _close(KERNELS["segment_gather_mul"](a.to(DEV), src.to(DEV), b.to(DEV), ptr.to(DEV)),
           reference.segment_gather_mul(a, src, b, ptr))
    g = _randn(5, 150, dtype=torch.float32, seed=13)
    first = KERNELS["segment_gather_mul_backward"](g.to(DEV), a.to(DEV), src.to(DEV), b.to(DEV), ptr.to(DEV), True, False)[0]
    second = KERNELS["segment_gather_mul_backward"](g.to(DEV), a.to(DEV), src.to(DEV), b.to(DEV), ptr.to(DEV), True, False)[0]
    assert torch.equal(first, second)  # no atomics: bitwise reproducible
    _close(first, REF["segment_gather_mul_backward"](g, a, src, b, ptr, True, False)[0])
    # no rows at all
    empty = tk.segment_gather_mul(a.to(DEV), src[:0].to(DEV), b[:0].to(DEV), torch.zeros(1, dtype=torch.long, device=DEV))
    assert empty.shape == (0, 150)


def test_segment_gather_mul_bad_input():
    ptr, src = _csr(4, 3, 5, 14)
    a, b = torch.randn(5, 8, device=DEV), torch.randn(src.numel(), 8, device=DEV)
    src, ptr = src.to(DEV), ptr.to(DEV)
    with pytest.raises(ValueError):
        tk.segment_gather_mul(a, src, b, ptr[:-1])  # does not end at the number of entries
    with pytest.raises(TypeError):
        KERNELS["segment_gather_mul"](a, src, b.double(), ptr)
    out_of_range = src.clone()
    out_of_range[0] = 5
    with pytest.raises(ValueError):
        KERNELS["segment_gather_mul"](a, out_of_range, b, ptr)
    with pytest.raises(ValueError):
        KERNELS["segment_gather_mul"](a, src, b[:, :4], ptr)
    # value checks (one check kernel on the Triton path): each names its problem
    bad = ptr.clone()
    bad[1], bad[2] = bad[2] + 1, bad[1]
    with pytest.raises(ValueError, match="non-decreasing"):
        KERNELS["segment_gather_mul"](a, src, b, bad)
    with pytest.raises(ValueError, match="start at 0"):
        KERNELS["segment_gather_mul"](a, src, b, ptr + 1)
    negative = src.clone()
    negative[-1] = -1
    with pytest.raises(ValueError, match=r"src has entries outside \[0, 5\)"):
        KERNELS["segment_gather_mul"](a, negative, b, ptr)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", (torch.int32, torch.int64))
def test_fused_edge_message(dtype, index_dtype):
    ptr, src = _csr(30, 8, 20, 15, index_dtype)
    e = src.numel()
    p, q = _randn(30, 10, dtype=dtype, seed=16), _randn(20, 10, dtype=dtype, seed=17)
    r, s = _randn(e, 10, dtype=dtype, seed=18) * 3, _randn(e, 10, dtype=dtype, seed=19)
    dev = [t.to(DEV) for t in (p, q, r, s, ptr, src)]
    _close(tk.fused_edge_message(*dev), reference.fused_edge_message(p, q, r, s, ptr.long(), src.long()))
    g = _randn(30, 10, dtype=dtype, seed=20)
    for mask in ([True] * 4, [False, True, False, False], [True, False, True, False],
                 [False, False, False, True]):
        got = KERNELS["fused_edge_message_backward"](g.to(DEV), *dev, None, mask)
        want = REF["fused_edge_message_backward"](g, p, q, r, s, ptr, src, None, mask)
        for x, y in zip(got, want):
            assert x.shape == y.shape
            _close(x, y)
    # edges sharing rows of r and s
    row = torch.randint(0, 7, (e,), generator=torch.Generator().manual_seed(21)).to(index_dtype)
    r7, s7 = r[:7].contiguous(), s[:7].contiguous()
    dev7 = [t.to(DEV) for t in (p, q, r7, s7, ptr, src, row)]
    _close(tk.fused_edge_message(*dev7),
           reference.fused_edge_message(p, q, r7, s7, ptr.long(), src.long(), row.long()))
    got = KERNELS["fused_edge_message_backward"](g.to(DEV), *dev7, [True] * 4)
    want = REF["fused_edge_message_backward"](g, p, q, r7, s7, ptr, src, row, [True] * 4)
    for x, y in zip(got, want):
        assert x.shape == y.shape
        _close(x, y)


def test_fused_edge_message_bad_input():
    ptr, src = _csr(4, 3, 5, 21)
    e = src.numel()
    p, q, r, s = (torch.randn(n, 6, device=DEV) for n in (4, 5, e, e))
    ptr, src = ptr.to(DEV), src.to(DEV)
    with pytest.raises(ValueError):
        KERNELS["fused_edge_message"](p[:3], q, r, s, ptr, src)
    with pytest.raises(TypeError):
        KERNELS["fused_edge_message"](p, q, r, s.double(), ptr, src)
    with pytest.raises(TypeError):
        tk.fused_edge_message(p, q, r, s, ptr.float(), src)
    row = torch.zeros(e, dtype=torch.long, device=DEV)
    row[0] = e
    with pytest.raises(ValueError, match="edge_row has entries outside"):
        KERNELS["fused_edge_message"](p, q, r, s, ptr, src, row)
    with pytest.raises(ValueError, match="at least one entry"):
        KERNELS["fused_edge_message"](p[:0], q, r[:0], s[:0], ptr[:0], src[:0])


def test_message_ops_empty_graphs_and_odd_widths():
    """E = 0 (every segment empty), rows without edges, and F from 1 to beyond one feature tile."""
    for num_features in (1, 3, 65):
        ptr = torch.zeros(4, dtype=torch.long, device=DEV)
        src = torch.zeros(0, dtype=torch.long, device=DEV)
        a, b = torch.randn(3, num_features, device=DEV), torch.randn(0, num_features, device=DEV)
        _equal(tk.segment_gather_mul(a, src, b, ptr), torch.zeros(3, num_features))
        ga, gb = KERNELS["segment_gather_mul_backward"](torch.ones(3, num_features, device=DEV), a, src, b,
                                                        ptr, True, True)
        _equal(ga, torch.zeros(3, num_features))
        assert gb.shape == (0, num_features)
        p, q = torch.randn(3, num_features, device=DEV), torch.randn(5, num_features, device=DEV)
        r = s = torch.randn(0, num_features, device=DEV)
        _equal(tk.fused_edge_message(p, q, r, s, ptr, src), torch.zeros(3, num_features))
        grads = KERNELS["fused_edge_message_backward"](torch.ones(3, num_features, device=DEV), p, q, r, s,
                                                       ptr, src, None, [True] * 4)
        for got, want in zip(grads, (torch.zeros(3, num_features), torch.zeros(5, num_features),
                                     torch.zeros(0, num_features), torch.zeros(0, num_features))):
            _equal(got, want)
        # shared rows that no edge uses get zero gradients
        r2 = s2 = torch.randn(2, num_features, device=DEV)
        grads = KERNELS["fused_edge_message_backward"](torch.ones(3, num_features, device=DEV), p, q, r2, s2,
                                                       ptr, src, src, [True] * 4)
        for got in grads:
            assert not got.abs().any()


def _message_inputs(dtype, seed, num_features=70):
    ptr, src = _csr(24, 12, 9, seed)  # few sources: long transposed segments
    e = src.numel()
    row = torch.randint(0, 11, (e,), generator=_gen(seed + 1))
    p, q = _randn(24, num_features, dtype=dtype, seed=seed + 2), _randn(9, num_features, dtype=dtype, seed=seed + 3)
    r, s = _randn(e, num_features, dtype=dtype, seed=seed + 4), _randn(e, num_features, dtype=dtype, seed=seed + 5)
    g = _randn(24, num_features, dtype=dtype, seed=seed + 6)
    return ptr, src, row, p, q, r, s, g


def test_message_ops_deterministic():
    """Two runs give the same bits: forward and every gradient, with and without edge_row."""
    ptr, src, row, p, q, r, s, g = (t.to(DEV) for t in _message_inputs(torch.float32, 30))
    r11, s11 = r[:11].contiguous(), s[:11].contiguous()
    runs = []
    for _ in range(2):
        runs.append([tk.segment_gather_mul(q, src, r, ptr),
                     *KERNELS["segment_gather_mul_backward"](g, q, src, r, ptr, True, True),
                     tk.fused_edge_message(p, q, r, s, ptr, src),
                     *KERNELS["fused_edge_message_backward"](g, p, q, r, s, ptr, src, None, [True] * 4),
                     tk.fused_edge_message(p, q, r11, s11, ptr, src, row),
                     *KERNELS["fused_edge_message_backward"](g, p, q, r11, s11, ptr, src, row, [True] * 4)])
    for first, second in zip(*runs):
        assert torch.equal(first, second)


# float16/bfloat16: inputs rounded to the dtype, sums in float32, outputs rounded once. Compared with the
# float64 reference on the same (rounded) inputs, relative to the largest value of each output.
_HALF_TOL = {torch.float16: 4e-3, torch.bfloat16: 2e-2}


def _close_half(actual, expected, dtype):
    assert actual.dtype == dtype
    tol = _HALF_TOL[dtype]
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual.cpu().double(), expected, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
def test_message_ops_half_precision(dtype):
    ptr, src, row, p, q, r, s, g = _message_inputs(dtype, 40)
    wide = [t.double() for t in (p, q, r, s, g)]
    pd, qd, rd, sd, gd = wide
    dev = [t.to(DEV) for t in (p, q, r, s, ptr, src, g)]
    hp, hq, hr, hs, hptr, hsrc, hg = dev
    # segment_gather_mul, forward and backward
    _close_half(tk.segment_gather_mul(hq, hsrc, hr, hptr), reference.segment_gather_mul(qd, src, rd, ptr), dtype)
    got = KERNELS["segment_gather_mul_backward"](hg, hq, hsrc, hr, hptr, True, True)
    want = REF["segment_gather_mul_backward"](gd, qd, src, rd, ptr, True, True)
    for x, y in zip(got, want):
        _close_half(x, y, dtype)
    # fused_edge_message without and with edge_row
    _close_half(tk.fused_edge_message(hp, hq, hr, hs, hptr, hsrc),
                reference.fused_edge_message(pd, qd, rd, sd, ptr, src), dtype)
    got = KERNELS["fused_edge_message_backward"](hg, hp, hq, hr, hs, hptr, hsrc, None, [True] * 4)
    want = REF["fused_edge_message_backward"](gd, pd, qd, rd, sd, ptr, src, None, [True] * 4)
    for x, y in zip(got, want):
        _close_half(x, y, dtype)
    r11, s11 = hr[:11].contiguous(), hs[:11].contiguous()
    _close_half(tk.fused_edge_message(hp, hq, r11, s11, hptr, hsrc, row.to(DEV)),
                reference.fused_edge_message(pd, qd, rd[:11], sd[:11], ptr, src, row), dtype)
    got = KERNELS["fused_edge_message_backward"](hg, hp, hq, r11, s11, hptr, hsrc, row.to(DEV), [True] * 4)
    want = REF["fused_edge_message_backward"](gd, pd, qd, rd[:11], sd[:11], ptr, src, row, [True] * 4)
    for x, y in zip(got, want):
        _close_half(x, y, dtype)


def test_message_ops_half_precision_rules():
    """Mixed dtypes are refused; on CPU without the Triton kernels float16/bfloat16 get a message that
    says where they are supported; with autograd the gradients come back in the input dtype."""
    from pamnet_fast import ops
    ptr, src, row, p, q, r, s, g = _message_inputs(torch.bfloat16, 50, num_features=8)
    with pytest.raises(TypeError, match="float16"):
        tk.segment_gather_mul(q.to(DEV), src.to(DEV), r.to(DEV).half(), ptr.to(DEV))
    if DEV == "cpu":
        with pytest.raises(TypeError, match="only by the Triton kernels on CUDA"):
            ops.segment_gather_mul(q, src, r, ptr)
        with pytest.raises(TypeError, match="only by the Triton kernels on CUDA"):
            ops.fused_edge_message(p, q, r, s, ptr, src)
    else:  # pragma: no cover - needs a GPU
        leaves = [t.to(DEV).requires_grad_() for t in (p, q, r, s)]
        out = ops.fused_edge_message(*leaves, ptr.to(DEV), src.to(DEV))
        out.backward(g.to(DEV))
        assert out.dtype == torch.bfloat16 and all(t.grad.dtype == torch.bfloat16 for t in leaves)


# --- dense layers: one GEMM with bias, SiLU and residual in its epilogue ---

# float64 reference on the same (rounded) inputs: float32 1e-5 relative (IEEE products and float32
# sums; TF32 would be ~1e-3 off); float16/bfloat16: float32 sums rounded once to the dtype (half an
# ulp: 2^-11, 2^-8 relative), checked at twice that.
_DENSE_TOL = {torch.float32: 1e-5, torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7}


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16))
def test_linear_act(dtype, monkeypatch):
    import torch.nn.functional as F
    launches = []
    _interpreter_outside_modes(monkeypatch, launches)
    g = _gen(21)
    # one row; N and K not powers of two; K = 3 * 64 (a message layer's concat width); more rows than
    # one tile and N over one 128-column tile; K below one 32-wide step
    for m, k, n in ((1, 70, 70), (37, 192, 70), (300, 128, 128), (5, 16, 200), (33, 3, 17)):
        x, r = (torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in ((m, k), (m, n)))
        w = (torch.randn(n, k, generator=g, dtype=torch.float64) / math.sqrt(k)).to(dtype)
        b = torch.randn(n, generator=g, dtype=torch.float64).to(dtype)
        for bias in (None, b):
            for res in (None, r):
                for silu in (True, False):
                    launches.clear()
                    got = tk.linear_act(*(None if t is None else t.to(DEV) for t in (x, w, bias, res)),
                                        silu=silu)
                    want = F.linear(x.double(), w.double(), None if bias is None else bias.double())
                    want = F.silu(want) if silu else want
                    want = want if res is None else want + res.double()
                    assert got.dtype == dtype and got.shape == (m, n) and len(launches) == 1
                    tol = _DENSE_TOL[dtype]
                    scale = max(1.0, float(want.abs().max()))
                    torch.testing.assert_close(got.cpu().double(), want, rtol=tol, atol=tol * scale)
    # a strided weight (a column block of a message layer's [F, 3F]) is read as it is
    w3 = torch.randn(24, 72, generator=g).to(dtype)
    x = torch.randn(40, 24, generator=g).to(dtype)
    got = tk.linear_act(x.to(DEV), w3[:, 24:48].to(DEV), silu=False)
    torch.testing.assert_close(got.cpu().double(), x.double() @ w3[:, 24:48].double().t(),
                               rtol=_DENSE_TOL[dtype], atol=_DENSE_TOL[dtype] * 10)
    # no rows: an empty output, no launch
    launches.clear()
    w = w3[:, :24].contiguous()
    empty = tk.linear_act(x[:0].to(DEV), w.to(DEV), w[0].to(DEV), x[:0].to(DEV))
    assert empty.shape == (0, 24) and empty.dtype == dtype and launches == []


def test_linear_act_bad_input():
    x, w = torch.randn(4, 6, device=DEV), torch.randn(5, 6, device=DEV)
    with pytest.raises(ValueError, match="weight"):
        tk.linear_act(x, w.t())
    with pytest.raises(ValueError, match="residual"):
        tk.linear_act(x, w, residual=torch.randn(4, 6, device=DEV))
    with pytest.raises(TypeError):
        tk.linear_act(x.double(), w.double())
    with pytest.raises(TypeError):
        tk.linear_act(x, w.half())


def _route_dense_to_triton(monkeypatch):
    """``ops.linear_silu`` takes the Triton GEMM on CPU tensors too (the interpreter), and
    ``ops.linear`` is ``F.linear``, as both are on CUDA (the oneDNN path is the CPU's)."""
    from pamnet_fast.ops import dense
    monkeypatch.setattr(dense, "_gemm_launcher", lambda x: tk.linear_act)
    monkeypatch.setattr(dense, "_fast", lambda x, weight: False)


def test_linear_silu_takes_the_triton_gemm_only_when_nothing_is_recorded(monkeypatch):
    """One launch for ``SiLU(x W^T + b) + residual``, equal to the composite path; the composite path
    (no launch) with autograd recording, for float64, under ``aten_linear`` and under autocast."""
    from pamnet_fast import ops
    launches = []
    _interpreter_outside_modes(monkeypatch, launches)
    _route_dense_to_triton(monkeypatch)
    g = _gen(22)
    x, r = torch.randn(3, 5, 24, generator=g), torch.randn(3, 5, 16, generator=g)
    w, b = torch.randn(16, 24, generator=g) / 5, torch.randn(16, generator=g)
    args = [t.to(DEV) for t in (x, w, b)]
    want = torch.nn.functional.silu(torch.nn.functional.linear(*args)) + r.to(DEV)
    with torch.no_grad():
        got = ops.linear_silu(*args, residual=r.to(DEV))
    assert got.shape == (3, 5, 16) and len(launches) == 1
    _close(got, want)
    launches.clear()
    leaf = args[0].clone().requires_grad_()
    _close(ops.linear_silu(leaf, *args[1:], residual=r.to(DEV)), want)
    with torch.no_grad():
        _close(ops.linear_silu(*(t.double() for t in args), residual=r.double().to(DEV)), want.double(),
               torch.float32)
        with ops.aten_linear():
            _close(ops.linear_silu(*args, residual=r.to(DEV)), want)
        with torch.autocast(DEV, dtype=torch.bfloat16):
            ops.linear_silu(*args)
        # a residual that only broadcasts to the output: the composite path
        _close(ops.linear_silu(*args, residual=r[0, 0].to(DEV)), want - r.to(DEV) + r[0, 0].to(DEV))
    assert launches == []


# --- bases ---

def _distances(n, cutoff, dtype, seed):
    d = torch.rand(n, generator=_gen(seed), dtype=torch.float64) * 1.2 * cutoff
    d[:4] = torch.tensor([0.0, cutoff, 1.3 * cutoff, 1e-3 * cutoff], dtype=torch.float64)
    return d.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", (1, 5))
def test_bessel_basis(dtype, p):
    d = _distances(150, 5.0, dtype, 22)
    freq = (torch.arange(1, 7, dtype=torch.float64) * math.pi + torch.rand(6, generator=_gen(23), dtype=torch.float64)).to(dtype)
    _close(KERNELS["bessel_basis"](d.to(DEV), freq.to(DEV), 5.0, p), reference.bessel_basis(d, freq, 5.0, p))
    _close(tk.bessel_basis(d.to(DEV), 5.0, 6, p), reference.bessel_basis(d, torch.arange(1, 7, dtype=dtype) * math.pi, 5.0, p))
    g = _randn(150, 6, dtype=dtype, seed=24)
    # gradients against the float64 reference: its d/dx sin(fx)/x cancels for small x
    want = REF["bessel_basis_backward"](g.double(), d.double(), freq.double(), 5.0, p, True, True)
    for need in ((True, True), (True, False), (False, True)):
        got = KERNELS["bessel_basis_backward"](g.to(DEV), d.to(DEV), freq.to(DEV), 5.0, p, *need)
        for x, y, n in zip(got, want, need):
            if n:
                _close(x, y, dtype)
            else:
                assert x.numel() == 0


def test_bessel_basis_bad_input():
    with pytest.raises(ValueError):
        KERNELS["bessel_basis"](torch.tensor([-1.0, 1.0], device=DEV), torch.ones(3, device=DEV), 5.0, 5)
    with pytest.raises(TypeError):
        KERNELS["bessel_basis"](torch.ones(2, device=DEV), torch.ones(3, dtype=torch.float64, device=DEV), 5.0, 5)
    with pytest.raises(ValueError):
        tk.bessel_basis(torch.ones(2, device=DEV), 5.0, 6, 5, freq=torch.ones(3, device=DEV))


@pytest.mark.parametrize("dtype", DTYPES)
def test_spherical_basis(dtype):
    d = _distances(64, 5.0, dtype, 25)
    angle = (torch.rand(64, generator=_gen(26), dtype=torch.float64) * math.pi)
    angle[:3] = torch.tensor([0.0, math.pi, math.pi / 2])
    angle = angle.to(dtype)
    zeros = reference.spherical_bessel_zeros(7, 6)
    got = tk.spherical_basis(d.to(DEV), angle.to(DEV), 5.0, 7, 6, 5)
    _close(got, reference.spherical_basis(d, angle, zeros, 5.0, 5))
    other = KERNELS["spherical_basis"](d.to(DEV), angle.to(DEV), zeros.to(DEV), 5.0, 3)
    assert not torch.allclose(other.cpu(), got.cpu())
    g = _randn(64, 42, dtype=dtype, seed=27)
    want = REF["spherical_basis_backward"](g.double(), d.double(), angle.double(), zeros, 5.0, 5, True, True)
    for need in ((True, True), (False, True)):
        got = KERNELS["spherical_basis_backward"](g.to(DEV), d.to(DEV), angle.to(DEV), zeros.to(DEV), 5.0, 5, *need)
        for x, y, n in zip(got, want, need):
            if n:
                _close(x, y, dtype)
            else:
                assert x.numel() == 0


def test_spherical_basis_small_and_bad_input():
    d, angle = _distances(20, 3.0, torch.float64, 28), torch.linspace(0, math.pi, 20, dtype=torch.float64)
    zeros = reference.spherical_bessel_zeros(2, 3)
    _close(KERNELS["spherical_basis"](d.to(DEV), angle.to(DEV), zeros.to(DEV), 3.0, 2),
           reference.spherical_basis(d, angle, zeros, 3.0, 2))
    assert tk.spherical_basis(d[:0].to(DEV), angle[:0].to(DEV), 3.0, 2, 3).shape == (0, 6)
    with pytest.raises(ValueError):
        KERNELS["spherical_basis"](d.to(DEV), angle[:5].to(DEV), zeros.to(DEV), 3.0, 5)
    with pytest.raises(ValueError):
        KERNELS["spherical_basis"](-d.to(DEV) - 1, angle.to(DEV), zeros.to(DEV), 3.0, 5)
    with pytest.raises(TypeError):
        tk.spherical_basis(d.float().to(DEV), angle.to(DEV), 3.0)


# --- compiled code (no GPU needed): the interpreter is lenient, the compiler is not ---

_COMPILE_SCRIPT = r'''
import importlib, json, re, sys, warnings
warnings.simplefilter("ignore")
import os, subprocess, tempfile
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
mods = {m: importlib.import_module("pamnet_fast.ops.triton." + m)
        for m in ("neighbors", "neighbor_grid", "triplets", "segment", "message", "basis", "dense",
                  "_common")}
I = "*i64"
F32, F64 = tl.float32, tl.float64
CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
def registers(cubin):
    """(registers, local-memory bytes: spills and stack) of a cubin, read by cuobjdump (n_regs and
    n_spills of a compiled kernel are only filled in when it is loaded on a GPU)."""
    if not cubin or not os.path.exists(CUOBJDUMP):
        return None, None
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as fh:
        fh.write(cubin)
    log = subprocess.run([CUOBJDUMP, "--dump-resource-usage", fh.name], capture_output=True, text=True).stdout
    os.unlink(fh.name)
    found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", log)
    return (int(found.group(1)), int(found.group(2)) + int(found.group(3))) if found else (None, None)
def case(mod, name, fp, types, constexprs, fusion=True, warps=None):
    fn = getattr(mods[mod], name)
    sig = {a: ("constexpr" if a in constexprs else types.get(a, fp)) for a in fn.arg_names}
    cx = {(fn.arg_names.index(k),): v for k, v in constexprs.items()}
    tag = ",".join(f"{k}={v}" for k, v in constexprs.items()
                   if k in ("FILL", "SORT", "SEG", "HAS_X", "HAS_IY", "HAS_ROW", "BY_ROW", "NEED_R", "BLOCK_N"))
    warps = warps or (8 if constexprs.get("SEG", 1) > 1024 else 4)
    return f"{name}[{fp}{';' + tag if tag else ''}]", ASTSource(fn, sig, constexprs=cx), {"enable_fp_fusion": fusion, "num_warps": warps}
scan = dict(key_ptr=I, order_ptr=I, row_ptr=I, dims_ptr=I, cell_start_ptr=I, r_bits="i32", active_ptr="*i1",
            ptr_ptr=I, count_ptr=I, totals_ptr=I, out_src_ptr=I, out_dst_ptr=I, n="i64")
scan_cx = dict(LOOP=False, HAS_ACTIVE=False, BLOCK_C=32)
dense = dict(M="i32", N="i32", K="i32", stride_wn="i32", stride_wk="i32")
dense_cx = dict(HAS_BIAS=True, HAS_RES=True, SILU=True, DOT_F32=False, BLOCK_M=32, BLOCK_N=128, BLOCK_K=32)
cases = [
    case("neighbor_grid", "_graphs_kernel", "*fp64", dict(pos_ptr="*fp32", batch_ptr=I, h_bits="i64", dims_ptr=I, row_ptr=I, totals_ptr=I, n="i64"), dict(HAS_BATCH=True, ROWS=16, BLOCK=1024), False, 8),
    case("neighbor_grid", "_bin_kernel", "*fp64", dict(pos_ptr="*fp32", row_ptr=I, dims_ptr=I, key_ptr=I, n="i64"), dict(BLOCK=256), False),
    case("neighbor_grid", "_slots_kernel", "*fp32", dict(order_ptr=I, key_ptr=I, cell_start_ptr=I, n="i64", num_cells="i64", steps="i32"), dict(BLOCK=256), False),
    case("neighbors", "_scan_kernel", "*fp32", scan, dict(scan_cx, FILL=False, SORT=False, WITH_DIST=False, IS_F64=False, BLOCK_T=16, SEG=1), False),
    case("neighbors", "_scan_kernel", "*fp32", scan, dict(scan_cx, FILL=True, SORT=True, WITH_DIST=False, IS_F64=False, BLOCK_T=16, SEG=64), False),
    case("neighbors", "_scan_kernel", "*fp32", scan, dict(scan_cx, FILL=True, SORT=True, WITH_DIST=False, IS_F64=False, BLOCK_T=1, SEG=2048, BLOCK_C=256), False),
    case("neighbors", "_scan_kernel", "*fp64", dict(scan, r_bits="i64"), dict(scan_cx, FILL=True, SORT=False, WITH_DIST=True, IS_F64=True, BLOCK_T=32, SEG=1, HAS_ACTIVE=True), False),
    case("triplets", "_triplet_kernel", I, dict(num_edges="i64", total="i64"), dict(TWO_HOP=True, KEEP_SELF=False, FILL=True, BLOCK_E=32, BLOCK_K=32)),
    case("segment", "gather_mul_sum_kernel", "*fp32", dict(ix_ptr=I, iy_ptr=I, seg_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_X=True, HAS_IY=False, BLOCK_S=16, BLOCK_F=128)),
    case("segment", "gather_mul_sum_kernel", "*bf16", dict(ix_ptr=I, iy_ptr=I, seg_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_X=True, HAS_IY=True, BLOCK_S=16, BLOCK_F=128)),
    case("segment", "gather_mul_sum_kernel", "*fp64", dict(ix_ptr=I, iy_ptr=I, seg_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F64, HAS_X=False, HAS_IY=True, BLOCK_S=16, BLOCK_F=64)),
    case("segment", "_scale_rows_kernel", "*fp32", dict(src_ptr=I, seg_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_fwd_kernel", "*fp32", dict(ptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_ROW=False, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_fwd_kernel", "*bf16", dict(ptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_ROW=True, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_bwd_segment_kernel", "*fp32", dict(ptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_ROW=False, NEED_P=True, NEED_R=True, NEED_S=True, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_bwd_segment_kernel", "*fp16", dict(ptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, HAS_ROW=True, NEED_P=True, NEED_R=False, NEED_S=False, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_bwd_transposed_kernel", "*fp32", dict(perm_ptr=I, rows_ptr=I, tptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F32, BY_ROW=False, HAS_ROW=True, NEED_A=True, NEED_B=False, BLOCK_S=16, BLOCK_F=128)),
    case("message", "_bwd_transposed_kernel", "*fp64", dict(perm_ptr=I, rows_ptr=I, tptr_ptr=I, src_ptr=I, erow_ptr=I, num_features="i32", size_class="i32"), dict(ACC=F64, BY_ROW=True, HAS_ROW=True, NEED_A=True, NEED_B=True, BLOCK_S=16, BLOCK_F=64)),
    case("dense", "_linear_act_kernel", "*fp32", dense, dense_cx),
    case("dense", "_linear_act_kernel", "*bf16", dense, dense_cx),
    case("dense", "_linear_act_kernel", "*fp32", dense, dict(dense_cx, BLOCK_N=16)),
    case("_common", "_csr_check_kernel", I, dict(num_ptr="i64", nnz="i64", num_a="i64", upper_a="i64", num_b="i64", upper_b="i64", flag_ptr="*i32"), dict(BLOCK=1024)),
    case("basis", "_bessel_kernel", "*fp32", dict(num_edges="i32", num_radial="i32", p="i32"), dict(BACKWARD=True, NEED_DIST=True, NEED_FREQ=True, NUM_SERIES=9, BLOCK_E=64, BLOCK_N=8)),
    case("basis", "_spherical_kernel", "*fp32", dict(l_ptr="*i32", num_rows="i32", num_cols="i32", num_l="i32", p="i32"), dict(BACKWARD=False, NEED_DIST=False, NEED_ANGLE=False, NUM_TERMS=30, BLOCK_T=32, BLOCK_C=64)),
    case("basis", "_spherical_kernel", "*fp64", dict(l_ptr="*i32", num_rows="i32", num_cols="i32", num_l="i32", p="i32"), dict(BACKWARD=True, NEED_DIST=True, NEED_ANGLE=True, NUM_TERMS=30, BLOCK_T=8, BLOCK_C=64)),
]
out = {}
for name, src, opts in cases:
    try:
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)
        ptx = kernel.asm["ptx"]
        regs, spills = registers(kernel.asm.get("cubin"))
        out[name] = {"ok": True, "fma": len(re.findall(r"\bfma\.", ptx)),
                     "atomics": len(re.findall(r"\b(?:atom|red)\.", ptx)),
                     "mma": len(re.findall(r"\b(?:w?gmma|mma)\.", ptx)), "tf32": "tf32" in ptx,
                     "sqrt": sorted(set(re.findall(r"\bsqrt\.[\w.]+", ptx))),
                     "regs": regs, "spills": spills}
    except Exception as exc:
        out[name] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:1500]}"}
print("RESULT " + json.dumps(out))
'''


_MESSAGE_KERNELS = ("gather_mul_sum_kernel", "_scale_rows_kernel", "_fwd_kernel", "_bwd_segment_kernel",
                    "_bwd_transposed_kernel", "_linear_act_kernel")


def test_kernels_compile_for_sm90_and_neighbor_search_has_no_fma():
    """Compile the kernels to PTX for an H100 (sm_90) in a process without TRITON_INTERPRET: catches
    what only the compiler rejects, and checks that the neighbor-search distance has no FMA and an
    IEEE square root (the GPU edge set then equals the CPU's bit for bit), and that the message
    and dense kernels have no atomics and no register spills (registers per kernel: run with -s), and
    that the dense GEMM is full float32 for float32 (no TF32) and on tensor cores for bfloat16."""
    import json
    import os
    import pathlib
    import subprocess
    import sys
    import triton.backends
    if "nvidia" not in getattr(triton.backends, "backends", {}):
        pytest.skip("this Triton build has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = str(pathlib.Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], capture_output=True, text=True,
                          env=env, cwd=root, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    failed = {k: v["error"] for k, v in result.items() if not v["ok"]}
    assert not failed, failed
    print({k: (v["regs"], v["spills"]) for k, v in result.items()})
    for name in (k for k in result if k.split("[")[0] in _MESSAGE_KERNELS):
        assert result[name]["atomics"] == 0, result[name]  # deterministic sums
        assert result[name]["spills"] in (0, None), result[name]
    for name in (k for k in result if k.startswith("_linear_act_kernel")):
        assert not result[name]["tf32"] and (result[name]["mma"] > 0) == ("bf16" in name), result[name]
    for name in (k for k in result if k.startswith("_scan_kernel")):
        assert result[name]["fma"] == 0, result[name]
        assert result[name]["sqrt"] and all(".rn." in s for s in result[name]["sqrt"]), result[name]
