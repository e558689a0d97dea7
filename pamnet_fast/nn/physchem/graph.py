"""The index structures PhysChem's layers share, built once per batch from the bond graph.

:func:`mol_batch` reads the device ONCE (:func:`~pamnet_fast.nn.graphs.read_counts`): the input checks,
the triplet list sizes, the atoms of each molecule (which the LSTM's packing needs on the host anyway)
and the number of molecules when not given. Everything after it is sync-free: the sizes that the
forward's outputs depend on (triplets, all-pairs list, padded blocks) come from that read.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ... import ops
from ..graphs import InputCheck, _raise_failed, bond_check, csr_pointer, read_counts, reverse_edges


class MolBatch(NamedTuple):
    """Index structures of a batch of molecules (heavy atoms, bonds in both directions).

    ``src, dst [E]``: directed bonds j -> i, sorted by target. ``ptr [N + 1]``: CSR pointer over
    targets. ``rev [E]``: the position of the reverse bond i -> j. ``trip_j2i, trip_ji, trip_ptr``: the
    one-hop triplets ``(j2 -> i, j -> i)`` (pairs of bonds sharing atom i, the pair of a bond with itself
    included), sorted by ``trip_ji`` with ``trip_ptr [E + 1]``. ``batch [N]``, ``num_graphs``,
    ``counts [G]`` atoms per molecule, ``mass [N]``, ``bonded [N]`` (atom has a bond).
    ``counts_cpu``: ``counts`` as a host list; ``max_atoms``: its maximum; ``atom_slot [N]``: the
    position of each atom in its molecule; ``pairs``: :func:`all_pairs` when asked for.
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
    counts_cpu: List[int]
    max_atoms: int
    atom_slot: Tensor
    pairs: Optional[Tuple[Tensor, Tensor]] = None


def _flag(ok: Tensor, message: str) -> InputCheck:
    def fail():
        raise ValueError(message)
    return InputCheck(ok, fail)


def mol_batch(edge_index: Tensor, num_nodes: int, batch: Optional[Tensor], mass: Tensor,
              num_graphs: Optional[int] = None, pairs: bool = False) -> MolBatch:
    """Build the :class:`MolBatch` of a PyG batch (``edge_index`` sorted by target, as our datasets and
    PyG's batching of them give it; ``batch`` sorted), with the shared graph building of
    :mod:`pamnet_fast.nn.graphs`. ``num_graphs`` (e.g. ``data.num_graphs``) saves counting the
    molecules on the device. ``pairs``: also build :func:`all_pairs` (PhysNet's exact pair forces).

    One host read (two when ``num_graphs`` is not given and exceeds the atom count: empty molecules);
    the input errors (indices out of range, edges not sorted by target, a bond without its reverse,
    ``batch`` unsorted or out of range) are raised after it, as ``ValueError``.
    """
    device = edge_index.device
    checks = [bond_check(edge_index, num_nodes, op="PhysChem")]
    src, dst = edge_index[0].long(), edge_index[1].long()
    checks.append(_flag((dst[1:] >= dst[:-1]).all(),
                        "PhysChem: edge_index must be sorted by target (edge_index[1] non-decreasing)"))
    # one sort by (target, source) serves the reverse lookup and triplet_sizes (which needs that
    # order; the sizes do not depend on it). The lookup clamps its positions, so out-of-range
    # indices cannot fault before the read.
    by_key = torch.sort(dst * num_nodes + src, stable=True)
    rev, reverse_found = reverse_edges(src, dst, num_nodes, by_key)
    checks.append(_flag(reverse_found, "PhysChem needs every bond in both directions "
                                       "(edge_index must be symmetric)"))
    sizes = ops.triplet_sizes(edge_index.long().index_select(1, by_key.indices), num_nodes,
                              include_self_pairs=True)
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=device)
        num_graphs = 1 if num_nodes else 0
    batch = batch.long()
    if num_graphs is None and not num_nodes:
        num_graphs = 0
    # unknown num_graphs: count into num_nodes + 1 slots and cut after the read (the last slot
    # collects molecule indices >= num_nodes, which only empty molecules make possible)
    slots = num_graphs if num_graphs is not None else num_nodes + 1
    if batch.numel():  # sorted and in range (checked after the read; clamped until then)
        batch_ok = (batch[1:] >= batch[:-1]).all() & (batch[0] >= 0)
        if num_graphs is not None:
            batch_ok = batch_ok & (batch[-1] < num_graphs)
        checks.append(_flag(batch_ok, f"PhysChem: batch must be sorted, with molecule indices in "
                                      f"[0, {'num_graphs' if num_graphs is None else num_graphs})"))
    atoms = torch.ones_like(batch)  # (bincount would size its output from the data: a read)
    counts = atoms.new_zeros(slots).index_add_(0, batch.clamp(0, max(slots - 1, 0)), atoms)
    graphs = [] if num_graphs is not None else [batch.max() + 1]
    two_hop, one_hop, counts_cpu, *rest = read_counts(*sizes.unbind(), counts, *graphs, *checks)
    _raise_failed(checks, rest[len(graphs):])
    if num_graphs is None:
        num_graphs = rest[0]
        if num_graphs > num_nodes:  # empty molecules beyond the atom count: count again (rare)
            counts = atoms.new_zeros(num_graphs).index_add_(0, batch, atoms)
            counts_cpu = read_counts(counts)[0]
        counts, counts_cpu = counts[:num_graphs], counts_cpu[:num_graphs]
    trip = ops.triplets(edge_index, num_nodes, include_self_pairs=True, check_values=False,
                        sizes=[two_hop, one_hop])
    ptr = csr_pointer(dst, num_nodes)
    starts = counts.cumsum(0) - counts
    atom_slot = torch.arange(num_nodes, device=device) - starts.index_select(0, batch)
    max_atoms = max(counts_cpu, default=0)
    g = MolBatch(src, dst, ptr, rev, trip.one_hop_j2i, trip.one_hop_ji, trip.one_hop_ptr, batch,
                 num_graphs, counts, mass, ptr[1:] > ptr[:-1], counts_cpu, max_atoms, atom_slot)
    return g._replace(pairs=all_pairs(g)) if pairs else g


def segment_sum(values: Tensor, index: Tensor, num: int) -> Tensor:
    """``out[k] = sum of values[s] with index[s] == k`` (``[num, F]``)."""
    return values.new_zeros((num,) + values.shape[1:]).index_add_(0, index, values)


def segment_softmax(scores: Tensor, index: Tensor, num: int) -> Tensor:
    """Softmax of ``scores [S]`` within the groups of ``index`` (numerically stable)."""
    top = scores.new_full((num,), float("-inf")).scatter_reduce(0, index, scores, "amax", include_self=True)
    e = torch.exp(scores - top[index])
    return e / segment_sum(e, index, num)[index].clamp(min=1e-30)


def all_pairs(g: MolBatch) -> Tuple[Tensor, Tensor]:
    """All ordered pairs (i, j), i != j, of atoms in the same molecule: ``(i [P], j [P])``, by i then j.
    Sync-free: the size comes from ``g.counts_cpu``, and the pairs i == j are never made (pair k of a
    molecule of n atoms is row k // (n - 1), column k % (n - 1) skipping the diagonal)."""
    counts = g.counts
    per_molecule = counts * (counts - 1)
    total = sum(n * (n - 1) for n in g.counts_cpu)
    mol = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), per_molecule,
                                  output_size=total)
    first = per_molecule.cumsum(0) - per_molecule
    starts = counts.cumsum(0) - counts
    k = torch.arange(total, device=counts.device) - first.index_select(0, mol)
    off_diagonal = counts.index_select(0, mol) - 1
    i, j = k // off_diagonal, k % off_diagonal
    j = j + (j >= i).long()
    start = starts.index_select(0, mol)
    return start + i, start + j
