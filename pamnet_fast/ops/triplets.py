"""Angle triplets of a local plex: two-hop (k -> j -> i) and one-hop (j2 -> i, j -> i) edge pairs."""
from __future__ import annotations

from typing import NamedTuple, Tuple

from torch import Tensor

from . import checks, reference
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
             check_values: bool = True, _kernel=None) -> Triplets:
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
    """
    checks.index("triplets", "edge_index", edge_index, dim=2)
    kernel = _kernel or _ops().triplets
    return Triplets(*kernel(edge_index.long().contiguous(), num_nodes, include_self_pairs,
                            bool(check_values)))


def triplet_angles(pos: Tensor, edge_index: Tensor, trip: Triplets, *, supplement: bool = False
                   ) -> Tuple[Tensor, Tensor]:
    r"""Angles of the two-hop and one-hop triplets, ``atan2(|u x v|, u . v)`` in :math:`[0, \pi]`.

    two-hop :math:`k \to j \to i`: the bond angle at :math:`j` between :math:`u = p_i - p_j` and
    :math:`v = p_k - p_j`. one-hop :math:`(j_2 \to i, j \to i)`: the angle at :math:`i` between
    :math:`u = p_j - p_i` and :math:`v = p_{j_2} - p_i`. ``supplement=True`` gives :math:`\pi - \theta`,
    which is what DimeNet and the authors' PAMNet code feed to the spherical basis (they measure the
    angle between :math:`p_j - p_i` and :math:`p_k - p_j`). Differentiable w.r.t. ``pos``.
    """
    return reference.triplet_angles(pos, edge_index, trip.two_hop_kj, trip.two_hop_ji,
                                    trip.one_hop_j2i, trip.one_hop_ji, supplement)
