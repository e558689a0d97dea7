"""radius_graph and knn_graph: identical to the brute-force reference on every input."""
import pytest
import torch

from pamnet_fast import ops
from pamnet_fast.ops import reference as R
from pamnet_fast.data.structures import read_structure, read_tu_structures

from _ops_util import num_threads

G = torch.Generator().manual_seed(1234)


def assert_same_radius(pos, r, batch=None, **kw):
    ei, ptr = ops.radius_graph(pos, r, batch, return_ptr=True, **kw)
    ref_ei, ref_ptr = R.radius_graph(pos, r, None if batch is None else batch.long(),
                                     kw.get("loop", False),
                                     -1 if kw.get("max_num_neighbors") is None else kw["max_num_neighbors"],
                                     kw.get("truncate", False))
    assert ei.dtype == torch.long and ptr.dtype == torch.long
    assert torch.equal(ei, ref_ei), (ei.shape, ref_ei.shape)
    assert torch.equal(ptr, ref_ptr)
    return ei


def clusters(n, dtype=torch.float32, scale=3.0):
    return (torch.randn(n, 3, generator=G, dtype=torch.float64) * scale).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,r", [(0, 1.0), (1, 1.0), (2, 0.5), (50, 1.5), (400, 2.0), (400, 20.0)])
@pytest.mark.parametrize("loop", [False, True])
def test_radius_random(dtype, n, r, loop):
    assert_same_radius(clusters(n, dtype), r, loop=loop)


def test_radius_isolated_and_coincident_atoms():
    pos = torch.tensor([[0.0, 0, 0], [0, 0, 0], [0, 0, 0], [100, 0, 0], [0.5, 0, 0]])
    ei = assert_same_radius(pos, 1.0)
    # coincident atoms are neighbors of each other; the isolated atom 3 has none
    assert (ei == 3).sum() == 0
    assert ((ei[0] == 0) & (ei[1] == 1)).any()


def test_radius_pairs_at_exactly_r():
    # spacing 0.25 is exact in binary: pairs at distance exactly r = 0.5 and 1.0 are included
    pos = torch.stack([torch.arange(9, dtype=torch.float32) * 0.25, torch.zeros(9), torch.zeros(9)], 1)
    ei = assert_same_radius(pos, 0.5)
    assert ei.size(1) == 2 * (8 + 7)
    ei = assert_same_radius(pos, 1.0)
    assert ei.size(1) == 2 * (8 + 7 + 6 + 5)


def test_radius_float32_boundary_rounding():
    # Random pairs placed at r * (1 +- 1e-7): whether they count is decided by the float32 formula.
    base = torch.randn(300, 3, generator=G)
    direction = torch.nn.functional.normalize(torch.randn(300, 3, generator=G), dim=1)
    jitter = 1 + (torch.rand(300, 1, generator=G) - 0.5) * 4e-7
    pos = torch.cat([base * 50, base * 50 + direction * 1.7 * jitter])
    assert_same_radius(pos, 1.7)


@pytest.mark.parametrize("num_graphs", [1, 3, 128])
def test_radius_batches(num_graphs):
    sizes = torch.randint(1, 30, (num_graphs,), generator=G)
    batch = torch.repeat_interleave(torch.arange(num_graphs), sizes)
    pos = clusters(int(sizes.sum()), scale=1.5)  # graphs overlap in space: edges must not cross
    ei = assert_same_radius(pos, 2.0, batch)
    assert torch.equal(batch[ei[0]], batch[ei[1]])
    assert_same_radius(pos, 2.0, batch.int())


def test_radius_batch_with_skipped_graph_ids():
    pos = clusters(20)
    batch = torch.tensor([0] * 5 + [2] * 10 + [7] * 5)
    assert_same_radius(pos, 3.0, batch)


@pytest.mark.parametrize("scale,r", [(1e6, 1.0), (1e30, 1.0), (1e-30, 1e-30), (1e4, 5000.0)])
def test_radius_huge_and_tiny_coordinates(scale, r):
    pos = torch.randn(200, 3, generator=G) * scale
    pos[100:] = pos[:100] + torch.randn(100, 3, generator=G) * r * 0.5
    assert_same_radius(pos, r)


def test_radius_non_contiguous_input():
    pos = clusters(200).t().contiguous().t()  # column-major view
    assert not pos.is_contiguous()
    assert_same_radius(pos, 2.0)
    big = clusters(400)[::2]
    assert_same_radius(big, 2.0)


def test_radius_max_num_neighbors_raises_with_largest_count():
    pos = torch.zeros(6, 3)
    pos[5, 0] = 10.0
    with pytest.raises(ValueError, match=r"a node has 4 neighbors .* max_num_neighbors=2"):
        ops.radius_graph(pos, 1.0, max_num_neighbors=2)
    ei = ops.radius_graph(pos, 1.0, max_num_neighbors=4)  # exactly at the limit: fine
    assert ei.size(1) == 20


def test_radius_truncate_keeps_nearest_with_index_ties():
    pos = clusters(300, scale=1.0)
    for k in (1, 5, 17):
        ei = assert_same_radius(pos, 2.0, max_num_neighbors=k, truncate=True)
        assert int(torch.bincount(ei[1], minlength=300).max()) <= k
    # ties: equidistant neighbors, the smaller indices are kept
    pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])
    ei = ops.radius_graph(pos, 1.5, max_num_neighbors=2, truncate=True)
    assert ei[0, ei[1] == 0].tolist() == [1, 2]


def same_with_1_and_2_threads(build):
    with num_threads(1):
        one = build()
    with num_threads(2):
        two = build()
    assert torch.equal(one, two)


def test_radius_deterministic_across_threads():
    pos = clusters(3000, scale=6.0)
    same_with_1_and_2_threads(lambda: ops.radius_graph(pos, 3.0))


def test_radius_return_dist_matches_pair_distance_and_is_differentiable():
    pos = clusters(60).double().requires_grad_()
    ei, dist = ops.radius_graph(pos, 2.5, return_dist=True)
    assert torch.equal(dist, R.pair_distance(pos[ei[1]], pos[ei[0]]))
    assert bool((dist <= 2.5).all())
    torch.autograd.gradcheck(lambda p: ops.radius_graph(p, 2.5, return_dist=True)[1], (pos,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,k,r", [(0, 3, None), (1, 3, None), (5, 10, None), (200, 1, None),
                                   (200, 8, None), (200, 8, 1.0), (300, 50, 2.0)])
@pytest.mark.parametrize("loop", [False, True])
def test_knn_random(dtype, n, k, r, loop):
    pos = clusters(n, dtype)
    ei = ops.knn_graph(pos, k, r=r, loop=loop)
    ref, _ = R.knn_graph(pos, k, None, r, loop)
    assert torch.equal(ei, ref)


def test_knn_ties_and_batches():
    grid = torch.stack(torch.meshgrid(*[torch.arange(4.0)] * 3, indexing="ij"), -1).view(-1, 3)
    pos = torch.cat([grid, grid + 0.5])  # many equal distances
    batch = torch.tensor([0] * 64 + [1] * 64)
    for k in (1, 6, 7, 30):
        ei = ops.knn_graph(pos, k, batch)
        ref, _ = R.knn_graph(pos, k, batch)
        assert torch.equal(ei, ref)
        assert torch.equal(batch[ei[0]], batch[ei[1]])


def test_knn_deterministic_across_threads():
    pos = clusters(2000, scale=5.0)
    same_with_1_and_2_threads(lambda: ops.knn_graph(pos, 16))


@pytest.fixture(scope="module")
def rna_natives(shared_data):
    return read_tu_structures(str(shared_data / "rna_puzzles_native"))


@pytest.mark.slow
@pytest.mark.parametrize("r", [2.6, 20.0])
def test_radius_all_rna_puzzles_natives(rna_natives, r):
    assert len(rna_natives) == 21
    pos = torch.cat([s.pos for s in rna_natives])
    batch = torch.cat([torch.full((s.pos.size(0),), g) for g, s in enumerate(rna_natives)])
    ei = ops.radius_graph(pos, r, batch)
    for g, s in enumerate(rna_natives):
        ref, _ = R.radius_graph(s.pos, r)
        mine = ei[:, batch[ei[1]] == g] - int((batch < g).sum())
        assert torch.equal(mine, ref), s.name


def test_radius_rna_puzzle5_edge_count(rna_natives):
    # Independent check with scipy's k-d tree, which uses float64 distances: the two edge sets agree
    # except for pairs whose distance lies within float32 rounding of r (our contract is float32).
    spatial = pytest.importorskip("scipy.spatial")
    p5 = rna_natives[18]
    assert p5.pos.size(0) == 3823
    ei = ops.radius_graph(p5.pos, 20.0)
    assert ei.size(1) == 2_381_782  # the "2.38 M edges"
    pairs = spatial.cKDTree(p5.pos.double().numpy()).query_pairs(20.0, output_type="ndarray")
    ours = {(a, b) for a, b in ei.t().tolist() if a < b}
    theirs = {(a, b) for a, b in pairs.tolist()}
    differ = torch.tensor(sorted(ours ^ theirs)).view(-1, 2)
    assert len(differ) <= 4
    d64 = (p5.pos.double()[differ[:, 0]] - p5.pos.double()[differ[:, 1]]).norm(dim=1)
    assert bool(((d64 - 20.0).abs() < 20.0 * 2e-7).all())


def test_knn_rna_global_plex_like_reference_model(rna_natives):
    s = rna_natives[0]
    ei = ops.knn_graph(s.pos, 50, r=20.0)
    ref, _ = R.knn_graph(s.pos, 50, None, 20.0)
    assert torch.equal(ei, ref)


@pytest.mark.slow
def test_radius_ribosome_chain_at_5A(shared_data):
    chain = read_structure(str(shared_data / "structures" / "6zu5.cif.gz"), chains=["S60"])
    assert chain.pos.size(0) == 28876
    ei, ptr = ops.radius_graph(chain.pos, 5.0, return_ptr=True)
    ref_ei, ref_ptr = R.radius_graph(chain.pos, 5.0)
    assert torch.equal(ei, ref_ei) and torch.equal(ptr, ref_ptr)
