"""DimeNet's radial Bessel and 2D spherical Fourier-Bessel bases on the GPU: elementwise kernels,
forward and backward, all arithmetic in the dtype of ``dist``.

* ``bessel_basis``: one program per ``BLOCK_E`` edges x all ``num_radial`` columns.
  Backward: ``grad_dist`` is a row reduction inside the program; ``grad_freq`` (a reduction over edges)
  is written as per-program partial sums ``[num_programs, num_radial]`` and summed with ``torch``:
  deterministic, no atomics.
* ``spherical_basis``: one program per ``BLOCK_T`` triplets x all ``L * N`` columns; each column ``c``
  has its order ``l``, zero ``z_ln``, normalizer ``sqrt(2) / |j_{l+1}(z_ln)|`` (float64 on the host,
  like the reference, then cast), ``sqrt((2l+1)/4pi)`` and double factorials as small tensors.
  ``j_l`` is the power series below ``max(l, 1) + 0.5`` and the upward recurrence above, as
  :func:`pamnet_fast.ops.reference.spherical_jn`; its derivative is
  ``j_l' = l u^(l-1) S_l / (2l+1)!! - j_(l+1)`` on the series side (no division by ``u``) and
  ``j_(l-1) - (l+1)/u j_l`` (``-j_1`` for ``l = 0``) on the recurrence side; ``P_l'`` follows the
  differentiated Bonnet recurrence.

Float constants enter the kernels through tensors of the input dtype (Triton passes float arguments as
fp32). On a GPU, float32 ``sin``/``cos`` use libdevice (accurate to ~1 ulp); divisions and ``exp`` may
be a few ulp off the CPU's, well inside the 1e-5 relative tolerance of the float32 tests.
"""
from __future__ import annotations

import functools
import math
import weakref

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import reference, validate
from ._common import INTERPRET, LAUNCH, cos, next_pow2, scalars, sin

BLOCK_E = 64
BLOCK_T = 32
BLOCK_T_F64 = 8
NUM_TERMS = 30  # power-series terms, as the reference


@triton.jit
def _envelope(x, p, a, b, c, WITH_GRAD: tl.constexpr):
    """u_p(x) = 1 + a x^p + b x^(p+1) + c x^(p+2) for x < 1 (else 0), and u_p'(x) if WITH_GRAD."""
    xpm1 = tl.zeros_like(x) + 1.0
    for _ in range(1, p):
        xpm1 = xpm1 * x
    xp = xpm1 * x
    u = 1.0 + a * xp + b * xp * x + c * xp * x * x
    inside = x < 1.0
    env = tl.where(inside, u, 0.0)
    denv = env
    if WITH_GRAD:
        du = (a * p) * xpm1 + (b * (p + 1)) * xp + (c * (p + 2)) * (xp * x)
        denv = tl.where(inside, du, 0.0)
    return env, denv


@triton.jit
def _bessel_kernel(dist_ptr, freq_ptr, c_ptr, g_ptr, out_ptr, gd_ptr, gf_ptr, num_edges, num_radial,
                   p, BACKWARD: tl.constexpr, NEED_DIST: tl.constexpr, NEED_FREQ: tl.constexpr,
                   NUM_SERIES: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr):
    pid = tl.program_id(0)
    e = pid.to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)
    emask = e < num_edges
    n = tl.arange(0, BLOCK_N)
    nmask = n < num_radial
    m2 = emask[:, None] & nmask[None, :]
    cutoff = tl.load(c_ptr)
    a = tl.load(c_ptr + 1)
    b = tl.load(c_ptr + 2)
    c = tl.load(c_ptr + 3)
    d = tl.load(dist_ptr + e, mask=emask, other=0.0)
    f = tl.load(freq_ptr + n, mask=nmask, other=0.0)
    x = d / cutoff
    env, denv = _envelope(x, p, a, b, c, BACKWARD)
    fx = f[None, :] * x[:, None]
    zero = (x == 0.0)[:, None]
    safe = tl.where(x == 0.0, 1.0, x)[:, None]
    sn = sin(fx)
    ratio = tl.where(zero, f[None, :] + 0.0 * fx, sn / safe)
    offs = e[:, None] * num_radial + n[None, :]
    if not BACKWARD:
        tl.store(out_ptr + offs, env[:, None] * ratio, mask=m2)
    else:
        g = tl.load(g_ptr + offs, mask=m2, other=0.0)
        cs = cos(fx)
        if NEED_DIST:
            # d/dx sin(f x)/x = f^2 (y cos y - sin y) / y^2, y = f x: direct for |y| >= 1, else its
            # Taylor series (the direct form cancels catastrophically as y -> 0).
            y2 = fx * fx
            ser = tl.load(c_ptr + 4 + NUM_SERIES - 1) + 0.0 * fx
            for kk in tl.static_range(NUM_SERIES - 1):  # Horner, highest power first
                ser = ser * y2 + tl.load(c_ptr + 4 + NUM_SERIES - 2 - kk)
            ff = f[None, :] * f[None, :]
            direct = (f[None, :] * cs - sn / safe) / safe
            dratio = tl.where(tl.abs(fx) < 1.0, ff * (ser * fx), direct)
            dratio = tl.where(zero, 0.0, dratio)
            gx = tl.sum(g * (denv[:, None] * ratio + env[:, None] * dratio), axis=1)
            tl.store(gd_ptr + e, gx / cutoff, mask=emask)
        if NEED_FREQ:
            gf = tl.sum(g * env[:, None] * cs, axis=0)
            tl.store(gf_ptr + pid * num_radial + n, gf, mask=nmask)


@triton.jit
def _spherical_kernel(dist_ptr, angle_ptr, k_ptr, l_ptr, c_ptr, g_ptr, out_ptr, gd_ptr, ga_ptr,
                      num_rows, num_cols, num_l, p,
                      BACKWARD: tl.constexpr, NEED_DIST: tl.constexpr, NEED_ANGLE: tl.constexpr,
                      NUM_TERMS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    t = pid.to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    tmask = t < num_rows
    col = tl.arange(0, BLOCK_C)
    cmask = col < num_cols
    m2 = tmask[:, None] & cmask[None, :]
    cutoff = tl.load(c_ptr)
    a = tl.load(c_ptr + 1)
    b = tl.load(c_ptr + 2)
    c = tl.load(c_ptr + 3)
    # per-column constants: zero, normalizer, sqrt((2l+1)/4pi), (2l+1)!!, (2l+3)!!
    z = tl.load(k_ptr + col, mask=cmask, other=1.0)[None, :]
    norm = tl.load(k_ptr + num_cols + col, mask=cmask, other=0.0)[None, :]
    ynorm = tl.load(k_ptr + 2 * num_cols + col, mask=cmask, other=0.0)[None, :]
    dfact = tl.load(k_ptr + 3 * num_cols + col, mask=cmask, other=1.0)[None, :]
    dfact1 = tl.load(k_ptr + 4 * num_cols + col, mask=cmask, other=1.0)[None, :]
    l = tl.load(l_ptr + col, mask=cmask, other=0)[None, :]
    d = tl.load(dist_ptr + t, mask=tmask, other=0.0)
    ang = tl.load(angle_ptr + t, mask=tmask, other=0.0)
    x = d / cutoff
    env, denv = _envelope(x, p, a, b, c, BACKWARD)
    u = z * x[:, None]
    one = tl.zeros_like(u) + 1.0
    # --- j_l(u): power series for u < max(l, 1) + 0.5 ---
    small = u < (tl.maximum(l, 1).to(u.dtype) + 0.5)
    us = tl.where(small, u, 0.0)
    w = -us * us / 2.0
    term = one
    series = one
    term1 = one
    series1 = one
    for k in range(1, NUM_TERMS):
        term = term * w / (k * (2 * l + 2 * k + 1)).to(u.dtype)
        series = series + term
        if BACKWARD:
            term1 = term1 * w / (k * (2 * l + 2 * k + 3)).to(u.dtype)
            series1 = series1 + term1
    upm1 = one  # us^(l-1) for l >= 1
    for m in range(1, num_l):
        upm1 = tl.where(m < l, upm1 * us, upm1)
    upl = tl.where(l == 0, one, upm1 * us)
    ser = series * upl / dfact
    # --- upward recurrence above ---
    zl = tl.where(small, 1.0, u)
    sn = sin(zl)
    cs = cos(zl)
    j0 = sn / zl
    j1 = sn / (zl * zl) - cs / zl
    jm = j0
    jc = j1
    for m in range(1, num_l):
        upd = m < l
        nxt = (2 * m + 1) / zl * jc - jm
        jm = tl.where(upd, jc, jm)
        jc = tl.where(upd, nxt, jc)
    jl = tl.where(small, ser, tl.where(l == 0, j0, jc))
    # --- Legendre P_l(cos angle) ---
    ct = cos(ang)
    xc = ct[:, None] + 0.0 * u
    p0 = one
    p1 = xc
    dp0 = 0.0 * u
    dp1 = one
    for m in range(1, num_l):
        upd = m < l
        p2 = ((2 * m + 1) * xc * p1 - m * p0) / (m + 1)
        if BACKWARD:
            dp2 = ((2 * m + 1) * (p1 + xc * dp1) - m * dp0) / (m + 1)
            dp0 = tl.where(upd, dp1, dp0)
            dp1 = tl.where(upd, dp2, dp1)
        p0 = tl.where(upd, p1, p0)
        p1 = tl.where(upd, p2, p1)
    leg = tl.where(l == 0, one, p1)
    y = ynorm * leg
    offs = t[:, None] * num_cols + col[None, :]
    if not BACKWARD:
        tl.store(out_ptr + offs, env[:, None] * norm * jl * y, mask=m2)
    else:
        g = tl.load(g_ptr + offs, mask=m2, other=0.0)
        if NEED_DIST:
            dser = (l.to(u.dtype) * upm1 * series) / dfact - (upl * us) * series1 / dfact1
            drec = tl.where(l == 0, -j1, jm - (l + 1) / zl * jc)
            dj = tl.where(small, dser, drec)
            dx = norm * y * (denv[:, None] * jl + env[:, None] * z * dj)
            tl.store(gd_ptr + t, tl.sum(g * dx, axis=1) / cutoff, mask=tmask)
        if NEED_ANGLE:
            dleg = tl.where(l == 0, 0.0 * u, dp1)
            da = env[:, None] * norm * jl * ynorm * dleg
            tl.store(ga_ptr + t, -sin(ang) * tl.sum(g * da, axis=1), mask=tmask)


def _envelope_consts(ref: Tensor, cutoff: float, p: int) -> Tensor:
    return scalars(ref, cutoff, -(p + 1) * (p + 2) / 2.0, float(p * (p + 2)), -p * (p + 1) / 2.0)


# (y cos y - sin y) / y^2 = sum_{k>=1} (-1)^k 2k / (2k+1)! y^(2k-1): coefficients of y^(2k-1), k = 1..9
# (the remainder is below 1e-18 relative for |y| < 1).
_NUM_SERIES = 9
_DRATIO_SERIES = tuple((-1) ** k * 2 * k / math.factorial(2 * k + 1) for k in range(1, _NUM_SERIES + 1))


def _bessel(dist, freq, cutoff, p, grad_out=None, need_dist=False, need_freq=False):
    dist, freq = dist.contiguous(), freq.contiguous()
    num_edges, num_radial = dist.numel(), freq.numel()
    consts = _constants(dist.device, dist.dtype, float(cutoff), int(p), True)
    grid = (triton.cdiv(num_edges, BLOCK_E),)
    block_n = next_pow2(num_radial)
    if grad_out is None:
        out = dist.new_empty(num_edges, num_radial)
        if num_edges and num_radial:
            _bessel_kernel[grid](dist, freq, consts, dist, out, dist, dist, num_edges, num_radial, p,
                                 BACKWARD=False, NEED_DIST=False, NEED_FREQ=False,
                                 NUM_SERIES=_NUM_SERIES, BLOCK_E=BLOCK_E, BLOCK_N=block_n, **LAUNCH)
        return out
    gd = torch.zeros_like(dist) if need_dist else dist.new_empty(0)
    gf = torch.zeros_like(freq) if need_freq else freq.new_empty(0)
    if num_edges and num_radial and (need_dist or need_freq):
        partial = dist.new_zeros(grid[0], num_radial) if need_freq else dist
        _bessel_kernel[grid](dist, freq, consts, grad_out.contiguous(), dist, gd if need_dist else dist,
                             partial, num_edges, num_radial, p,
                             BACKWARD=True, NEED_DIST=bool(need_dist), NEED_FREQ=bool(need_freq),
                             NUM_SERIES=_NUM_SERIES, BLOCK_E=BLOCK_E, BLOCK_N=block_n, **LAUNCH)
        if need_freq:
            gf = partial.sum(0)
    return gd, gf


def bessel_basis(dist: Tensor, freq: Tensor, cutoff: float, envelope_exponent: int,
                 check_values: bool = True) -> Tensor:
    """Schema kernel of ``pamnet_fast::bessel_basis``: ``[E, num_radial]`` (one host read for the
    value checks; none with ``check_values=False``)."""
    validate.bessel_basis(dist, freq, cutoff, envelope_exponent, values=check_values)
    return _bessel(dist, freq, cutoff, envelope_exponent)


def bessel_basis_backward(grad_out: Tensor, dist: Tensor, freq: Tensor, cutoff: float,
                          envelope_exponent: int, need_dist: bool, need_freq: bool):
    """Schema kernel of ``pamnet_fast::bessel_basis_backward``: ``(grad_dist, grad_freq)``."""
    return _bessel(dist, freq, cutoff, envelope_exponent, grad_out, need_dist, need_freq)


def _column_constants(zeros: Tensor, dtype) -> tuple:
    """``[5, L*N]`` (z, normalizer, Y normalizer, (2l+1)!!, (2l+3)!!) in ``dtype`` and ``[L*N]`` int32 l."""
    num_l, num_n = zeros.shape
    z64 = zeros.to(torch.float64)
    rows = []
    for l in range(num_l):
        jn1 = reference.spherical_jn(l + 1, z64[l]).abs()
        norm = math.sqrt(2.0) / jn1
        ones = torch.ones_like(norm)
        rows.append(torch.stack([z64[l], norm, ones * math.sqrt((2 * l + 1) / (4 * math.pi)),
                                 ones * float(math.prod(range(1, 2 * l + 2, 2))),
                                 ones * float(math.prod(range(1, 2 * l + 4, 2)))]))
    consts = torch.cat(rows, dim=1) if rows else z64.new_zeros(5, 0)
    orders = torch.arange(num_l, dtype=torch.int32, device=zeros.device).repeat_interleave(num_n)
    return consts.to(dtype).contiguous(), orders


# _column_constants per zeros tensor (id, checked by a weak reference and the version counter) and
# dtype: computing them is ~200 small kernels (the series of j_(l+1) at the zeros), more than the
# basis kernel itself at 1e5 rows on a GPU. The public op passes one cached zeros tensor per device.
_COLUMN_CACHE = {}


def _cached_column_constants(zeros: Tensor, dtype):
    key = (id(zeros), dtype)
    hit = _COLUMN_CACHE.get(key)
    if hit is not None and hit[0]() is zeros and hit[1] == zeros._version:
        return hit[2]
    value = _column_constants(zeros, dtype)
    if len(_COLUMN_CACHE) > 64:
        _COLUMN_CACHE.clear()
    _COLUMN_CACHE[key] = (weakref.ref(zeros), zeros._version, value)
    return value


@functools.lru_cache(maxsize=256)
def _constants(device: torch.device, dtype, cutoff: float, p: int, with_series: bool) -> Tensor:
    """Envelope constants (and the Taylor coefficients of the Bessel derivative): one cached tensor
    per (device, dtype, cutoff, p) instead of a host-to-device copy per call. Read-only."""
    ref = torch.empty(0, dtype=dtype, device=device)
    consts = _envelope_consts(ref, cutoff, p)
    return torch.cat([consts, scalars(ref, *_DRATIO_SERIES)]) if with_series else consts


def _spherical(dist, angle, zeros, cutoff, p, grad_out=None, need_dist=False, need_angle=False):
    dist, angle = dist.contiguous(), angle.contiguous()
    num_l, num_n = zeros.shape
    num_rows, num_cols = dist.numel(), num_l * num_n
    consts = _constants(dist.device, dist.dtype, float(cutoff), int(p), False)
    kc, orders = _cached_column_constants(zeros, dist.dtype)
    # float64 tiles of 32 x 64 need more than 255 registers per thread (2 KB of spills per thread in
    # the backward, sm_90); 8 rows: 220 registers, no spills. (The interpreter has no registers: there
    # fewer, larger tiles are faster.)
    block_t = BLOCK_T_F64 if dist.dtype == torch.float64 and not INTERPRET else BLOCK_T
    grid = (triton.cdiv(num_rows, block_t),)
    block_c = next_pow2(num_cols)
    args = dict(NUM_TERMS=NUM_TERMS, BLOCK_T=block_t, BLOCK_C=block_c, **LAUNCH)
    if grad_out is None:
        out = dist.new_empty(num_rows, num_cols)
        if num_rows and num_cols:
            _spherical_kernel[grid](dist, angle, kc, orders, consts, dist, out, dist, dist,
                                    num_rows, num_cols, num_l, p,
                                    BACKWARD=False, NEED_DIST=False, NEED_ANGLE=False, **args)
        return out
    gd = torch.zeros_like(dist) if need_dist else dist.new_empty(0)
    ga = torch.zeros_like(angle) if need_angle else angle.new_empty(0)
    if num_rows and num_cols and (need_dist or need_angle):
        _spherical_kernel[grid](dist, angle, kc, orders, consts, grad_out.contiguous(), dist,
                                gd if need_dist else dist, ga if need_angle else dist,
                                num_rows, num_cols, num_l, p, BACKWARD=True,
                                NEED_DIST=bool(need_dist), NEED_ANGLE=bool(need_angle), **args)
    return gd, ga


def spherical_basis(dist: Tensor, angle: Tensor, zeros: Tensor, cutoff: float,
                    envelope_exponent: int, check_values: bool = True) -> Tensor:
    """Schema kernel of ``pamnet_fast::spherical_basis``: ``[T, L * N]`` (host reads: as
    :func:`bessel_basis`)."""
    validate.spherical_basis(dist, angle, zeros, cutoff, envelope_exponent, values=check_values)
    return _spherical(dist, angle, zeros, cutoff, envelope_exponent)


def spherical_basis_backward(grad_out: Tensor, dist: Tensor, angle: Tensor, zeros: Tensor,
                             cutoff: float, envelope_exponent: int, need_dist: bool, need_angle: bool):
    """Schema kernel of ``pamnet_fast::spherical_basis_backward``: ``(grad_dist, grad_angle)``."""
    return _spherical(dist, angle, zeros, cutoff, envelope_exponent, grad_out, need_dist, need_angle)
