"""``segment_gather_mul`` on the GPU: CSR segment sums of gathered products, forward and backward.

Forward, ``out[r] = sum_{s in seg(r)} a[src[s]] * b[s]``: one program per (segment, feature tile of
``BLOCK_F``); it walks its segment ``SEGMENT_BLOCK`` entries at a time (a ``[16, BLOCK_F]`` tile of
coalesced row loads), sums in float32 (float64 for float64 inputs) and writes its output tile once, in
the input dtype. Each ``b`` row is read once, each output row written once; no atomics, no ``a[src]``
intermediate. Feature tile and warps follow a rule of ``F`` (``_common.segment_tile``; autotuned with
PAMNET_FAST_TRITON_AUTOTUNE=1); ``F`` need not be a power of two (masked tiles).

Backward:

* ``grad_b[s] = grad_out[r] * a[src[s]]``: elementwise, one program per (segment, feature tile); every
  entry belongs to one segment, so ``grad_b`` is written once and never zero-filled.
* ``grad_a[m] = sum_{s: src[s] = m} grad_out[row(s)] * b[s]``: the same gather-multiply-sum kernel
  over the *transposed* CSR (``perm`` = stable argsort of ``src``, ``tptr`` its group pointer): one
  program per row of ``a``, summing in entry order. Deterministic (bitwise reproducible), no atomics;
  it costs one ``sort`` of ``src`` (32-bit keys) per backward, unless the caller passes the transposed
  CSR built once per batch (``src_transpose``, :mod:`pamnet_fast.ops.transpose`).

Bytes per forward + backward (``S`` entries, ``F`` features, ``M``/``R`` rows of ``a``/``out``): ``b``
read twice, ``grad_b`` written once, ``a``, ``grad_out``, ``out``, ``grad_a`` once each: the byte floor
(each input read once, each output written once) plus one ``S x F`` read.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import transpose, validate
from ._common import (SEGMENT_BLOCK, TUNED_LAUNCH, accumulator, as_index, check_csr, segment_kernel,
                      segment_grid, size_class)


@triton.jit
def gather_mul_sum_kernel(x_ptr, ix_ptr, y_ptr, iy_ptr, seg_ptr, out_ptr, num_features, size_class,
                          HAS_X: tl.constexpr, HAS_IY: tl.constexpr,
                          ACC: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_F: tl.constexpr):
    """``out[r, :] = sum_{t in [seg[r], seg[r+1])} x[ix[t], :] * y[iy[t], :]`` (``iy[t] = t`` if not
    HAS_IY; the factor ``x`` left out if not HAS_X). ``size_class`` is only an autotuning key."""
    row = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < num_features
    start = tl.load(seg_ptr + row)
    end = tl.load(seg_ptr + row + 1)
    acc = tl.zeros([BLOCK_F], dtype=ACC)
    for t0 in range(start, end, BLOCK_S):
        t = t0 + tl.arange(0, BLOCK_S)
        tmask = t < end
        if HAS_IY:
            yi = tl.load(iy_ptr + t, mask=tmask, other=0)
        else:
            yi = t
        m2 = tmask[:, None] & fmask[None, :]
        # entries are read once: evict them first, keep the gathered rows of x in L2
        term = tl.load(y_ptr + yi[:, None] * num_features + f[None, :], mask=m2, other=0.0,
                       eviction_policy="evict_first").to(ACC)
        if HAS_X:
            xi = tl.load(ix_ptr + t, mask=tmask, other=0)
            term = tl.load(x_ptr + xi[:, None] * num_features + f[None, :], mask=m2,
                           other=0.0).to(ACC) * term
        acc += tl.sum(term, axis=0)
    tl.store(out_ptr + row * num_features + f, acc.to(out_ptr.dtype.element_ty), mask=fmask)


@triton.jit
def _scale_rows_kernel(g_ptr, a_ptr, src_ptr, seg_ptr, out_ptr, num_features, size_class,
                       ACC: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_F: tl.constexpr):
    """``out[s, :] = g[r, :] * a[src[s], :]`` for the entries ``s`` of segment ``r``."""
    row = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < num_features
    start = tl.load(seg_ptr + row)
    end = tl.load(seg_ptr + row + 1)
    g = tl.load(g_ptr + row * num_features + f, mask=fmask, other=0.0).to(ACC)
    for t0 in range(start, end, BLOCK_S):
        t = t0 + tl.arange(0, BLOCK_S)
        tmask = t < end
        ai = tl.load(src_ptr + t, mask=tmask, other=0)
        m2 = tmask[:, None] & fmask[None, :]
        av = tl.load(a_ptr + ai[:, None] * num_features + f[None, :], mask=m2, other=0.0).to(ACC)
        tl.store(out_ptr + t[:, None] * num_features + f[None, :],
                 (g[None, :] * av).to(out_ptr.dtype.element_ty), mask=m2, eviction_policy="evict_first")


_gather_mul_sum = segment_kernel(gather_mul_sum_kernel)
_scale_rows = segment_kernel(_scale_rows_kernel)


def gather_mul_sum(x, ix, y: Tensor, iy, seg: Tensor, num_rows: int) -> Tensor:
    """``out[r] = sum_{t in seg r} x[ix[t]] * y[iy[t]]`` as ``[num_rows, F]`` in ``y``'s dtype; ``x``
    (and ``ix``) may be None (plain gathered sums), ``iy`` None means ``iy[t] = t``."""
    num_features = y.size(1)
    out = y.new_empty(num_rows, num_features)  # every row is written (empty segments: zeros)
    if num_rows == 0 or num_features == 0:
        return out.zero_()
    _gather_mul_sum[segment_grid(num_rows, num_features)](
        y if x is None else x, seg if ix is None else ix, y, seg if iy is None else iy, seg, out,
        num_features, size_class(y.size(0), num_rows), HAS_X=x is not None, HAS_IY=iy is not None,
        ACC=accumulator(y), BLOCK_S=SEGMENT_BLOCK, **TUNED_LAUNCH)
    return out


def segment_gather_mul(a: Tensor, src: Tensor, b: Tensor, ptr: Tensor,
                       check_values: bool = True, src_transpose=None) -> Tensor:
    """Schema kernel of ``pamnet_fast::segment_gather_mul``: ``[R, F]``. One kernel; with
    ``check_values`` one more and one host read (the check of ``ptr`` and ``src``).
    ``src_transpose`` is for the backward."""
    validate.segment_gather_mul(a, src, b, ptr, half_ok=True, values=False,
                                src_transpose=src_transpose)
    src, ptr = as_index(src), as_index(ptr)
    if check_values:
        check_csr("segment_gather_mul", "ptr", ptr, b.size(0), ("src", src, a.size(0)))
    return gather_mul_sum(a.contiguous(), src, b.contiguous(), None, ptr, ptr.numel() - 1)


def segment_gather_mul_backward(grad_out: Tensor, a: Tensor, src: Tensor, b: Tensor, ptr: Tensor,
                                need_a: bool, need_b: bool, src_transpose=None):
    """Schema kernel of ``pamnet_fast::segment_gather_mul_backward``: ``(grad_a, grad_b)``, each an
    empty tensor when not needed. ``grad_a`` goes through the transposed CSR of ``src``: the one
    given (:func:`pamnet_fast.ops.transposed_csr`), else one built here (a sort)."""
    g, a, b = grad_out.contiguous(), a.contiguous(), b.contiguous()
    src, ptr = as_index(src), as_index(ptr)
    num_rows, num_features = ptr.numel() - 1, a.size(1)
    grad_a, grad_b = a.new_empty(0), b.new_empty(0)
    if need_b:
        grad_b = torch.empty_like(b)  # each entry is in exactly one segment: written once
        if num_rows and num_features and b.size(0):
            _scale_rows[segment_grid(num_rows, num_features)](
                g, a, src, ptr, grad_b, num_features, size_class(b.size(0), num_rows),
                ACC=accumulator(b), BLOCK_S=SEGMENT_BLOCK, **TUNED_LAUNCH)
        elif grad_b.numel():
            grad_b.zero_()
    if need_a:
        if src_transpose is None:
            src_transpose = transpose.transposed_csr(src, a.size(0), ptr)
        perm, rows, tptr = transpose.unpack(src_transpose, src.numel())
        grad_a = gather_mul_sum(g, rows, b, perm, tptr, a.size(0))
    return grad_a, grad_b
