"""edge_message (the per-edge terms of fused_edge_message): values, gradients, determinism, errors."""
import pytest
import torch

from pamnet_fast import ops
from pamnet_fast.ops import reference as R

from _ops_util import num_threads, random_csr

G = torch.Generator().manual_seed(23)


def rand(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=G, dtype=torch.float64).to(dtype)


def close(a, b, dtype):
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a, b, **tol)


def _against_reference(tensors, ptr, src, row, dtype):
    """Forward and all four gradients of edge_message against the reference twin."""
    mine = [t.clone().requires_grad_() for t in tensors]
    ref_in = [t.clone().requires_grad_() for t in tensors]
    out = ops.edge_message(*mine, ptr, src, row)
    ref = R.edge_message(*ref_in, ptr, src, row)
    assert out.shape == (src.numel(), tensors[0].size(1))
    close(out, ref, dtype)
    g = rand(*out.shape, dtype=dtype)
    out.backward(g)
    ref.backward(g)
    for x, y in zip(mine, ref_in):
        assert x.grad.shape == y.shape
        close(x.grad, y.grad, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N,E,F", [(0, 0, 3), (1, 0, 2), (4, 1, 1), (60, 500, 9), (500, 8000, 128)])
def test_edge_message_forward_backward(dtype, N, E, F):
    src, ptr = random_csr(N, N, E, G)
    tensors = [rand(N, F, dtype=dtype), rand(N, F, dtype=dtype), rand(E, F, dtype=dtype) * 3,
               rand(E, F, dtype=dtype)]
    _against_reference(tensors, ptr, src, None, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N,E,rows,F", [(1, 0, 0, 3), (4, 6, 1, 2), (60, 500, 37, 9), (500, 8000, 4000, 64)])
def test_edge_message_shared_rows(dtype, N, E, rows, F):
    src, ptr = random_csr(N, N, E, G)
    row = torch.randint(0, max(rows, 1), (E,), generator=G)  # rows used by 0, 1 or several edges
    tensors = [rand(N, F, dtype=dtype), rand(N, F, dtype=dtype), rand(rows, F, dtype=dtype) * 3,
               rand(rows, F, dtype=dtype)]
    _against_reference(tensors, ptr, src, row.int(), dtype)


def _pair_rows(edge_index):
    lo = torch.minimum(edge_index[0], edge_index[1])
    hi = torch.maximum(edge_index[0], edge_index[1])
    _, edge_row = torch.unique(lo * (int(edge_index.max()) + 1) + hi, return_inverse=True)
    return int(edge_row.max()) + 1, edge_row


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_message_on_a_real_rna_with_pair_rows(shared_data, dtype):
    """A radius graph of real RNA atoms, each pair's two edges sharing one row (PAMNet's local plex):
    the layout for which fused_edge_message's CPU backward takes its paired path, which reads the
    gradient per target; edge_message's gradient is per edge, so it must not take it."""
    from pamnet_fast.data.structures import read_tu_structures
    pos = read_tu_structures(str(shared_data / "rna_puzzles_native"))[19].pos[:600].double()
    ei, ptr = ops.radius_graph(pos, 3.0, return_ptr=True)
    rows, row = _pair_rows(ei)
    n, f = pos.size(0), 16
    d = (pos[ei[0]] - pos[ei[1]]).norm(dim=1)
    e = torch.sin(d[:, None] * torch.arange(1, f + 1, dtype=torch.float64)).to(dtype)
    r = torch.zeros(rows, f, dtype=dtype).index_copy_(0, row, e)  # rows from the real distances
    tensors = [rand(n, f, dtype=dtype), rand(n, f, dtype=dtype), r, rand(rows, f, dtype=dtype)]
    _against_reference(tensors, ptr, ei[0], row, dtype)


def test_edge_message_gradcheck_and_the_sum_is_fused_edge_message():
    src, ptr = random_csr(7, 9, 30, G)
    row = torch.randint(0, 11, (30,), generator=G)
    for rows, edge_row in ((30, None), (11, row)):
        inputs = [rand(n, 3, dtype=torch.float64).requires_grad_() for n in (7, 9, rows, rows)]
        assert torch.autograd.gradcheck(lambda *x: ops.edge_message(*x, ptr, src, edge_row), inputs)
        # its terms summed per target are fused_edge_message
        per_edge = ops.edge_message(*inputs, ptr, src, edge_row)
        summed = torch.zeros(7, 3, dtype=torch.float64).index_add_(
            0, torch.arange(7).repeat_interleave(ptr.diff()), per_edge)
        close(summed, ops.fused_edge_message(*inputs, ptr, src, edge_row), torch.float64)


@pytest.mark.parametrize("wanted", [0, 1, 2, 3])
def test_edge_message_partial_grads(wanted):
    """Only one input needs a gradient: the others are not computed, that one is still right."""
    src, ptr = random_csr(7, 9, 30, G)
    row = torch.randint(0, 11, (30,), generator=G)
    tensors = [rand(n, 3, dtype=torch.float64) for n in (7, 9, 11, 11)]
    g = rand(30, 3, dtype=torch.float64)
    grads = []
    for fn in (ops.edge_message, R.edge_message):
        inputs = [t.clone().requires_grad_(i == wanted) for i, t in enumerate(tensors)]
        fn(*inputs, ptr, src, row).backward(g)
        grads.append(inputs[wanted].grad)
    close(*grads, torch.float64)


def test_edge_message_deterministic_across_threads():
    src, ptr = random_csr(2000, 2000, 60000, G)
    row = torch.randint(0, 30000, (60000,), generator=G)
    a, b = rand(2000, 64).requires_grad_(), rand(30000, 64).requires_grad_()
    g = rand(60000, 64)
    results = []
    for n in (1, 2):
        with num_threads(n):
            a.grad = b.grad = None
            out = ops.edge_message(a, a, b, b, ptr, src, row)
            out.backward(g)
            results.append((out.detach().clone(), a.grad.clone(), b.grad.clone()))
    for x, y in zip(*results):
        assert torch.equal(x, y)


@pytest.mark.parametrize("change,msg", [
    (dict(p=torch.randn(3, 5)), "len\\(ptr\\) - 1"),
    (dict(src=torch.tensor([0, 2, 1, 9])), "outside"),
    (dict(s=torch.randn(5, 5)), "rows"),
    (dict(edge_row=torch.tensor([0, 1, 4, 2])), "edge_row.*outside"),
    (dict(q=torch.randn(3, 4)), "features"),
    (dict(r=torch.randn(4, 5, dtype=torch.float64)), "float64"),
    (dict(ptr=torch.tensor([0, 1, 3])), "end at 4"),
])
def test_edge_message_rejects_bad_input(change, msg):
    args = dict(p=torch.randn(2, 5), q=torch.randn(3, 5), r=torch.randn(4, 5), s=torch.randn(4, 5),
                ptr=torch.tensor([0, 1, 4]), src=torch.tensor([0, 2, 1, 1])) | change
    with pytest.raises((ValueError, TypeError), match=msg) as info:
        ops.edge_message(**args)
    assert str(info.value).startswith("edge_message:")
