"""``fused_edge_message`` on the GPU: ``out[i] = sum_e silu(p[i] + q[src[e]] + r[e]) * s[e]``.

Forward: one program per (target segment, feature tile ``BLOCK_F``), ``BLOCK_S`` edges at a time;
no ``[E, F]`` intermediate and no atomics.

Backward, recomputing ``h = p[i] + q[src[e]] + r[e]`` and ``sigma = sigmoid(h)`` instead of storing
them (``silu'(h) = sigma * (1 + h * (1 - sigma))``, as ``torch``'s ``silu_backward``):

* per target segment: ``grad_s[e] = g[i] * silu(h)``, ``grad_r[e] = g[i] * s[e] * silu'(h)`` and
  ``grad_p[i] = sum_e grad_r[e]`` (a segment reduction inside the program);
* ``grad_q[m] = sum_{e: src[e] = m} grad_r[e]``: one program per row of ``q`` over the transposed CSR
  (stable argsort of ``src``), recomputing ``grad_r``. Deterministic, no atomics.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import validate
from ._common import LAUNCH, as_index, feature_block, rows_of, transpose_csr

BLOCK_S = 16


@triton.jit
def _fwd_kernel(p_ptr, q_ptr, r_ptr, s_ptr, ptr_ptr, src_ptr, out_ptr, num_features,
                BLOCK_S: tl.constexpr, BLOCK_F: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < num_features
    start = tl.load(ptr_ptr + row)
    end = tl.load(ptr_ptr + row + 1)
    p = tl.load(p_ptr + row * num_features + f, mask=fmask, other=0.0)
    acc = tl.zeros([BLOCK_F], dtype=out_ptr.dtype.element_ty)
    for e0 in range(start, end, BLOCK_S):
        e = e0 + tl.arange(0, BLOCK_S)
        emask = e < end
        j = tl.load(src_ptr + e, mask=emask, other=0)
        m2 = emask[:, None] & fmask[None, :]
        q = tl.load(q_ptr + j[:, None] * num_features + f[None, :], mask=m2, other=0.0)
        r = tl.load(r_ptr + e[:, None] * num_features + f[None, :], mask=m2, other=0.0)
        s = tl.load(s_ptr + e[:, None] * num_features + f[None, :], mask=m2, other=0.0)
        h = p[None, :] + q + r
        silu = h / (1.0 + tl.exp(-h))
        acc += tl.sum(silu * s, axis=0)
    tl.store(out_ptr + row * num_features + f, acc, mask=fmask)


@triton.jit
def _bwd_segment_kernel(g_ptr, p_ptr, q_ptr, r_ptr, s_ptr, ptr_ptr, src_ptr,
                        gp_ptr, gr_ptr, gs_ptr, num_features,
                        NEED_P: tl.constexpr, NEED_R: tl.constexpr, NEED_S: tl.constexpr,
                        BLOCK_S: tl.constexpr, BLOCK_F: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < num_features
    start = tl.load(ptr_ptr + row)
    end = tl.load(ptr_ptr + row + 1)
    p = tl.load(p_ptr + row * num_features + f, mask=fmask, other=0.0)
    g = tl.load(g_ptr + row * num_features + f, mask=fmask, other=0.0)
    acc = tl.zeros([BLOCK_F], dtype=gp_ptr.dtype.element_ty)
    for e0 in range(start, end, BLOCK_S):
        e = e0 + tl.arange(0, BLOCK_S)
        emask = e < end
        j = tl.load(src_ptr + e, mask=emask, other=0)
        m2 = emask[:, None] & fmask[None, :]
        offs = e[:, None] * num_features + f[None, :]
        q = tl.load(q_ptr + j[:, None] * num_features + f[None, :], mask=m2, other=0.0)
        r = tl.load(r_ptr + offs, mask=m2, other=0.0)
        h = p[None, :] + q + r
        sig = 1.0 / (1.0 + tl.exp(-h))
        if NEED_S:
            tl.store(gs_ptr + offs, g[None, :] * (h * sig), mask=m2)
        if NEED_P or NEED_R:
            s = tl.load(s_ptr + offs, mask=m2, other=0.0)
            gh = (g[None, :] * s) * (sig * (1.0 + h * (1.0 - sig)))
            if NEED_R:
                tl.store(gr_ptr + offs, gh, mask=m2)
            if NEED_P:
                acc += tl.sum(gh, axis=0)
    if NEED_P:
        tl.store(gp_ptr + row * num_features + f, acc, mask=fmask)


@triton.jit
def _bwd_source_kernel(g_ptr, p_ptr, q_ptr, r_ptr, s_ptr, perm_ptr, rows_ptr, tptr_ptr, gq_ptr,
                       num_features, BLOCK_S: tl.constexpr, BLOCK_F: tl.constexpr):
    """``grad_q[m] = sum over the edges e with src[e] = m (``perm[tptr[m]:tptr[m+1]]``) of
    ``g[i] * s[e] * silu'(h)``, ``i = rows[e]``."""
    m = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < num_features
    start = tl.load(tptr_ptr + m)
    end = tl.load(tptr_ptr + m + 1)
    q = tl.load(q_ptr + m * num_features + f, mask=fmask, other=0.0)
    acc = tl.zeros([BLOCK_F], dtype=gq_ptr.dtype.element_ty)
    for t0 in range(start, end, BLOCK_S):
        t = t0 + tl.arange(0, BLOCK_S)
        tmask = t < end
        e = tl.load(perm_ptr + t, mask=tmask, other=0)
        i = tl.load(rows_ptr + e, mask=tmask, other=0)
        m2 = tmask[:, None] & fmask[None, :]
        offs = e[:, None] * num_features + f[None, :]
        toffs = i[:, None] * num_features + f[None, :]
        p = tl.load(p_ptr + toffs, mask=m2, other=0.0)
        g = tl.load(g_ptr + toffs, mask=m2, other=0.0)
        r = tl.load(r_ptr + offs, mask=m2, other=0.0)
        s = tl.load(s_ptr + offs, mask=m2, other=0.0)
        h = p + q[None, :] + r
        sig = 1.0 / (1.0 + tl.exp(-h))
        acc += tl.sum((g * s) * (sig * (1.0 + h * (1.0 - sig))), axis=0)
    tl.store(gq_ptr + m * num_features + f, acc, mask=fmask)


def _rows_per_edge(r: Tensor, s: Tensor, edge_row: Optional[Tensor]):
    """Shared rows expanded to one row per edge (the kernels below index r and s by edge)."""
    if edge_row is None:
        return r.contiguous(), s.contiguous()
    row = as_index(edge_row)
    return r.index_select(0, row), s.index_select(0, row)


def fused_edge_message(p: Tensor, q: Tensor, r: Tensor, s: Tensor, ptr: Tensor, src: Tensor,
                       edge_row: Optional[Tensor] = None) -> Tensor:
    """Schema kernel of ``pamnet_fast::fused_edge_message``: ``[N, F]``."""
    validate.fused_edge_message(p, q, r, s, ptr, src, edge_row)
    r, s = _rows_per_edge(r, s, edge_row)
    p, q = p.contiguous(), q.contiguous()
    num_rows, num_features = ptr.numel() - 1, p.size(1)
    out = p.new_zeros(num_rows, num_features)
    if num_rows and num_features:
        block_f = feature_block(num_features)
        _fwd_kernel[(num_rows, triton.cdiv(num_features, block_f))](
            p, q, r, s, as_index(ptr), as_index(src), out, num_features,
            BLOCK_S=BLOCK_S, BLOCK_F=block_f, **LAUNCH)
    return out


def fused_edge_message_backward(grad_out: Tensor, p: Tensor, q: Tensor, r: Tensor, s: Tensor,
                                ptr: Tensor, src: Tensor, edge_row: Optional[Tensor], output_mask):
    """Schema kernel of ``pamnet_fast::fused_edge_message_backward``: ``(grad_p, grad_q, grad_r,
    grad_s)``, each an empty tensor where ``output_mask`` is false."""
    if edge_row is not None:
        # Per-edge gradients, then summed into the shared rows (index_add_: atomics on the GPU).
        gp, gq, gr, gs = fused_edge_message_backward(grad_out, p, q, *_rows_per_edge(r, s, edge_row),
                                                     ptr, src, None, output_mask)
        row = as_index(edge_row)
        if output_mask[2]:
            gr = torch.zeros_like(r).index_add_(0, row, gr)
        if output_mask[3]:
            gs = torch.zeros_like(s).index_add_(0, row, gs)
        return gp, gq, gr, gs
    need_p, need_q, need_r, need_s = (bool(m) for m in output_mask)
    g = grad_out.contiguous()
    p, q, r, s = p.contiguous(), q.contiguous(), r.contiguous(), s.contiguous()
    ptr, src = as_index(ptr), as_index(src)
    num_rows, num_features = ptr.numel() - 1, p.size(1)
    block_f = feature_block(num_features)
    gp = torch.zeros_like(p) if need_p else p.new_empty(0)
    gr = torch.zeros_like(r) if need_r else r.new_empty(0)
    gs = torch.zeros_like(s) if need_s else s.new_empty(0)
    gq = torch.zeros_like(q) if need_q else q.new_empty(0)
    if num_features == 0:
        return gp, gq, gr, gs
    if (need_p or need_r or need_s) and num_rows:
        # Unused outputs get a valid pointer (their stores are compiled out).
        _bwd_segment_kernel[(num_rows, triton.cdiv(num_features, block_f))](
            g, p, q, r, s, ptr, src, gp if need_p else g, gr if need_r else g, gs if need_s else g,
            num_features, NEED_P=need_p, NEED_R=need_r, NEED_S=need_s,
            BLOCK_S=BLOCK_S, BLOCK_F=block_f, **LAUNCH)
    if need_q and q.size(0):
        perm, tptr = transpose_csr(src, q.size(0))
        rows = rows_of(ptr, src.numel())
        _bwd_source_kernel[(q.size(0), triton.cdiv(num_features, block_f))](
            g, p, q, r, s, perm, rows, tptr, gq, num_features,
            BLOCK_S=BLOCK_S, BLOCK_F=block_f, **LAUNCH)
    return gp, gq, gr, gs
