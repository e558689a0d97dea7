"""triplets and triplet_angles vs the reference, on random graphs and real molecules."""
import math

import pytest
import torch

from pamnet_fast import ops
from pamnet_fast.ops import reference as R

G = torch.Generator().manual_seed(7)


def random_graph(n, r, scale=2.0):
    pos = torch.randn(n, 3, generator=G) * scale
    return pos, ops.radius_graph(pos, r)


def brute_force_two_hop(edge_index):
    src, dst = edge_index.tolist()
    return sorted((kj, ji) for ji in range(len(src)) for kj in range(len(src))
                  if dst[kj] == src[ji] and src[kj] != dst[ji])


@pytest.mark.parametrize("n,r", [(0, 1.0), (1, 1.0), (2, 5.0), (30, 2.0), (200, 2.5)])
@pytest.mark.parametrize("self_pairs", [False, True])
def test_triplets_match_reference(n, r, self_pairs):
    _, ei = random_graph(n, r)
    got = ops.triplets(ei, n, include_self_pairs=self_pairs)
    ref = R.triplets(ei, n, self_pairs)
    for a, b in zip(got, ref):
        assert a.dtype == torch.long
        assert torch.equal(a, b)


def test_triplets_semantics_brute_force():
    _, ei = random_graph(25, 2.5)
    t = ops.triplets(ei, 25)
    got = sorted(zip(t.two_hop_kj.tolist(), t.two_hop_ji.tolist()))
    assert got == brute_force_two_hop(ei)
    src, dst = ei
    # one-hop: distinct edges into the same target; sorted by receiving edge then the other edge
    assert bool((dst[t.one_hop_j2i] == dst[t.one_hop_ji]).all())
    assert bool((t.one_hop_j2i != t.one_hop_ji).all())
    key = t.one_hop_ji * ei.size(1) + t.one_hop_j2i
    assert bool((key[1:] > key[:-1]).all())
    deg = torch.bincount(dst, minlength=25)
    assert t.one_hop_ji.numel() == int((deg * (deg - 1)).sum())
    # CSR pointers over receiving edges
    assert torch.equal(t.two_hop_ptr, torch.cat([torch.zeros(1, dtype=torch.long),
                       torch.bincount(t.two_hop_ji, minlength=ei.size(1)).cumsum(0)]))
    with_self = ops.triplets(ei, 25, include_self_pairs=True)
    assert with_self.one_hop_ji.numel() == t.one_hop_ji.numel() + ei.size(1)


def _sizes(t):
    return [t.two_hop_kj.numel(), t.one_hop_j2i.numel()]


@pytest.mark.parametrize("self_pairs", [False, True])
def test_triplet_sizes_count_the_lists(self_pairs):
    """``triplet_sizes`` (closed form, no enumeration) equals the lengths of ``triplets``' lists:
    radius graphs, duplicate edges and self-loops, and only the kept prefix of a list."""
    graphs = [(random_graph(n, r)[1], n) for n, r in ((0, 1.0), (1, 1.0), (30, 2.0), (200, 2.5))]
    dup = torch.tensor([[1, 2, 2, 0, 3, 0, 1, 2, 1, 2], [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]])  # 2->2 loop
    graphs += [(dup, 5), (torch.zeros(2, 0, dtype=torch.long), 4)]
    for ei, n in graphs:
        want = _sizes(ops.triplets(ei, n, include_self_pairs=self_pairs))
        assert ops.triplet_sizes(ei, n, include_self_pairs=self_pairs).tolist() == want
    # the kept edges first, the others (self-loops) last: the counts of the kept list alone
    src, dst = dup
    loop = src == dst
    key = torch.where(loop, 10**6, dst * 5 + src)
    ordered = dup[:, torch.sort(key, stable=True).indices]
    kept = ordered[:, : int((~loop).sum())]
    got = ops.triplet_sizes(ordered, 5, include_self_pairs=self_pairs, keep=ordered[0] != ordered[1])
    assert got.tolist() == _sizes(ops.triplets(kept, 5, include_self_pairs=self_pairs))
    assert got.tolist() != ops.triplet_sizes(ordered, 5, include_self_pairs=self_pairs).tolist()


def test_triplets_with_sizes_given():
    _, ei = random_graph(40, 2.0)
    want = ops.triplets(ei, 40)
    sizes = ops.triplet_sizes(ei, 40).tolist()
    for check in (True, False):
        got = ops.triplets(ei, 40, sizes=sizes, check_values=check)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    with pytest.raises(ValueError, match=r"triplets: sizes says \[.*\] triplets \(two-hop, one-hop\)"):
        ops.triplets(ei, 40, sizes=[sizes[0] + 1, sizes[1]])
    with pytest.raises(ValueError, match="sizes must be two non-negative ints"):
        ops.triplets(ei, 40, sizes=[sizes[0]])
    with pytest.raises(ValueError, match="sizes must be two non-negative ints"):
        ops.triplets(ei, 40, sizes=[-1, 0])


def test_triplets_int32_and_multi_graph_batch():
    pos = torch.randn(60, 3, generator=G)
    batch = torch.arange(3).repeat_interleave(20)
    ei = ops.radius_graph(pos, 2.0, batch)
    a = ops.triplets(ei.int(), 60)
    b = ops.triplets(ei, 60)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # triplets never cross graphs
    assert torch.equal(batch[ei[0, a.two_hop_kj]], batch[ei[1, a.two_hop_ji]])


def test_triplets_of_chemical_bonds_water_and_methane():
    # H-O-H: bonds both ways, sorted by target
    ei = torch.tensor([[1, 2, 0, 0], [0, 0, 1, 2]])
    t = ops.triplets(ei, 3)
    assert t.two_hop_kj.tolist() == [1, 0]  # (2->0, 0->1) and (1->0, 0->2)
    assert t.two_hop_ji.tolist() == [2, 3]
    assert t.one_hop_j2i.tolist() == [1, 0]
    assert t.one_hop_ji.tolist() == [0, 1]


def test_triplet_angles_geometry():
    pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [-1, 0, 0]], dtype=torch.float64)
    ei = ops.radius_graph(pos, 2.5)
    t = ops.triplets(ei, 4)
    two, one = ops.triplet_angles(pos, ei, t)
    src, dst = ei
    for kj, ji, ang in zip(t.two_hop_kj.tolist(), t.two_hop_ji.tolist(), two.tolist()):
        i, j, k = dst[ji].item(), src[ji].item(), src[kj].item()
        u, v = pos[i] - pos[j], pos[k] - pos[j]
        assert math.isclose(ang, math.acos(float(u @ v / (u.norm() * v.norm()))), abs_tol=1e-7)
    sup_two, sup_one = ops.triplet_angles(pos, ei, t, supplement=True)
    assert torch.allclose(sup_two, math.pi - two) and torch.allclose(sup_one, math.pi - one)
    # the supplement is DimeNet's angle between pos_j - pos_i and pos_k - pos_j
    i, j, k = dst[t.two_hop_ji], src[t.two_hop_ji], src[t.two_hop_kj]
    a, b = pos[j] - pos[i], pos[k] - pos[j]
    dimenet = torch.atan2(torch.linalg.cross(a, b).norm(dim=-1), (a * b).sum(-1))
    assert torch.allclose(sup_two, dimenet)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triplet_angles_match_the_reference(dtype):
    """The model's angles (both lists from the edge vectors) against the specification twin, within
    an ulp or two (CPU atan2 rounds by vector lane); one-hop alone too."""
    pos = torch.randn(200, 3, generator=G, dtype=dtype) * 3
    ei = ops.radius_graph(pos, 2.5)
    t = ops.triplets(ei, 200)
    for supplement in (False, True):
        want = R.triplet_angles(pos, ei, t.two_hop_kj, t.two_hop_ji, t.one_hop_j2i, t.one_hop_ji,
                                supplement)
        got = ops.triplet_angles(pos, ei, t, supplement=supplement)
        none, one = ops.triplet_angles(pos, ei, t, supplement=supplement, two_hop=False)
        assert none is None
        for a, b in zip(got + (one,), want + want[1:]):
            assert a.shape == b.shape and a.dtype == dtype
            torch.testing.assert_close(a, b, rtol=0, atol=4 * torch.finfo(dtype).eps)
        assert not torch.allclose(got[0], want[0].flip(0))  # can fail


def test_triplet_angles_gradcheck_positions():
    pos = (torch.randn(8, 3, generator=G, dtype=torch.float64) * 1.2).requires_grad_()
    ei = ops.radius_graph(pos.detach(), 2.0)
    t = ops.triplets(ei, 8)
    assert t.two_hop_kj.numel() > 0
    torch.autograd.gradcheck(lambda p: ops.triplet_angles(p, ei, t), (pos,))


def test_triplets_rejects_unsorted_edges():
    ei = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="sorted by target"):
        ops.triplets(ei, 2)
