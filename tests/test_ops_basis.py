"""bessel_basis and spherical_basis vs the reference and vs independent formulas."""
import math

import pytest
import torch

from pamnet_fast import ops
from pamnet_fast.ops import reference as R

G = torch.Generator().manual_seed(3)


def test_bessel_basis_matches_reference_and_closed_form():
    dist = torch.cat([torch.tensor([0.0, 1e-6, 4.999, 5.0, 7.0]), torch.rand(2000, generator=G) * 6])
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        d = dist.to(dtype)
        out = ops.bessel_basis(d, 5.0, 16, 5)
        ref = R.bessel_basis(d, ops.bessel_frequencies(16, dtype), 5.0, 5)
        torch.testing.assert_close(out, ref, rtol=tol, atol=tol * 50)
    # independent evaluation of u_p(x) sin(n pi x) / x at one point
    x, p = 0.37, 5
    u = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    want = [u * math.sin(n * math.pi * x) / x for n in range(1, 4)]
    got = ops.bessel_basis(torch.tensor([x * 5.0], dtype=torch.float64), 5.0, 3, 5)[0].tolist()
    assert got == pytest.approx(want, rel=1e-12)
    assert ops.bessel_basis(torch.tensor([5.0, 6.0]), 5.0, 4).abs().sum() == 0  # beyond the cutoff
    zero = ops.bessel_basis(torch.tensor([0.0]), 5.0, 3)[0]
    torch.testing.assert_close(zero, ops.bessel_frequencies(3))  # the limit at d = 0


def test_bessel_basis_gradcheck_dist_and_learnable_freq():
    d = torch.cat([torch.tensor([1e-4, 0.5]), torch.rand(20, generator=G, dtype=torch.float64) * 4.5])
    d = d.to(torch.float64).requires_grad_()
    f = (ops.bessel_frequencies(6, torch.float64) * 1.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: ops.bessel_basis(x, 5.0, 6, 5, freq=y), (d, f))
    # float32 gradient vs float64 reference gradient
    d32 = (torch.rand(500, generator=G) * 5.5).requires_grad_()
    ops.bessel_basis(d32, 5.0, 16, 5).sum().backward()
    d64 = d32.detach().double().requires_grad_()
    R.bessel_basis(d64, ops.bessel_frequencies(16, torch.float64), 5.0, 5).sum().backward()
    torch.testing.assert_close(d32.grad.double(), d64.grad, rtol=1e-4, atol=1e-3)


def test_spherical_bessel_zeros_known_values():
    z = ops.spherical_bessel_zeros(3, 3)
    known = [[math.pi, 2 * math.pi, 3 * math.pi], [4.493409457909064, 7.725251836937707, 10.904121659428899],
             [5.763459196894550, 9.095011330476355, 12.322940970566582]]
    assert z.tolist() == [pytest.approx(row, rel=1e-12) for row in known]


def test_spherical_basis_matches_reference():
    dist = torch.cat([torch.tensor([0.0, 1e-5, 4.99, 5.0, 6.0]), torch.rand(1500, generator=G) * 5.5])
    angle = torch.cat([torch.tensor([0.0, math.pi, 1.0, 2.0, 3.0]), torch.rand(1500, generator=G) * math.pi])
    zeros = ops.spherical_bessel_zeros(7, 6)
    for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 1e-11)):
        out = ops.spherical_basis(dist.to(dtype), angle.to(dtype), 5.0, 7, 6, 5)
        ref = R.spherical_basis(dist.double(), angle.double(), zeros, 5.0, 5).to(dtype)
        assert out.shape == (dist.numel(), 42)
        torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


def test_spherical_basis_is_orthonormal_radially():
    # the normalised radial functions sqrt(2) j_l(z_ln x) / |j_(l+1)(z_ln)| are orthonormal on [0, 1]
    # with weight x^2: check on a fine grid with the envelope divided out
    x = torch.linspace(1e-4, 1 - 1e-4, 20001, dtype=torch.float64)
    out = ops.spherical_basis(x, torch.zeros_like(x), 1.0, 3, 4, 5) / R.envelope(x, 5).unsqueeze(1)
    for l in range(3):
        y0 = math.sqrt((2 * l + 1) / (4 * math.pi))
        f = out[:, l * 4:(l + 1) * 4] / y0
        gram = torch.trapezoid(f.unsqueeze(2) * f.unsqueeze(1) * (x * x)[:, None, None], x, dim=0)
        torch.testing.assert_close(gram, torch.eye(4, dtype=torch.float64), atol=1e-5, rtol=0)


def test_spherical_basis_gradcheck():
    d = torch.cat([torch.tensor([1e-3, 0.3]), torch.rand(15, generator=G, dtype=torch.float64) * 4.8])
    d = d.double().requires_grad_()
    a = torch.cat([torch.tensor([1e-3, math.pi - 1e-3]), torch.rand(15, generator=G, dtype=torch.float64) * 3])
    a = a.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: ops.spherical_basis(x, y, 5.0, 7, 6, 5), (d, a))
    assert torch.autograd.gradcheck(lambda x, y: ops.spherical_basis(x, y, 2.6, 3, 4, 6), (d, a))


def test_basis_gradients_through_positions():
    pos = (torch.randn(7, 3, generator=G, dtype=torch.float64) * 1.3).requires_grad_()

    def f(p):
        ei, dist = ops.radius_graph(p, 2.5, return_dist=True)
        t = ops.triplets(ei, 7)
        two, _ = ops.triplet_angles(p, ei, t)
        return ops.bessel_basis(dist, 2.5, 4).sum(), ops.spherical_basis(dist[t.two_hop_kj], two, 2.5, 3, 2)

    assert torch.autograd.gradcheck(f, (pos,))
