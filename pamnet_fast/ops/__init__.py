"""Fused, exact graph ops for 3D molecular GNNs, as ``torch.ops.pamnet_fast`` custom ops.

Every op has a plain-PyTorch reference twin in :mod:`pamnet_fast.ops.reference`; :func:`backend` says
which implementation serves each op on each device.
"""
from .library import backend, extension_error
from .graph import knn_graph, radius_graph
from .triplets import Triplets, triplet_angles, triplet_sizes, triplets
from .message import edge_message, fused_edge_message, segment_gather_mul
from .transpose import transposed_csr
from .basis import bessel_basis, bessel_frequencies, spherical_basis, spherical_bessel_zeros
from .dense import aten_linear, linear, linear_backend, linear_silu

__all__ = [
    "backend", "extension_error", "radius_graph", "knn_graph", "triplets", "Triplets", "triplet_angles",
    "triplet_sizes", "segment_gather_mul", "fused_edge_message", "edge_message", "transposed_csr",
    "bessel_basis", "bessel_frequencies", "spherical_basis", "spherical_bessel_zeros", "linear",
    "linear_silu", "linear_backend", "aten_linear",
]
