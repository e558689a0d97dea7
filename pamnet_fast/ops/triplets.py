"""Angle triplets of a local plex: two-hop (k -> j -> i) and one-hop (j2 -> i, j -> i) edge pairs."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import checks
from .library import _ops


class Triplets(NamedTuple):
    """Edge pairs, each list sorted by the receiving edge ``*_ji`` with a CSR pointer over edges.

    two_hop_kj, two_hop_ji: edges (k -> j, j -> i), k != i.  two_hop_ptr: ``[E + 1]``.
    one_hop_j2i, one_hop_ji: edges (j2 -> i, j -> i) into the same target.  one_hop_ptr: ``[E + 1]``.
    """
    two_hop_kj: Tensor
    two_hop_ji: Tensor
    two_hop_ptr: Tensor
    one_hop_j2i: Tensor
    one_hop_ji: Tensor
    one_hop_ptr: Tensor


def triplets(edge_index: Tensor, num_nodes: int, *, include_self_pairs: bool = False,
             check_values: bool = True, sizes: Optional[Sequence[int]] = None, _kernel=None
             ) -> Triplets:
    r"""Enumerate the angle triplets of a target-sorted edge list.

    two-hop: every pair of edges :math:`(k \to j, j \to i)` with :math:`k \ne i` (DimeNet's triplets);
    one-hop: every pair of distinct edges :math:`(j_2 \to i, j \to i)` sharing the target :math:`i`.
    ``include_self_pairs=True`` also keeps the pair of each edge with itself in the one-hop list, as
    the authors' PAMNet code does (its mask compares the wrong node). Cost O(sum of in-degree^2).

    Args:
        edge_index: ``[2, E]`` int32/int64, sorted by target (``edge_index[1]`` non-decreasing), e.g.
            the output of :func:`radius_graph`.
        num_nodes: number of nodes N.
        check_values: check that the indices are in range and sorted by target (one device read
            more on a GPU); ``False`` for edge lists built valid (radius graphs, checked bonds).
        sizes: ``(two-hop, one-hop)`` list lengths when the caller knows them (from
            :func:`triplet_sizes`, read with other counts): the GPU kernels then read nothing from
            the device; a wrong count is a ``ValueError`` (checked with ``check_values``; trusted
            without it on a GPU, where it can only cut the lists, never write past them).
    """
    checks.index("triplets", "edge_index", edge_index, dim=2)
    kernel = _kernel or _ops().triplets
    sizes = None if sizes is None else [int(s) for s in sizes]
    return Triplets(*kernel(edge_index.long().contiguous(), num_nodes, include_self_pairs,
                            bool(check_values), sizes))


def triplet_sizes(edge_index: Tensor, num_nodes: int, *, include_self_pairs: bool = False,
                  keep: Optional[Tensor] = None) -> Tensor:
    r"""``[2]`` int64 on the device: the lengths of :func:`triplets`' two-hop and one-hop lists,
    without enumerating them and without a host read (so they can be read with other counts).

    With :math:`d_v` the in-degree of node :math:`v`: one-hop :math:`\sum_v d_v^2` minus :math:`E`
    (the self pairs, unless ``include_self_pairs``); two-hop :math:`\sum_{(j \to i)} d_j - m_{ij}`
    with :math:`m_{ij}` the number of edges :math:`i \to j` (the excluded :math:`k = i`; counted, so
    duplicate edges count as in :func:`triplets`).

    ``edge_index [2, E]`` sorted by target then source. ``keep [E]`` (bool): count only the kept
    edges, which must come first (e.g. self-loops sorted last, to be cut once their number is read).
    Indices out of range give a meaningless count, never an out-of-bounds access (the bond checks
    that read with it report them).
    """
    src, dst = edge_index[0].long(), edge_index[1].long()
    E = src.numel()
    if E == 0 or num_nodes == 0:
        return torch.zeros(2, dtype=torch.long, device=edge_index.device)
    key = dst * num_nodes + src
    if keep is not None:
        key = torch.where(keep, key, torch.iinfo(key.dtype).max)
    nodes = torch.arange(num_nodes + 1, device=key.device)
    ptr = torch.searchsorted(key, nodes * num_nodes)  # ptr[v] = kept edges with target < v
    deg = ptr[1:] - ptr[:-1]
    kept = ptr[-1]
    reverse = src * num_nodes + dst  # key of i -> j for the edge j -> i
    multiplicity = (torch.searchsorted(key, reverse, right=True) - torch.searchsorted(key, reverse))
    partners = deg.index_select(0, src.clamp(0, num_nodes - 1)) - multiplicity
    if keep is not None:
        partners = torch.where(keep, partners, 0)
    one_hop = (deg * deg).sum() - (0 if include_self_pairs else kept)
    return torch.stack([partners.sum(), one_hop])


def triplet_angles(pos: Tensor, edge_index: Tensor, trip: Triplets, *, supplement: bool = False,
                   two_hop: bool = True) -> Tuple[Optional[Tensor], Tensor]:
    r"""Angles of the two-hop and one-hop triplets, ``atan2(|u x v|, u . v)`` in :math:`[0, \pi]`.

    two-hop :math:`k \to j \to i`: the bond angle at :math:`j` between :math:`u = p_i - p_j` and
    :math:`v = p_k - p_j`. one-hop :math:`(j_2 \to i, j \to i)`: the angle at :math:`i` between
    :math:`u = p_j - p_i` and :math:`v = p_{j_2} - p_i`. ``supplement=True`` gives :math:`\pi - \theta`,
    which is what DimeNet and the authors' PAMNet code feed to the spherical basis (they measure the
    angle between :math:`p_j - p_i` and :math:`p_k - p_j`). ``two_hop=False``: the one-hop angles
    only (``(None, one)``). Differentiable w.r.t. ``pos``.

    Both lists at once from the edge vectors :math:`a_e = p_{src} - p_{dst}`: a triplet's vectors are
    those of its two edges (:math:`u = -a_{ji}` for two-hop; negation is exact), 13 torch ops (one
    kernel each on a GPU) instead of the 28 of :func:`pamnet_fast.ops.reference.triplet_angles`,
    its specification: the same formula on the same differences; a few values differ by an ulp (on
    the CPU, vectorized and scalar ``atan2`` round the same input differently by its position).
    """
    vec = pos.index_select(0, edge_index[0]) - pos.index_select(0, edge_index[1])  # [E, 3]
    if two_hop:
        recv = torch.cat([trip.two_hop_ji, trip.one_hop_ji])
        send = torch.cat([trip.two_hop_kj, trip.one_hop_j2i])
    else:
        recv, send = trip.one_hop_ji, trip.one_hop_j2i
    u, v = vec.index_select(0, recv), vec.index_select(0, send)
    sin = torch.linalg.cross(u, v).norm(dim=-1)
    cos = (u * v).sum(dim=-1)
    num_two = trip.two_hop_kj.numel() if two_hop else 0
    cos[:num_two].neg_()  # two-hop u is -a_ji: the sign of its dot product flips, its cross's norm not
    angle = torch.atan2(sin, cos)
    if supplement:
        angle = math.pi - angle
    return (angle[:num_two] if two_hop else None), angle[num_two:]
