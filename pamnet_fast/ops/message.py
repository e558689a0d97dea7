"""Fused gather-multiply-scatter aggregation: the edge -> node and triplet -> edge sums of message passing."""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from . import checks
from .library import _ops


def _index(op: str, name: str, t: Tensor) -> Tensor:
    return checks.index(op, name, t).long().contiguous()


def _half_ok(t: Tensor, kernel) -> bool:
    # float16/bfloat16 go to the Triton kernels: CUDA tensors, or a kernel passed in (the interpreter).
    return t.is_cuda or kernel is not None


def segment_gather_mul(a: Tensor, src: Tensor, b: Tensor, ptr: Tensor, *, check_values: bool = True,
                       src_transpose: Optional[Tensor] = None, _kernel=None) -> Tensor:
    r"""Segment sum of gathered products, without materializing ``a[src]``:

    .. math:: \mathrm{out}_r = \sum_{s = \mathrm{ptr}_r}^{\mathrm{ptr}_{r+1} - 1} a_{\mathrm{src}_s} \odot b_s

    Args:
        a: ``[M, F]`` gathered rows (node or edge features).
        src: ``[S]`` row of ``a`` for each entry (int32/int64).
        b: ``[S, F]`` per-entry factor (edge or triplet terms).
        ptr: ``[R + 1]`` CSR pointer of the segments (int32/int64).
        check_values: check the values of the inputs (``ptr`` a valid CSR pointer, ``src`` in
            range), which reads them from the device once (a synchronization on a GPU). ``False``
            for inputs valid by construction (the graphs of
            :func:`pamnet_fast.nn.graphs.build_graphs`): no read, so the op can run inside a CUDA
            graph; invalid inputs then give undefined results.
        src_transpose: :func:`pamnet_fast.ops.transposed_csr` of ``(src, M, ptr)``, when the same
            index serves many calls (a model's layers): the GPU backward then sorts nothing.

    Returns ``[R, F]``. Differentiable in ``a`` and ``b``; the gradient w.r.t. ``a`` uses a transposed
    CSR (a stable sort of ``src``, or ``src_transpose``), so it is deterministic. float32/float64 everywhere;
    float16/bfloat16 on CUDA (Triton; sums in float32, output and gradients in the input dtype).
    """
    op = "segment_gather_mul"
    checks.floating(op, "a", a, dim=2, half_ok=_half_ok(a, _kernel))
    checks.floating(op, "b", b, dim=2, half_ok=_half_ok(b, _kernel))
    kernel = _kernel or _ops().segment_gather_mul
    return kernel(a.contiguous(), _index(op, "src", src), b.contiguous(), _index(op, "ptr", ptr),
                  bool(check_values), src_transpose)


def fused_edge_message(p: Tensor, q: Tensor, r: Tensor, s: Tensor, ptr: Tensor, src: Tensor,
                       edge_row: Optional[Tensor] = None, *, check_values: bool = True,
                       src_transpose: Optional[Tensor] = None, row_transpose: Optional[Tensor] = None,
                       _kernel=None) -> Tensor:
    r"""Gated edge messages summed per target, fused:

    .. math:: \mathrm{out}_i = \sum_{e \in [\mathrm{ptr}_i, \mathrm{ptr}_{i+1})}
              \mathrm{SiLU}(p_i + q_{\mathrm{src}_e} + r_{k_e}) \odot s_{k_e}, \qquad
              k_e = \mathrm{edge\_row}_e \ (\text{default } e)

    A message MLP over ``[x_i || x_j || e_ij]`` followed by SiLU is exactly this with ``p = W_i x + b``,
    ``q = W_j x`` (node projections, N x F instead of E x F) and ``r = W_e e_ij``; ``s`` is the gate
    (``W e_ij`` in PAMNet). The backward recomputes the activation instead of storing E x F
    intermediates. ``edge_row`` lets edges share rows of ``r`` and ``s``: in a radius graph ``i -> j``
    and ``j -> i`` have the same distance, hence the same edge terms, which then are computed once per
    pair (half the edge projections; their gradients are summed over the sharing edges).

    Args:
        p: ``[N, F]`` target term; q: ``[M, F]`` source term; r, s: ``[R, F]`` edge terms (``R = E``
        without ``edge_row``); ptr: ``[N + 1]`` CSR pointer over targets; src: ``[E]`` source of each
        edge; edge_row: optional ``[E]`` row of ``r``/``s`` used by each edge.
        check_values: check the values of the inputs (``ptr`` a valid CSR pointer, ``src`` and
            ``edge_row`` in range), which reads them from the device once (a synchronization on a
            GPU). ``False`` for inputs valid by construction (the graphs of
            :func:`pamnet_fast.nn.graphs.build_graphs`): no read, so the op can run inside a CUDA
            graph; invalid inputs then give undefined results.
        src_transpose, row_transpose: :func:`pamnet_fast.ops.transposed_csr` of ``(src, M, ptr)``
            and ``(edge_row, R, ptr)``, when the same graph serves many calls: the GPU backward then
            sorts nothing.

    float32/float64 everywhere; float16/bfloat16 on CUDA (Triton; sums in float32, output and
    gradients in the input dtype). Deterministic: the same bits on every run.
    """
    return _gated_edge_op("fused_edge_message", _kernel, p, q, r, s, ptr, src, edge_row, check_values,
                          src_transpose, row_transpose)


def edge_message(p: Tensor, q: Tensor, r: Tensor, s: Tensor, ptr: Tensor, src: Tensor,
                 edge_row: Optional[Tensor] = None, *, check_values: bool = True,
                 src_transpose: Optional[Tensor] = None, row_transpose: Optional[Tensor] = None,
                 _kernel=None) -> Tensor:
    r"""Gated edge messages, one row per edge (the terms of :func:`fused_edge_message`, not summed):

    .. math:: \mathrm{out}_e = \mathrm{SiLU}(p_i + q_{\mathrm{src}_e} + r_{k_e}) \odot s_{k_e}, \qquad
              e \in [\mathrm{ptr}_i, \mathrm{ptr}_{i+1}), \ k_e = \mathrm{edge\_row}_e \ (\text{default } e)

    For messages that are used per edge before any sum: PAMNet's local layer gathers them again per
    triplet. One kernel instead of the gathers ``p[dst]``, ``q[src]``, ``r[edge_row]``,
    ``s[edge_row]``, two adds, the SiLU and the product; the backward recomputes the activation and
    sums the gathered inputs' gradients in a fixed order (CSR and transposed CSR, no
    ``index_add_``), so it is deterministic on the GPU too.

    Args and dtypes as :func:`fused_edge_message` (the target of edge ``e`` is the segment of ``ptr``
    that holds it). Returns ``[E, F]``.
    """
    return _gated_edge_op("edge_message", _kernel, p, q, r, s, ptr, src, edge_row, check_values,
                          src_transpose, row_transpose)


def _gated_edge_op(op: str, kernel, p, q, r, s, ptr, src, edge_row, check_values, src_transpose,
                   row_transpose) -> Tensor:
    """``fused_edge_message`` / ``edge_message`` (``op``): the same inputs, checked and passed the
    same way to the op (or to ``kernel``, a Triton launcher)."""
    for name, t in (("p", p), ("q", q), ("r", r), ("s", s)):
        checks.floating(op, name, t, dim=2, half_ok=_half_ok(t, kernel))
    kernel = kernel or getattr(_ops(), op)
    row = None if edge_row is None else _index(op, "edge_row", edge_row)
    return kernel(p.contiguous(), q.contiguous(), r.contiguous(), s.contiguous(), _index(op, "ptr", ptr),
                  _index(op, "src", src), row, bool(check_values), src_transpose, row_transpose)
