"""segment_gather_mul and fused_edge_message (with edge_message where the test is the same): values,
gradients, determinism vs the reference."""
import pytest
import torch

from pamnet_fast import ops
from pamnet_fast.ops import reference as R

from _ops_util import num_threads, random_csr

G = torch.Generator().manual_seed(11)


def rand(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=G, dtype=torch.float64).to(dtype)


def close(a, b, dtype):
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
# The last shape's [S, F] outputs (10 MB) take the huge-page path of csrc/cpu/output_buffer.h.
@pytest.mark.parametrize("R_,M,S,F", [(0, 0, 0, 4), (1, 1, 0, 3), (5, 3, 1, 1), (50, 40, 300, 7),
                                      (300, 1000, 5000, 128), (1500, 1000, 40000, 64)])
def test_segment_gather_mul_forward_backward(dtype, R_, M, S, F):
    src, ptr = random_csr(R_, M, S, G)
    a, b = rand(M, F, dtype=dtype).requires_grad_(), rand(S, F, dtype=dtype).requires_grad_()
    out = ops.segment_gather_mul(a, src, b, ptr)
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    ref = R.segment_gather_mul(a2, src, b2, ptr)
    close(out, ref, dtype)
    g = rand(R_, F, dtype=dtype)
    out.backward(g)
    ref.backward(g)
    close(a.grad, a2.grad, dtype)
    close(b.grad, b2.grad, dtype)


def test_segment_gather_mul_int32_noncontiguous_and_gradcheck():
    src, ptr = random_csr(10, 6, 40, G)
    a = rand(6, 10, dtype=torch.float64)[:, ::2].requires_grad_()
    b = rand(5, 40, dtype=torch.float64).t().requires_grad_()
    assert not a.is_contiguous() and not b.is_contiguous()
    out = ops.segment_gather_mul(a, src.int(), b, ptr.int())
    close(out, R.segment_gather_mul(a, src, b, ptr), torch.float64)
    assert torch.autograd.gradcheck(lambda x, y: ops.segment_gather_mul(x, src, y, ptr), (a, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N,E,F", [(0, 0, 3), (1, 0, 2), (4, 1, 1), (60, 500, 9), (500, 8000, 128),
                                   (1500, 40000, 64)])
def test_fused_edge_message_forward_backward(dtype, N, E, F):
    src, ptr = random_csr(N, N, E, G)
    tensors = [rand(N, F, dtype=dtype), rand(N, F, dtype=dtype), rand(E, F, dtype=dtype) * 3,
               rand(E, F, dtype=dtype)]
    mine = [t.clone().requires_grad_() for t in tensors]
    ref_in = [t.clone().requires_grad_() for t in tensors]
    out = ops.fused_edge_message(*mine, ptr, src)
    ref = R.fused_edge_message(*ref_in, ptr, src)
    close(out, ref, dtype)
    g = rand(N, F, dtype=dtype)
    out.backward(g)
    ref.backward(g)
    for x, y in zip(mine, ref_in):
        close(x.grad, y.grad, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N,E,rows,F", [(1, 0, 0, 3), (4, 6, 1, 2), (60, 500, 37, 9),
                                        (500, 8000, 4000, 128)])
def test_fused_edge_message_shared_rows(dtype, N, E, rows, F):
    src, ptr = random_csr(N, N, E, G)
    row = torch.randint(0, max(rows, 1), (E,), generator=G)  # rows used by 0, 1 or several edges
    tensors = [rand(N, F, dtype=dtype), rand(N, F, dtype=dtype), rand(rows, F, dtype=dtype) * 3,
               rand(rows, F, dtype=dtype)]
    mine = [t.clone().requires_grad_() for t in tensors]
    ref_in = [t.clone().requires_grad_() for t in tensors]
    out = ops.fused_edge_message(*mine, ptr, src, row.int())
    ref = R.fused_edge_message(*ref_in, ptr, src, row)
    close(out, ref, dtype)
    g = rand(N, F, dtype=dtype)
    out.backward(g)
    ref.backward(g)
    for x, y in zip(mine, ref_in):
        assert x.grad.shape == y.shape
        close(x.grad, y.grad, dtype)


def test_fused_edge_message_shared_rows_gradcheck_and_pairs():
    src, ptr = random_csr(7, 9, 30, G)
    row = torch.randint(0, 11, (30,), generator=G)
    inputs = [rand(n, 3, dtype=torch.float64).requires_grad_() for n in (7, 9, 11, 11)]
    assert torch.autograd.gradcheck(lambda *x: ops.fused_edge_message(*x, ptr, src, row), inputs)
    # sharing rows is the same as expanding them
    p, q, r, s = (t.detach() for t in inputs)
    close(ops.fused_edge_message(p, q, r, s, ptr, src, row),
          ops.fused_edge_message(p, q, r[row], s[row], ptr, src), torch.float64)


def _pair_rows(edge_index):
    """One row per unordered pair of a symmetric target-sorted graph: (R, edge_row [E])."""
    lo = torch.minimum(edge_index[0], edge_index[1])
    hi = torch.maximum(edge_index[0], edge_index[1])
    _, edge_row = torch.unique(lo * (int(edge_index.max()) + 1) + hi, return_inverse=True)
    return int(edge_row.max()) + 1, edge_row


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shuffle", [False, True])
def test_fused_edge_message_reverse_pair_rows(dtype, shuffle):
    # Rows shared by each edge and its reverse (PAMNet's global plex) take the backward's paired path,
    # which must match the reference and, bitwise, the general path (forced by one unused extra row).
    # Sources shuffled within each target: the paired path does not apply, the result is still exact.
    pos = rand(300, 3, dtype=torch.float64) * 3
    ei, ptr = ops.radius_graph(pos, 2.0, return_ptr=True)
    if shuffle:
        key = ei[1].double() + torch.rand(ei.size(1), generator=G, dtype=torch.float64) * 0.5
        ei = ei[:, key.argsort()]
    rows, row = _pair_rows(ei)
    assert ei.size(1) == 2 * rows
    N, F = 300, 33
    tensors = [rand(N, F, dtype=dtype), rand(N, F, dtype=dtype), rand(rows + 1, F, dtype=dtype) * 3,
               rand(rows + 1, F, dtype=dtype)]
    g = rand(N, F, dtype=dtype)
    grads = {}
    for extra in (0, 1):
        mine = [tensors[0], tensors[1], tensors[2][:rows + extra], tensors[3][:rows + extra]]
        mine = [t.clone().requires_grad_() for t in mine]
        ops.fused_edge_message(*mine, ptr, ei[0], row).backward(g)
        grads[extra] = [t.grad for t in mine]
    ref_in = [t.clone().requires_grad_() for t in tensors]
    R.fused_edge_message(*ref_in, ptr, ei[0], row).backward(g)
    for x, y, z in zip(grads[0], grads[1], ref_in):
        close(x, z.grad[:x.size(0)], dtype)
        assert torch.equal(x, y[:x.size(0)])
    # partial gradients (output masks) on the paired path
    for wanted in ((1,), (2, 3), (0, 3)):
        part = [t.clone().requires_grad_(i in wanted) for i, t in
                enumerate([tensors[0], tensors[1], tensors[2][:rows], tensors[3][:rows]])]
        ops.fused_edge_message(*part, ptr, ei[0], row).backward(g)
        for i in wanted:
            assert torch.equal(part[i].grad, grads[0][i])


def test_fused_edge_message_reverse_pair_rows_gradcheck_and_threads():
    pos = rand(25, 3, dtype=torch.float64) * 1.5
    ei, ptr = ops.radius_graph(pos, 1.5, return_ptr=True)
    rows, row = _pair_rows(ei)
    inputs = [rand(n, 3, dtype=torch.float64).requires_grad_() for n in (25, 25, rows, rows)]
    assert torch.autograd.gradcheck(lambda *x: ops.fused_edge_message(*x, ptr, ei[0], row), inputs)
    pos = rand(3000, 3) * 6
    ei, ptr = ops.radius_graph(pos, 2.0, return_ptr=True)
    rows, row = _pair_rows(ei)
    inputs = [rand(n, 16).requires_grad_() for n in (3000, 3000, rows, rows)]
    results = []
    for n in (1, 2):
        with num_threads(n):
            for t in inputs:
                t.grad = None
            ops.fused_edge_message(*inputs, ptr, ei[0], row).sum().backward()
            results.append([t.grad.clone() for t in inputs])
    for x, y in zip(*results):
        assert torch.equal(x, y)


def test_fused_edge_message_gradcheck_and_partial_grads():
    src, ptr = random_csr(7, 9, 30, G)
    p, q = rand(7, 3, dtype=torch.float64), rand(9, 3, dtype=torch.float64)
    r, s = rand(30, 3, dtype=torch.float64) * 2, rand(30, 3, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (p, q, r, s)]
    assert torch.autograd.gradcheck(lambda *x: ops.fused_edge_message(*x, ptr, src), inputs)
    # only q needs a gradient: the others are not computed, q's still right
    q2 = q.detach().clone().requires_grad_()
    ops.fused_edge_message(p.detach(), q2, r.detach(), s.detach(), ptr, src).sum().backward()
    q3 = q.detach().clone().requires_grad_()
    R.fused_edge_message(p.detach(), q3, r.detach(), s.detach(), ptr, src).sum().backward()
    close(q2.grad, q3.grad, torch.float64)


@pytest.mark.parametrize("name", ["fused_edge_message", "edge_message"])
def test_gated_edge_ops_large_activations_are_finite(name):
    src, ptr = random_csr(10, 10, 50, G)
    p, q, s = rand(10, 4), rand(10, 4), rand(50, 4)
    r = rand(50, 4) * 200  # SiLU saturates both ways: exp must neither overflow nor give NaN
    out = getattr(ops, name)(p, q, r, s, ptr, src)
    assert bool(torch.isfinite(out).all())
    close(out, getattr(R, name)(p, q, r, s, ptr, src), torch.float32)


def test_message_ops_deterministic_across_threads():
    src, ptr = random_csr(2000, 2000, 60000, G)
    a, b = rand(2000, 64).requires_grad_(), rand(60000, 64).requires_grad_()
    results = []
    for n in (1, 2):
        with num_threads(n):
            a.grad = b.grad = None
            out = ops.segment_gather_mul(a, src, b, ptr) + ops.fused_edge_message(a, a, b, b, ptr, src)
            out.sum().backward()
            results.append((out.detach().clone(), a.grad.clone(), b.grad.clone()))
    for x, y in zip(*results):
        assert torch.equal(x, y)
