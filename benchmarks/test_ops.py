"""Op benchmarks (issue 2): radius graph vs scipy cKDTree / vesin / torch_cluster on real structures, and
the fused segment ops vs unfused PyTorch (index_select, mul, index_add_), forward + backward.

Every method returns the same thing, the full directed edge list sorted by target then source (the
conversion of the other libraries' output is timed with them). Each group has a baseline
(``extra_info["baseline"]``): cKDTree for the radius graph, the unfused PyTorch for the segment ops.
Peak memory is measured in a separate process per case (see ``_data.peak_memory``).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import _data

HERE = __file__

# ---------------------------------------------------------------------------------------- radius

# (dataset, cutoff in Å). RNA-Puzzle 5 at 20 Å has 2,381,780 directed edges.
RADIUS_CASES_FULL = [("rna5", 20.0), ("6zu5", 5.0), ("6zu5", 8.0), ("uniform50k", 5.0)]
RADIUS_CASES_QUICK = [("rna5", 8.0), ("uniform5k", 5.0)]
RADIUS_METHODS = ["cKDTree", "pamnet_fast", "vesin", "torch_cluster"]


@functools.lru_cache(maxsize=None)
def structure_pos(dataset: str) -> torch.Tensor:
    """float32 [N, 3] positions (Å)."""
    if dataset == "rna5":
        return _data.rna_puzzle5().pos.contiguous()
    if dataset == "6zu5":
        return _data.ribosome().pos.contiguous()
    if dataset.startswith("uniform"):
        # Uniform random points at the heavy-atom density of a protein (~0.05 atoms / Å^3).
        n = int(dataset[len("uniform"):-1]) * 1000
        side = (n / 0.05) ** (1 / 3)
        return (torch.rand(n, 3, generator=torch.Generator().manual_seed(0)) * side).contiguous()
    raise ValueError(dataset)


def _sorted_from_pairs(i: np.ndarray, j: np.ndarray, n: int) -> torch.Tensor:
    """Directed pairs (j -> i) -> edge_index sorted by target i, then source j, via one int64 key sort."""
    key = np.sort(i.astype(np.int64) * n + j.astype(np.int64))
    return torch.from_numpy(np.stack([key % n, key // n]))


def radius_fn(method: str, pos: torch.Tensor, cutoff: float):
    """A callable computing the sorted full directed radius graph of ``pos`` with ``method``."""
    n = pos.size(0)
    threads = torch.get_num_threads()
    if method == "pamnet_fast":
        from pamnet_fast import ops
        return lambda: ops.radius_graph(pos, cutoff)
    if method == "cKDTree":
        from scipy.spatial import cKDTree
        p64 = pos.double().numpy()

        def ckdtree():
            pairs = cKDTree(p64).query_pairs(cutoff, output_type="ndarray")  # i < j, each pair once
            a, b = pairs[:, 0], pairs[:, 1]
            return _sorted_from_pairs(np.concatenate([a, b]), np.concatenate([b, a]), n)
        return ckdtree
    if method == "vesin":
        vesin = pytest.importorskip("vesin")
        p64 = pos.double().numpy()
        box = np.zeros((3, 3))

        def run_vesin():
            nl = vesin.NeighborList(cutoff=cutoff, full_list=True, n_threads=threads)
            i, j = nl.compute(points=p64, box=box, periodic=False, quantities="ij")
            return _sorted_from_pairs(i, j, n)
        return run_vesin
    if method == "torch_cluster":
        torch_cluster = pytest.importorskip("torch_cluster")

        def run_tc():
            ei = torch_cluster.radius_graph(pos, cutoff, max_num_neighbors=n, num_workers=threads)
            return _sorted_from_pairs(ei[1].numpy(), ei[0].numpy(), n)
        return run_tc
    raise ValueError(method)


def build_radius_case(dataset: str, cutoff: float, method: str) -> _data.Case:
    pos = structure_pos(dataset)
    return _data.Case(run=radius_fn(method, pos, cutoff))


@functools.lru_cache(maxsize=None)
def expected_edges(dataset: str, cutoff: float):
    """(cKDTree edge count, number of pairs within 1e-5 relative of the cutoff): methods evaluating
    the distance in float32 may legitimately differ on those boundary pairs."""
    from scipy.spatial import cKDTree
    p = structure_pos(dataset).double().numpy()
    tree = cKDTree(p)
    count = 2 * len(tree.query_pairs(cutoff, output_type="ndarray"))
    outer = 2 * len(tree.query_pairs(cutoff * (1 + 1e-5), output_type="ndarray"))
    inner = 2 * len(tree.query_pairs(cutoff * (1 - 1e-5), output_type="ndarray"))
    return count, outer - inner


def _radius_params():
    cases = RADIUS_CASES_QUICK if _data.quick() else RADIUS_CASES_FULL
    return [pytest.param(d, c, m, id=f"{d}-{c:g}A-{m}") for d, c in cases for m in RADIUS_METHODS]


@pytest.mark.parametrize("dataset,cutoff,method", _radius_params())
def test_radius_graph(benchmark, dataset, cutoff, method):
    if method == "torch_cluster":
        pytest.importorskip("torch_cluster")
    if method == "vesin":
        pytest.importorskip("vesin")
    pos = structure_pos(dataset)
    n = pos.size(0)
    if method == "pamnet_fast" and _data.ops_backend("radius_graph") == "reference" and n > 20_000:
        pytest.skip(f"pamnet_fast ops run on the O(N^2) reference backend (C++ extension not built); "
                    f"{n} atoms would take too long")
    benchmark.group = f"radius_graph: {dataset} ({n} atoms), r = {cutoff:g} Å"
    benchmark.extra_info.update(dataset=dataset, atoms=n, cutoff=cutoff, method=method,
                                baseline=method == "cKDTree", threads=torch.get_num_threads())
    if method == "pamnet_fast":
        benchmark.extra_info["backend"] = _data.ops_backend("radius_graph")
    _data.attach_memory(benchmark, _data.peak_memory(HERE, "build_radius_case",
                                                     dict(dataset=dataset, cutoff=cutoff, method=method)))
    case = build_radius_case(dataset, cutoff, method)
    big = n > 50_000
    edge_index = benchmark.pedantic(case.run, **_data.rounds(3 if big else 10))

    # Same result from every method (checked untimed, on the last timed call's output).
    count, boundary = expected_edges(dataset, cutoff)
    benchmark.extra_info["edges"] = int(edge_index.size(1))
    assert edge_index.dtype == torch.int64 and edge_index.size(0) == 2
    assert abs(edge_index.size(1) - count) <= boundary, \
        f"{method}: {edge_index.size(1)} edges, cKDTree {count} (boundary pairs: {boundary})"
    key = edge_index[1] * n + edge_index[0]
    assert bool((key[1:] > key[:-1]).all()), "not sorted by target then source / duplicate edges"
    if dataset == "rna5" and cutoff == 20.0:
        assert abs(edge_index.size(1) - 2_381_780) <= boundary


# ---------------------------------------------------------------------------------- segment ops

SEGMENT_OPS = ["segment_gather_mul", "fused_edge_message"]
IMPLS = ["unfused", "fused"]
SIZES_FULL = [10**5, 10**6, 10**7]
SIZES_QUICK = [10**4]
FEATURES = 128
ROUNDS = {10**4: 5, 10**5: 20, 10**6: 5, 10**7: 3}

# Number of [E, F] float tensors alive at the peak of forward + backward (inputs and their gradients
# included): used to skip cases that cannot fit before trying them, when no smaller size was measured.
EF_TENSORS_AT_PEAK = {("segment_gather_mul", "fused"): 2.2, ("segment_gather_mul", "unfused"): 5.5,
                      ("fused_edge_message", "fused"): 4.4, ("fused_edge_message", "unfused"): 9.0}
_MEASURED = {}  # (op, impl) -> (E, peak_rss_mb) of the largest size measured so far


def build_segment_case(op: str, impl: str, num_edges: int, features: int = FEATURES, seed: int = 0
                       ) -> _data.Case:
    """Forward + backward of ``op`` on E edges into N = E / 16 nodes: random sources, sorted random
    targets (CSR ``ptr``), a random upstream gradient. ``impl='unfused'`` is the plain PyTorch
    index_select / mul / index_add_ formulation (with the target index precomputed, as a model has it)."""
    g = torch.Generator().manual_seed(seed)
    E, Fdim = num_edges, features
    N = max(E // 16, 1)
    src = torch.randint(0, N, (E,), generator=g)
    dst = torch.randint(0, N, (E,), generator=g).sort().values
    ptr = torch.zeros(N + 1, dtype=torch.long)
    ptr[1:] = torch.bincount(dst, minlength=N).cumsum(0)
    grad_out = torch.randn(N, Fdim, generator=g)
    from pamnet_fast import ops

    if op == "segment_gather_mul":
        a = torch.randn(N, Fdim, generator=g).requires_grad_()
        b = torch.randn(E, Fdim, generator=g).requires_grad_()
        leaves = [a, b]
        if impl == "fused":
            def forward():
                return ops.segment_gather_mul(a, src, b, ptr)
        else:
            def forward():
                return a.new_zeros(N, Fdim).index_add_(0, dst, a.index_select(0, src) * b)
    elif op == "fused_edge_message":
        p = torch.randn(N, Fdim, generator=g).requires_grad_()
        q = torch.randn(N, Fdim, generator=g).requires_grad_()
        r = torch.randn(E, Fdim, generator=g).requires_grad_()
        s = torch.randn(E, Fdim, generator=g).requires_grad_()
        leaves = [p, q, r, s]
        if impl == "fused":
            def forward():
                return ops.fused_edge_message(p, q, r, s, ptr, src)
        else:
            def forward():
                h = p.index_select(0, dst) + q.index_select(0, src) + r
                return p.new_zeros(N, Fdim).index_add_(0, dst, F.silu(h) * s)
    else:
        raise ValueError(op)

    def run():
        forward().backward(grad_out)

    def reset():
        for t in leaves:
            t.grad = None

    grad_bytes = sum(t.numel() * t.element_size() for t in leaves)
    return _data.Case(run=run, reset=reset, info=dict(nodes=N, input_grad_mb=round(grad_bytes / 2**20, 1)))


def _segment_params():
    sizes = SIZES_QUICK if _data.quick() else SIZES_FULL
    return [pytest.param(op, E, impl, id=f"{op}-E{E:.0e}-{impl}".replace("+0", ""))
            for op in SEGMENT_OPS for E in sizes for impl in IMPLS]


def _predicted_peak_bytes(op: str, impl: str, E: int) -> float:
    measured = _MEASURED.get((op, impl))
    analytic = EF_TENSORS_AT_PEAK[(op, impl)] * E * FEATURES * 4
    if measured is not None and measured[0] < E:
        # Scale the measured peak RSS of a smaller size, less the Python + torch start-up (~400 MB).
        overhead = 400.0
        scaled = overhead + max(measured[1] - overhead, 0.0) * E / measured[0]
        return max(analytic, scaled * 2**20)
    return analytic


@pytest.mark.parametrize("op,num_edges,impl", _segment_params())
def test_segment_op(benchmark, op, num_edges, impl):
    E = num_edges
    budget = _data.memory_budget_bytes()
    predicted = _predicted_peak_bytes(op, impl, E)
    if predicted > budget:
        pytest.skip(f"{op} {impl} at E={E:.0e}, F={FEATURES}: predicted peak {predicted / 2**30:.1f} GiB "
                    f"> budget {budget / 2**30:.1f} GiB (PAMNET_BENCH_MEM_BUDGET_GB)")
    benchmark.group = f"{op}: E = {E:.0e}, F = {FEATURES}, N = E/16, forward + backward"
    benchmark.extra_info.update(op=op, impl=impl, edges=E, features=FEATURES, nodes=max(E // 16, 1),
                                baseline=impl == "unfused", threads=torch.get_num_threads(),
                                predicted_peak_gb=round(predicted / 2**30, 2))
    if impl == "fused":
        benchmark.extra_info["backend"] = _data.ops_backend(op)
    mem = _data.peak_memory(HERE, "build_segment_case", dict(op=op, impl=impl, num_edges=E))
    _data.attach_memory(benchmark, mem)
    if mem and "peak_rss_mb" in mem:
        prev = _MEASURED.get((op, impl))
        if prev is None or prev[0] < E:
            _MEASURED[(op, impl)] = (E, mem["peak_rss_mb"])
    case = build_segment_case(op, impl, E)
    # The gradients of the inputs are allocated by both implementations; what is left of the peak is the
    # working memory of the formulation (intermediates such as the gathered [E, F] rows).
    benchmark.extra_info["input_grad_mb"] = case.info["input_grad_mb"]
    if mem and "peak_extra_mb" in mem:
        benchmark.extra_info["workspace_mb"] = round(mem["peak_extra_mb"] - case.info["input_grad_mb"], 1)
    benchmark.pedantic(case.run, setup=case.reset, **_data.rounds(ROUNDS.get(E, 3)))
    case.reset()
    del case
