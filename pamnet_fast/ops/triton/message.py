"""``fused_edge_message`` on the GPU: ``out[i] = sum_{e -> i} silu(p[i] + q[src[e]] + r[k_e]) * s[k_e]``
with ``k_e = edge_row[e]`` (default ``e``).

Forward: one program per (target segment, feature tile ``BLOCK_F``), ``SEGMENT_BLOCK`` edges at a time;
shared rows of ``r``/``s`` are read through ``edge_row`` (never expanded to ``[E, F]``); float32 sums
(float64 for float64), output in the input dtype. No ``[E, F]`` intermediate, no atomics.

Backward, recomputing ``h = p[i] + q[src[e]] + r[k_e]`` and ``sigma = sigmoid(h)`` instead of storing
them (``silu'(h) = sigma * (1 + h * (1 - sigma))``, as ``torch``'s ``silu_backward``):

* per target segment: ``grad_p[i] = sum_e g[i] * s * silu'(h)`` and, without ``edge_row``, the
  per-edge ``grad_s[e] = g[i] * silu(h)`` and ``grad_r[e] = g[i] * s[e] * silu'(h)``, each written once;
* ``grad_q[m] = sum_{e: src[e] = m} grad_r[e]``: a sum over the transposed CSR of ``src`` (stable
  argsort). Without ``edge_row`` and with ``grad_r`` wanted it sums the ``grad_r`` rows just written
  (one ``E x F`` read); otherwise it recomputes ``grad_r`` per edge from ``p, q, r, s, g``;
* with ``edge_row``: ``grad_r[k]``, ``grad_s[k]`` are sums over the edges that share row ``k``, one
  program per row over the transposed CSR of ``edge_row`` (replaces ``index_add_``, whose float
  atomics made the result depend on the schedule).

All sums run in a fixed order (CSR order, 16-entry blocks, tiles by rule): the same bits on every
run.

Bytes per forward + backward without ``edge_row`` (``E`` edges, ``F`` features, node terms aside):
``r`` and ``s`` read twice, ``grad_r`` and ``grad_s`` written once and ``grad_r`` read once: 7 ``E x F``
against the byte floor's 6 (each input read once, each output written once).

``edge_message`` (the same terms, stored per edge, ``[E, F]``) runs the same kernels: the forward
stores each term instead of summing, and the backward reads ``g[e]`` where it read ``g[i]``.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import transpose, validate
from ._common import (SEGMENT_BLOCK, TUNED_LAUNCH, accumulator, as_index, check_csr, segment_kernel,
                      segment_grid, size_class)
from .segment import gather_mul_sum


@triton.jit
def _fwd_kernel(p_ptr, q_ptr, r_ptr, s_ptr, ptr_ptr, src_ptr, erow_ptr, out_ptr, num_features,
                size_class, HAS_ROW: tl.constexpr, PER_EDGE: tl.constexpr,
                ACC: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_F: tl.constexpr):
    """PER_EDGE: each edge's term is stored (``edge_message``), else their sum per target."""
    row = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < num_features
    start = tl.load(ptr_ptr + row)
    end = tl.load(ptr_ptr + row + 1)
    p = tl.load(p_ptr + row * num_features + f, mask=fmask, other=0.0).to(ACC)
    acc = tl.zeros([BLOCK_F], dtype=ACC)
    for e0 in range(start, end, BLOCK_S):
        e = e0 + tl.arange(0, BLOCK_S)
        emask = e < end
        j = tl.load(src_ptr + e, mask=emask, other=0)
        if HAS_ROW:
            k = tl.load(erow_ptr + e, mask=emask, other=0)
        else:
            k = e
        m2 = emask[:, None] & fmask[None, :]
        koffs = k[:, None] * num_features + f[None, :]
        q = tl.load(q_ptr + j[:, None] * num_features + f[None, :], mask=m2, other=0.0).to(ACC)
        r = tl.load(r_ptr + koffs, mask=m2, other=0.0, eviction_policy="evict_first").to(ACC)
        s = tl.load(s_ptr + koffs, mask=m2, other=0.0, eviction_policy="evict_first").to(ACC)
        h = p[None, :] + q + r
        silu = h / (1.0 + tl.exp(-h))
        if PER_EDGE:
            tl.store(out_ptr + e[:, None] * num_features + f[None, :],
                     (silu * s).to(out_ptr.dtype.element_ty), mask=m2)
        else:
            acc += tl.sum(silu * s, axis=0)
    if not PER_EDGE:
        tl.store(out_ptr + row * num_features + f, acc.to(out_ptr.dtype.element_ty), mask=fmask)


@triton.jit
def _bwd_segment_kernel(g_ptr, p_ptr, q_ptr, r_ptr, s_ptr, ptr_ptr, src_ptr, erow_ptr,
                        gp_ptr, gr_ptr, gs_ptr, num_features, size_class, HAS_ROW: tl.constexpr,
                        G_PER_EDGE: tl.constexpr,
                        NEED_P: tl.constexpr, NEED_R: tl.constexpr, NEED_S: tl.constexpr,
                        ACC: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_F: tl.constexpr):
    """Per target ``i``: ``grad_p[i]``, and per edge ``grad_r[e]``, ``grad_s[e]`` (only without
    ``edge_row``: NEED_R / NEED_S are then false). G_PER_EDGE: ``g`` has a row per edge
    (``edge_message``), else per target."""
    row = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < num_features
    start = tl.load(ptr_ptr + row)
    end = tl.load(ptr_ptr + row + 1)
    p = tl.load(p_ptr + row * num_features + f, mask=fmask, other=0.0).to(ACC)
    if G_PER_EDGE:
        g_row = tl.zeros([BLOCK_F], dtype=ACC)  # unused: g is read per edge
    else:
        g_row = tl.load(g_ptr + row * num_features + f, mask=fmask, other=0.0).to(ACC)
    acc = tl.zeros([BLOCK_F], dtype=ACC)
    for e0 in range(start, end, BLOCK_S):
        e = e0 + tl.arange(0, BLOCK_S)
        emask = e < end
        j = tl.load(src_ptr + e, mask=emask, other=0)
        if HAS_ROW:
            k = tl.load(erow_ptr + e, mask=emask, other=0)
        else:
            k = e
        m2 = emask[:, None] & fmask[None, :]
        koffs = k[:, None] * num_features + f[None, :]
        q = tl.load(q_ptr + j[:, None] * num_features + f[None, :], mask=m2, other=0.0).to(ACC)
        r = tl.load(r_ptr + koffs, mask=m2, other=0.0, eviction_policy="evict_first").to(ACC)
        h = p[None, :] + q + r
        sig = 1.0 / (1.0 + tl.exp(-h))
        if G_PER_EDGE:
            g = tl.load(g_ptr + e[:, None] * num_features + f[None, :], mask=m2, other=0.0,
                        eviction_policy="evict_first").to(ACC)
        else:
            g = g_row[None, :]
        if NEED_S:
            tl.store(gs_ptr + koffs, (g * (h * sig)).to(gs_ptr.dtype.element_ty), mask=m2,
                     eviction_policy="evict_first")
        if NEED_P or NEED_R:
            s = tl.load(s_ptr + koffs, mask=m2, other=0.0, eviction_policy="evict_first").to(ACC)
            gh = (g * s) * (sig * (1.0 + h * (1.0 - sig)))
            if NEED_R:
                tl.store(gr_ptr + koffs, gh.to(gr_ptr.dtype.element_ty), mask=m2,
                         eviction_policy="evict_first")
            if NEED_P:
                acc += tl.sum(gh, axis=0)
    if NEED_P:
        tl.store(gp_ptr + row * num_features + f, acc.to(gp_ptr.dtype.element_ty), mask=fmask)


@triton.jit
def _bwd_transposed_kernel(g_ptr, p_ptr, q_ptr, r_ptr, s_ptr, perm_ptr, rows_ptr, tptr_ptr, src_ptr,
                           erow_ptr, ga_ptr, gb_ptr, num_features, size_class,
                           BY_ROW: tl.constexpr, HAS_ROW: tl.constexpr, G_PER_EDGE: tl.constexpr,
                           NEED_A: tl.constexpr, NEED_B: tl.constexpr,
                           ACC: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_F: tl.constexpr):
    """Sums over the edges ``e = perm[t]``, ``t in [tptr[m], tptr[m+1])``, of one row ``m`` of a
    gathered input, recomputing ``h``; ``rows[t]`` is the target of ``e``.

    * not BY_ROW (``m`` a row of ``q``, transposed CSR of ``src``): ``ga[m] = sum g[i] s silu'(h)``
      (``grad_q``); rows of ``r``/``s`` through ``edge_row`` if HAS_ROW.
    * BY_ROW (``m`` a shared row of ``r``/``s``, transposed CSR of ``edge_row``):
      ``ga[m] = sum g[i] s[m] silu'(h)`` (``grad_r``) and ``gb[m] = sum g[i] silu(h)`` (``grad_s``).

    G_PER_EDGE: ``g[e]`` (a row per edge, ``edge_message``) in place of ``g[i]``.
    """
    m = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < num_features
    start = tl.load(tptr_ptr + m)
    end = tl.load(tptr_ptr + m + 1)
    if BY_ROW:
        r_m = tl.load(r_ptr + m * num_features + f, mask=fmask, other=0.0).to(ACC)
        s_m = tl.load(s_ptr + m * num_features + f, mask=fmask, other=0.0).to(ACC)
        acc_a = tl.zeros([BLOCK_F], dtype=ACC)
    else:
        q_m = tl.load(q_ptr + m * num_features + f, mask=fmask, other=0.0).to(ACC)
        acc_a = tl.zeros([BLOCK_F], dtype=ACC)
    acc_b = acc_a
    for t0 in range(start, end, BLOCK_S):
        t = t0 + tl.arange(0, BLOCK_S)
        tmask = t < end
        e = tl.load(perm_ptr + t, mask=tmask, other=0)
        i = tl.load(rows_ptr + t, mask=tmask, other=0)
        m2 = tmask[:, None] & fmask[None, :]
        toffs = i[:, None] * num_features + f[None, :]
        p = tl.load(p_ptr + toffs, mask=m2, other=0.0).to(ACC)
        if G_PER_EDGE:
            g = tl.load(g_ptr + e[:, None] * num_features + f[None, :], mask=m2, other=0.0).to(ACC)
        else:
            g = tl.load(g_ptr + toffs, mask=m2, other=0.0).to(ACC)
        if BY_ROW:
            j = tl.load(src_ptr + e, mask=tmask, other=0)
            q = tl.load(q_ptr + j[:, None] * num_features + f[None, :], mask=m2, other=0.0).to(ACC)
            h = p + q + r_m[None, :]
            s = s_m[None, :]
        else:
            if HAS_ROW:
                k = tl.load(erow_ptr + e, mask=tmask, other=0)
            else:
                k = e
            koffs = k[:, None] * num_features + f[None, :]
            r = tl.load(r_ptr + koffs, mask=m2, other=0.0, eviction_policy="evict_first").to(ACC)
            s = tl.load(s_ptr + koffs, mask=m2, other=0.0, eviction_policy="evict_first").to(ACC)
            h = p + q_m[None, :] + r
        sig = 1.0 / (1.0 + tl.exp(-h))
        if NEED_A:
            acc_a += tl.sum((g * s) * (sig * (1.0 + h * (1.0 - sig))), axis=0)
        if NEED_B:
            acc_b += tl.sum(g * (h * sig), axis=0)
    if NEED_A:
        tl.store(ga_ptr + m * num_features + f, acc_a.to(ga_ptr.dtype.element_ty), mask=fmask)
    if NEED_B:
        tl.store(gb_ptr + m * num_features + f, acc_b.to(gb_ptr.dtype.element_ty), mask=fmask)


_fwd = segment_kernel(_fwd_kernel)
_bwd_segment = segment_kernel(_bwd_segment_kernel)
_bwd_transposed = segment_kernel(_bwd_transposed_kernel)


def fused_edge_message(p: Tensor, q: Tensor, r: Tensor, s: Tensor, ptr: Tensor, src: Tensor,
                       edge_row: Optional[Tensor] = None, check_values: bool = True,
                       src_transpose: Optional[Tensor] = None,
                       row_transpose: Optional[Tensor] = None) -> Tensor:
    """Schema kernel of ``pamnet_fast::fused_edge_message``: ``[N, F]``. One kernel; with
    ``check_values`` one more and one host read (the check of ``ptr``, ``src``, ``edge_row``).
    The transposes are for the backward."""
    return _forward(p, q, r, s, ptr, src, edge_row, check_values, src_transpose, row_transpose,
                    per_edge=False)


def edge_message(p: Tensor, q: Tensor, r: Tensor, s: Tensor, ptr: Tensor, src: Tensor,
                 edge_row: Optional[Tensor] = None, check_values: bool = True,
                 src_transpose: Optional[Tensor] = None, row_transpose: Optional[Tensor] = None) -> Tensor:
    """Schema kernel of ``pamnet_fast::edge_message``: ``[E, F]``, the same kernel storing each edge's
    term (launches and reads as :func:`fused_edge_message`)."""
    return _forward(p, q, r, s, ptr, src, edge_row, check_values, src_transpose, row_transpose,
                    per_edge=True)


def _forward(p, q, r, s, ptr, src, edge_row, check_values, src_transpose, row_transpose, per_edge):
    op = "edge_message" if per_edge else "fused_edge_message"
    validate.fused_edge_message(p, q, r, s, ptr, src, edge_row, half_ok=True, values=False,
                                src_transpose=src_transpose, row_transpose=row_transpose, op=op)
    p, q, r, s = p.contiguous(), q.contiguous(), r.contiguous(), s.contiguous()
    ptr, src = as_index(ptr), as_index(src)
    ranges = [("src", src, q.size(0))]
    if edge_row is not None:
        edge_row = as_index(edge_row)
        ranges.append(("edge_row", edge_row, r.size(0)))
    if check_values:
        check_csr(op, "ptr", ptr, src.numel(), *ranges)
    num_rows, num_features = ptr.numel() - 1, p.size(1)
    # Every row is written: per target (no edges: zeros), or per edge (each edge is in one segment).
    out = p.new_empty(src.numel() if per_edge else num_rows, num_features)
    if num_rows and num_features and out.numel():
        erow = src if edge_row is None else edge_row
        _fwd[segment_grid(num_rows, num_features)](
            p, q, r, s, ptr, src, erow, out, num_features, size_class(src.numel(), num_rows),
            HAS_ROW=edge_row is not None, PER_EDGE=per_edge, ACC=accumulator(p), BLOCK_S=SEGMENT_BLOCK,
            **TUNED_LAUNCH)
    return out


def fused_edge_message_backward(grad_out: Tensor, p: Tensor, q: Tensor, r: Tensor, s: Tensor,
                                ptr: Tensor, src: Tensor, edge_row: Optional[Tensor], output_mask,
                                src_transpose: Optional[Tensor] = None,
                                row_transpose: Optional[Tensor] = None):
    """Schema kernel of ``pamnet_fast::fused_edge_message_backward``: ``(grad_p, grad_q, grad_r,
    grad_s)``, each an empty tensor where ``output_mask`` is false. ``grad_q`` (and the shared rows'
    ``grad_r``/``grad_s``) go through the transposed CSR of ``src`` (``edge_row``): the one given
    (:func:`pamnet_fast.ops.transposed_csr`), else one built here (a sort)."""
    return _backward(grad_out, p, q, r, s, ptr, src, edge_row, output_mask, src_transpose,
                     row_transpose, grad_per_edge=False)


def edge_message_backward(grad_out: Tensor, p: Tensor, q: Tensor, r: Tensor, s: Tensor, ptr: Tensor,
                          src: Tensor, edge_row: Optional[Tensor], output_mask,
                          src_transpose: Optional[Tensor] = None, row_transpose: Optional[Tensor] = None):
    """Schema kernel of ``pamnet_fast::edge_message_backward``: as :func:`fused_edge_message_backward`
    with ``grad_out`` ``[E, F]`` (the same kernels, reading the gradient per edge)."""
    return _backward(grad_out, p, q, r, s, ptr, src, edge_row, output_mask, src_transpose,
                     row_transpose, grad_per_edge=True)


def _backward(grad_out, p, q, r, s, ptr, src, edge_row, output_mask, src_transpose, row_transpose,
              grad_per_edge):
    need_p, need_q, need_r, need_s = (bool(m) for m in output_mask)
    g = grad_out.contiguous()
    p, q, r, s = p.contiguous(), q.contiguous(), r.contiguous(), s.contiguous()
    ptr, src = as_index(ptr), as_index(src)
    has_row = edge_row is not None
    erow = as_index(edge_row) if has_row else src  # src: a valid pointer, never read
    num_rows, num_features, num_edges = ptr.numel() - 1, p.size(1), src.numel()
    # Every output row is written by exactly one program (below), except when there is no work.
    gp = torch.empty_like(p) if need_p else p.new_empty(0)
    gq = torch.empty_like(q) if need_q else q.new_empty(0)
    gr = torch.empty_like(r) if need_r else r.new_empty(0)
    gs = torch.empty_like(s) if need_s else s.new_empty(0)
    if num_features == 0:
        return gp, gq, gr, gs
    key = size_class(num_edges, num_rows)
    per_edge_r, per_edge_s = need_r and not has_row, need_s and not has_row
    if (need_p or per_edge_r or per_edge_s) and num_rows:
        # Unused outputs get a valid pointer (their stores are compiled out).
        _bwd_segment[segment_grid(num_rows, num_features)](
            g, p, q, r, s, ptr, src, erow, gp if need_p else g, gr if per_edge_r else g,
            gs if per_edge_s else g, num_features, key, HAS_ROW=has_row, G_PER_EDGE=grad_per_edge,
            NEED_P=need_p, NEED_R=per_edge_r, NEED_S=per_edge_s, ACC=accumulator(p), BLOCK_S=SEGMENT_BLOCK,
            **TUNED_LAUNCH)
    if need_q and q.size(0):
        if src_transpose is None:
            src_transpose = transpose.transposed_csr(src, q.size(0), ptr)
        perm, rows, tptr = transpose.unpack(src_transpose, num_edges)
        if per_edge_r and num_edges:
            gq = gather_mul_sum(None, None, gr, perm, tptr, q.size(0))  # sum the grad_r rows
        else:
            _bwd_transposed[segment_grid(q.size(0), num_features)](
                g, p, q, r, s, perm, rows, tptr, src, erow, gq, gq, num_features,
                size_class(num_edges, q.size(0)), BY_ROW=False, HAS_ROW=has_row,
                G_PER_EDGE=grad_per_edge, NEED_A=True, NEED_B=False, ACC=accumulator(p),
                BLOCK_S=SEGMENT_BLOCK, **TUNED_LAUNCH)
    if has_row and (need_r or need_s) and r.size(0):
        if row_transpose is None:
            row_transpose = transpose.transposed_csr(erow, r.size(0), ptr)
        perm, rows, tptr = transpose.unpack(row_transpose, num_edges)
        _bwd_transposed[segment_grid(r.size(0), num_features)](
            g, p, q, r, s, perm, rows, tptr, src, erow, gr if need_r else g, gs if need_s else g,
            num_features, size_class(num_edges, r.size(0)), BY_ROW=True, HAS_ROW=True,
            G_PER_EDGE=grad_per_edge, NEED_A=need_r, NEED_B=need_s, ACC=accumulator(p),
            BLOCK_S=SEGMENT_BLOCK, **TUNED_LAUNCH)
    if need_p and not num_rows:
        gp.zero_()
    return gp, gq, gr, gs
