"""Radial and spherical basis functions of DimeNet, fused forward and backward."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from . import checks, reference
from .library import _ops


def bessel_frequencies(num_radial: int, dtype=torch.float32, device=None) -> Tensor:
    """The initial frequencies n * pi, n = 1..num_radial (learnable in DimeNet and PAMNet)."""
    return torch.arange(1, num_radial + 1, dtype=dtype, device=device) * math.pi


def bessel_basis(dist: Tensor, cutoff: float, num_radial: int, envelope_exponent: int = 5, *,
                 freq: Optional[Tensor] = None, check_values: bool = True, _kernel=None) -> Tensor:
    r"""DimeNet's radial Bessel basis times the polynomial envelope, ``[E, num_radial]``:

    .. math:: e_n(d) = u_p(d/c) \, \frac{\sin(f_n d / c)}{d / c}, \quad
              u_p(x) = 1 - \tfrac{(p+1)(p+2)}{2} x^p + p(p+2) x^{p+1} - \tfrac{p(p+1)}{2} x^{p+2}

    for :math:`x < 1` (0 beyond the cutoff), :math:`f_n = n\pi` unless ``freq`` (``[num_radial]``,
    e.g. a learnable parameter) is given, and :math:`p` = ``envelope_exponent`` used as given (PyG's
    DimeNet uses ``envelope_exponent + 1``). At :math:`d = 0` the value is the limit :math:`f_n`.
    Differentiable w.r.t. ``dist`` and ``freq``. ``check_values=False`` skips the check that the
    distances are finite and non-negative (one device read; see
    :func:`pamnet_fast.ops.segment_gather_mul`).
    """
    op = "bessel_basis"
    checks.floating(op, "dist", dist, dim=1)
    if freq is None:
        checks.positive(op, "num_radial", num_radial, integer=True)
        # at least float32: under autocast a bf16 dist would otherwise round n*pi to 8 bits
        freq = bessel_frequencies(num_radial, torch.promote_types(dist.dtype, torch.float32), dist.device)
    elif freq.dim() != 1 or freq.numel() != num_radial:
        raise ValueError(f"{op}: freq must have shape [{num_radial}], got {tuple(freq.shape)}")
    kernel = _kernel or _ops().bessel_basis
    return kernel(dist.contiguous(), freq.contiguous(), float(cutoff), envelope_exponent,
                  bool(check_values))


_ZEROS = {}  # (num_spherical, num_radial, device) -> zeros


# torch.compile takes the zeros as a constant (tracing their root finding takes minutes), and each
# device gets its copy once (a host-to-GPU copy per forward would wait for the GPU).
@torch.compiler.assume_constant_result
def _zeros(num_spherical: int, num_radial: int, device: str) -> Tensor:
    key = (num_spherical, num_radial, device)
    if key not in _ZEROS:
        host = (num_spherical, num_radial, "cpu")
        if host not in _ZEROS:
            _ZEROS[host] = reference.spherical_bessel_zeros(num_spherical, num_radial)
        _ZEROS[key] = _ZEROS[host].to(device)
    return _ZEROS[key]


def spherical_bessel_zeros(num_spherical: int, num_radial: int, device=None) -> Tensor:
    """The zeros z_ln of the spherical Bessel functions j_l, ``[num_spherical, num_radial]`` float64."""
    return _zeros(num_spherical, num_radial, str(torch.device(device if device is not None else "cpu")))


def spherical_basis(dist: Tensor, angle: Tensor, cutoff: float, num_spherical: int = 7,
                    num_radial: int = 6, envelope_exponent: int = 5, *, zeros: Optional[Tensor] = None,
                    check_values: bool = True, _kernel=None) -> Tensor:
    r"""DimeNet's 2D spherical Fourier-Bessel basis, ``[T, num_spherical * num_radial]`` (l-major):

    .. math:: a_{ln}(d, \alpha) = u_p(d/c)\, \sqrt{2}\, \frac{j_l(z_{ln} d / c)}{|j_{l+1}(z_{ln})|}
              \, Y_l^0(\alpha)

    with :math:`z_{ln}` the n-th zero of the spherical Bessel function :math:`j_l`,
    :math:`Y_l^0(\alpha) = \sqrt{(2l+1)/4\pi}\, P_l(\cos\alpha)` and :math:`u_p` the envelope of
    :func:`bessel_basis`. ``dist`` and ``angle`` are per triplet (gather per-edge distances with the
    triplet's edge index first). Differentiable w.r.t. ``dist`` and ``angle``. ``zeros``: the
    ``[num_spherical, num_radial]`` float64 :func:`spherical_bessel_zeros` already on the device of
    ``dist`` (a module keeps them; this saves a host-to-device copy per call). ``check_values``: as
    :func:`bessel_basis` (and finite angles).
    """
    op = "spherical_basis"
    checks.floating(op, "dist", dist, dim=1)
    checks.floating(op, "angle", angle, dim=1)
    checks.positive(op, "num_spherical", num_spherical, integer=True)
    checks.positive(op, "num_radial", num_radial, integer=True)
    if zeros is None:
        zeros = spherical_bessel_zeros(num_spherical, num_radial, dist.device)
    elif tuple(zeros.shape) != (num_spherical, num_radial):
        raise ValueError(f"{op}: zeros must have shape [{num_spherical}, {num_radial}], got {tuple(zeros.shape)}")
    kernel = _kernel or _ops().spherical_basis
    return kernel(dist.contiguous(), angle.contiguous(), zeros, float(cutoff), envelope_exponent,
                  bool(check_values))
