"""Triton kernels of every ``pamnet_fast`` op: the CUDA backend.

:data:`KERNELS` maps each schema name of :data:`pamnet_fast.ops.library.SCHEMAS` (forward and backward)
to a callable with the schema's positional arguments, returning what the reference twin
(``library.REFERENCE_IMPLS[name]``) returns; ``library`` registers them as the ``cuda`` kernels.

The functions named like the public ops (:func:`radius_graph`, :func:`knn_graph`, :func:`triplets`,
:func:`segment_gather_mul`, :func:`fused_edge_message`, :func:`bessel_basis`,
:func:`spherical_basis`) take the public signatures of :mod:`pamnet_fast.ops` and launch the kernels
directly, bypassing the dispatcher, so that with ``TRITON_INTERPRET=1`` (set before Triton is
imported) they run on CPU tensors through Triton's interpreter. They are forward-only (no autograd);
the backward kernels are in :data:`KERNELS` (``*_backward``).

Importing needs only ``triton``; launching needs a GPU or the interpreter. Modules: ``neighbors``
(radius/kNN: cell list + COUNT/FILL), ``triplets``, ``segment`` (segment_gather_mul), ``message``
(fused_edge_message), ``basis`` (Bessel and spherical bases). Gradients w.r.t. gathered inputs use
a transposed CSR, so every kernel is deterministic and atomic-free.
"""
from __future__ import annotations

import functools
from typing import Optional

try:
    import triton  # noqa: F401
    import triton.language  # noqa: F401
except Exception as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"pamnet_fast.ops.triton needs triton: {type(exc).__name__}: {exc}") from exc

import math

import torch
from torch import Tensor

from .. import checks, reference
from . import basis as _basis
from . import message as _message
from . import neighbors as _neighbors
from . import segment as _segment
from . import triplets as _triplets
from ._common import INTERPRET

KERNELS = {
    "radius_graph": _neighbors.radius_graph,
    "knn_graph": _neighbors.knn_graph,
    "triplets": _triplets.triplets,
    "segment_gather_mul": _segment.segment_gather_mul,
    "segment_gather_mul_backward": _segment.segment_gather_mul_backward,
    "fused_edge_message": _message.fused_edge_message,
    "fused_edge_message_backward": _message.fused_edge_message_backward,
    "bessel_basis": _basis.bessel_basis,
    "bessel_basis_backward": _basis.bessel_basis_backward,
    "spherical_basis": _basis.spherical_basis,
    "spherical_basis_backward": _basis.spherical_basis_backward,
}

__all__ = ["KERNELS", "INTERPRET", "radius_graph", "knn_graph", "triplets", "segment_gather_mul",
           "fused_edge_message", "bessel_basis", "spherical_basis"]


# --- Public-signature launchers (same arguments and results as pamnet_fast.ops.*) ---

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
        out.append(reference.pair_distance(pos[edge_index[1]], pos[edge_index[0]]))
    return out[0] if len(out) == 1 else tuple(out)


def radius_graph(pos: Tensor, r: float, batch: Optional[Tensor] = None, *, loop: bool = False,
                 max_num_neighbors: Optional[int] = None, truncate: bool = False,
                 return_ptr: bool = False, return_dist: bool = False):
    """:func:`pamnet_fast.ops.radius_graph` on the Triton kernels."""
    pos, batch = _prepare("radius_graph", pos, batch)
    if max_num_neighbors is None:
        max_num_neighbors = -1
    elif isinstance(max_num_neighbors, bool) or not isinstance(max_num_neighbors, int) \
            or max_num_neighbors < 0:
        raise ValueError(f"radius_graph: max_num_neighbors must be None or a non-negative int, "
                         f"got {max_num_neighbors!r}")
    if isinstance(r, Tensor):
        r = float(r)
    edge_index, ptr = _neighbors.radius_graph(pos, r, batch, loop, max_num_neighbors, truncate)
    return _finish(pos, edge_index, ptr, return_ptr, return_dist)


def knn_graph(pos: Tensor, k: int, batch: Optional[Tensor] = None, *, r: Optional[float] = None,
              loop: bool = False, return_ptr: bool = False, return_dist: bool = False):
    """:func:`pamnet_fast.ops.knn_graph` on the Triton kernels."""
    pos, batch = _prepare("knn_graph", pos, batch)
    if isinstance(r, Tensor):
        r = float(r)
    edge_index, ptr = _neighbors.knn_graph(pos, k, batch, r, loop)
    return _finish(pos, edge_index, ptr, return_ptr, return_dist)


def triplets(edge_index: Tensor, num_nodes: int, *, include_self_pairs: bool = False):
    """:func:`pamnet_fast.ops.triplets` on the Triton kernels (returns a ``Triplets``)."""
    from ..triplets import Triplets  # deferred: that module imports the op library
    checks.index("triplets", "edge_index", edge_index, dim=2)
    return Triplets(*_triplets.triplets(edge_index.long().contiguous(), num_nodes, include_self_pairs))


def _index(op: str, name: str, t: Tensor) -> Tensor:
    return checks.index(op, name, t).long().contiguous()


def segment_gather_mul(a: Tensor, src: Tensor, b: Tensor, ptr: Tensor) -> Tensor:
    """:func:`pamnet_fast.ops.segment_gather_mul` on the Triton kernels (forward only)."""
    op = "segment_gather_mul"
    checks.floating(op, "a", a, dim=2)
    checks.floating(op, "b", b, dim=2)
    return _segment.segment_gather_mul(a.contiguous(), _index(op, "src", src), b.contiguous(),
                                       _index(op, "ptr", ptr))


def fused_edge_message(p: Tensor, q: Tensor, r: Tensor, s: Tensor, ptr: Tensor, src: Tensor) -> Tensor:
    """:func:`pamnet_fast.ops.fused_edge_message` on the Triton kernels (forward only)."""
    op = "fused_edge_message"
    for name, t in (("p", p), ("q", q), ("r", r), ("s", s)):
        checks.floating(op, name, t, dim=2)
    return _message.fused_edge_message(p.contiguous(), q.contiguous(), r.contiguous(), s.contiguous(),
                                       _index(op, "ptr", ptr), _index(op, "src", src))


def bessel_basis(dist: Tensor, cutoff: float, num_radial: int, envelope_exponent: int = 5, *,
                 freq: Optional[Tensor] = None) -> Tensor:
    """:func:`pamnet_fast.ops.bessel_basis` on the Triton kernels (forward only)."""
    op = "bessel_basis"
    checks.floating(op, "dist", dist, dim=1)
    if freq is None:
        checks.positive(op, "num_radial", num_radial, integer=True)
        freq = torch.arange(1, num_radial + 1, dtype=dist.dtype, device=dist.device) * math.pi
    elif freq.dim() != 1 or freq.numel() != num_radial:
        raise ValueError(f"{op}: freq must have shape [{num_radial}], got {tuple(freq.shape)}")
    return _basis.bessel_basis(dist.contiguous(), freq.contiguous(), float(cutoff), envelope_exponent)


@functools.lru_cache(maxsize=None)
def _zeros(num_spherical: int, num_radial: int) -> Tensor:
    return reference.spherical_bessel_zeros(num_spherical, num_radial)


def spherical_basis(dist: Tensor, angle: Tensor, cutoff: float, num_spherical: int = 7,
                    num_radial: int = 6, envelope_exponent: int = 5) -> Tensor:
    """:func:`pamnet_fast.ops.spherical_basis` on the Triton kernels (forward only)."""
    op = "spherical_basis"
    checks.floating(op, "dist", dist, dim=1)
    checks.floating(op, "angle", angle, dim=1)
    checks.positive(op, "num_spherical", num_spherical, integer=True)
    checks.positive(op, "num_radial", num_radial, integer=True)
    zeros = _zeros(num_spherical, num_radial).to(dist.device)
    return _basis.spherical_basis(dist.contiguous(), angle.contiguous(), zeros, float(cutoff),
                                  envelope_exponent)
