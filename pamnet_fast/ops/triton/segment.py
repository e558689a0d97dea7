"""``segment_gather_mul`` on the GPU: CSR segment sums of gathered products, forward and backward.

Forward, ``out[r] = sum_{s in seg(r)} a[src[s]] * b[s]``: one program per (segment, feature tile of
``BLOCK_F``); it walks its segment ``BLOCK_S`` entries at a time (a ``[BLOCK_S, BLOCK_F]`` tile of
coalesced row loads) and writes its output tile once. No atomics, no ``a[src]`` intermediate.

Backward:

* ``grad_b[s] = grad_out[r] * a[src[s]]``: elementwise, one program per (segment, feature tile).
* ``grad_a[m] = sum_{s: src[s] = m} grad_out[row(s)] * b[s]``: the same gather-multiply-sum kernel
  over the *transposed* CSR (``perm`` = stable argsort of ``src``, ``tptr`` from ``bincount``): one
  program per row of ``a``, summing in entry order. Deterministic (bitwise reproducible), no atomics;
  it costs one ``sort`` of ``src`` per backward.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import validate
from ._common import LAUNCH, as_index, feature_block, rows_of, transpose_csr

BLOCK_S = 16


@triton.jit
def gather_mul_sum_kernel(x_ptr, ix_ptr, y_ptr, iy_ptr, seg_ptr, out_ptr, num_features,
                          HAS_IY: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_F: tl.constexpr):
    """``out[r, :] = sum_{t in [seg[r], seg[r+1])} x[ix[t], :] * y[iy[t], :]`` (``iy[t] = t`` if not
    HAS_IY)."""
    row = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < num_features
    start = tl.load(seg_ptr + row)
    end = tl.load(seg_ptr + row + 1)
    acc = tl.zeros([BLOCK_F], dtype=out_ptr.dtype.element_ty)
    for t0 in range(start, end, BLOCK_S):
        t = t0 + tl.arange(0, BLOCK_S)
        tmask = t < end
        xi = tl.load(ix_ptr + t, mask=tmask, other=0)
        if HAS_IY:
            yi = tl.load(iy_ptr + t, mask=tmask, other=0)
        else:
            yi = t
        m2 = tmask[:, None] & fmask[None, :]
        xv = tl.load(x_ptr + xi[:, None] * num_features + f[None, :], mask=m2, other=0.0)
        yv = tl.load(y_ptr + yi[:, None] * num_features + f[None, :], mask=m2, other=0.0)
        acc += tl.sum(xv * yv, axis=0)
    tl.store(out_ptr + row * num_features + f, acc, mask=fmask)


@triton.jit
def _scale_rows_kernel(g_ptr, a_ptr, src_ptr, seg_ptr, out_ptr, num_features,
                       BLOCK_S: tl.constexpr, BLOCK_F: tl.constexpr):
    """``out[s, :] = g[r, :] * a[src[s], :]`` for the entries ``s`` of segment ``r``."""
    row = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < num_features
    start = tl.load(seg_ptr + row)
    end = tl.load(seg_ptr + row + 1)
    g = tl.load(g_ptr + row * num_features + f, mask=fmask, other=0.0)
    for t0 in range(start, end, BLOCK_S):
        t = t0 + tl.arange(0, BLOCK_S)
        tmask = t < end
        ai = tl.load(src_ptr + t, mask=tmask, other=0)
        m2 = tmask[:, None] & fmask[None, :]
        av = tl.load(a_ptr + ai[:, None] * num_features + f[None, :], mask=m2, other=0.0)
        tl.store(out_ptr + t[:, None] * num_features + f[None, :], g[None, :] * av, mask=m2)


def gather_mul_sum(x: Tensor, ix: Tensor, y: Tensor, iy, seg: Tensor, num_rows: int) -> Tensor:
    num_features = x.size(1)
    out = x.new_zeros(num_rows, num_features)
    if num_rows == 0 or num_features == 0:
        return out
    block_f = feature_block(num_features)
    grid = (num_rows, triton.cdiv(num_features, block_f))
    gather_mul_sum_kernel[grid](x, ix, y, ix if iy is None else iy, seg, out, num_features,
                                HAS_IY=iy is not None, BLOCK_S=BLOCK_S, BLOCK_F=block_f, **LAUNCH)
    return out


def segment_gather_mul(a: Tensor, src: Tensor, b: Tensor, ptr: Tensor) -> Tensor:
    """Schema kernel of ``pamnet_fast::segment_gather_mul``: ``[R, F]``."""
    validate.segment_gather_mul(a, src, b, ptr)
    return gather_mul_sum(a.contiguous(), as_index(src), b.contiguous(), None, as_index(ptr),
                          ptr.numel() - 1)


def segment_gather_mul_backward(grad_out: Tensor, a: Tensor, src: Tensor, b: Tensor, ptr: Tensor,
                                need_a: bool, need_b: bool):
    """Schema kernel of ``pamnet_fast::segment_gather_mul_backward``: ``(grad_a, grad_b)``, each an
    empty tensor when not needed."""
    g, a, b = grad_out.contiguous(), a.contiguous(), b.contiguous()
    src, ptr = as_index(src), as_index(ptr)
    num_rows, num_features = ptr.numel() - 1, a.size(1)
    grad_a, grad_b = a.new_empty(0), b.new_empty(0)
    if need_b:
        grad_b = torch.zeros_like(b)
        if num_rows and num_features and b.size(0):
            block_f = feature_block(num_features)
            _scale_rows_kernel[(num_rows, triton.cdiv(num_features, block_f))](
                g, a, src, ptr, grad_b, num_features, BLOCK_S=BLOCK_S, BLOCK_F=block_f, **LAUNCH)
    if need_a:
        perm, tptr = transpose_csr(src, a.size(0))
        rows = rows_of(ptr, src.numel())
        grad_a = gather_mul_sum(g, rows[perm].contiguous(), b, perm, tptr, a.size(0))
    return grad_a, grad_b
