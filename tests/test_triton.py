"""Triton kernels against the reference twins: triplets, the message ops, the bases.

Shared setup and the interpreter's rules: ``_triton_util``.
"""
import math

import pytest
import torch

triton = pytest.importorskip("triton")

from _triton_util import (DEV, DTYPES, KERNELS, REF, _close, _csr, _edges, _equal, _gen, _graphs_equal,
                          _interpreter_outside_modes, library, _randn, reference, tk)

pytestmark = pytest.mark.triton


def test_kernels_cover_every_schema():
    assert set(KERNELS) == set(library.SCHEMAS)
    assert all(callable(f) for f in KERNELS.values())


# --- triplets ---

@pytest.mark.parametrize("include_self_pairs", (False, True))
def test_triplets_random(include_self_pairs):
    ei = _edges(60, 4.0, 1.2, 5)
    got = KERNELS["triplets"](ei.to(DEV), 62, include_self_pairs)  # two isolated extra nodes
    want = REF["triplets"](ei, 62, include_self_pairs)
    assert want[0].numel() > 100
    _graphs_equal(got, want)
    other = KERNELS["triplets"](ei.to(DEV), 62, not include_self_pairs)
    assert other[3].numel() != got[3].numel()


def test_triplets_int32_duplicates_and_empty():
    # duplicate edges and self loops, target-sorted
    ei = torch.tensor([[1, 2, 2, 0, 3, 0, 1, 1, 2], [0, 0, 0, 1, 1, 2, 2, 3, 3]])
    got = tk.triplets(ei.int().to(DEV), 5, include_self_pairs=True)
    _graphs_equal(got, reference.triplets(ei, 5, True))
    _graphs_equal(tk.triplets(ei.to(DEV), 5), reference.triplets(ei, 5))
    empty = torch.zeros(2, 0, dtype=torch.long)
    _graphs_equal(tk.triplets(empty.to(DEV), 3), reference.triplets(empty, 3))


@pytest.mark.parametrize("include_self_pairs", (False, True))
def test_triplets_with_sizes_given(include_self_pairs):
    """Sizes from ``ops.triplet_sizes`` give the same lists without a read; wrong sizes are an
    error with the value checks, and without them never make the kernel write past the lists."""
    from pamnet_fast import ops
    ei = _edges(60, 4.0, 1.2, 5).to(DEV)
    want = REF["triplets"](ei.cpu(), 60, include_self_pairs)
    sizes = ops.triplet_sizes(ei, 60, include_self_pairs=include_self_pairs).tolist()
    assert sizes == [want[0].numel(), want[3].numel()]
    for check in (False, True):
        _graphs_equal(KERNELS["triplets"](ei, 60, include_self_pairs, check, sizes), want)
    wrong = [sizes[0] - 7, sizes[1]]
    with pytest.raises(ValueError, match=r"triplets: sizes says \[.*\] triplets"):
        KERNELS["triplets"](ei, 60, include_self_pairs, True, wrong)
    cut = KERNELS["triplets"](ei, 60, include_self_pairs, False, wrong)  # trusted: cut, in bounds
    assert cut[0].numel() == wrong[0] and torch.equal(cut[3].cpu(), want[3])


def test_triplets_bad_input():
    with pytest.raises(ValueError):
        KERNELS["triplets"](torch.tensor([[0, 1], [1, 0]], device=DEV), 2, False)  # not sorted
    with pytest.raises(ValueError):
        KERNELS["triplets"](torch.tensor([[0], [5]], device=DEV), 3, False)
    with pytest.raises(ValueError):
        KERNELS["triplets"](torch.zeros(2, 0, dtype=torch.long, device=DEV), -1, False)
    with pytest.raises(TypeError):
        tk.triplets(torch.zeros(2, 0, device=DEV), 3)


# --- segment_gather_mul and fused_edge_message ---

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", (torch.int32, torch.int64))
def test_segment_gather_mul(dtype, index_dtype):
    ptr, src = _csr(40, 9, 25, 6, index_dtype)
    a, b = _randn(25, 12, dtype=dtype, seed=7), _randn(src.numel(), 12, dtype=dtype, seed=8)
    got = tk.segment_gather_mul(a.to(DEV), src.to(DEV), b.to(DEV), ptr.to(DEV))
    want = reference.segment_gather_mul(a, src.long(), b, ptr.long())
    _close(got, want)
    assert got[0].abs().max() == 0  # empty segment
    g = _randn(40, 12, dtype=dtype, seed=9)
    for need_a, need_b in ((True, True), (True, False), (False, True)):
        got = KERNELS["segment_gather_mul_backward"](g.to(DEV), a.to(DEV), src.to(DEV), b.to(DEV),
                                                    ptr.to(DEV), need_a, need_b)
        want = REF["segment_gather_mul_backward"](g, a, src, b, ptr, need_a, need_b)
        for x, y in zip(got, want):
            assert x.shape == y.shape
            _close(x, y)


def _op_names(fn, *args):
    from pamnet_fast.host_syncs import HostSyncCounter
    with HostSyncCounter() as counter:
        out = fn(*args)
    return out, counter.op_names


def test_backward_with_transposes_built_once(monkeypatch):
    """The message ops' backward given the transposed CSRs (``ops.transposed_csr``, built once per
    batch by the models) gives the same bits as the one that builds them, without sorting."""
    from pamnet_fast import ops
    _interpreter_outside_modes(monkeypatch)
    ptr, src = _csr(40, 9, 25, 6)
    e = src.numel()
    a, b = _randn(25, 12, dtype=torch.float32, seed=7), _randn(e, 12, dtype=torch.float32, seed=8)
    g = _randn(40, 12, dtype=torch.float32, seed=9)
    ptr, src, a, b, g = (t.to(DEV) for t in (ptr, src, a, b, g))
    t_src = ops.transposed_csr(src, 25, ptr)
    bwd = KERNELS["segment_gather_mul_backward"]
    want, names = _op_names(bwd, g, a, src, b, ptr, True, True)
    assert "sort" in names
    got, names = _op_names(bwd, g, a, src, b, ptr, True, True, t_src)
    assert "sort" not in names and all(torch.equal(x, y) for x, y in zip(got, want))
    # fused_edge_message: q's rows (src) and the shared rows of r and s (edge_row)
    p, q = _randn(40, 12, dtype=torch.float32, seed=10).to(DEV), a
    row = (torch.arange(e, device=DEV) * 7) % 11
    r, s_ = _randn(11, 12, dtype=torch.float32, seed=11).to(DEV), _randn(11, 12, dtype=torch.float32, seed=12).to(DEV)
    t_row = ops.transposed_csr(row, 11, ptr)
    bwd = KERNELS["fused_edge_message_backward"]
    want, names = _op_names(bwd, g, p, q, r, s_, ptr, src, row, [True] * 4)
    assert names.count("sort") == 2
    got, names = _op_names(bwd, g, p, q, r, s_, ptr, src, row, [True] * 4, t_src, t_row)
    assert "sort" not in names and all(torch.equal(x, y) for x, y in zip(got, want))
    _close(got[1], REF["fused_edge_message_backward"](g.cpu(), p.cpu(), q.cpu(), r.cpu(), s_.cpu(),
                                                      ptr.cpu(), src.cpu(), row.cpu(), [True] * 4)[1])
    with pytest.raises(ValueError, match="src_transpose must have 2 \\* "):
        KERNELS["fused_edge_message"](p, q, r, s_, ptr, src, row, False, t_src[:-1], t_row)


def test_segment_gather_mul_wide_features_and_determinism():
    ptr, src = _csr(5, 20, 4, 10)  # few sources: long transposed segments
    a, b = _randn(4, 150, dtype=torch.float32, seed=11), _randn(src.numel(), 150, dtype=torch.float32, seed=12)
    _close(KERNELS["segment_gather_mul"](a.to(DEV), src.to(DEV), b.to(DEV), ptr.to(DEV)),
           reference.segment_gather_mul(a, src, b, ptr))
    g = _randn(5, 150, dtype=torch.float32, seed=13)
    first = KERNELS["segment_gather_mul_backward"](g.to(DEV), a.to(DEV), src.to(DEV), b.to(DEV), ptr.to(DEV), True, False)[0]
    second = KERNELS["segment_gather_mul_backward"](g.to(DEV), a.to(DEV), src.to(DEV), b.to(DEV), ptr.to(DEV), True, False)[0]
    assert torch.equal(first, second)  # no atomics: bitwise reproducible
    _close(first, REF["segment_gather_mul_backward"](g, a, src, b, ptr, True, False)[0])
    # no rows at all
    empty = tk.segment_gather_mul(a.to(DEV), src[:0].to(DEV), b[:0].to(DEV), torch.zeros(1, dtype=torch.long, device=DEV))
    assert empty.shape == (0, 150)


def test_segment_gather_mul_bad_input():
    ptr, src = _csr(4, 3, 5, 14)
    a, b = torch.randn(5, 8, device=DEV), torch.randn(src.numel(), 8, device=DEV)
    src, ptr = src.to(DEV), ptr.to(DEV)
    with pytest.raises(ValueError):
        tk.segment_gather_mul(a, src, b, ptr[:-1])  # does not end at the number of entries
    with pytest.raises(TypeError):
        KERNELS["segment_gather_mul"](a, src, b.double(), ptr)
    out_of_range = src.clone()
    out_of_range[0] = 5
    with pytest.raises(ValueError):
        KERNELS["segment_gather_mul"](a, out_of_range, b, ptr)
    with pytest.raises(ValueError):
        KERNELS["segment_gather_mul"](a, src, b[:, :4], ptr)
    # value checks (one check kernel on the Triton path): each names its problem
    bad = ptr.clone()
    bad[1], bad[2] = bad[2] + 1, bad[1]
    with pytest.raises(ValueError, match="non-decreasing"):
        KERNELS["segment_gather_mul"](a, src, b, bad)
    with pytest.raises(ValueError, match="start at 0"):
        KERNELS["segment_gather_mul"](a, src, b, ptr + 1)
    negative = src.clone()
    negative[-1] = -1
    with pytest.raises(ValueError, match=r"src has entries outside \[0, 5\)"):
        KERNELS["segment_gather_mul"](a, negative, b, ptr)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", (torch.int32, torch.int64))
def test_fused_edge_message(dtype, index_dtype):
    ptr, src = _csr(30, 8, 20, 15, index_dtype)
    e = src.numel()
    p, q = _randn(30, 10, dtype=dtype, seed=16), _randn(20, 10, dtype=dtype, seed=17)
    r, s = _randn(e, 10, dtype=dtype, seed=18) * 3, _randn(e, 10, dtype=dtype, seed=19)
    dev = [t.to(DEV) for t in (p, q, r, s, ptr, src)]
    _close(tk.fused_edge_message(*dev), reference.fused_edge_message(p, q, r, s, ptr.long(), src.long()))
    g = _randn(30, 10, dtype=dtype, seed=20)
    for mask in ([True] * 4, [False, True, False, False], [True, False, True, False],
                 [False, False, False, True]):
        got = KERNELS["fused_edge_message_backward"](g.to(DEV), *dev, None, mask)
        want = REF["fused_edge_message_backward"](g, p, q, r, s, ptr, src, None, mask)
        for x, y in zip(got, want):
            assert x.shape == y.shape
            _close(x, y)
    # edges sharing rows of r and s
    row = torch.randint(0, 7, (e,), generator=torch.Generator().manual_seed(21)).to(index_dtype)
    r7, s7 = r[:7].contiguous(), s[:7].contiguous()
    dev7 = [t.to(DEV) for t in (p, q, r7, s7, ptr, src, row)]
    _close(tk.fused_edge_message(*dev7),
           reference.fused_edge_message(p, q, r7, s7, ptr.long(), src.long(), row.long()))
    got = KERNELS["fused_edge_message_backward"](g.to(DEV), *dev7, [True] * 4)
    want = REF["fused_edge_message_backward"](g, p, q, r7, s7, ptr, src, row, [True] * 4)
    for x, y in zip(got, want):
        assert x.shape == y.shape
        _close(x, y)


def test_fused_edge_message_bad_input():
    ptr, src = _csr(4, 3, 5, 21)
    e = src.numel()
    p, q, r, s = (torch.randn(n, 6, device=DEV) for n in (4, 5, e, e))
    ptr, src = ptr.to(DEV), src.to(DEV)
    with pytest.raises(ValueError):
        KERNELS["fused_edge_message"](p[:3], q, r, s, ptr, src)
    with pytest.raises(TypeError):
        KERNELS["fused_edge_message"](p, q, r, s.double(), ptr, src)
    with pytest.raises(TypeError):
        tk.fused_edge_message(p, q, r, s, ptr.float(), src)
    row = torch.zeros(e, dtype=torch.long, device=DEV)
    row[0] = e
    with pytest.raises(ValueError, match="edge_row has entries outside"):
        KERNELS["fused_edge_message"](p, q, r, s, ptr, src, row)
    with pytest.raises(ValueError, match="at least one entry"):
        KERNELS["fused_edge_message"](p[:0], q, r[:0], s[:0], ptr[:0], src[:0])


def test_message_ops_empty_graphs_and_odd_widths():
    """E = 0 (every segment empty), rows without edges, and F from 1 to beyond one feature tile."""
    for num_features in (1, 3, 65):
        ptr = torch.zeros(4, dtype=torch.long, device=DEV)
        src = torch.zeros(0, dtype=torch.long, device=DEV)
        a, b = torch.randn(3, num_features, device=DEV), torch.randn(0, num_features, device=DEV)
        _equal(tk.segment_gather_mul(a, src, b, ptr), torch.zeros(3, num_features))
        ga, gb = KERNELS["segment_gather_mul_backward"](torch.ones(3, num_features, device=DEV), a, src, b,
                                                        ptr, True, True)
        _equal(ga, torch.zeros(3, num_features))
        assert gb.shape == (0, num_features)
        p, q = torch.randn(3, num_features, device=DEV), torch.randn(5, num_features, device=DEV)
        r = s = torch.randn(0, num_features, device=DEV)
        _equal(tk.fused_edge_message(p, q, r, s, ptr, src), torch.zeros(3, num_features))
        grads = KERNELS["fused_edge_message_backward"](torch.ones(3, num_features, device=DEV), p, q, r, s,
                                                       ptr, src, None, [True] * 4)
        for got, want in zip(grads, (torch.zeros(3, num_features), torch.zeros(5, num_features),
                                     torch.zeros(0, num_features), torch.zeros(0, num_features))):
            _equal(got, want)
        # shared rows that no edge uses get zero gradients
        r2 = s2 = torch.randn(2, num_features, device=DEV)
        grads = KERNELS["fused_edge_message_backward"](torch.ones(3, num_features, device=DEV), p, q, r2, s2,
                                                       ptr, src, src, [True] * 4)
        for got in grads:
            assert not got.abs().any()


def _message_inputs(dtype, seed, num_features=70):
    ptr, src = _csr(24, 12, 9, seed)  # few sources: long transposed segments
    e = src.numel()
    row = torch.randint(0, 11, (e,), generator=_gen(seed + 1))
    p, q = _randn(24, num_features, dtype=dtype, seed=seed + 2), _randn(9, num_features, dtype=dtype, seed=seed + 3)
    r, s = _randn(e, num_features, dtype=dtype, seed=seed + 4), _randn(e, num_features, dtype=dtype, seed=seed + 5)
    g = _randn(24, num_features, dtype=dtype, seed=seed + 6)
    return ptr, src, row, p, q, r, s, g


def test_message_ops_deterministic():
    """Two runs give the same bits: forward and every gradient, with and without edge_row."""
    ptr, src, row, p, q, r, s, g = (t.to(DEV) for t in _message_inputs(torch.float32, 30))
    r11, s11 = r[:11].contiguous(), s[:11].contiguous()
    runs = []
    for _ in range(2):
        runs.append([tk.segment_gather_mul(q, src, r, ptr),
                     *KERNELS["segment_gather_mul_backward"](g, q, src, r, ptr, True, True),
                     tk.fused_edge_message(p, q, r, s, ptr, src),
                     *KERNELS["fused_edge_message_backward"](g, p, q, r, s, ptr, src, None, [True] * 4),
                     tk.fused_edge_message(p, q, r11, s11, ptr, src, row),
                     *KERNELS["fused_edge_message_backward"](g, p, q, r11, s11, ptr, src, row, [True] * 4)])
    for first, second in zip(*runs):
        assert torch.equal(first, second)


# float16/bfloat16: inputs rounded to the dtype, sums in float32, outputs rounded once. Compared with the
# float64 reference on the same (rounded) inputs, relative to the largest value of each output.
_HALF_TOL = {torch.float16: 4e-3, torch.bfloat16: 2e-2}


def _close_half(actual, expected, dtype):
    assert actual.dtype == dtype
    tol = _HALF_TOL[dtype]
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual.cpu().double(), expected, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
def test_message_ops_half_precision(dtype):
    ptr, src, row, p, q, r, s, g = _message_inputs(dtype, 40)
    wide = [t.double() for t in (p, q, r, s, g)]
    pd, qd, rd, sd, gd = wide
    dev = [t.to(DEV) for t in (p, q, r, s, ptr, src, g)]
    hp, hq, hr, hs, hptr, hsrc, hg = dev
    # segment_gather_mul, forward and backward
    _close_half(tk.segment_gather_mul(hq, hsrc, hr, hptr), reference.segment_gather_mul(qd, src, rd, ptr), dtype)
    got = KERNELS["segment_gather_mul_backward"](hg, hq, hsrc, hr, hptr, True, True)
    want = REF["segment_gather_mul_backward"](gd, qd, src, rd, ptr, True, True)
    for x, y in zip(got, want):
        _close_half(x, y, dtype)
    # fused_edge_message without and with edge_row
    _close_half(tk.fused_edge_message(hp, hq, hr, hs, hptr, hsrc),
                reference.fused_edge_message(pd, qd, rd, sd, ptr, src), dtype)
    got = KERNELS["fused_edge_message_backward"](hg, hp, hq, hr, hs, hptr, hsrc, None, [True] * 4)
    want = REF["fused_edge_message_backward"](gd, pd, qd, rd, sd, ptr, src, None, [True] * 4)
    for x, y in zip(got, want):
        _close_half(x, y, dtype)
    r11, s11 = hr[:11].contiguous(), hs[:11].contiguous()
    _close_half(tk.fused_edge_message(hp, hq, r11, s11, hptr, hsrc, row.to(DEV)),
                reference.fused_edge_message(pd, qd, rd[:11], sd[:11], ptr, src, row), dtype)
    got = KERNELS["fused_edge_message_backward"](hg, hp, hq, r11, s11, hptr, hsrc, row.to(DEV), [True] * 4)
    want = REF["fused_edge_message_backward"](gd, pd, qd, rd[:11], sd[:11], ptr, src, row, [True] * 4)
    for x, y in zip(got, want):
        _close_half(x, y, dtype)


def test_message_ops_half_precision_rules():
    """Mixed dtypes are refused; on CPU without the Triton kernels float16/bfloat16 get a message that
    says where they are supported; with autograd the gradients come back in the input dtype."""
    from pamnet_fast import ops
    ptr, src, row, p, q, r, s, g = _message_inputs(torch.bfloat16, 50, num_features=8)
    with pytest.raises(TypeError, match="float16"):
        tk.segment_gather_mul(q.to(DEV), src.to(DEV), r.to(DEV).half(), ptr.to(DEV))
    if DEV == "cpu":
        with pytest.raises(TypeError, match="only by the Triton kernels on CUDA"):
            ops.segment_gather_mul(q, src, r, ptr)
        with pytest.raises(TypeError, match="only by the Triton kernels on CUDA"):
            ops.fused_edge_message(p, q, r, s, ptr, src)
    else:  # pragma: no cover - needs a GPU
        leaves = [t.to(DEV).requires_grad_() for t in (p, q, r, s)]
        out = ops.fused_edge_message(*leaves, ptr.to(DEV), src.to(DEV))
        out.backward(g.to(DEV))
        assert out.dtype == torch.bfloat16 and all(t.grad.dtype == torch.bfloat16 for t in leaves)


# --- bases ---

def _distances(n, cutoff, dtype, seed):
    d = torch.rand(n, generator=_gen(seed), dtype=torch.float64) * 1.2 * cutoff
    d[:4] = torch.tensor([0.0, cutoff, 1.3 * cutoff, 1e-3 * cutoff], dtype=torch.float64)
    return d.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", (1, 5))
def test_bessel_basis(dtype, p):
    d = _distances(150, 5.0, dtype, 22)
    freq = (torch.arange(1, 7, dtype=torch.float64) * math.pi + torch.rand(6, generator=_gen(23), dtype=torch.float64)).to(dtype)
    _close(KERNELS["bessel_basis"](d.to(DEV), freq.to(DEV), 5.0, p), reference.bessel_basis(d, freq, 5.0, p))
    _close(tk.bessel_basis(d.to(DEV), 5.0, 6, p), reference.bessel_basis(d, torch.arange(1, 7, dtype=dtype) * math.pi, 5.0, p))
    g = _randn(150, 6, dtype=dtype, seed=24)
    # gradients against the float64 reference: its d/dx sin(fx)/x cancels for small x
    want = REF["bessel_basis_backward"](g.double(), d.double(), freq.double(), 5.0, p, True, True)
    for need in ((True, True), (True, False), (False, True)):
        got = KERNELS["bessel_basis_backward"](g.to(DEV), d.to(DEV), freq.to(DEV), 5.0, p, *need)
        for x, y, n in zip(got, want, need):
            if n:
                _close(x, y, dtype)
            else:
                assert x.numel() == 0


def test_bessel_basis_bad_input():
    with pytest.raises(ValueError):
        KERNELS["bessel_basis"](torch.tensor([-1.0, 1.0], device=DEV), torch.ones(3, device=DEV), 5.0, 5)
    with pytest.raises(TypeError):
        KERNELS["bessel_basis"](torch.ones(2, device=DEV), torch.ones(3, dtype=torch.float64, device=DEV), 5.0, 5)
    with pytest.raises(ValueError):
        tk.bessel_basis(torch.ones(2, device=DEV), 5.0, 6, 5, freq=torch.ones(3, device=DEV))


@pytest.mark.parametrize("dtype", DTYPES)
def test_spherical_basis(dtype):
    d = _distances(64, 5.0, dtype, 25)
    angle = (torch.rand(64, generator=_gen(26), dtype=torch.float64) * math.pi)
    angle[:3] = torch.tensor([0.0, math.pi, math.pi / 2])
    angle = angle.to(dtype)
    zeros = reference.spherical_bessel_zeros(7, 6)
    got = tk.spherical_basis(d.to(DEV), angle.to(DEV), 5.0, 7, 6, 5)
    _close(got, reference.spherical_basis(d, angle, zeros, 5.0, 5))
    other = KERNELS["spherical_basis"](d.to(DEV), angle.to(DEV), zeros.to(DEV), 5.0, 3)
    assert not torch.allclose(other.cpu(), got.cpu())
    g = _randn(64, 42, dtype=dtype, seed=27)
    want = REF["spherical_basis_backward"](g.double(), d.double(), angle.double(), zeros, 5.0, 5, True, True)
    for need in ((True, True), (False, True)):
        got = KERNELS["spherical_basis_backward"](g.to(DEV), d.to(DEV), angle.to(DEV), zeros.to(DEV), 5.0, 5, *need)
        for x, y, n in zip(got, want, need):
            if n:
                _close(x, y, dtype)
            else:
                assert x.numel() == 0


def test_spherical_basis_small_and_bad_input():
    d, angle = _distances(20, 3.0, torch.float64, 28), torch.linspace(0, math.pi, 20, dtype=torch.float64)
    zeros = reference.spherical_bessel_zeros(2, 3)
    _close(KERNELS["spherical_basis"](d.to(DEV), angle.to(DEV), zeros.to(DEV), 3.0, 2),
           reference.spherical_basis(d, angle, zeros, 3.0, 2))
    assert tk.spherical_basis(d[:0].to(DEV), angle[:0].to(DEV), 3.0, 2, 3).shape == (0, 6)
    with pytest.raises(ValueError):
        KERNELS["spherical_basis"](d.to(DEV), angle[:5].to(DEV), zeros.to(DEV), 3.0, 5)
    with pytest.raises(ValueError):
        KERNELS["spherical_basis"](-d.to(DEV) - 1, angle.to(DEV), zeros.to(DEV), 3.0, 5)
    with pytest.raises(TypeError):
        tk.spherical_basis(d.float().to(DEV), angle.to(DEV), 3.0)
