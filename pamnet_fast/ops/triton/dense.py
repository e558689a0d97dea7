"""Dense layers on the GPU: ``y = act(x W^T + b) (+ residual)`` in one kernel, a GEMM with its epilogue.

On CUDA, PyTorch runs ``x + SiLU(x W^T + b)`` as three kernels (``addmm``, ``silu``, ``add``), each a
full pass over the ``[M, N]`` output; here the bias, the activation (identity or SiLU) and the residual
are applied to the float32 accumulator tile before its only store. ``x [M, K]`` (rows contiguous),
``W [N, K]`` (the ``nn.Linear`` layout, any strides), ``b [N]``, ``residual [M, N]``; any M, N, K
(masked tiles).

Arithmetic: float32 inputs use ``tl.dot(..., input_precision="ieee")``, float32 products and sums as
PyTorch's default CUDA float32 matmul (no TF32); bfloat16/float16 inputs accumulate in float32 and the
output is rounded once, to the input dtype. float64 is not served here (``F.linear``). Forward only:
:func:`pamnet_fast.ops.linear_silu` calls it when no gradient is recorded.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import INTERPRET, LAUNCH, next_pow2

DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Tiles by rule, no autotuning (timing configurations would add seconds to each new shape's first
# call): BLOCK_N = N rounded up to a power of two in [16, 128], so for N <= 128 (PAMNet's widths) one
# program owns whole output rows and reads its rows of x once; BLOCK_K = 32 (tl.dot needs every
# dimension >= 16); BLOCK_M = 32 with 4 warps: at BLOCK_M = 64 the [64, 128] float32 tile needs more
# than 255 registers and spills (sm_90 compile), and 32 rows give twice the programs for PAMNet's node
# layers (~2,300 rows at QM9 batch 128: 72 programs). The tiles fix the summation order: the bits
# depend only on the shapes and the dtype.
BLOCK_M = 32
BLOCK_K = 32


def block_n(num_out: int) -> int:
    return min(128, next_pow2(num_out, 16))


@triton.jit
def _linear_act_kernel(x_ptr, w_ptr, b_ptr, res_ptr, y_ptr, M, N, K, stride_wn, stride_wk,
                       HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, SILU: tl.constexpr,
                       DOT_F32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr):
    rm = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < M
    n_ok = rn < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + rk
        k_ok = k < K
        a = tl.load(x_ptr + rm[:, None] * K + k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + rn[None, :] * stride_wn + k[:, None] * stride_wk,
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if DOT_F32:
            a, w = a.to(tl.float32), w.to(tl.float32)
        # "ieee": float32 products and sums, never TF32 (ignored for 16-bit inputs: exact products)
        acc = tl.dot(a, w, acc, input_precision="ieee")
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if SILU:
        acc = acc / (1.0 + tl.exp(-acc))
    offs = rm[:, None] * N + rn[None, :]
    mask = m_ok[:, None] & n_ok[None, :]
    if HAS_RES:
        acc += tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


def linear_act(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
               residual: Optional[Tensor] = None, silu: bool = True) -> Tensor:
    """``act(x W^T + b) (+ residual)`` ``[M, N]`` in ``x``'s dtype, ``act`` SiLU or (``silu=False``)
    the identity; one launch, none when M or N is 0. ``x [M, K]`` and ``residual [M, N]`` contiguous,
    ``weight [N, K]`` any strides, ``bias [N]``; all on one device, one dtype of :data:`DTYPES`."""
    if x.dim() != 2 or weight.dim() != 2 or weight.size(1) != x.size(1):
        raise ValueError(f"linear_act: x [M, K] and weight [N, K] expected, got {tuple(x.shape)} and "
                         f"{tuple(weight.shape)}")
    m, k = x.shape
    n = weight.size(0)
    for name, t, shape in (("bias", bias, (n,)), ("residual", residual, (m, n))):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"linear_act: {name} must have shape {shape}, got {tuple(t.shape)}")
    if x.dtype not in DTYPES or any(t is not None and t.dtype != x.dtype for t in (weight, bias, residual)):
        raise TypeError(f"linear_act: one dtype among {DTYPES} expected")
    x = x.contiguous()
    residual = None if residual is None else residual.contiguous()
    y = x.new_empty(m, n)
    if m == 0 or n == 0:
        return y
    bn = block_n(n)
    # DOT_F32: Triton's interpreter multiplies bfloat16 tiles as their uint16 storage; widened to
    # float32 the products are the same (exact) and so is the float32 accumulation.
    # absent operands get a valid pointer (their loads are compiled out)
    _linear_act_kernel[(triton.cdiv(m, BLOCK_M), triton.cdiv(n, bn))](
        x, weight, y if bias is None else bias, y if residual is None else residual, y, m, n, k,
        weight.stride(0), weight.stride(1), HAS_BIAS=bias is not None, HAS_RES=residual is not None,
        SILU=bool(silu), DOT_F32=INTERPRET and x.dtype == torch.bfloat16, BLOCK_M=BLOCK_M,
        BLOCK_N=bn, BLOCK_K=BLOCK_K, **LAUNCH)
    return y
