"""Neighbor graphs: radius and k-nearest-neighbor edge lists, exact and sorted for CSR use.

Every public op here and in the sibling modules takes a private ``_kernel``: the schema-level
implementation to call instead of the dispatcher (``pamnet_fast.ops.triton`` uses it to launch its
kernels directly).
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from . import checks
from .geometry import pair_distance
from .library import _ops


def _prepare(op: str, pos: Tensor, batch: Optional[Tensor]):
    checks.floating(op, "pos", pos, dim=2)
    if batch is not None:
        checks.index(op, "batch", batch)
        batch = batch.long()
    return pos.contiguous(), batch


def _finish(pos: Tensor, edge_index: Tensor, ptr: Tensor, return_ptr: bool, return_dist: bool):
    out = [edge_index]
    if return_ptr:
        out.append(ptr)
    if return_dist:
        # Recomputed with the same formula as the kernel, here so that autograd reaches pos.
        out.append(pair_distance(pos[edge_index[1]], pos[edge_index[0]]))
    return out[0] if len(out) == 1 else tuple(out)


def radius_graph(pos: Tensor, r: float, batch: Optional[Tensor] = None, *, loop: bool = False,
                 max_num_neighbors: Optional[int] = None, truncate: bool = False,
                 return_ptr: bool = False, return_dist: bool = False, check_values: bool = True,
                 _kernel=None):
    r"""All pairs within distance ``r``: edges :math:`j \to i` with :math:`\|p_i - p_j\| \le r`.

    Exact: the same edge set as brute force, with the distance evaluated in the dtype of ``pos``
    (see :func:`pamnet_fast.ops.geometry.pair_distance`), per graph of ``batch``. A cell list makes it
    O(N k) and it runs in parallel over targets.

    Args:
        pos: ``[N, 3]`` positions (float32 or float64, finite).
        r: cutoff radius (> 0).
        batch: ``[N]`` sorted graph index of each node (int32/int64), or ``None`` for one graph.
        loop: include self-edges ``i -> i``.
        max_num_neighbors: if a node has more neighbors, raise ``ValueError`` naming the largest count,
            unless ``truncate=True``, which keeps the nearest ones (ties by smaller index). Neighbors
            are never dropped silently.
        return_ptr: also return ``ptr [N + 1]``, the CSR pointer over targets.
        return_dist: also return the ``[E]`` edge lengths (differentiable w.r.t. ``pos``).
        check_values: check that ``pos`` is finite and ``batch`` sorted and non-negative (one device
            read more on a GPU); ``False`` when the caller has checked them.

    Returns:
        ``edge_index [2, E]`` int64 (row 0 source j, row 1 target i), sorted by target then source;
        followed by ``ptr`` and/or ``dist`` when asked for.
    """
    pos, batch = _prepare("radius_graph", pos, batch)
    if max_num_neighbors is None:
        max_num_neighbors = -1
    elif isinstance(max_num_neighbors, bool) or not isinstance(max_num_neighbors, int) \
            or max_num_neighbors < 0:
        raise ValueError(f"radius_graph: max_num_neighbors must be None or a non-negative int, "
                         f"got {max_num_neighbors!r}")
    if isinstance(r, Tensor):
        r = float(r)
    kernel = _kernel or _ops().radius_graph
    edge_index, ptr = kernel(pos, r, batch, loop, max_num_neighbors, truncate, bool(check_values))
    return _finish(pos, edge_index, ptr, return_ptr, return_dist)


def knn_graph(pos: Tensor, k: int, batch: Optional[Tensor] = None, *, r: Optional[float] = None,
              loop: bool = False, return_ptr: bool = False, return_dist: bool = False, _kernel=None):
    r"""The ``k`` nearest neighbors :math:`j` of each node :math:`i` (within ``r`` if given) as edges
    :math:`j \to i`; ties broken by the smaller index; fewer candidates than ``k`` gives all of them.

    Sorted by target then source (not by distance), exact like :func:`radius_graph`. The authors' RNA
    model builds its global plex as ``knn_graph(pos, 50, batch, r=20.0)``.
    """
    pos, batch = _prepare("knn_graph", pos, batch)
    if isinstance(r, Tensor):
        r = float(r)
    edge_index, ptr = (_kernel or _ops().knn_graph)(pos, k, batch, r, loop)
    return _finish(pos, edge_index, ptr, return_ptr, return_dist)
