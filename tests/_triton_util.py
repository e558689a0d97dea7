"""Shared helpers of the Triton kernel tests (``tests/test_triton*.py``): devices, tolerances, inputs,
and the interpreter hooks that route ops to the Triton kernels on CPU tensors and count launches.

Without a GPU, ``conftest.py`` sets ``TRITON_INTERPRET=1`` before anything imports Triton, and the
kernels run on CPU tensors through Triton's interpreter (slow: sizes here are small). With a GPU the
same tests run the compiled kernels on CUDA tensors.

Import it after ``pytest.importorskip("triton")``: it imports the Triton kernels.
"""
import warnings

import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pamnet_fast.ops import library, reference
    from pamnet_fast.ops import triton as tk

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




def _random_pos(n, box, dtype, seed):
    return (torch.rand(n, 3, generator=_gen(seed), dtype=torch.float64) * box).to(dtype)


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


def _edges(n, box, r, seed):
    return reference.radius_graph(_random_pos(n, box, torch.float64, seed), r)[0]


def _csr(num_rows, max_len, num_src, seed, index_dtype=torch.long):
    gen = _gen(seed)
    lens = torch.randint(0, max_len + 1, (num_rows,), generator=gen)
    lens[0] = 0  # an empty segment
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)])
    src = torch.randint(0, num_src, (int(ptr[-1]),), generator=gen)
    return ptr.to(index_dtype), src.to(index_dtype)


def _randn(*shape, dtype, seed):
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64).to(dtype)


def _route_dense_to_triton(monkeypatch):
    """``ops.linear_silu`` takes the Triton GEMM on CPU tensors too (the interpreter), and
    ``ops.linear`` is ``F.linear``, as both are on CUDA (the oneDNN path is the CPU's)."""
    from pamnet_fast.ops import dense
    monkeypatch.setattr(dense, "_gemm_launcher", lambda x: tk.linear_act)
    monkeypatch.setattr(dense, "_fast", lambda x, weight: False)


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


def _batch_systems(sizes, box, dtype, seed):
    pos = _random_pos(sum(sizes), box, dtype, seed)
    ids = [g * 3 for g, s in enumerate(sizes) for _ in range(s)]  # non-contiguous graph ids
    return pos, torch.tensor(ids)
