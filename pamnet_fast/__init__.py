"""pamnet-fast: fused graph kernels for 3D molecular deep learning, and the PAMNet models built on them."""
from . import ops

__version__ = "0.1.0"

__all__ = ["ops", "__version__"]
