r"""Dense layers :math:`y = x W^T + b` on the CPU through oneDNN.

PyTorch's CPU ``F.linear`` (addmm) calls MKL's sgemm, which is known to take its AVX2 code path on AMD
CPUs. On this project's machine (AMD EPYC with AVX-512, 2 threads) it gave 115-150 GFLOP/s on PAMNet's
shapes (``[2,286 .. 17,446, 128] x [128, 128]``), against 240-320 GFLOP/s for oneDNN's matmul, the one
behind PyTorch's own mkldnn linear and inductor's CPU linear. It is the same float32 arithmetic (float32
products and accumulation; the same max error against float64), only a faster kernel. GEMMs are most
of a PAMNet step, so :func:`linear` serves every dense layer of :mod:`pamnet_fast.nn` (QM9 batch of
128 in the benchmark suite: -12% train step, -20% inference against the same model on ``F.linear``):

* CPU float32 (no autocast, not under ``torch.compile``): oneDNN forward ``x W^T + b``, backward
  ``dx = g W`` (oneDNN), ``dW = g^T x`` (aten ``mm``) and ``db = sum g``;
* everything else (float64, CUDA, ...): ``F.linear``, the reference twin.

``PAMNET_FAST_LINEAR=aten`` (read once, at the first call) sends everything to ``F.linear``, and so
does the :func:`aten_linear` context (for A/B comparisons); :func:`linear_backend` says which path CPU
float32 takes.
"""
from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["linear", "linear_silu", "linear_backend", "aten_linear"]

_ONEDNN: Optional[bool] = None
_FORCED_ATEN = 0


def _pointwise(x: Tensor, weight: Tensor, bias: Optional[Tensor], attr: str) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], "")


def _probe() -> bool:
    """oneDNN's linear exists in this build and agrees with ``F.linear`` on a small case."""
    if os.environ.get("PAMNET_FAST_LINEAR", "auto") == "aten":
        return False
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(s, generator=g) for s in ((7, 5), (3, 5), (3,)))
        y = _pointwise(x, w, b, "none")
        return bool(torch.allclose(y, F.linear(x, w, b), rtol=1e-5, atol=1e-5))
    except (AttributeError, RuntimeError):
        return False


def linear_backend() -> str:
    """``'onednn'`` or ``'aten'``: the path CPU float32 :func:`linear` calls take."""
    global _ONEDNN
    if _ONEDNN is None:
        _ONEDNN = _probe()
    return "onednn" if _ONEDNN and not _FORCED_ATEN else "aten"


@contextlib.contextmanager
def aten_linear():
    """Within the block, :func:`linear` and :func:`linear_silu` are ``F.linear`` (+ SiLU) everywhere."""
    global _FORCED_ATEN
    _FORCED_ATEN += 1
    try:
        yield
    finally:
        _FORCED_ATEN -= 1


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor]):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _pointwise(x, weight, bias, "none")

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        need_x, need_w, need_b = ctx.needs_input_grad
        gx = _pointwise(grad, weight.t().contiguous(), None, "none") if need_x else None
        # dW = g^T x contracts over the rows, the strided dimension of both: oneDNN would first copy
        # both transposes, MKL's sgemm reads them as they are (-10% train step in an A/B).
        gw = grad.t().mm(x) if need_w else None
        gb = grad.sum(0) if ctx.has_bias and need_b else None
        return gx, gw, gb


def _fast(x: Tensor, weight: Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.numel() > 0 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling() and linear_backend() == "onednn")


def _on_rows(fn, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``fn`` on contiguous 2-D operands (``x`` flattened to ``[rows, in]``), reshaped back."""
    y = fn(x.reshape(-1, x.size(-1)).contiguous(), weight.contiguous(),
           None if bias is None else bias.contiguous())
    return y if x.dim() == 2 else y.view(*x.shape[:-1], weight.size(0))


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)``: ``x [..., in]``, ``weight [out, in]``, ``bias [out]`` -> ``[..., out]``;
    through oneDNN on CPU float32 (see the module docstring)."""
    if not _fast(x, weight):
        return F.linear(x, weight, bias)
    return _on_rows(_OneDNNLinear.apply, x, weight, bias)


def linear_silu(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``SiLU(linear(x, weight, bias))``; when no gradient is recorded, one oneDNN call with the SiLU
    fused into the matmul's epilogue (no second pass over the output)."""
    recording = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                             or (bias is not None and bias.requires_grad))
    if recording or not _fast(x, weight):
        return F.silu(linear(x, weight, bias))
    return _on_rows(lambda *a: _pointwise(*a, "swish"), x, weight, bias)
