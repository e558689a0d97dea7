r"""Dense layers :math:`y = x W^T + b`: oneDNN on the CPU, a Triton GEMM with its epilogue on CUDA.

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

:func:`linear_silu` (``SiLU(x W^T + b)``, optionally ``+ residual``), when no gradient is recorded:

* CPU float32 as above: one oneDNN call with the SiLU fused into the matmul (then ``+ residual``);
* CUDA float32/bfloat16/float16 (no autocast, not under ``torch.compile``): one Triton kernel,
  :func:`pamnet_fast.ops.triton.dense.linear_act`, instead of ``addmm``, ``silu`` and ``add``
  (float32 stays full float32, no TF32, as PyTorch's default CUDA matmul);
* otherwise, and whenever a gradient is recorded: ``F.silu(linear(...)) (+ residual)``.

``PAMNET_FAST_LINEAR=aten`` (read once, at the first call) sends everything to ``F.linear`` (+ SiLU),
and so does the :func:`aten_linear` context (for A/B comparisons); :func:`linear_backend` says which
path CPU float32 takes.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["linear", "linear_silu", "linear_backend", "aten_linear"]

_ONEDNN: Optional[bool] = None
_ENV_ATEN: Optional[bool] = None
_FORCED_ATEN = 0
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _pointwise(x: Tensor, weight: Tensor, bias: Optional[Tensor], attr: str) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], "")


def _env_aten() -> bool:
    """``PAMNET_FAST_LINEAR=aten``, read once."""
    global _ENV_ATEN
    if _ENV_ATEN is None:
        _ENV_ATEN = os.environ.get("PAMNET_FAST_LINEAR", "auto") == "aten"
    return _ENV_ATEN


def _probe() -> bool:
    """oneDNN's linear exists in this build and agrees with ``F.linear`` on a small case."""
    if _env_aten():
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


def _on_rows(fn, x: Tensor, weight: Tensor, bias: Optional[Tensor],
             residual: Optional[Tensor] = None) -> Tensor:
    """``fn`` on contiguous 2-D operands (``x`` flattened to ``[rows, in]``, ``residual`` to
    ``[rows, out]``, passed only when given), reshaped back."""
    args = [x.reshape(-1, x.size(-1)).contiguous(), weight.contiguous(),
            None if bias is None else bias.contiguous()]
    if residual is not None:
        args.append(residual.reshape(-1, weight.size(0)).contiguous())
    y = fn(*args)
    return y if x.dim() == 2 else y.view(*x.shape[:-1], weight.size(0))


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)``: ``x [..., in]``, ``weight [out, in]``, ``bias [out]`` -> ``[..., out]``;
    through oneDNN on CPU float32 (see the module docstring)."""
    return _linear(x, weight, bias, _fast(x, weight))


def _linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], fast: bool) -> Tensor:
    return _on_rows(_OneDNNLinear.apply, x, weight, bias) if fast else F.linear(x, weight, bias)


@functools.lru_cache(maxsize=None)
def _triton_linear_act():
    try:
        from .triton.dense import linear_act
    except ImportError:  # no Triton: F.linear + SiLU
        return None
    return linear_act


def _gemm_launcher(x: Tensor):
    """The Triton dense launcher for tensors on ``x``'s device, or ``None``: CUDA tensors, when
    Triton imports. (Tests replace this function to send CPU tensors to the launcher, which then runs
    under Triton's interpreter.)"""
    return _triton_linear_act() if x.is_cuda else None


def _triton_gemm(x: Tensor, weight: Tensor, bias: Optional[Tensor], residual: Optional[Tensor]):
    """:func:`_gemm_launcher` if this (not recorded) call may take it: one device and one dtype of the
    kernel's, matching shapes (else ``F.linear`` reports the error), a residual of the output's
    shape, no autocast, not compiling, not forced to aten."""
    if torch.compiler.is_compiling():  # inductor fuses the composite itself
        return None
    launcher = _gemm_launcher(x)  # CPU tensors stop here, at the cost of one call
    if (launcher is None or x.dtype not in _TRITON_DTYPES or x.dim() == 0 or weight.dim() != 2
            or weight.size(1) != x.size(-1)
            or any(t.dtype != x.dtype or t.device != x.device for t in (weight, bias, residual)
                   if t is not None)
            or (residual is not None and residual.shape != (*x.shape[:-1], weight.size(0)))
            or torch.is_autocast_enabled(x.device.type) or _env_aten() or _FORCED_ATEN):
        return None
    return launcher


def linear_silu(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                residual: Optional[Tensor] = None) -> Tensor:
    """``SiLU(linear(x, weight, bias)) (+ residual)``, ``residual [..., out]``; when no gradient is
    recorded, one kernel: on CPU float32 a oneDNN call with the SiLU fused into the matmul's epilogue
    (no second pass over the output; the residual is then one add), on CUDA a Triton GEMM with bias,
    SiLU and residual in its epilogue (see the module docstring)."""
    recording = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias, residual))
    gemm = None if recording else _triton_gemm(x, weight, bias, residual)
    if gemm is not None:
        return _on_rows(gemm, x, weight, bias, residual)
    fast = _fast(x, weight)
    if recording or not fast:
        y = F.silu(_linear(x, weight, bias, fast))
    else:
        y = _on_rows(lambda *a: _pointwise(*a, "swish"), x, weight, bias)
    return y if residual is None else y + residual
