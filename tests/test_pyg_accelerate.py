"""pamnet_fast.pyg.accelerate(): stock PyG DimeNet, DimeNet++ and SchNet on our radius graph and triplets."""
import copy
import warnings

import pytest
import torch

pytest.importorskip("torch_geometric")
import torch_geometric.nn as pyg_nn  # noqa: E402
import torch_geometric.nn.models.dimenet as pyg_dimenet  # noqa: E402
import torch_geometric.nn.models.schnet as pyg_schnet  # noqa: E402
import torch_geometric.nn.pool as pyg_pool  # noqa: E402
from torch_geometric.nn.models import DimeNet, DimeNetPlusPlus, SchNet  # noqa: E402

import pamnet_fast.pyg as accel  # noqa: E402

ORIGINAL_RADIUS = pyg_pool.radius_graph
ORIGINAL_TRIPLETS = pyg_dimenet.triplets


@pytest.fixture(autouse=True)
def _restore():
    accel.deaccelerate()
    yield
    accel.deaccelerate()
    assert pyg_dimenet.radius_graph is ORIGINAL_RADIUS and pyg_dimenet.triplets is ORIGINAL_TRIPLETS


def molecules(num=3, seed=0):
    """A batch of small random 'molecules' (atoms >= 0.8 Å apart, a few Å across)."""
    g = torch.Generator().manual_seed(seed)
    zs, poss, batch = [], [], []
    for m in range(num):
        n = 5 + 3 * m
        pts = []
        while len(pts) < n:
            p = torch.rand(3, generator=g) * 4.0
            if all(float((p - q).norm()) > 0.8 for q in pts):
                pts.append(p)
        poss.append(torch.stack(pts))
        zs.append(torch.randint(1, 10, (n,), generator=g))
        batch.append(torch.full((n,), m))
    return torch.cat(zs), torch.cat(poss).double(), torch.cat(batch)


def randomize(model, seed=1):
    """PyG zero-initializes the output layers; give every parameter a nonzero value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


_BUILT = {}


def _cached(key, build):
    """Build each PyG model once per session (DimeNet's sympy basis setup takes seconds) and hand out
    deep copies."""
    if key not in _BUILT:
        torch.manual_seed(0)
        _BUILT[key] = build()
    return copy.deepcopy(_BUILT[key])


def dimenet_pp():
    return _cached("dimenet_pp", lambda: DimeNetPlusPlus(
        hidden_channels=32, out_channels=1, num_blocks=2, int_emb_size=16, basis_emb_size=8,
        out_emb_channels=32, num_spherical=3, num_radial=4, cutoff=5.0))


def dimenet():
    return _cached("dimenet", lambda: DimeNet(
        hidden_channels=16, out_channels=1, num_blocks=2, num_bilinear=4, num_spherical=3,
        num_radial=4, cutoff=5.0))


def schnet():
    return _cached("schnet", lambda: SchNet(hidden_channels=32, num_filters=32, num_interactions=2,
                                             num_gaussians=20, cutoff=5.0))


def brute_radius(pos, r, batch, loop=False):
    d = torch.cdist(pos, pos)
    mask = (d <= r) & (batch[:, None] == batch[None, :])
    if not loop:
        mask.fill_diagonal_(False)
    i, j = mask.nonzero().t()  # sorted by i then j
    return torch.stack([j, i])


def brute_triplets(edge_index):
    """Every pair of edges (k -> j, j -> i) with k != i, as a set of (kj, ji)."""
    src, dst = edge_index
    out = set()
    for ji in range(src.numel()):
        for kj in range(src.numel()):
            if dst[kj] == src[ji] and src[kj] != dst[ji]:
                out.add((kj, ji))
    return out


def run(model, z, pos, batch):
    pos = pos.clone().requires_grad_(True)
    out = model(z, pos, batch)
    grad_pos, = torch.autograd.grad(out.sum(), pos, create_graph=False)
    return out.detach(), grad_pos


def test_stock_pyg_radius_graph_is_unavailable_but_accelerated_works():
    """Here (no pyg-lib/torch_cluster/torch_sparse) stock DimeNet++ raises; accelerated it runs."""
    z, pos, batch = molecules()
    model = randomize(dimenet_pp().double())
    try:
        model(z, pos, batch)
        stock_works = True
    except ImportError:
        stock_works = False
    if stock_works:
        pytest.skip("PyG's own radius_graph/triplets work here (pyg-lib or torch_cluster installed)")
    accel.accelerate()
    out = model(z, pos, batch)
    assert out.shape == (3, 1) and torch.isfinite(out).all()


def test_radius_graph_matches_pyg_semantics():
    z, pos, batch = molecules(4)
    with accel.accelerated():
        ei = pyg_nn.radius_graph(pos, r=3.0, batch=batch)  # looked up at call time: patched
        ei_t2s = pyg_dimenet.radius_graph(pos, r=3.0, batch=batch, flow="target_to_source")
        ei_loop = pyg_schnet.radius_graph(pos, r=3.0, batch=batch, loop=True)
    expected = brute_radius(pos, 3.0, batch)
    assert torch.equal(ei, expected)
    assert torch.equal(ei_t2s, expected.flip(0))
    assert torch.equal(ei_loop, brute_radius(pos, 3.0, batch, loop=True))
    # row 0 is the source j, row 1 the target i: targets non-decreasing.
    assert bool((ei[1, 1:] >= ei[1, :-1]).all())


def test_max_num_neighbors_modes():
    pos = torch.randn(40, 3) * 0.5  # dense: every node has 39 neighbors within 10 Å
    with accel.accelerated():
        assert pyg_dimenet.radius_graph(pos, 10.0, max_num_neighbors=5).size(1) == 40 * 39
    with accel.accelerated(max_num_neighbors="raise"):
        with pytest.raises(ValueError, match="39"):
            pyg_dimenet.radius_graph(pos, 10.0, max_num_neighbors=5)
    with accel.accelerated(max_num_neighbors="nearest"):
        ei = pyg_dimenet.radius_graph(pos, 10.0, max_num_neighbors=5)
    assert ei.size(1) == 40 * 5
    d = (pos[ei[0]] - pos[ei[1]]).norm(dim=-1)
    all_d = torch.cdist(pos, pos).fill_diagonal_(float("inf"))
    kth = all_d.sort(dim=1).values[:, 4]
    assert bool((d <= kth[ei[1]] + 1e-6).all())
    with pytest.raises(ValueError):
        accel.accelerate(max_num_neighbors="arbitrary")


@pytest.mark.parametrize("shuffle", [False, True])
def test_triplets_same_set_as_brute_force(shuffle):
    z, pos, batch = molecules(3)
    ei = brute_radius(pos, 3.5, batch)
    if shuffle:  # an edge list not sorted by target: ids must refer to the caller's order
        ei = ei[:, torch.randperm(ei.size(1), generator=torch.Generator().manual_seed(0))]
    with accel.accelerated():
        i, j, idx_i, idx_j, idx_k, idx_kj, idx_ji = pyg_dimenet.triplets(ei, num_nodes=z.numel())
    assert torch.equal(i, ei[1]) and torch.equal(j, ei[0])
    got = set(zip(idx_kj.tolist(), idx_ji.tolist()))
    assert len(got) == idx_kj.numel()  # no duplicates
    assert got == brute_triplets(ei)
    assert torch.equal(idx_i, ei[1][idx_ji]) and torch.equal(idx_j, ei[0][idx_ji])
    assert torch.equal(idx_k, ei[0][idx_kj]) and torch.equal(idx_j, ei[1][idx_kj])
    assert bool((idx_i != idx_k).all())


@pytest.mark.parametrize("make", [dimenet_pp, dimenet, schnet], ids=["DimeNet++", "DimeNet", "SchNet"])
def test_model_matches_reference_ops(make):
    """Accelerated forward and forces equal the same model on the brute-force reference ops."""
    z, pos, batch = molecules(3)
    torch.manual_seed(0)
    model = randomize(make().double())
    with accel.accelerated(reference=True):
        ref_out, ref_grad = run(model, z, pos, batch)
    with accel.accelerated():
        out, grad = run(model, z, pos, batch)
    assert out.shape == (3, 1)
    assert ref_out.abs().max() > 1e-6  # not trivially zero
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("make", [dimenet_pp, schnet], ids=["DimeNet++", "SchNet"])
def test_gradients_flow_and_train_step(make):
    z, pos, batch = molecules(2)
    torch.manual_seed(0)
    model = randomize(make())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with accel.accelerated():
        out = model(z, pos.float(), batch)
        loss = out.pow(2).mean()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        opt.step()


def test_order_invariance_single_vs_batched():
    """Each molecule alone gives the same prediction as inside the batch."""
    z, pos, batch = molecules(3)
    model = randomize(dimenet_pp().double())
    with accel.accelerated():
        together = model(z, pos, batch).detach()
        for m in range(3):
            mask = batch == m
            alone = model(z[mask], pos[mask], torch.zeros(int(mask.sum()), dtype=torch.long)).detach()
            torch.testing.assert_close(alone[0], together[m], rtol=1e-10, atol=1e-10)


def test_idempotent_deaccelerate_and_context_manager():
    accel.accelerate()
    accel.accelerate()  # idempotent
    assert accel.is_accelerated()
    assert pyg_dimenet.radius_graph is accel.radius_graph
    assert pyg_schnet.radius_graph is accel.radius_graph
    assert pyg_pool.radius_graph is accel.radius_graph and pyg_nn.radius_graph is accel.radius_graph
    assert pyg_dimenet.triplets is accel.triplets
    accel.deaccelerate()
    assert not accel.is_accelerated()
    assert pyg_dimenet.radius_graph is ORIGINAL_RADIUS and pyg_schnet.radius_graph is ORIGINAL_RADIUS
    assert pyg_pool.radius_graph is ORIGINAL_RADIUS and pyg_nn.radius_graph is ORIGINAL_RADIUS
    assert pyg_dimenet.triplets is ORIGINAL_TRIPLETS
    accel.deaccelerate()  # no-op

    with accel.accelerated():
        assert pyg_dimenet.triplets is accel.triplets
        with accel.accelerated(max_num_neighbors="raise"):
            assert accel.is_accelerated()
        assert accel.is_accelerated()  # inner exit leaves the outer scope in place
    assert pyg_dimenet.triplets is ORIGINAL_TRIPLETS

    accel.accelerate()
    with accel.accelerated():
        pass
    assert accel.is_accelerated()  # a context inside a global accelerate() keeps it


def test_matches_torch_cluster_and_torch_sparse_when_installed():
    """With the libraries PyG normally uses, stock and accelerated outputs agree."""
    pytest.importorskip("torch_sparse")
    import torch_geometric.typing as pyg_typing
    if not (pyg_typing.WITH_TORCH_CLUSTER or getattr(pyg_typing, "WITH_RADIUS", False)):
        pytest.skip("neither torch_cluster nor pyg-lib's radius is installed")
    z, pos, batch = molecules(3)
    for make in (dimenet_pp, schnet):
        model = randomize(make().double())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stock_out, stock_grad = run(model, z, pos, batch)
        with accel.accelerated():
            out, grad = run(model, z, pos, batch)
        torch.testing.assert_close(out, stock_out, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grad, stock_grad, rtol=1e-9, atol=1e-10)
