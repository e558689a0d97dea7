"""ops.linear / ops.linear_silu (oneDNN on CPU float32) against F.linear, their reference twin."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pamnet_fast import ops
from pamnet_fast.nn import MLP, Linear, LinearSiLU

ONEDNN = ops.linear_backend() == "onednn"
G = torch.Generator().manual_seed(5)


def rand(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=G, dtype=torch.float64).to(dtype)


def grads(fn, *inputs):
    inputs = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    out = fn(*inputs)
    out.backward(torch.ones_like(out) * torch.linspace(-1, 1, out.numel()).view_as(out))
    return out.detach(), [t.grad if t is not None else None for t in inputs]


@pytest.mark.parametrize("shape", [(1, 5), (37, 16), (2286, 128), (3, 4, 24)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_f_linear_values_and_gradients(shape, bias):
    x = rand(*shape)
    w = rand(11, shape[-1]) * 0.3
    b = rand(11) if bias else None
    out, g = grads(ops.linear, x, w, b)
    ref, g_ref = grads(F.linear, x, w, b)
    # the same float32 arithmetic in another kernel: float32 rounding apart, checked against float64
    exact = F.linear(x.double(), w.double(), None if b is None else b.double())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert (out.double() - exact).abs().max() <= 4 * (ref.double() - exact).abs().max() + 1e-6
    for a, r in zip(g, g_ref):
        if r is not None:
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(not ONEDNN, reason="oneDNN linear unavailable in this torch build")
def test_linear_takes_the_onednn_path_on_cpu_float32_only():
    x, w = rand(8, 6).requires_grad_(), rand(4, 6).requires_grad_()
    assert type(ops.linear(x, w).grad_fn).__name__ == "_OneDNNLinearBackward"
    assert "Addmm" in type(ops.linear(x.double(), w.double(), rand(4, dtype=torch.float64)).grad_fn).__name__
    assert type(ops.linear(x[:0], w).grad_fn).__name__ != "_OneDNNLinearBackward"  # no rows
    with ops.aten_linear():
        assert ops.linear_backend() == "aten"
        assert type(ops.linear(x, w).grad_fn).__name__ == "MmBackward0"
    assert ops.linear_backend() == "onednn"


def test_linear_float64_is_f_linear_and_gradcheck():
    x = rand(7, 5, dtype=torch.float64).requires_grad_()
    w = rand(3, 5, dtype=torch.float64).requires_grad_()
    b = rand(3, dtype=torch.float64).requires_grad_()
    assert torch.equal(ops.linear(x, w, b), F.linear(x, w, b))
    assert torch.autograd.gradcheck(ops.linear, (x, w, b))


def test_linear_noncontiguous_inputs_and_weight_slices():
    x = rand(40, 64)[:, ::2]
    big = rand(16, 96).requires_grad_()
    w = big[:, 32:64]  # a column block, as the message layers' split concat weight
    out = ops.linear(x, w)
    out.sum().backward()
    ref_w = big.detach().clone().requires_grad_()
    F.linear(x, ref_w[:, 32:64]).sum().backward()
    torch.testing.assert_close(out, F.linear(x, w.detach()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(big.grad, ref_w.grad, rtol=1e-5, atol=1e-4)
    assert bool((big.grad[:, :32] == 0).all())


def test_linear_silu_fused_inference_matches_unfused():
    x, w, b = rand(500, 32), rand(64, 32) * 0.3, rand(64)
    with torch.no_grad():
        fused = ops.linear_silu(x, w, b)
    torch.testing.assert_close(fused, F.silu(F.linear(x, w, b)), rtol=1e-5, atol=1e-5)
    out, g = grads(ops.linear_silu, x, w, b)
    ref, g_ref = grads(lambda *a: F.silu(F.linear(*a)), x, w, b)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(g, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-4)


def test_linear_silu_residual_and_the_res_block():
    """``linear_silu(..., residual=r)`` is ``SiLU(linear) + r`` (the same sum, so the same bits as the
    add after it), fused or recorded, with the residual's gradient; ``Res`` uses it and keeps its
    state-dict names."""
    from pamnet_fast.nn import Res
    x, w, b, r = rand(300, 32), rand(32, 32) * 0.3, rand(32), rand(300, 32)
    with torch.no_grad():
        assert torch.equal(ops.linear_silu(x, w, b, residual=r), ops.linear_silu(x, w, b) + r)
    out, g = grads(lambda *a: ops.linear_silu(*a[:3], residual=a[3]), x, w, b, r)
    ref, g_ref = grads(lambda *a: F.silu(F.linear(*a[:3])) + a[3], x, w, b, r)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, want in zip(g, g_ref):
        torch.testing.assert_close(a, want, rtol=1e-5, atol=1e-4)
    res = Res(32)
    assert list(res.state_dict()) == ["mlp.0.0.weight", "mlp.0.0.bias", "mlp.1.0.weight", "mlp.1.0.bias"]
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            torch.testing.assert_close(res(x), res.mlp(x) + x, rtol=1e-6, atol=1e-6)


def test_dense_modules_keep_nn_linear_state_dict_names():
    mlp = MLP([5, 8, 3])
    assert isinstance(mlp[0], LinearSiLU) and isinstance(mlp[0][0], Linear)
    assert list(mlp.state_dict()) == ["0.0.weight", "0.0.bias", "1.0.weight", "1.0.bias"]
    plain = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.SiLU())
                                  for a, b in ((5, 8), (8, 3))])
    plain.load_state_dict(mlp.state_dict())
    x = rand(9, 5)
    torch.testing.assert_close(mlp(x), plain(x), rtol=1e-5, atol=1e-5)


def test_linear_aten_switch_by_environment():
    code = ("import torch\nfrom pamnet_fast import ops\nx = torch.randn(5, 3, requires_grad=True)\n"
            "print(ops.linear_backend(), type(ops.linear(x, torch.randn(2, 3)).grad_fn).__name__)\n")
    env = dict(os.environ, PAMNET_FAST_LINEAR="aten")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["aten", "MmBackward0"]
