"""GPU benchmarks of the Triton backend (skipped without CUDA).

* radius graph on RNA-Puzzle 5 (3,823 atoms, r = 20 Å) and the 6zu5 ribosome (r = 5 Å), through the
  public op (dispatched to the Triton kernels on CUDA);
* ``segment_gather_mul`` and ``fused_edge_message`` at E = 1e6 edges, F = 128, forward + backward,
  fused (Triton) vs unfused PyTorch (index_select, mul, index_add_).

Each case reports its time (pytest-benchmark, with ``torch.cuda.synchronize`` inside the timed call)
and ``torch.cuda.max_memory_allocated`` during one call, above what was allocated before it, in
``benchmark.extra_info`` (``cuda_peak_mb``, ``cuda_peak_extra_mb``). ``--quick`` shrinks the segment
cases to E = 1e5 and drops the ribosome.

    pytest benchmarks/test_gpu.py --benchmark-only --benchmark-json=benchmarks/gpu.json
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import _data

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _require_triton(op: str) -> None:
    from pamnet_fast import ops
    backend = ops.backend(op, "cuda")
    if backend != "triton":
        from pamnet_fast.ops import library
        pytest.skip(f"{op} on CUDA uses the {backend} backend (Triton: {library._TRITON_ERROR})")


def _measure(benchmark, fn, reset=lambda: None, rounds=5):
    """Time ``fn`` (synchronized) and record its CUDA memory peak above the memory held before it."""
    def call():
        out = fn()
        torch.cuda.synchronize()
        return out

    reset()
    call()  # warm-up: Triton compilation, caching allocator
    reset()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = call()
    peak = torch.cuda.max_memory_allocated()
    del out
    benchmark.extra_info["cuda_peak_mb"] = round(peak / 2**20, 1)
    benchmark.extra_info["cuda_peak_extra_mb"] = round((peak - base) / 2**20, 1)
    benchmark.extra_info["device"] = torch.cuda.get_device_name()
    n = 1 if _data.quick() else rounds
    return benchmark.pedantic(call, setup=reset, rounds=n, iterations=1, warmup_rounds=0)


# --- radius graph ---

RADIUS_CASES = [("rna5", 20.0), ("6zu5", 5.0)]


@pytest.mark.parametrize("dataset,cutoff", RADIUS_CASES, ids=[f"{d}-r{c:g}" for d, c in RADIUS_CASES])
def test_radius_graph_gpu(benchmark, dataset, cutoff):
    from pamnet_fast import ops
    _require_triton("radius_graph")
    if dataset == "6zu5" and _data.quick():
        pytest.skip("quick mode: no ribosome")
    structure = _data.rna_puzzle5() if dataset == "rna5" else _data.ribosome()
    pos = structure.pos.contiguous().cuda()
    benchmark.group = "gpu radius_graph"
    benchmark.extra_info.update(atoms=pos.size(0), cutoff=cutoff)
    edge_index = _measure(benchmark, lambda: ops.radius_graph(pos, cutoff))
    benchmark.extra_info["edges"] = int(edge_index.size(1))


# --- fused segment ops vs unfused PyTorch ---

def _csr_problem(num_edges: int, features: int, seed: int = 0):
    """A random CSR graph with ~20 edges per node (sorted targets), on the GPU."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    num_nodes = max(1, num_edges // 20)
    dst = torch.sort(torch.randint(0, num_nodes, (num_edges,), device="cuda", generator=g)).values
    src = torch.randint(0, num_nodes, (num_edges,), device="cuda", generator=g)
    ptr = torch.zeros(num_nodes + 1, dtype=torch.long, device="cuda")
    torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0, out=ptr[1:])
    return num_nodes, src, dst, ptr, g


def _num_edges() -> int:
    return 100_000 if _data.quick() else 1_000_000


IMPLS = ["fused_triton", "unfused_torch"]


@pytest.mark.parametrize("impl", IMPLS)
def test_segment_gather_mul_gpu(benchmark, impl):
    from pamnet_fast import ops
    _require_triton("segment_gather_mul")
    e, feats = _num_edges(), 128
    n, src, dst, ptr, g = _csr_problem(e, feats)
    a = torch.randn(n, feats, device="cuda", generator=g, requires_grad=True)
    b = torch.randn(e, feats, device="cuda", generator=g, requires_grad=True)
    grad = torch.randn(n, feats, device="cuda", generator=g)

    if impl == "fused_triton":
        def forward():
            return ops.segment_gather_mul(a, src, b, ptr)
    else:
        def forward():
            out = a.new_zeros(n, feats)
            return out.index_add_(0, dst, a.index_select(0, src) * b)

    def run():
        forward().backward(grad)

    def reset():
        a.grad = b.grad = None

    benchmark.group = "gpu segment_gather_mul fwd+bwd"
    benchmark.extra_info.update(edges=e, features=feats, nodes=n, baseline=impl == "unfused_torch")
    _measure(benchmark, run, reset)


@pytest.mark.parametrize("impl", IMPLS)
def test_fused_edge_message_gpu(benchmark, impl):
    from pamnet_fast import ops
    _require_triton("fused_edge_message")
    e, feats = _num_edges(), 128
    n, src, dst, ptr, g = _csr_problem(e, feats, seed=1)
    p = torch.randn(n, feats, device="cuda", generator=g, requires_grad=True)
    q = torch.randn(n, feats, device="cuda", generator=g, requires_grad=True)
    r = torch.randn(e, feats, device="cuda", generator=g, requires_grad=True)
    s = torch.randn(e, feats, device="cuda", generator=g, requires_grad=True)
    grad = torch.randn(n, feats, device="cuda", generator=g)

    if impl == "fused_triton":
        def forward():
            return ops.fused_edge_message(p, q, r, s, ptr, src)
    else:
        def forward():
            h = p.index_select(0, dst) + q.index_select(0, src) + r
            return p.new_zeros(n, feats).index_add_(0, dst, F.silu(h) * s)

    def run():
        forward().backward(grad)

    def reset():
        p.grad = q.grad = r.grad = s.grad = None

    benchmark.group = "gpu fused_edge_message fwd+bwd"
    benchmark.extra_info.update(edges=e, features=feats, nodes=n, baseline=impl == "unfused_torch")
    _measure(benchmark, run, reset)
