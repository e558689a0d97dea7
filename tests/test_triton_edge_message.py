"""The Triton kernels of edge_message (fused_edge_message's kernels storing each edge's term) against the
reference twin: CUDA when present, else Triton's interpreter on CPU tensors (TRITON_INTERPRET=1)."""
import pytest
import torch

triton = pytest.importorskip("triton")

from _triton_util import DEV, DTYPES, KERNELS, REF, _close, _csr, _equal, _gen, _randn, reference, tk

pytestmark = pytest.mark.triton

MASKS = ([True] * 4, [False, True, False, False], [True, False, True, False], [False, False, False, True])


def _inputs(dtype, seed, num_rows=30, num_src=20, rows=None, num_features=10, index_dtype=torch.long):
    ptr, src = _csr(num_rows, 8, num_src, seed, index_dtype)
    e = src.numel()
    n_rows = e if rows is None else rows
    row = (None if rows is None else
           torch.randint(0, rows, (e,), generator=_gen(seed + 1)).to(index_dtype))
    p = _randn(num_rows, num_features, dtype=dtype, seed=seed + 2)
    q = _randn(num_src, num_features, dtype=dtype, seed=seed + 3)
    r = _randn(n_rows, num_features, dtype=dtype, seed=seed + 4) * 3
    s = _randn(n_rows, num_features, dtype=dtype, seed=seed + 5)
    g = _randn(e, num_features, dtype=dtype, seed=seed + 6)
    return p, q, r, s, ptr, src, row, g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", (torch.int32, torch.int64))
@pytest.mark.parametrize("rows", (None, 7))
def test_edge_message(dtype, index_dtype, rows):
    p, q, r, s, ptr, src, row, g = _inputs(dtype, 60, rows=rows, index_dtype=index_dtype)
    dev = [None if t is None else t.to(DEV) for t in (p, q, r, s, ptr, src, row)]
    want = reference.edge_message(p, q, r, s, ptr.long(), src.long(), None if row is None else row.long())
    _close(tk.edge_message(*dev), want)
    for mask in MASKS:
        got = KERNELS["edge_message_backward"](g.to(DEV), *dev, mask)
        ref = REF["edge_message_backward"](g, p, q, r, s, ptr, src, row, mask)
        for x, y in zip(got, ref):
            assert x.shape == y.shape
            _close(x, y)


def test_edge_message_backward_with_given_transposes():
    """The transposed CSRs built once (ops.transposed_csr, as the model's graphs carry them) give the
    gradients of the ones built inside."""
    from pamnet_fast import ops
    p, q, r, s, ptr, src, row, g = _inputs(torch.float64, 70, rows=11)
    t_src, t_row = ops.transposed_csr(src, q.size(0), ptr), ops.transposed_csr(row, 11, ptr)
    dev = [t.to(DEV) for t in (g, p, q, r, s, ptr, src, row)]
    inside = KERNELS["edge_message_backward"](*dev, [True] * 4)
    given = KERNELS["edge_message_backward"](*dev, [True] * 4, t_src.to(DEV), t_row.to(DEV))
    for x, y in zip(inside, given):
        _equal(x, y.cpu())


def test_edge_message_empty_graphs_and_odd_widths():
    """E = 0, rows without edges, shared rows that no edge uses, F from 1 to beyond one feature tile."""
    for num_features in (1, 3, 65):
        ptr = torch.zeros(4, dtype=torch.long, device=DEV)
        src = torch.zeros(0, dtype=torch.long, device=DEV)
        p, q = torch.randn(3, num_features, device=DEV), torch.randn(5, num_features, device=DEV)
        r = s = torch.randn(0, num_features, device=DEV)
        assert tk.edge_message(p, q, r, s, ptr, src).shape == (0, num_features)
        g = torch.ones(0, num_features, device=DEV)
        grads = KERNELS["edge_message_backward"](g, p, q, r, s, ptr, src, None, [True] * 4)
        for got, want in zip(grads, (torch.zeros(3, num_features), torch.zeros(5, num_features),
                                     torch.zeros(0, num_features), torch.zeros(0, num_features))):
            _equal(got, want)
        r2 = s2 = torch.randn(2, num_features, device=DEV)
        for got in KERNELS["edge_message_backward"](g, p, q, r2, s2, ptr, src, src, [True] * 4):
            assert not got.abs().any()
        p, q, r, s, ptr, src, row, g = _inputs(torch.float32, 80 + num_features, num_features=num_features)
        _close(tk.edge_message(*(t.to(DEV) for t in (p, q, r, s, ptr, src))),
               reference.edge_message(p, q, r, s, ptr, src))


def test_edge_message_deterministic():
    p, q, r, s, ptr, src, row, g = (t.to(DEV) for t in _inputs(torch.float32, 90, rows=11, num_features=70))
    runs = [[tk.edge_message(p, q, r, s, ptr, src, row),
             *KERNELS["edge_message_backward"](g, p, q, r, s, ptr, src, row, [True] * 4)] for _ in range(2)]
    for first, second in zip(*runs):
        assert torch.equal(first, second)


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
def test_edge_message_half_precision(dtype):
    """Inputs in the half dtype, sums in float32: against float64 on the same rounded inputs."""
    tol = {torch.float16: 4e-3, torch.bfloat16: 2e-2}[dtype]
    for rows in (None, 11):
        p, q, r, s, ptr, src, row, g = _inputs(dtype, 100, rows=rows, num_features=70)
        wide = [t.double() for t in (p, q, r, s)]
        got = [tk.edge_message(*(t.to(DEV) for t in (p, q, r, s, ptr, src)),
                               None if row is None else row.to(DEV)),
               *KERNELS["edge_message_backward"](g.to(DEV), *(t.to(DEV) for t in (p, q, r, s, ptr, src)),
                                                 None if row is None else row.to(DEV), [True] * 4)]
        want = [reference.edge_message(*wide, ptr, src, row),
                *REF["edge_message_backward"](g.double(), *wide, ptr, src, row, [True] * 4)]
        for x, y in zip(got, want):
            assert x.dtype == dtype
            scale = max(1.0, float(y.abs().max())) if y.numel() else 1.0
            torch.testing.assert_close(x.cpu().double(), y, rtol=tol, atol=tol * scale)


def test_edge_message_bad_input():
    p, q, r, s, ptr, src, row, g = (t.to(DEV) for t in _inputs(torch.float32, 110, rows=5))
    with pytest.raises(ValueError, match="^edge_message: p has"):
        KERNELS["edge_message"](p[:3], q, r, s, ptr, src, row)
    with pytest.raises(TypeError, match="^edge_message:"):
        KERNELS["edge_message"](p, q, r, s.double(), ptr, src, row)
    bad = row.clone()
    bad[0] = 5
    with pytest.raises(ValueError, match="edge_row has entries outside"):
        KERNELS["edge_message"](p, q, r, s, ptr, src, bad)
