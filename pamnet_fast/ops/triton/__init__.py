"""Triton kernels of every ``pamnet_fast`` op: the CUDA backend.

:data:`KERNELS` maps each schema name of :data:`pamnet_fast.ops.library.SCHEMAS` (forward and backward)
to a callable with the schema's positional arguments, returning what the reference twin
(``library.REFERENCE_IMPLS[name]``) returns; ``library`` registers them as the ``cuda`` kernels.

The functions named like the public ops (:func:`radius_graph`, :func:`knn_graph`, :func:`triplets`,
:func:`segment_gather_mul`, :func:`fused_edge_message`, :func:`edge_message`, :func:`bessel_basis`,
:func:`spherical_basis`) take the public signatures of :mod:`pamnet_fast.ops` and launch the kernels
directly, bypassing the dispatcher, so that with ``TRITON_INTERPRET=1`` (set before Triton is
imported) they run on CPU tensors through Triton's interpreter. They are forward-only (no autograd);
the backward kernels are in :data:`KERNELS` (``*_backward``). :func:`linear_act` (``act(x W^T + b)
(+ residual)``, one launch) is no schema op: :func:`pamnet_fast.ops.linear_silu` calls it directly on
CUDA when no gradient is recorded.

Note: the launcher :func:`triplets` shadows the submodule attribute of the same name; import the
module itself as ``importlib.import_module("pamnet_fast.ops.triton.triplets")`` when needed.

Importing needs only ``triton``; launching needs a GPU or the interpreter. Modules: ``neighbors``
(radius/kNN: cell list + COUNT/FILL), ``triplets``, ``segment`` (segment_gather_mul), ``message``
(fused_edge_message, edge_message), ``basis`` (Bessel and spherical bases), ``dense`` (GEMM with a
bias, SiLU and residual epilogue). Gradients w.r.t. gathered inputs use a transposed CSR, so every
kernel is deterministic: no float atomics (the neighbor search's and the checks' integer atomics give
the same result in any order).
"""
from __future__ import annotations

import functools
try:
    import triton  # noqa: F401
    import triton.language  # noqa: F401
except Exception as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"pamnet_fast.ops.triton needs triton: {type(exc).__name__}: {exc}") from exc

from . import basis as _basis
from . import dense as _dense
from . import message as _message
from . import neighbors as _neighbors
from . import segment as _segment
from . import triplets as _triplets
from ._common import INTERPRET

# Importing the submodule set the package attribute `triplets`; drop it so that name resolves to the
# launcher (module __getattr__ below). The module stays importable as pamnet_fast.ops.triton.triplets.
del triplets

KERNELS = {
    "radius_graph": _neighbors.radius_graph,
    "knn_graph": _neighbors.knn_graph,
    "triplets": _triplets.triplets,
    "segment_gather_mul": _segment.segment_gather_mul,
    "segment_gather_mul_backward": _segment.segment_gather_mul_backward,
    "fused_edge_message": _message.fused_edge_message,
    "fused_edge_message_backward": _message.fused_edge_message_backward,
    "edge_message": _message.edge_message,
    "edge_message_backward": _message.edge_message_backward,
    "bessel_basis": _basis.bessel_basis,
    "bessel_basis_backward": _basis.bessel_basis_backward,
    "spherical_basis": _basis.spherical_basis,
    "spherical_basis_backward": _basis.spherical_basis_backward,
}

linear_act = _dense.linear_act

__all__ = ["KERNELS", "INTERPRET", "linear_act", "radius_graph", "knn_graph", "triplets",
           "segment_gather_mul", "fused_edge_message", "edge_message", "bessel_basis", "spherical_basis"]


# --- Public-signature launchers: the public wrappers of pamnet_fast.ops with these kernels ---

def _launcher(public, kernel):
    @functools.wraps(public)
    def launch(*args, **kwargs):
        return public(*args, _kernel=kernel, **kwargs)

    launch.__doc__ = f":func:`pamnet_fast.ops.{public.__name__}` on the Triton kernels (forward only)."
    return launch


def _bind_public_launchers():
    # Deferred: the public modules import the op library, which imports this package.
    from ..basis import bessel_basis, spherical_basis
    from ..graph import knn_graph, radius_graph
    from ..message import edge_message, fused_edge_message, segment_gather_mul
    from ..triplets import triplets
    return {
        "radius_graph": _launcher(radius_graph, _neighbors.radius_graph),
        "knn_graph": _launcher(knn_graph, _neighbors.knn_graph),
        "triplets": _launcher(triplets, _triplets.triplets),
        "segment_gather_mul": _launcher(segment_gather_mul, _segment.segment_gather_mul),
        "fused_edge_message": _launcher(fused_edge_message, _message.fused_edge_message),
        "edge_message": _launcher(edge_message, _message.edge_message),
        "bessel_basis": _launcher(bessel_basis, _basis.bessel_basis),
        "spherical_basis": _launcher(spherical_basis, _basis.spherical_basis),
    }


_LAUNCHERS = None


def __getattr__(name):
    global _LAUNCHERS
    if _LAUNCHERS is None:
        _LAUNCHERS = _bind_public_launchers()
    if name in _LAUNCHERS:
        return _LAUNCHERS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
