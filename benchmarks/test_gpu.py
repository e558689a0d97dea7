"""GPU benchmark suite of the Triton backend (issue 13): every case of the issue's table, side by side
with its baselines in one process. Skipped without CUDA.

One command on a GPU machine (after ``python3 benchmarks/save_gpu_inputs.py`` on a machine with the
data, carrying ``benchmarks/gpu_inputs``)::

    PYTHONPATH=. PAMNET_FAST_DISABLE_EXTENSION=1 python3 benchmarks/gpu_suite.py

which runs ``pytest benchmarks/test_gpu.py --benchmark-only --benchmark-json=benchmarks/gpu_results.json``
and then ``python3 benchmarks/write_gpu_results.py benchmarks/gpu_results.json`` (-> ``RESULTS_GPU.md``).
CPU smoke run of the whole pipeline through Triton's interpreter (tiny sizes, numbers meaningless)::

    TRITON_INTERPRET=1 PYTHONPATH=. python3 benchmarks/gpu_suite.py --device cpu --quick --out /tmp/gpu_smoke

Cases (groups of the results file; ``impl`` ``ours`` against the baselines of the same group):

* neighbor search: ``radius_graph`` on RNA-Puzzle 5 at 20 Å, the 6zu5 ribosome at 5 and 8 Å, 512 random
  systems x 2,048 atoms at 5 Å in one batch; ``knn_graph`` (k = 16) on RNA-Puzzle 5 and 6zu5; against
  a plain-PyTorch brute force (all pairs in blocks, ``pair_distance``), whose result ours must equal
  bit for bit (checked first);
* message ops, forward + backward: ``segment_gather_mul``, ``fused_edge_message``, and
  ``fused_edge_message`` and ``edge_message`` (its terms per edge: PAMNet's local neighbour messages)
  with ``edge_row`` (both directions of a pair share a row, as in PAMNet) at
  E = 1e5, 1e6, 1e7 with F = 128, and at E = 1e6 with F = 96 (not a power of two) and in bfloat16;
  against the unfused PyTorch code (``index_select``, arithmetic, ``index_add_``) eager and under
  ``torch.compile`` (``dynamic=True``: one compilation per op); results checked against the eager code;
* basis ops, forward + backward: ``bessel_basis`` (6 radial, E = 1e5..1e7) and ``spherical_basis``
  (7 x 6, T = 1e5, 1e6) against the reference twins, eager and compiled;
* models (issue 12): PAMNet, PAMNet-s, DimeNet++ and SchNet (stock PyG on our ops via
  ``pamnet_fast.pyg.accelerate()``) on real QM9 batches of 32, 128 and 1,024 molecules, inference and
  train step (fused Adam for every model); then PAMNet with its forward recorded in a CUDA graph
  (``pamnet_fast.nn.capture_forward``, inference), without activation checkpointing (train step)
  and compiled (``pamnet_fast.nn.compile_model``, batches of 128 and 1,024), graph building eager
  and timed with them.

Every case records in ``extra_info``: ``cuda_peak_extra_mb`` (memory peak of one call above what was
allocated before it), ``cuda_kernels`` and ``memcpy_dtoh`` / ``host_syncs`` per call (torch.profiler;
our ops and the models, not the op baselines: a profile costs about a second of set-up),
and for the op cases ``bytes`` (each input read once + each output written once) and ``floor_ms``
(those bytes at the copy bandwidth measured on the card: ``empty_like(x).copy_(x)`` of 1 GiB).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _data  # noqa: E402
import gpu_check  # noqa: E402

DEV = os.environ.get("PAMNET_GPU_BENCH_DEVICE", "cuda")
SMOKE = not DEV.startswith("cuda")
INPUTS = Path(os.environ.get("PAMNET_GPU_INPUTS", HERE / "gpu_inputs"))
LOG = os.environ.get("PAMNET_GPU_BENCH_LOG")  # JSON lines, one per finished case (partial runs)
# Wall-clock budget of the session (seconds, 0: none): cases starting after it are skipped, so that
# a run on a lent machine ends with results written rather than killed. gpu_suite.py sets it.
BUDGET_S = float(os.environ.get("PAMNET_GPU_BENCH_BUDGET_S", "0"))
_STARTED = time.time()

if SMOKE:
    _skip = (os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
             "the CPU smoke run needs TRITON_INTERPRET=1 (set before Triton is imported)")
else:
    _skip = (not torch.cuda.is_available(), "needs a CUDA device")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_skip[0], reason=_skip[1])]


@pytest.fixture(autouse=True)
def _within_budget():
    if BUDGET_S and time.time() - _STARTED > BUDGET_S:
        pytest.skip(f"time budget of {BUDGET_S:.0f} s spent (PAMNET_GPU_BENCH_BUDGET_S)")


def _sync():
    if not SMOKE:
        torch.cuda.synchronize()


def _require_triton(op: str) -> None:
    if SMOKE:
        return
    from pamnet_fast import ops
    backend = ops.backend(op, "cuda")
    if backend != "triton":
        from pamnet_fast.ops import library
        pytest.skip(f"{op} on CUDA uses the {backend} backend (Triton: {library._TRITON_ERROR})")


def _rounds(full: int) -> int:
    return 1 if _data.quick() else full


def _profile(fn) -> dict:
    counts = gpu_check.profile_counts(fn, DEV)
    counts.pop("kernel_names", None)
    if "host_syncs_api" in counts:
        counts["host_syncs"] = counts.pop("host_syncs_api")
    return counts


def _measure(benchmark, fn, reset=lambda: None, rounds=10, profile=True):
    """Time ``fn`` (synchronized inside the timed call) with pytest-benchmark; record the memory peak
    of one call above what was allocated before it, and kernel / host-sync counts of one call."""
    def call():
        out = fn()
        _sync()
        return out

    reset()
    if not SMOKE:  # the interpreter compiles nothing: no warm-up (a call there takes seconds)
        call()  # warm-up: Triton compilation and autotuning, torch.compile, the caching allocator
        reset()
    _sync()
    if not SMOKE:
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    out = call()
    if not SMOKE:
        peak = torch.cuda.max_memory_allocated()
        benchmark.extra_info["cuda_peak_extra_mb"] = round((peak - base) / 2**20, 1)
        benchmark.extra_info["device"] = torch.cuda.get_device_name()
    del out
    if profile:
        reset()
        benchmark.extra_info.update(_profile(call))
    benchmark.pedantic(call, setup=reset, rounds=_rounds(rounds), iterations=1, warmup_rounds=0)
    _log(benchmark)


def _log(benchmark) -> None:
    """Append the finished case to ``PAMNET_GPU_BENCH_LOG`` (the writer can read a killed run)."""
    if not LOG:
        return
    st = benchmark.stats.stats
    row = {"name": benchmark.name, "group": benchmark.group, "extra_info": dict(benchmark.extra_info),
           "stats": {k: getattr(st, k) for k in ("min", "max", "mean", "median", "stddev", "rounds")}}
    with open(LOG, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def _release(tensors) -> None:
    """Free the storage of a case's tensors now (a failed case's traceback would keep them alive,
    and the 1e7-edge cases hold tens of GB)."""
    for t in tensors:
        t.grad = None
        t.data = t.data.new_empty(0)


@pytest.fixture(scope="session")
def copy_bandwidth():
    """Bytes per second of ``y.copy_(x)`` (read + write) for a 1 GiB float32 tensor (4 MiB smoke)."""
    n = (1 << 20) if SMOKE else (1 << 28)
    x = torch.randn(n, device=DEV)
    y = torch.empty_like(x)
    ms = gpu_check.time_ms(lambda: y.copy_(x), DEV, 3 if SMOKE else 20)
    del x, y
    return 2 * n * 4 / (ms * 1e-3)


def _floor(benchmark, copy_bandwidth, tensors_read, tensors_written):
    nbytes = sum(t.numel() * t.element_size() for t in tensors_read + tensors_written)
    benchmark.extra_info.update(bytes=nbytes, copy_gb_per_s=round(copy_bandwidth / 1e9, 1),
                                floor_ms=round(1e3 * nbytes / copy_bandwidth, 4))


# ------------------------------------------------------------------------------ neighbor search

def _positions(name):
    if SMOKE:
        g = torch.Generator().manual_seed(0)
        return (torch.rand(100, 3, generator=g) * 20).to(DEV)
    path = INPUTS / f"{name}.pt"
    if not path.exists():
        pytest.skip(f"{path} missing: run benchmarks/save_gpu_inputs.py and carry benchmarks/gpu_inputs")
    return torch.load(path)["pos"].to(DEV)


def _neighbor_cases():
    if _data.quick():
        return [("radius", "rna5", 6.0, None), ("radius", "batch", 5.0, 32), ("knn", "rna5", 8, None)]
    return [("radius", "rna5", 20.0, None), ("radius", "6zu5", 5.0, None), ("radius", "6zu5", 8.0, None),
            ("radius", "batch", 5.0, 2048), ("knn", "rna5", 16, None), ("knn", "6zu5", 16, None)]


def _neighbor_id(case):
    kind, name, param, size = case
    what = f"{512 if not _data.quick() else 4}x{size}" if name == "batch" else name
    return f"{kind}-{what}-{'r' if kind == 'radius' else 'k'}{param:g}"


@pytest.mark.parametrize("impl", ["ours", "brute_force"])
@pytest.mark.parametrize("case", _neighbor_cases(), ids=_neighbor_id)
def test_neighbors(benchmark, case, impl):
    from pamnet_fast.ops.triton import neighbors as nb
    kind, name, param, size = case
    _require_triton(f"{kind}_graph")
    batch = None
    if name == "batch":
        systems = 4 if _data.quick() else 512
        side = (size / 0.1) ** (1 / 3)  # ~0.1 atoms / Å^3: the heavy-atom density of proteins
        g = torch.Generator().manual_seed(0)
        pos = (torch.rand(systems, size, 3, generator=g) * side).view(-1, 3).to(DEV)
        batch = torch.arange(systems, device=DEV).repeat_interleave(size)
    else:
        pos = _positions(name)
    if kind == "radius":
        ours = lambda: nb.radius_graph(pos, param, batch, False, -1, False)  # noqa: E731
        brute = lambda: gpu_check.brute_radius(pos, param, size)  # noqa: E731
    else:
        ours = lambda: nb.knn_graph(pos, param, batch, None, False)  # noqa: E731
        brute = lambda: gpu_check.brute_knn(pos, param)  # noqa: E731
    benchmark.group = f"neighbors: {_neighbor_id(case)}"
    benchmark.extra_info.update(impl=impl, baseline=impl == "brute_force", atoms=pos.size(0))
    if impl == "ours":
        got, want = ours(), brute()
        benchmark.extra_info["edges"] = int(want[0].size(1))
        exact = all(torch.equal(a, b) for a, b in zip(got, want))
        benchmark.extra_info["exact"] = exact
        del got, want
        assert exact, "the Triton neighbor list differs from the brute force"
    slow = name == "6zu5" and impl == "brute_force"
    # (profiles of ours only: each costs about a second of profiler set-up)
    _measure(benchmark, ours if impl == "ours" else brute, rounds=3 if slow else 20, profile=impl == "ours")


# ------------------------------------------------------------------------------- message ops

def _message_sizes():
    if _data.quick():
        return [(1_000, 128, "float32"), (1_000, 96, "float32"), (1_000, 128, "bfloat16")]
    return [(100_000, 128, "float32"), (1_000_000, 128, "float32"), (10_000_000, 128, "float32"),
            (1_000_000, 96, "float32"), (1_000_000, 128, "bfloat16")]


MESSAGE_OPS = ["segment_gather_mul", "fused_edge_message", "fused_edge_message+edge_row",
               "edge_message+edge_row"]
MESSAGE_IMPLS = ["ours", "torch.compile", "eager"]


@functools.lru_cache(maxsize=2)
def _pair_graph(num_edges: int, seed: int = 0):
    """A symmetric random graph of ``num_edges / 2`` pairs over ``num_edges / 20`` nodes (mean degree
    20), both directions of each pair sharing a row (``edge_row``), sorted by target then source."""
    g = torch.Generator().manual_seed(seed)
    num_nodes, pairs = max(2, num_edges // 20), num_edges // 2
    u = torch.randint(0, num_nodes, (pairs,), generator=g)
    v = (u + torch.randint(1, num_nodes, (pairs,), generator=g)) % num_nodes
    src, dst = torch.cat([u, v]), torch.cat([v, u])
    row = torch.arange(pairs).repeat(2)
    order = torch.sort(dst * num_nodes + src, stable=True).indices
    src, dst, row = src[order], dst[order], row[order]
    ptr = torch.zeros(num_nodes + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0)
    return num_nodes, pairs, src.to(DEV), dst.to(DEV), row.to(DEV), ptr.to(DEV)


def unfused_segment_gather_mul(a, src, b, dst, num_rows: int):
    return a.new_zeros(num_rows, a.size(1)).index_add_(0, dst, a.index_select(0, src) * b)


def unfused_edge_message(p, q, r, s, src, dst, edge_row=None):
    if edge_row is not None:
        r, s = r.index_select(0, edge_row), s.index_select(0, edge_row)
    return F.silu(p.index_select(0, dst) + q.index_select(0, src) + r) * s


def unfused_fused_edge_message(p, q, r, s, src, dst, edge_row=None):
    return p.new_zeros(p.shape).index_add_(0, dst, unfused_edge_message(p, q, r, s, src, dst, edge_row))


_COMPILED = {}


def _compiled(fn):
    # One compilation per op for every size (dynamic shapes): the suite must stay within minutes.
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=True)
    return _COMPILED[fn]


def _message_problem(op, num_edges, features, dtype):
    n, pairs, src, dst, row, ptr = _pair_graph(num_edges)
    g = torch.Generator(device=DEV).manual_seed(1)
    dt = getattr(torch, dtype)

    def leaf(rows):
        return torch.randn(rows, features, device=DEV, generator=g).to(dt).requires_grad_()

    num_edges = src.numel()
    if op == "segment_gather_mul":
        inputs = [leaf(n), leaf(num_edges)]
        index = [src, ptr]
    else:
        rows = pairs if op.endswith("edge_row") else num_edges
        inputs = [leaf(n), leaf(n), leaf(rows), leaf(rows)]
        index = [ptr, src] + ([row] if op.endswith("edge_row") else [])
    out_rows = num_edges if op.startswith("edge_message") else n
    grad = torch.randn(out_rows, features, device=DEV, generator=g).to(dt)
    return n, src, dst, row, ptr, inputs, index, grad


class _InterpretedMessageOp(torch.autograd.Function):
    """Smoke run only: the Triton kernels (forward and backward) under autograd on CPU tensors, which
    the dispatcher would send to the C++ kernels."""

    @staticmethod
    def forward(ctx, op, index, *leaves):
        from pamnet_fast.ops.triton import KERNELS
        ctx.op, ctx.index = op, index
        ctx.save_for_backward(*leaves)
        return KERNELS[op](leaves[0], index[0], leaves[1], index[1]) if op == "segment_gather_mul" \
            else KERNELS[op](*leaves, *index)

    @staticmethod
    def backward(ctx, grad):
        from pamnet_fast.ops.triton import KERNELS
        leaves, index = ctx.saved_tensors, ctx.index
        if ctx.op == "segment_gather_mul":
            grads = KERNELS["segment_gather_mul_backward"](grad, leaves[0], index[0], leaves[1], index[1],
                                                           True, True)
        else:  # fused_edge_message, edge_message
            grads = KERNELS[f"{ctx.op}_backward"](grad, *leaves, *index, [True] * 4)
        return (None, None) + tuple(grads)


def _message_forward(op, impl, n, src, dst, row, ptr, inputs):
    from pamnet_fast import ops
    edge_row = row if op.endswith("edge_row") else None
    if impl == "ours" and SMOKE:
        name = op.split("+")[0]
        index = (src, ptr) if name == "segment_gather_mul" else (ptr, src, edge_row)
        return lambda: _InterpretedMessageOp.apply(name, index, *inputs)
    if op == "segment_gather_mul":
        a, b = inputs
        if impl == "ours":
            return lambda: ops.segment_gather_mul(a, src, b, ptr)
        fn = unfused_segment_gather_mul if impl == "eager" else _compiled(unfused_segment_gather_mul)
        return lambda: fn(a, src, b, dst, n)
    p, q, r, s = inputs
    per_edge = op.startswith("edge_message")
    if impl == "ours":
        fused = ops.edge_message if per_edge else ops.fused_edge_message
        return lambda: fused(p, q, r, s, ptr, src, edge_row)
    unfused = unfused_edge_message if per_edge else unfused_fused_edge_message
    fn = unfused if impl == "eager" else _compiled(unfused)
    return lambda: fn(p, q, r, s, src, dst, edge_row)


def _check_message(op, n, src, dst, row, ptr, inputs, grad, forward):
    """Output and gradients of ``forward`` against the eager unfused code in float64 (on the same,
    possibly rounded, inputs): the largest error relative to the largest value, per tensor."""
    # float64 up to 1e6 edges; float32 above (float64 copies of the 1e7-edge case and its eager
    # intermediates would need ~100 GB)
    check_dtype = torch.float64 if src.numel() <= 1_000_000 else torch.float32
    wide = [t.detach().to(check_dtype).requires_grad_() for t in inputs]
    want_fn = _message_forward(op, "eager", n, src, dst, row, ptr, wide)
    want = want_fn()
    want.backward(grad.to(check_dtype))
    for t in inputs:
        t.grad = None
    got = forward()
    got.backward(grad)
    worst = 0.0
    for x, y in [(got, want)] + [(a.grad, b.grad) for a, b in zip(inputs, wide)]:
        x, y = x.detach().double(), y.detach().double()
        scale = max(float(y.abs().max()), 1e-30)
        worst = max(worst, float((x - y).abs().max()) / scale)
    for t in inputs:
        t.grad = None
    del wide, want, got
    if not SMOKE:
        torch.cuda.empty_cache()
    return worst


@pytest.mark.parametrize("impl", MESSAGE_IMPLS)
@pytest.mark.parametrize("op", MESSAGE_OPS)
@pytest.mark.parametrize("size", _message_sizes(), ids=lambda s: f"E{s[0]:.0e}-F{s[1]}-{s[2]}")
def test_message_ops(benchmark, copy_bandwidth, size, op, impl):
    num_edges, features, dtype = size
    _require_triton(op.split("+")[0])
    if dtype != "float32" and impl != "ours":
        pytest.skip("the half-precision case times our kernels only (the float32 rows are the baselines)")
    if SMOKE and impl == "torch.compile":
        pytest.skip("torch.compile baseline: GPU only (Inductor's CPU build is minutes here)")
    n, src, dst, row, ptr, inputs, index, grad = _message_problem(op, num_edges, features, dtype)
    forward = _message_forward(op, impl, n, src, dst, row, ptr, inputs)
    benchmark.group = f"{op} fwd+bwd E={num_edges:.0e} F={features} {dtype}"
    benchmark.extra_info.update(impl=impl, baseline=impl == "torch.compile", baseline2=impl == "eager",
                                op=op, edges=src.numel(), features=features, nodes=n, dtype=dtype,
                                triton_autotune=os.environ.get("PAMNET_FAST_TRITON_AUTOTUNE", "0"))
    err = _check_message(op, n, src, dst, row, ptr, inputs, grad, forward)
    benchmark.extra_info["max_rel_err"] = err
    assert err < (2e-2 if dtype == "bfloat16" else 1e-4), err
    # byte floor: forward reads inputs + indices, writes out; backward reads grad, inputs, indices and
    # writes one gradient per input
    out = torch.empty_like(grad)
    _floor(benchmark, copy_bandwidth, 2 * (inputs + index) + [grad], [out] + inputs)

    def run():
        forward().backward(grad)

    def reset():
        for t in inputs:
            t.grad = None

    _measure(benchmark, run, reset, rounds=5 if num_edges >= 10_000_000 else 10, profile=impl == "ours")
    _release(inputs + [grad, out])


# -------------------------------------------------------------------------------- basis ops

def _basis_sizes():
    if _data.quick():
        return [("bessel", 1_000), ("spherical", 300)]
    return [("bessel", 100_000), ("bessel", 1_000_000), ("bessel", 10_000_000), ("spherical", 100_000),
            ("spherical", 1_000_000)]


def unfused_bessel(dist, freq, cutoff: float, p: int):
    from pamnet_fast.ops import reference
    return reference.bessel_basis(dist, freq, cutoff, p)


def unfused_spherical(dist, angle, zeros, cutoff: float, p: int):
    from pamnet_fast.ops import reference
    return reference.spherical_basis(dist, angle, zeros, cutoff, p)


@pytest.mark.parametrize("impl", MESSAGE_IMPLS)
@pytest.mark.parametrize("size", _basis_sizes(), ids=lambda s: f"{s[0]}-{s[1]:.0e}")
def test_basis_ops(benchmark, copy_bandwidth, size, impl):
    from pamnet_fast import ops
    from pamnet_fast.ops.basis import spherical_bessel_zeros
    kind, rows = size
    _require_triton(f"{kind}_basis")
    if SMOKE and impl == "torch.compile":
        pytest.skip("torch.compile baseline: GPU only (Inductor's CPU build is minutes here)")
    g = torch.Generator(device=DEV).manual_seed(2)
    cutoff, p = 5.0, 5
    dist = (torch.rand(rows, device=DEV, generator=g) * 1.1 * cutoff).requires_grad_()
    if kind == "bessel":
        freq = (torch.arange(1, 7, device=DEV, dtype=torch.float32) * torch.pi).requires_grad_()
        leaves = [dist, freq]
        if impl == "ours":
            forward = lambda: ops.bessel_basis(dist, cutoff, 6, p, freq=freq)  # noqa: E731
        else:
            fn = unfused_bessel if impl == "eager" else _compiled(unfused_bessel)
            forward = lambda: fn(dist, freq, cutoff, p)  # noqa: E731
        cols = 6
    else:
        angle = (torch.rand(rows, device=DEV, generator=g) * torch.pi).requires_grad_()
        zeros = spherical_bessel_zeros(7, 6, dist.device)
        leaves = [dist, angle]
        if impl == "ours":
            forward = lambda: ops.spherical_basis(dist, angle, cutoff, 7, 6, p)  # noqa: E731
        else:
            fn = unfused_spherical if impl == "eager" else _compiled(unfused_spherical)
            forward = lambda: fn(dist, angle, zeros, cutoff, p)  # noqa: E731
        cols = 42
    grad = torch.randn(rows, cols, device=DEV, generator=g)
    benchmark.group = f"{kind}_basis fwd+bwd rows={rows:.0e} cols={cols}"
    benchmark.extra_info.update(impl=impl, baseline=impl == "torch.compile", baseline2=impl == "eager",
                                rows=rows, cols=cols)
    out = torch.empty(rows, cols, device=DEV)
    _floor(benchmark, copy_bandwidth, 2 * leaves + [grad], [out] + leaves)

    def run():
        forward().backward(grad)

    def reset():
        for t in leaves:
            t.grad = None

    _measure(benchmark, run, reset, rounds=5 if rows >= 10_000_000 else 10, profile=impl == "ours")
    _release(leaves + [grad, out])


# ------------------------------------------------------------------------------------ models

MODEL_NAMES = ["PAMNet", "PAMNet-s", "DimeNet++", "SchNet"]


def _model_batch_sizes():
    return [8] if _data.quick() else [32, 128, 1024]


def _qm9(batch_size: int):
    if SMOKE and not (INPUTS / f"qm9_bs{batch_size}.pt").exists():
        try:
            return _data.qm9_batch(batch_size)
        except (ImportError, FileNotFoundError) as exc:
            pytest.skip(f"QM9 unavailable: {exc}")
    path = INPUTS / f"qm9_bs{batch_size}.pt"
    if not path.exists():
        pytest.skip(f"{path} missing: run benchmarks/save_gpu_inputs.py and carry benchmarks/gpu_inputs")
    from save_gpu_inputs import load_qm9_batch
    return load_qm9_batch(path)


@pytest.mark.parametrize("mode", ["inference", "train"])
@pytest.mark.parametrize("batch_size", _model_batch_sizes())
@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_models(benchmark, model_name, batch_size, mode):
    import test_models as cpu_models
    _require_triton("fused_edge_message")
    batch = _qm9(batch_size).to(DEV)
    model, forward = cpu_models.make_model(model_name)
    model.to(DEV)
    case = cpu_models._case(model, forward, batch, mode)
    benchmark.group = f"QM9 batch {batch_size}: {'inference' if mode == 'inference' else 'train step'}"
    benchmark.extra_info.update(model=model_name, impl=model_name, batch_size=batch_size, mode=mode,
                                baseline=model_name == "DimeNet++",
                                parameters=sum(p.numel() for p in model.parameters()),
                                **_data.batch_stats(batch))
    if model_name.startswith("PAMNet") and mode == "inference" and not SMOKE:
        benchmark.extra_info.update(_phase_counts(model, batch))
    _measure(benchmark, case.run, case.reset, rounds=10)


def _phase_counts(model, batch) -> dict:
    """Issue 12's budgets, per phase of one PAMNet inference: kernels and host syncs of
    ``model.build_graphs(batch)`` and of the forward given the graphs."""
    model.eval()
    with torch.no_grad():
        build = _profile(lambda: model.build_graphs(batch))
        graphs = model.build_graphs(batch)
        forward = _profile(lambda: model(batch, graphs))
    return {f"{phase}_{key}": value for phase, counts in (("build", build), ("forward", forward))
            for key, value in counts.items()}



# PAMNet's forward given its graphs compiled (torch.compile, one graph, dynamic shapes) and recorded
# in a CUDA graph (one launch per forward; graph building stays eager and is timed with it). Last in
# the file: the compilation takes a while, and the budget skips what would start too late.
GRAPH_MODES = ["PAMNet (CUDA graph)", "PAMNet (compiled)", "PAMNet (no activation checkpointing)",
               "PAMNet (full activation checkpointing)", "PAMNet (aten GEMM)"]


def _graph_mode_params():
    sizes = _model_batch_sizes()
    return ([pytest.param("PAMNet (CUDA graph)", bs, "inference", id=f"inference-bs{bs}-cudagraph")
             for bs in sizes] +
            [pytest.param("PAMNet (no activation checkpointing)", bs, "train", id=f"train-bs{bs}-keep")
             for bs in sizes] +
            [pytest.param("PAMNet (full activation checkpointing)", bs, "train",
                          id=f"train-bs{bs}-recompute-all") for bs in sizes] +
            # the dense layers on cuBLAS + a separate SiLU instead of the Triton GEMM with epilogue
            [pytest.param("PAMNet (aten GEMM)", bs, mode, id=f"{mode}-bs{bs}-aten-gemm")
             for mode in ("inference", "train") for bs in sizes if bs >= 128 or _data.quick()] +
            [pytest.param("PAMNet (compiled)", bs, mode, id=f"{mode}-bs{bs}-compiled")
             for mode in ("inference", "train") for bs in sizes if bs >= 128 or _data.quick()])


@pytest.mark.parametrize("model_name,batch_size,mode", _graph_mode_params())
def test_models_graph_modes(benchmark, model_name, batch_size, mode):
    import test_models as cpu_models
    from pamnet_fast.nn import capture_forward, compile_model
    if SMOKE:
        pytest.skip("CUDA graphs and torch.compile of the model: GPU only")
    _require_triton("fused_edge_message")
    batch = _qm9(batch_size).to(DEV)
    wrapped = model_name in ("PAMNet (CUDA graph)", "PAMNet (compiled)")
    model, forward = cpu_models.make_model("PAMNet" if wrapped else model_name)
    model.to(DEV)
    if model_name == "PAMNet (CUDA graph)":
        forward = capture_forward(model.eval(), batch)
    elif model_name == "PAMNet (compiled)":
        forward = compile_model(model)
    case = cpu_models._case(model, forward, batch, mode)
    benchmark.group = f"QM9 batch {batch_size}: {'inference' if mode == 'inference' else 'train step'}"
    benchmark.extra_info.update(model=model_name, impl=model_name, batch_size=batch_size, mode=mode,
                                baseline=False, parameters=sum(p.numel() for p in model.parameters()),
                                **_data.batch_stats(batch))
    _measure(benchmark, case.run, case.reset, rounds=10)
