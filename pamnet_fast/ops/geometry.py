"""The distance formula every neighbor search, model and reference twin shares.

An edge exists iff ``pair_distance(p_i, p_j) <= r`` with ``r`` rounded to the dtype of ``pos``; the C++
and Triton kernels evaluate the same operations in the same order, so every backend finds the same
edges. :mod:`pamnet_fast.ops.reference` (the specification) and the models (:mod:`pamnet_fast.nn.graphs`)
both import it from here, so the models do not depend on the reference module.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def rounded_cutoff(r: float, dtype: torch.dtype) -> float:
    """``r`` rounded to ``dtype`` (to nearest; float32 overflow gives inf), as every neighbor search
    compares distances in ``dtype`` with it; on the host (no device tensor, so nothing to read)."""
    if dtype != torch.float32:
        return float(r)
    with np.errstate(over="ignore"):
        return float(np.float32(r))


def squared_distance(pos_i: Tensor, pos_j: Tensor) -> Tensor:
    """``dx*dx + dy*dy + dz*dz`` with ``d = pos_j - pos_i``, each operation rounded in the dtype of
    ``pos`` (no fused multiply-add), summed left to right: what every backend computes."""
    d = pos_j - pos_i
    sq = d * d  # (one op for the three products: the same roundings)
    return sq[..., 0] + sq[..., 1] + sq[..., 2]


def correctly_rounded_sqrt(x: Tensor) -> Tensor:
    """IEEE square root (correctly rounded), which ``torch.sqrt`` on CPU is not: its vectorized sqrt is
    off by one ulp for ~15% of float32 and ~1% of float64 inputs, enough to move pairs at the cutoff.

    float32: the double-precision sqrt rounded to float32 is correctly rounded (and differentiable).
    float64 on CPU: numpy's sqrt (the hardware instruction); not differentiable. CUDA's sqrt is exact.
    """
    if x.dtype == torch.float32:
        return torch.sqrt(x.double()).float()
    if x.device.type == "cpu" and x.dtype == torch.float64:
        import numpy as np
        return torch.from_numpy(np.sqrt(x.detach().numpy()))
    return torch.sqrt(x)


def pair_distance(pos_i: Tensor, pos_j: Tensor) -> Tensor:
    """Euclidean distance, evaluated exactly as every backend evaluates it.

    ``sqrt(squared_distance)`` with a correctly rounded square root. Sharing this formula is what makes
    the neighbor search exact: an edge exists iff ``pair_distance <= r`` with ``r`` rounded to the dtype
    of ``pos``. Differentiable (for float64, within one ulp of the correctly rounded value: the
    gradient path uses ``torch.sqrt``).
    """
    d2 = squared_distance(pos_i, pos_j)
    if d2.dtype == torch.float64 and d2.device.type == "cpu":
        exact = correctly_rounded_sqrt(d2)
        if not d2.requires_grad:
            return exact
        approx = torch.sqrt(d2)
        return approx + (exact - approx.detach())  # the exact value with torch.sqrt's gradient
    return correctly_rounded_sqrt(d2)
