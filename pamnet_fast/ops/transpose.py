"""Transposed CSR of an index vector: the gradient of a gather goes through it, without atomics.

The backward of ``out[r] = sum_{s in seg(r)} a[src[s]] * b[s]`` with respect to ``a`` sums, for every
row ``m`` of ``a``, the entries with ``src == m``: the entries grouped by ``src`` (``perm``, a stable
argsort) with their CSR pointer ``tptr``, summed in a fixed order, so the gradient is deterministic.
The GPU kernels build it in every backward by default (a sort). The models' graphs do not change
between layers or steps of one batch, so :func:`transposed_csr` builds it once per batch instead and
the message ops take it (``src_transpose=`` / ``row_transpose=``), sparing a sort and a dozen small
kernels per op call in the backward. Sync-free.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def rows_of(ptr: Tensor, nnz: int) -> Tensor:
    """The segment (row) of each entry of a CSR pointer, int64 ``[nnz]``."""
    counts = ptr[1:] - ptr[:-1]
    return torch.repeat_interleave(torch.arange(ptr.numel() - 1, device=ptr.device), counts,
                                   output_size=nnz)


def transpose_index(idx: Tensor, num_rows: int) -> Tuple[Tensor, Tensor]:
    """``(perm, tptr)``: a stable argsort of ``idx`` and the CSR pointer ``[num_rows + 1]`` of its
    groups, so the entries with ``idx == m`` are ``perm[tptr[m]:tptr[m+1]]`` in their original order.
    No host synchronization (``torch.bincount`` on CUDA reads the maximum back; a binary search of
    the sorted keys does not)."""
    # 32-bit keys halve the passes of the GPU radix sort (it sorts every bit of the key dtype).
    keys = idx.to(torch.int32) if num_rows < 2 ** 31 else idx
    ordered, perm = torch.sort(keys, stable=True)
    bounds = torch.arange(num_rows + 1, dtype=keys.dtype, device=idx.device)
    return perm, torch.searchsorted(ordered, bounds)  # tptr[m] = #entries < m


def transposed_csr(index: Tensor, num_rows: int, ptr: Tensor) -> Tensor:
    """The transposed CSR of ``index [S]`` (rows of a gathered ``[num_rows, F]`` operand) for the
    segments of ``ptr [R + 1]``, packed as one int64 tensor ``[2 S + num_rows + 1]``:
    ``cat(perm, rows[perm], tptr)`` with ``rows`` the segment of each entry (see :func:`unpack`).
    Pass it as ``src_transpose`` (or ``row_transpose`` for ``edge_row``) of
    :func:`pamnet_fast.ops.segment_gather_mul` / :func:`pamnet_fast.ops.fused_edge_message` with the
    same ``index`` and ``ptr``; it is trusted, not checked."""
    index = index.long()
    perm, tptr = transpose_index(index, num_rows)
    rows = rows_of(ptr.long(), index.numel())
    return torch.cat([perm, rows.index_select(0, perm), tptr.long()])


def transposed_identity(rows: Tensor) -> Tensor:
    """:func:`transposed_csr` of ``arange(S)`` (every entry its own row), given ``rows [S]``, the
    segment of each entry (non-decreasing): no sort, ``perm`` and ``tptr`` are ``arange``."""
    ids = torch.arange(rows.numel() + 1, device=rows.device)
    return torch.cat([ids[:-1], rows.long(), ids])


def unpack(t: Tensor, entries: int) -> Tuple[Tensor, Tensor, Tensor]:
    """``(perm [S], rows[perm] [S], tptr [M + 1])`` of a :func:`transposed_csr` of ``entries`` = S."""
    return t[:entries], t[entries:2 * entries], t[2 * entries:]
