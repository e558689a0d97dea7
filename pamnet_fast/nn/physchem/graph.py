"""The index structures PhysChem's layers share, built once per batch from the bond graph."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ... import ops
from ..graphs import csr_pointer, reverse_edges


class MolBatch(NamedTuple):
    """Index structures of a batch of molecules (heavy atoms, bonds in both directions).

    ``src, dst [E]``: directed bonds j -> i, sorted by target. ``ptr [N + 1]``: CSR pointer over
    targets. ``rev [E]``: the position of the reverse bond i -> j. ``trip_j2i, trip_ji, trip_ptr``: the
    one-hop triplets ``(j2 -> i, j -> i)`` (pairs of bonds sharing atom i, the pair of a bond with itself
    included), sorted by ``trip_ji`` with ``trip_ptr [E + 1]``. ``batch [N]``, ``num_graphs``,
    ``counts [G]`` atoms per molecule, ``mass [N]``, ``bonded [N]`` (atom has a bond).
    """
    src: Tensor
    dst: Tensor
    ptr: Tensor
    rev: Tensor
    trip_j2i: Tensor
    trip_ji: Tensor
    trip_ptr: Tensor
    batch: Tensor
    num_graphs: int
    counts: Tensor
    mass: Tensor
    bonded: Tensor


def mol_batch(edge_index: Tensor, num_nodes: int, batch: Optional[Tensor], mass: Tensor,
              num_graphs: Optional[int] = None) -> MolBatch:
    """Build the :class:`MolBatch` of a PyG batch (``edge_index`` sorted by target, as our datasets and
    PyG's batching of them give it), with the shared graph building of :mod:`pamnet_fast.nn.graphs`.
    ``num_graphs`` (e.g. ``data.num_graphs``) saves reading ``batch.max()`` from the device."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    if dst.numel() > 1 and bool((dst[1:] < dst[:-1]).any()):
        raise ValueError("PhysChem: edge_index must be sorted by target (edge_index[1] non-decreasing)")
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=edge_index.device)
    batch = batch.long()
    ptr = csr_pointer(dst, num_nodes)
    trip = ops.triplets(edge_index, num_nodes, include_self_pairs=True)
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    try:
        rev = reverse_edges(src, dst, num_nodes)
    except ValueError:
        raise ValueError("PhysChem needs every bond in both directions (edge_index must be symmetric)") from None
    atoms = torch.ones_like(batch)
    counts = atoms.new_zeros(num_graphs).index_add_(0, batch, atoms)  # bincount would sync
    return MolBatch(src, dst, ptr, rev, trip.one_hop_j2i, trip.one_hop_ji, trip.one_hop_ptr, batch,
                    num_graphs, counts, mass, ptr[1:] > ptr[:-1])


def segment_sum(values: Tensor, index: Tensor, num: int) -> Tensor:
    """``out[k] = sum of values[s] with index[s] == k`` (``[num, F]``)."""
    return values.new_zeros((num,) + values.shape[1:]).index_add_(0, index, values)


def segment_softmax(scores: Tensor, index: Tensor, num: int) -> Tensor:
    """Softmax of ``scores [S]`` within the groups of ``index`` (numerically stable)."""
    top = scores.new_full((num,), float("-inf")).scatter_reduce(0, index, scores, "amax", include_self=True)
    e = torch.exp(scores - top[index])
    return e / segment_sum(e, index, num)[index].clamp(min=1e-30)


def all_pairs(counts: Tensor) -> tuple:
    """All ordered pairs (i, j), i != j, of atoms in the same molecule: ``(i [P], j [P])``."""
    starts = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])
    sq = counts * counts
    mol = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), sq)
    first = torch.cat([sq.new_zeros(1), sq.cumsum(0)[:-1]])
    k = torch.arange(int(sq.sum()), device=counts.device) - first[mol]
    n = counts[mol]
    i, j = starts[mol] + k // n, starts[mol] + k % n
    keep = i != j
    return i[keep], j[keep]
