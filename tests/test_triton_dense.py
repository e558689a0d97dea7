"""The Triton GEMM with bias, SiLU and residual in its epilogue (the CUDA path of ``ops.linear_silu``).

Shared setup and the interpreter's rules: ``_triton_util``.
"""
import math

import pytest
import torch

triton = pytest.importorskip("triton")

from _triton_util import DEV, _close, _gen, _interpreter_outside_modes, _route_dense_to_triton, tk

pytestmark = pytest.mark.triton


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
