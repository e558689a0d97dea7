r"""Radial (Bessel) and spherical (Fourier-Bessel) basis modules of PAMNet.

Two conventions are supported:

* default (``reference_compat=False``): DimeNet's bases as the fused ops compute them,

  .. math:: e_n(d) = u_p(x)\,\frac{\sin(f_n x)}{x}, \qquad
            a_{ln}(d, \alpha) = u_p(x)\,\frac{\sqrt 2\, j_l(z_{ln} x)}{|j_{l+1}(z_{ln})|}\,Y_l^0(\alpha),
            \qquad x = d / c,

  with the polynomial envelope :math:`u_p(x) = 1 - \frac{(p+1)(p+2)}{2}x^p + p(p+2)x^{p+1}
  - \frac{p(p+1)}{2}x^{p+2}` (zero beyond the cutoff, :math:`C^2` at it). **"Envelope exponent 5"
  means p = 6 here**, the convention of DimeNet's reference code and PyG (``Envelope(exponent)`` uses
  ``p = exponent + 1``), which is what the DimeNet paper calls p = 6.

* ``reference_compat=True``: exactly the formulas of the authors' PAMNet code, which uses
  ``p = exponent`` and adds ``1/x`` to the polynomial instead of multiplying it:
  :math:`v(x) = 1/x + a x^p + b x^{p+1} + c x^{p+2}` (p = 5, a, b, c as in :math:`u_p`), and
  :math:`e_n = v(x) \sin(f_n x)`, :math:`a_{ln} = v(x)\,c_{ln}\, j_l(z_{ln} x)\, Y_l^0(\alpha)`
  (the spherical basis also carries the ``1/x``). Their Bessel zeros are stored in float32; we round
  them the same way. These paths are plain PyTorch.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops
from ..ops import reference as ref_ops


def compat_envelope(x: Tensor, exponent: int) -> Tensor:
    """The authors' envelope ``1/x + a x^p + b x^(p+1) + c x^(p+2)`` (p = exponent) for x < 1, else 0."""
    p = exponent
    a, b, c = -(p + 1) * (p + 2) / 2.0, float(p * (p + 2)), -p * (p + 1) / 2.0
    xp0 = x.pow(p)
    xp1 = xp0 * x
    val = 1.0 / x + a * xp0 + b * xp1 + c * xp1 * x
    return torch.where(x < 1, val, torch.zeros_like(x))


@functools.lru_cache(maxsize=None)
def compat_sbf_constants(num_spherical: int, num_radial: int):
    """(zeros rounded to float32 like the authors' ``Jn_zeros``, normalizers sqrt(2)/|j_{l+1}(z)|,
    spherical-harmonic prefactors sqrt((2l+1)/4pi)), all float64."""
    zeros = ref_ops.spherical_bessel_zeros(num_spherical, num_radial).float().double()
    norm = torch.empty_like(zeros)
    for l in range(num_spherical):
        norm[l] = math.sqrt(2.0) / ref_ops.spherical_jn(l + 1, zeros[l]).abs()
    pref = torch.tensor([math.sqrt((2 * l + 1) / (4 * math.pi)) for l in range(num_spherical)],
                        dtype=torch.float64)
    return zeros, norm, pref


def compat_spherical_basis(dist: Tensor, angle: Tensor, cutoff: float, num_spherical: int,
                           num_radial: int, envelope_exponent: int,
                           index: Optional[Tensor] = None, constants=None) -> Tensor:
    """Authors' spherical basis per triplet, ``[T, L*N]`` (l-major): v(x) c_ln j_l(z_ln x) Y_l^0.
    ``dist [T]``, or ``dist [E]`` per edge with ``index [T]`` the edge of each triplet: the radial part
    is then computed once per edge and gathered, as the authors do (T is several times E).
    ``constants``: :func:`compat_sbf_constants` already on the device of ``dist`` (a module keeps them)."""
    zeros, norm, pref = constants if constants is not None else compat_sbf_constants(num_spherical, num_radial)
    x = (dist / cutoff).unsqueeze(-1)
    env = compat_envelope(x, envelope_exponent)
    rad = torch.cat([norm[l].to(dist.dtype) * ref_ops.spherical_jn(l, zeros[l].to(dist.dtype) * x)
                     for l in range(num_spherical)], dim=-1) * env  # [E or T, L*N]
    if index is not None:
        rad = rad.index_select(0, index)
    cos_t = torch.cos(angle)
    y = torch.stack([pref[l].to(cos_t.dtype) * ref_ops.legendre(l, cos_t) for l in range(num_spherical)], -1)
    return (rad.view(-1, num_spherical, num_radial) * y.unsqueeze(-1)).view(-1, num_spherical * num_radial)


class BesselBasis(nn.Module):
    r"""Radial Bessel basis with learnable frequencies (init :math:`f_n = n\pi`).

    Default: :math:`e_n(d) = u_p(d/c) \sin(f_n d/c) / (d/c)` with p = ``envelope_exponent + 1``,
    computed by the fused :func:`pamnet_fast.ops.bessel_basis`. ``reference_compat``: the authors'
    :math:`v(x) \sin(f_n x)` (see the module docstring).

    Shapes: ``dist [E]`` -> ``[E, num_radial]``.
    """

    def __init__(self, num_radial: int, cutoff: float, envelope_exponent: int = 5,
                 reference_compat: bool = False):
        super().__init__()
        self.num_radial = num_radial
        self.cutoff = float(cutoff)
        self.envelope_exponent = envelope_exponent
        self.reference_compat = reference_compat
        self.freq = nn.Parameter(torch.empty(num_radial))
        self.reset_parameters()

    @property
    def p(self) -> int:
        """The exponent p of the envelope polynomial as the formula uses it."""
        return self.envelope_exponent if self.reference_compat else self.envelope_exponent + 1

    def reset_parameters(self):
        with torch.no_grad():
            self.freq.copy_(torch.arange(1, self.num_radial + 1, dtype=self.freq.dtype) * math.pi)

    def forward(self, dist: Tensor) -> Tensor:
        if self.reference_compat:
            x = (dist / self.cutoff).unsqueeze(-1)
            return compat_envelope(x, self.p) * torch.sin(self.freq * x)
        return ops.bessel_basis(dist, self.cutoff, self.num_radial, self.p, freq=self.freq,
                                check_values=False)

    def extra_repr(self) -> str:
        return (f"num_radial={self.num_radial}, cutoff={self.cutoff}, p={self.p}, "
                f"reference_compat={self.reference_compat}")


class SphericalBasis(nn.Module):
    r"""2D spherical Fourier-Bessel basis per triplet, scaled by the local cutoff.

    Default: :math:`u_p(x)\, c_{ln} j_l(z_{ln} x) Y_l^0(\alpha)` by the fused
    :func:`pamnet_fast.ops.spherical_basis` (p = ``envelope_exponent + 1``); ``reference_compat``:
    the authors' :math:`v(x)\, c_{ln} j_l(z_{ln} x) Y_l^0(\alpha)` in plain PyTorch.

    Shapes: ``dist [T]`` (length of the triplet's sending edge), ``angle [T]`` ->
    ``[T, num_spherical * num_radial]`` (l-major); or ``dist [E]`` per edge with ``index [T]``, the
    sending edge of each triplet.
    """

    def __init__(self, num_spherical: int, num_radial: int, cutoff: float, envelope_exponent: int = 5,
                 reference_compat: bool = False):
        super().__init__()
        self.num_spherical = num_spherical
        self.num_radial = num_radial
        self.cutoff = float(cutoff)
        self.envelope_exponent = envelope_exponent
        self.reference_compat = reference_compat
        # float64 Bessel zeros kept on the module's device (not a buffer: .float() must not round them)
        self.zeros = ops.spherical_bessel_zeros(num_spherical, num_radial)
        self.compat_constants = compat_sbf_constants(num_spherical, num_radial) if reference_compat else None

    @property
    def p(self) -> int:
        return self.envelope_exponent if self.reference_compat else self.envelope_exponent + 1

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        device = fn(self.zeros).device  # follow device moves, stay float64
        self.zeros = self.zeros.to(device)
        if self.compat_constants is not None:
            self.compat_constants = tuple(t.to(device) for t in self.compat_constants)
        return self

    def reset_parameters(self):
        pass

    def forward(self, dist: Tensor, angle: Tensor, index: Optional[Tensor] = None) -> Tensor:
        if self.reference_compat:
            consts = self.compat_constants
            consts = consts if consts is not None and consts[0].device == dist.device else None
            return compat_spherical_basis(dist, angle, self.cutoff, self.num_spherical,
                                          self.num_radial, self.p, index, consts)
        if index is not None:
            dist = dist.index_select(0, index)
        zeros = self.zeros if self.zeros.device == dist.device else None
        return ops.spherical_basis(dist, angle, self.cutoff, self.num_spherical, self.num_radial, self.p,
                                   zeros=zeros, check_values=False)

    def extra_repr(self) -> str:
        return (f"num_spherical={self.num_spherical}, num_radial={self.num_radial}, "
                f"cutoff={self.cutoff}, p={self.p}, reference_compat={self.reference_compat}")
