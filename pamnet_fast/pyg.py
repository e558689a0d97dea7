"""Drop-in acceleration of stock PyTorch Geometric models with the pamnet-fast graph ops.

After :func:`accelerate`, PyG's :class:`~torch_geometric.nn.models.DimeNet`,
:class:`~torch_geometric.nn.models.DimeNetPlusPlus` and :class:`~torch_geometric.nn.models.SchNet`
(and anything else that looks up ``radius_graph`` in the patched modules) build their neighbor graphs
with :func:`pamnet_fast.ops.radius_graph` and DimeNet's angle triplets with
:func:`pamnet_fast.ops.triplets`. They then run without ``torch_cluster``, ``torch_sparse`` or
``pyg-lib`` (without them PyG's own ``radius_graph`` raises ``ImportError`` and DimeNet's ``triplets``
needs ``SparseTensor``), and give the same outputs as with those libraries: the same edge set and the
same triplet set, possibly in another order, so results agree up to floating-point summation order.

Usage::

    import pamnet_fast.pyg
    pamnet_fast.pyg.accelerate()          # opt-in, idempotent
    model = torch_geometric.nn.models.DimeNetPlusPlus(...)
    ...
    pamnet_fast.pyg.deaccelerate()        # restore PyG's own functions

    with pamnet_fast.pyg.accelerated():   # or scoped
        ...

What is patched (the module attributes are restored exactly by :func:`deaccelerate`):

* ``radius_graph`` in ``torch_geometric.nn``, ``torch_geometric.nn.pool`` and in every module of
  ``torch_geometric.nn.models`` that imported it (DimeNet, SchNet, ViSNet, GNNFF, ...), because those
  modules bound the function at import time (``from torch_geometric.nn import radius_graph``);
* ``triplets`` in ``torch_geometric.nn.models.dimenet`` (called by ``DimeNet.forward``).

Differences from ``torch_cluster``/``pyg-lib``, all documented choices:

* ``max_num_neighbors`` (PyG's default is 32): ``torch_cluster`` silently keeps an *arbitrary* subset
  of the neighbors of a node that has more (its CPU version is even biased towards certain quadrants),
  which cannot be reproduced. By default (``max_num_neighbors="all"``) we keep every neighbor within
  the cutoff, which is identical whenever no node exceeds the limit (always the case on QM9 at 5 Å:
  at most 28 neighbors) and the exact radius graph otherwise. ``"nearest"`` keeps the nearest
  ``max_num_neighbors`` ones (ties by smaller index), ``"raise"`` raises ``ValueError`` naming the
  largest neighbor count.
* The distance test is ``sqrt(dx*dx + dy*dy + dz*dz) <= r`` in the dtype of ``pos``; pairs at exactly
  the cutoff may differ from the backends' squared-distance test (DimeNet's envelope and SchNet's
  cosine cutoff are zero there anyway).
* Edges are sorted by target then source; the libraries' order is by target with neighbors in tree
  order. Model outputs are invariant to edge and triplet order up to float summation order.
"""
from __future__ import annotations

import contextlib
import importlib
import threading
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["accelerate", "deaccelerate", "accelerated", "is_accelerated", "radius_graph", "triplets"]

# Modules whose ``radius_graph`` attribute is replaced when it is PyG's original function.
_RADIUS_MODULES = (
    "torch_geometric.nn.pool",
    "torch_geometric.nn",
    "torch_geometric.nn.models.dimenet",
    "torch_geometric.nn.models.schnet",
    "torch_geometric.nn.models.visnet",
    "torch_geometric.nn.models.gnnff",
)
_DIMENET = "torch_geometric.nn.models.dimenet"
_NEIGHBOR_MODES = ("all", "nearest", "raise")

_lock = threading.RLock()
# (module, attribute) -> original object, for everything currently patched.
_saved: Dict[Tuple[str, str], object] = {}
_state = {"active": False, "max_num_neighbors": "all", "reference": False}


# --------------------------------------------------------------------------------------------- ops

def radius_graph(x: Tensor, r: float, batch: Optional[Tensor] = None, loop: bool = False,
                 max_num_neighbors: Optional[int] = 32, flow: str = "source_to_target",
                 num_workers: int = 1, batch_size: Optional[int] = None) -> Tensor:
    """PyG's ``torch_geometric.nn.radius_graph`` signature, served by :func:`pamnet_fast.ops.radius_graph`.

    Returns ``edge_index [2, E]``; for ``flow="source_to_target"`` row 0 is the source (neighbor) j and
    row 1 the target (center) i, as in PyG. ``max_num_neighbors`` is handled as configured by
    :func:`accelerate` (default: every neighbor is kept, see the module docstring). ``num_workers`` and
    ``batch_size`` are accepted for compatibility and ignored (the C++ kernel uses the intra-op thread
    pool; graphs are delimited by ``batch``).
    """
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"radius_graph: flow must be 'source_to_target' or 'target_to_source', got {flow!r}")
    if x.dim() == 1:
        x = x.view(-1, 1)
    if x.size(-1) != 3:
        # The kernels are 3D; other dimensions are padded with zeros (distances are unchanged).
        if x.size(-1) > 3:
            raise ValueError(f"radius_graph: accelerated version supports up to 3 dimensions, got {x.size(-1)}")
        x = torch.cat([x, x.new_zeros(x.size(0), 3 - x.size(-1))], dim=-1)
    if batch is not None:
        batch = batch.to(x.device)
        if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
            raise ValueError("radius_graph: batch must be sorted (as in PyG mini-batches)")
    mode = _state["max_num_neighbors"]
    limit = None if (mode == "all" or max_num_neighbors is None) else int(max_num_neighbors)
    if _state["reference"]:
        from .ops import reference as ref
        edge_index, _ = ref.radius_graph(x.detach(), float(r), None if batch is None else batch.long(), loop,
                                         -1 if limit is None else limit, mode == "nearest")
    else:
        from . import ops
        edge_index = ops.radius_graph(x.detach(), float(r), batch, loop=loop, max_num_neighbors=limit,
                                      truncate=mode == "nearest")
    return edge_index if flow == "source_to_target" else edge_index.flip(0)


def triplets(edge_index: Tensor, num_nodes: int
             ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """DimeNet's ``triplets``: ``(i, j, idx_i, idx_j, idx_k, idx_kj, idx_ji)`` for ``edge_index`` (j -> i).

    The same set of triplets as PyG's ``torch_sparse`` version (edge pairs ``k -> j -> i`` with
    ``k != i``), sorted by the receiving edge ``ji`` then ``kj`` instead of the ``SparseTensor`` order.
    Edge lists not sorted by target are sorted internally and the edge ids mapped back.
    """
    row, col = edge_index[0].long(), edge_index[1].long()  # j -> i
    num_edges = row.numel()
    perm = None
    if num_edges > 1 and bool((col[1:] < col[:-1]).any()):
        perm = torch.argsort(col, stable=True)
        sorted_index = torch.stack([row[perm], col[perm]])
    else:
        sorted_index = torch.stack([row, col])
    if _state["reference"]:
        from .ops import reference as ref
        idx_kj, idx_ji = ref.triplets(sorted_index, num_nodes, False)[:2]
    else:
        from . import ops
        t = ops.triplets(sorted_index, num_nodes)
        idx_kj, idx_ji = t.two_hop_kj, t.two_hop_ji
    if perm is not None:
        idx_kj, idx_ji = perm[idx_kj], perm[idx_ji]
    idx_i = col[idx_ji]
    idx_j = row[idx_ji]
    idx_k = row[idx_kj]
    return col, row, idx_i, idx_j, idx_k, idx_kj, idx_ji


# ------------------------------------------------------------------------------------------- patch

def _original_radius_graph():
    import torch_geometric.nn.pool as pool
    saved = _saved.get(("torch_geometric.nn.pool", "radius_graph"))
    return saved if saved is not None else pool.radius_graph


def _set(module_name: str, attr: str, value) -> None:
    module = importlib.import_module(module_name)
    key = (module_name, attr)
    if key not in _saved:
        _saved[key] = getattr(module, attr)
    setattr(module, attr, value)


def accelerate(*, max_num_neighbors: str = "all", reference: bool = False) -> None:
    """Make stock PyG DimeNet, DimeNet++ and SchNet use the pamnet-fast radius graph and triplet ops.

    Opt-in and idempotent: calling it again only updates the options. Undo with :func:`deaccelerate`,
    or use the :func:`accelerated` context manager. Only module attributes are replaced; models built
    before or after the call are both affected (they look the functions up at call time), and a model
    given a custom ``interaction_graph`` keeps it.

    Args:
        max_num_neighbors: what to do with PyG's ``max_num_neighbors`` argument (32 by default in
            DimeNet and SchNet): ``"all"`` (default) ignores it and keeps every neighbor within the
            cutoff, identical to ``torch_cluster`` whenever no node has more neighbors than the
            limit; ``"nearest"`` keeps the nearest ones; ``"raise"`` raises ``ValueError`` when a node
            has more. ``torch_cluster`` keeps an arbitrary subset, which cannot be reproduced.
        reference: serve the patched functions with the brute-force plain-PyTorch twins of
            :mod:`pamnet_fast.ops.reference` (for testing; O(N^2)).
    """
    if max_num_neighbors not in _NEIGHBOR_MODES:
        raise ValueError(f"accelerate: max_num_neighbors must be one of {_NEIGHBOR_MODES}, "
                         f"got {max_num_neighbors!r}")
    with _lock:
        _state["max_num_neighbors"] = max_num_neighbors
        _state["reference"] = bool(reference)
        if _state["active"]:
            return
        original = _original_radius_graph()
        for name in _RADIUS_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            if getattr(module, "radius_graph", None) is original:
                _set(name, "radius_graph", radius_graph)
        _set(_DIMENET, "triplets", triplets)
        _state["active"] = True


def deaccelerate() -> None:
    """Restore every attribute replaced by :func:`accelerate` (a no-op when not accelerated)."""
    with _lock:
        for (module_name, attr), value in list(_saved.items()):
            setattr(importlib.import_module(module_name), attr, value)
        _saved.clear()
        _state.update(active=False, max_num_neighbors="all", reference=False)


def is_accelerated() -> bool:
    """Whether :func:`accelerate` is in effect."""
    return bool(_state["active"])


@contextlib.contextmanager
def accelerated(*, max_num_neighbors: str = "all", reference: bool = False):
    """Context manager form of :func:`accelerate`; on exit restores the previous state (so it nests,
    and leaves an outer :func:`accelerate` in place)."""
    with _lock:
        before = dict(_state)
    accelerate(max_num_neighbors=max_num_neighbors, reference=reference)
    try:
        yield
    finally:
        if before["active"]:
            accelerate(max_num_neighbors=before["max_num_neighbors"], reference=before["reference"])
        else:
            deaccelerate()
