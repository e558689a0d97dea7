"""Angle triplets on the GPU: per-edge COUNT, exclusive cumsum, FILL (no atomics, no sort).

For each receiving edge ``e = (j -> i)`` (edges sorted by target, CSR ``node_ptr`` over targets):

* two-hop: the edges ``k -> j`` into ``j = src[e]`` (the CSR segment of ``j``), except those with
  ``k == i``. The count is the in-degree of ``j`` minus those exclusions (counted exactly, so duplicate
  edges are handled), computed by a kernel.
* one-hop: the edges ``j2 -> i`` into ``i = dst[e]`` (the segment of ``i``), except ``e`` itself
  unless ``include_self_pairs``: count ``deg(i) - 1`` (or ``deg(i)``), closed form.

One program handles ``BLOCK_E`` consecutive edges and walks their segments in chunks of ``BLOCK_K``
(a ``[BLOCK_E, BLOCK_K]`` tile); FILL writes each edge's partners at its offset (exclusive cumsum of
the counts) in segment order, so both lists come out sorted by receiving edge, then by the other edge,
exactly as the reference, and the CSR pointers are the cumsums of the counts.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import checks, validate
from ._common import LAUNCH

BLOCK_E = 32
BLOCK_K = 32


@triton.jit
def _triplet_kernel(src_ptr, dst_ptr, node_ptr_ptr, count_ptr, offset_ptr, out_other_ptr, out_recv_ptr,
                    num_edges, total, TWO_HOP: tl.constexpr, KEEP_SELF: tl.constexpr, FILL: tl.constexpr,
                    BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    e = pid.to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)
    emask = e < num_edges
    j = tl.load(src_ptr + e, mask=emask, other=0)
    i = tl.load(dst_ptr + e, mask=emask, other=0)
    if TWO_HOP:
        node = j
    else:
        node = i
    seg_start = tl.load(node_ptr_ptr + node, mask=emask, other=0)
    seg_end = tl.load(node_ptr_ptr + node + 1, mask=emask, other=0)
    deg = seg_end - seg_start
    max_deg = tl.max(deg, axis=0)
    count = tl.zeros([BLOCK_E], dtype=tl.int64)
    if FILL:
        base = tl.load(offset_ptr + e, mask=emask, other=0)
    for k0 in range(0, max_deg, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        other = seg_start[:, None] + kk[None, :]
        keep = (kk[None, :] < deg[:, None]) & emask[:, None]
        if TWO_HOP:
            k_src = tl.load(src_ptr + other, mask=keep, other=-1)
            keep = keep & (k_src != i[:, None])
        else:
            if not KEEP_SELF:
                keep = keep & (other != e[:, None])
        keep64 = keep.to(tl.int64)
        if FILL:
            out = base[:, None] + count[:, None] + tl.cumsum(keep64, axis=1) - 1
            # `total` may be a caller's count (sizes=...): never write past the buffers
            inside = keep & (out < total)
            tl.store(out_other_ptr + out, other, mask=inside)
            tl.store(out_recv_ptr + out, tl.broadcast_to(e[:, None], [BLOCK_E, BLOCK_K]), mask=inside)
        count += tl.sum(keep64, axis=1)
    if not FILL:
        tl.store(count_ptr + e, count, mask=emask)


def _launch(src, dst, node_ptr, ptr, two_hop: bool, keep_self: bool, total: int = 0):
    """FILL when ``ptr`` (the CSR pointer of the counts, ending at ``total``) is given (returns the
    two index lists), else COUNT (returns counts)."""
    dev, num_edges = src.device, src.numel()
    fill = ptr is not None
    if fill:
        offsets = ptr[:-1]  # read only by FILL
        other = torch.empty(total, dtype=torch.int64, device=dev)
        recv = torch.empty(total, dtype=torch.int64, device=dev)
        if total == 0:
            return other, recv
        count_buf = offsets
    else:
        count_buf = torch.zeros(num_edges, dtype=torch.int64, device=dev)
        offsets = other = recv = count_buf
        if num_edges == 0:
            return count_buf
    grid = (triton.cdiv(num_edges, BLOCK_E),)
    _triplet_kernel[grid](src, dst, node_ptr, count_buf, offsets, other, recv, num_edges, total,
                          TWO_HOP=two_hop, KEEP_SELF=keep_self, FILL=fill,
                          BLOCK_E=BLOCK_E, BLOCK_K=BLOCK_K, **LAUNCH)
    return (other, recv) if fill else count_buf


def _pointer(counts: Tensor) -> Tensor:
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=counts.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr


def triplets(edge_index: Tensor, num_nodes: int, include_self_pairs: bool,
             check_values: bool = True, sizes=None):
    """Schema kernel of ``pamnet_fast::triplets``: ``(two_hop_kj, two_hop_ji, two_hop_ptr,
    one_hop_j2i, one_hop_ji, one_hop_ptr)``, all int64. One host read (both list sizes), and one
    more for the value checks with ``check_values``. ``sizes`` (the two list sizes, counted by the
    caller, e.g. :func:`pamnet_fast.ops.triplet_sizes` read with other counts): no read of its own;
    with ``check_values`` they are verified (one read), else trusted (the kernel still never writes
    past them)."""
    validate.triplets(edge_index, num_nodes, values=check_values, sizes=sizes)
    if sizes is None or check_values:
        checks.not_capturing("triplets", edge_index, "sizing the triplet lists")
    src = edge_index[0].to(torch.int64).contiguous()
    dst = edge_index[1].to(torch.int64).contiguous()
    # CSR of the sorted targets by binary search: bincount would read its size from the device
    node_ptr = torch.searchsorted(dst, torch.arange(num_nodes + 1, device=dst.device))
    deg = node_ptr[1:] - node_ptr[:-1]

    two_counts = _launch(src, dst, node_ptr, None, True, False)
    one_counts = deg[dst] - (0 if include_self_pairs else 1)
    two_ptr, one_ptr = _pointer(two_counts), _pointer(one_counts)
    if sizes is None or check_values:
        two_total, one_total = torch.stack([two_ptr[-1], one_ptr[-1]]).tolist()  # the one host read
        checks.triplet_sizes_match("triplets", sizes, two_total, one_total)
    else:
        two_total, one_total = (int(s) for s in sizes)
    kj, ji = _launch(src, dst, node_ptr, two_ptr, True, False, two_total)
    j2i, ji1 = _launch(src, dst, node_ptr, one_ptr, False, bool(include_self_pairs), one_total)
    return kj, ji, two_ptr, j2i, ji1, one_ptr
