"""Bad input: a ValueError/TypeError naming the problem, from every backend, never a crash."""
import math

import pytest
import torch

from pamnet_fast import ops
from pamnet_fast.ops import library

POS = torch.randn(10, 3)
EI = ops.radius_graph(POS, 2.0)
BAD_POS = [
    (torch.tensor([[0.0, 0, 0], [math.nan, 0, 0]]), ValueError, "NaN or infinite"),
    (torch.tensor([[0.0, 0, 0], [math.inf, 0, 0]]), ValueError, "NaN or infinite"),
    (torch.zeros(4, 2), ValueError, r"shape \[N, 3\]"),
    (torch.zeros(4), ValueError, "2-dimensional"),
    (torch.zeros(4, 3, dtype=torch.long), TypeError, "float32 or float64"),
    (torch.zeros(4, 3, dtype=torch.float16), TypeError, "float32 or float64"),
    ("not a tensor", TypeError, "torch.Tensor"),
]


@pytest.mark.parametrize("fn", [lambda p: ops.radius_graph(p, 1.0), lambda p: ops.knn_graph(p, 3)])
@pytest.mark.parametrize("pos,exc,msg", BAD_POS)
def test_graph_ops_reject_bad_positions(fn, pos, exc, msg):
    with pytest.raises(exc, match=msg):
        fn(pos)


@pytest.mark.parametrize("r", [0.0, -1.0, math.nan, math.inf])
def test_radius_rejects_bad_cutoff(r):
    with pytest.raises(ValueError, match="r must be positive"):
        ops.radius_graph(POS, r)
    with pytest.raises(ValueError, match="r must be positive"):
        ops.knn_graph(POS, 3, r=r)


@pytest.mark.parametrize("k", [0, -2])
def test_knn_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be positive"):
        ops.knn_graph(POS, k)


@pytest.mark.parametrize("batch,msg", [
    (torch.tensor([0, 0, 1, 1, 0, 1, 1, 2, 2, 2]), "sorted"),
    (torch.zeros(9, dtype=torch.long), "9 entries but pos has 10"),
    (torch.tensor([-1] + [0] * 9), "negative"),
    (torch.zeros(10, 1, dtype=torch.long), "1-dimensional"),
])
def test_graph_ops_reject_bad_batch(batch, msg):
    with pytest.raises(ValueError, match=msg):
        ops.radius_graph(POS, 1.0, batch)
    with pytest.raises(ValueError, match=msg):
        ops.knn_graph(POS, 2, batch)


def test_graph_ops_reject_float_batch_and_bad_limit():
    with pytest.raises(TypeError, match="int32 or int64"):
        ops.radius_graph(POS, 1.0, torch.zeros(10))
    with pytest.raises(ValueError, match="max_num_neighbors"):
        ops.radius_graph(POS, 1.0, max_num_neighbors=-3)


def test_triplets_reject_bad_edges():
    with pytest.raises(ValueError, match="outside"):
        ops.triplets(EI, 3)
    with pytest.raises(ValueError, match=r"shape \[2, E\]"):
        ops.triplets(torch.zeros(3, 4, dtype=torch.long), 10)
    with pytest.raises(TypeError, match="int32 or int64"):
        ops.triplets(EI.float(), 10)
    with pytest.raises(ValueError, match="sorted by target"):
        ops.triplets(EI.flip(1), 10)


def segment_args():
    src = torch.tensor([0, 2, 1, 1])
    ptr = torch.tensor([0, 1, 4])
    return torch.randn(3, 5), src, torch.randn(4, 5), ptr


@pytest.mark.parametrize("change,exc,msg", [
    (dict(ptr=torch.tensor([0, 1, 3])), ValueError, "end at 4"),
    (dict(ptr=torch.tensor([1, 1, 4])), ValueError, "start at 0"),
    (dict(ptr=torch.tensor([0, 3, 2, 4])), ValueError, "non-decreasing"),
    (dict(src=torch.tensor([0, 2, 1, 3])), ValueError, "outside"),
    (dict(src=torch.tensor([0, 2, -1, 1])), ValueError, "outside"),
    (dict(src=torch.tensor([0, 1, 2])), ValueError, "src has 3 rows"),
    (dict(b=torch.randn(4, 6)), ValueError, "features"),
    (dict(b=torch.randn(4, 5, dtype=torch.float64)), TypeError, "float64"),
    (dict(a=torch.randn(3, 5).long()), TypeError, "float32 or float64"),
    (dict(src=torch.tensor([0.0, 2, 1, 1])), TypeError, "int32 or int64"),
])
def test_segment_gather_mul_rejects_inconsistent_csr(change, exc, msg):
    a, src, b, ptr = segment_args()
    args = dict(a=a, src=src, b=b, ptr=ptr) | change
    with pytest.raises(exc, match=msg):
        ops.segment_gather_mul(**args)


@pytest.mark.parametrize("change,msg", [
    (dict(p=torch.randn(3, 5)), "len\\(ptr\\) - 1"),
    (dict(src=torch.tensor([0, 2, 1, 9])), "outside"),
    (dict(s=torch.randn(5, 5)), "rows"),
    (dict(p=torch.randn(3, 5), ptr=torch.tensor([0, 3, 1, 4])), "non-decreasing"),
    (dict(edge_row=torch.tensor([0, 1, 4, 2])), "edge_row.*outside"),
    (dict(edge_row=torch.tensor([0, 1, 2])), "src has 4 rows"),
    (dict(row_transpose=torch.zeros(13, dtype=torch.long)), "row_transpose given without edge_row"),
    (dict(src_transpose=torch.zeros(5, dtype=torch.long)), "src_transpose must have 2 \\* 4 \\+ 3"),
])
def test_fused_edge_message_rejects_bad_input(change, msg):
    args = dict(p=torch.randn(2, 5), q=torch.randn(3, 5), r=torch.randn(4, 5), s=torch.randn(4, 5),
                ptr=torch.tensor([0, 1, 4]), src=torch.tensor([0, 2, 1, 1])) | change
    with pytest.raises(ValueError, match=msg):
        ops.fused_edge_message(**args)


def test_basis_ops_reject_bad_input():
    with pytest.raises(ValueError, match="negative"):
        ops.bessel_basis(torch.tensor([-1.0, 1.0]), 5.0, 4)
    with pytest.raises(ValueError, match="NaN"):
        ops.bessel_basis(torch.tensor([math.nan]), 5.0, 4)
    with pytest.raises(ValueError, match="cutoff"):
        ops.bessel_basis(torch.tensor([1.0]), 0.0, 4)
    with pytest.raises(ValueError, match="freq must have shape"):
        ops.bessel_basis(torch.tensor([1.0]), 5.0, 4, freq=torch.ones(3))
    with pytest.raises(ValueError, match="length of dist"):
        ops.spherical_basis(torch.ones(3), torch.ones(2), 5.0)
    with pytest.raises(ValueError, match="NaN"):
        ops.spherical_basis(torch.ones(2), torch.tensor([0.0, math.inf]), 5.0)
    with pytest.raises(ValueError, match="num_spherical"):
        ops.spherical_basis(torch.ones(2), torch.ones(2), 5.0, 0, 3)


@pytest.mark.parametrize("name", ["radius_graph", "segment_gather_mul", "triplets"])
def test_reference_backend_raises_the_same_errors(name):
    """The Python implementations (fallback, CUDA without Triton) check like the C++ ops do."""
    impl = library.REFERENCE_IMPLS[name]
    if name == "radius_graph":
        with pytest.raises(ValueError, match="NaN or infinite"):
            impl(torch.tensor([[math.nan, 0.0, 0.0]]), 1.0, None, False, -1, False)
        with pytest.raises(ValueError, match="sorted"):
            impl(POS, 1.0, torch.tensor([1, 0] * 5), False, -1, False)
    elif name == "segment_gather_mul":
        a, src, b, _ = segment_args()
        with pytest.raises(ValueError, match="end at 4"):
            impl(a, src, b, torch.tensor([0, 1, 3]))
        with pytest.raises(ValueError, match="row_transpose given without edge_row"):
            library.REFERENCE_IMPLS["fused_edge_message"](
                torch.randn(2, 5), torch.randn(3, 5), torch.randn(4, 5), torch.randn(4, 5),
                torch.tensor([0, 1, 4]), torch.tensor([0, 2, 1, 1]), None, True, None,
                torch.zeros(13, dtype=torch.long))
    else:
        with pytest.raises(ValueError, match="sorted by target"):
            impl(EI.flip(1), 10, False)


def _valid_calls(check_values):
    """Every op with a ``check_values`` flag, on valid inputs."""
    a, src, b, ptr = segment_args()
    p, q, r, s = torch.randn(2, 5), torch.randn(3, 5), torch.randn(4, 5), torch.randn(4, 5)
    dist = torch.rand(6) * 4
    kw = dict(check_values=check_values)
    return [ops.radius_graph(POS, 1.5, torch.tensor([0] * 4 + [1] * 6), return_ptr=True, **kw),
            tuple(ops.triplets(EI, 10, **kw)),
            ops.segment_gather_mul(a, src, b, ptr, **kw),
            ops.fused_edge_message(p, q, r, s, torch.tensor([0, 1, 4]), src, **kw),
            ops.fused_edge_message(p, q, r[:3], s[:3], torch.tensor([0, 1, 4]), src,
                                   torch.tensor([0, 2, 1, 1]), **kw),
            ops.edge_message(p, q, r[:3], s[:3], torch.tensor([0, 1, 4]), src, torch.tensor([0, 2, 1, 1]),
                             **kw),
            ops.bessel_basis(dist, 5.0, 4, **kw),
            ops.spherical_basis(dist, torch.rand(6) * 3, 5.0, 3, 2, **kw)]


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_check_values_false_gives_the_same_results(backend, monkeypatch):
    """``check_values=False`` skips only the checks of values, on every backend."""
    if backend == "reference":
        for name in library.FORWARD_OPS:  # the Python twins behind the same wrappers
            monkeypatch.setattr(torch.ops.pamnet_fast, name, library.REFERENCE_IMPLS[name], raising=False)
    torch.manual_seed(3)
    state = torch.get_rng_state()
    checked = _valid_calls(True)
    torch.set_rng_state(state)
    unchecked = _valid_calls(False)
    for x, y in zip(checked, unchecked):
        for u, v in zip(x if isinstance(x, tuple) else (x,), y if isinstance(y, tuple) else (y,)):
            assert torch.equal(u, v)


def test_check_values_false_skips_only_value_checks():
    """Shapes, dtypes and devices are always checked; index values only with ``check_values``."""
    a, src, b, ptr = segment_args()
    with pytest.raises(ValueError, match="src has 3 rows"):
        ops.segment_gather_mul(a, src[:3], b, ptr, check_values=False)
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.bessel_basis(torch.ones(3, dtype=torch.long), 5.0, 4, check_values=False)
    with pytest.raises(ValueError, match=r"shape \[N, 3\]"):
        ops.radius_graph(torch.zeros(4, 2), 1.0, check_values=False)
    # the value checks that check_values=False leaves out (the same inputs raise with the default)
    ops.bessel_basis(torch.tensor([-1.0, 1.0]), 5.0, 4, check_values=False)
    with pytest.raises(ValueError, match="negative"):
        ops.bessel_basis(torch.tensor([-1.0, 1.0]), 5.0, 4)
