"""pamnet_fast.nn.graphs (the graph building shared by the models) against plain boolean-mask
references, and the host-synchronization / op budget of the PAMNet forward on a real QM9 batch."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from pamnet_fast import ops
from pamnet_fast.host_syncs import HostSyncCounter
from pamnet_fast.nn import PAMNet, PAMNetConfig, PAMNetS, ProteinLigandHead, complex_batch
from pamnet_fast.nn.graphs import (batch_of, bond_graph, build_graphs, csr_pointer, edge_distance,
                                   pair_rows, radius_subgraph, sort_edges)
from test_nn_common import qm9_molecules, random_batch, rna_structure

pytestmark = pytest.mark.usefixtures("one_thread")


def _ref_sorted(edge_index, n, drop_loops=True):
    """Boolean mask + lexicographic sort in Python: the plain reference of sort_edges."""
    e = edge_index[:, edge_index[0] != edge_index[1]] if drop_loops else edge_index
    cols = sorted(e.t().tolist(), key=lambda c: (c[1], c[0]))
    e = torch.tensor(cols, dtype=torch.long).t().reshape(2, -1)
    ptr = torch.tensor([sum(1 for c in cols if c[1] < i) for i in range(n + 1)])
    return e, ptr


def _ref_pairs(edge_index):
    """pair_rows by dictionary: lower edges in order; each edge's row is that of its lower twin."""
    cols = edge_index.t().tolist()
    lower = [e for e, (j, i) in enumerate(cols) if j < i]
    row_of = {tuple(cols[e]): r for r, e in enumerate(lower)}
    for (j, i) in cols:
        if (i, j) not in [tuple(c) for c in cols] or i == j:
            return None
    return torch.tensor(lower), torch.tensor([row_of[(min(j, i), max(j, i))] for j, i in cols])


def test_sort_edges_and_bond_graph_match_reference():
    gen = torch.Generator().manual_seed(0)
    n = 12
    e = torch.randint(0, n, (2, 60), generator=gen)
    e = torch.cat([e, e.flip(0)], 1)[:, torch.randperm(120, generator=gen)]  # symmetric, loops, dups
    for drop in (True, False):
        got, ptr = sort_edges(e, n, remove_self_loops=drop)
        want, want_ptr = _ref_sorted(e, n, drop)
        assert torch.equal(got, want) and torch.equal(ptr, want_ptr)
    ei, ptr, pairs, trip = bond_graph(e, n)
    want, want_ptr = _ref_sorted(e, n)
    assert torch.equal(ei, want) and torch.equal(ptr, want_ptr) and trip is None
    for self_pairs in (False, True):  # the triplets, sized in the bond list's one read
        with HostSyncCounter() as counter:
            trip = bond_graph(e, n, triplets=self_pairs).triplets
        assert counter.syncs == ["tolist"], counter.syncs
        want_trip = ops.triplets(want, n, include_self_pairs=self_pairs)
        assert all(torch.equal(a, b) for a, b in zip(trip, want_trip))
    ref = _ref_pairs(want)
    assert pairs is not None and ref is not None
    # duplicates: the row of an upper edge is the first lower twin's; compare through the pair's nodes
    key = lambda ei_, p: [tuple(sorted(ei_[:, int(x)].tolist())) for x in p]  # noqa: E731
    assert key(ei, pairs[0][pairs[1]]) == key(want, ref[0][ref[1]])
    # one bond without its reverse: no pair rows (and pair_rows says so too)
    one_way = torch.cat([e, torch.tensor([[0], [5]])], 1)
    one_way = one_way[:, (one_way[0] != 5) | (one_way[1] != 0)]
    ei2, _, pairs2, _ = bond_graph(one_way, n)
    assert pairs2 is None and pair_rows(ei2, n) is None
    # empty and all-loops lists
    for empty in (torch.zeros(2, 0, dtype=torch.long), torch.arange(3).repeat(2, 1)):
        ei3, ptr3, pairs3, _ = bond_graph(empty, 4)
        assert ei3.shape == (2, 0) and ptr3.tolist() == [0] * 5 and pairs3 is None


def test_pair_rows_of_radius_graph_need_no_check():
    data = random_batch([9, 14, 6], seed=3)
    ei = ops.radius_graph(data.pos, 3.0, data.batch)
    checked = pair_rows(ei, data.num_nodes)
    with HostSyncCounter() as counter:
        trusted = pair_rows(ei, data.num_nodes, symmetric=True)
    assert counter.syncs == []
    ref = _ref_pairs(ei)
    for got in (checked, trusted):
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    assert torch.equal(csr_pointer(ei[1], data.num_nodes),
                       torch.cat([torch.zeros(1, dtype=torch.long),
                                  torch.bincount(ei[1], minlength=data.num_nodes).cumsum(0)]))


def test_knn_compat_plexes_match_mask_reference():
    data = rna_structure(6, max_atoms=300)
    cfg = PAMNetConfig.rna(reference_compat=True, knn_k=12, cutoff_g=6.0, cutoff_l=2.6)
    with HostSyncCounter() as counter:
        g = build_graphs(cfg, data.pos, None)
    assert counter.syncs == ["tolist"]  # both cut sizes in one read
    knn = ops.knn_graph(data.pos, cfg.knn_k, None, loop=True)
    knn = knn[:, knn[0] != knn[1]]
    d = edge_distance(data.pos, knn)
    for ei, ptr, cut, flip in ((g.edge_index_g, g.ptr_g, cfg.cutoff_g, False),
                               (g.edge_index_l, g.ptr_l, cfg.cutoff_l, True)):
        want = knn[:, d <= cut]
        want, want_ptr = _ref_sorted(want.flip(0) if flip else want, data.num_nodes, drop_loops=False)
        assert torch.equal(ei, want) and torch.equal(ptr, want_ptr)
    assert g.pair_g is None and g.pair_l is None and g.num_graphs == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_radius_subgraph_equals_the_search(dtype):
    """A radius graph cut at a smaller cutoff is the search's graph at that cutoff, edge for edge,
    with the triplet sizes ops.triplets finds: on a real RNA, and at the cutoff itself, which is
    rounded to the dtype as the search rounds it (float32(2.2) > 2.2: that edge is kept)."""
    data = rna_structure(6, dtype=dtype, max_atoms=400)
    # two atoms exactly float(2.2 in dtype) apart, far from the others
    edge = torch.tensor([[0.0, 1e3, 1e3], [float(torch.tensor(2.2, dtype=dtype)), 1e3, 1e3]],
                        dtype=dtype)
    pos = torch.cat([data.pos, edge])
    n = pos.size(0)
    ei_g, ptr_g = ops.radius_graph(pos, 6.0, return_ptr=True)
    dist_g = edge_distance(pos, ei_g)
    for r, self_pairs in ((2.2, False), (2.6, True), (6.0, False), (0.1, False)):
        want, want_ptr = ops.radius_graph(pos, r, return_ptr=True)
        with HostSyncCounter() as counter:
            ei, ptr, kept, sizes = radius_subgraph(ei_g, ptr_g, dist_g, r, self_pairs)
        assert counter.syncs == ["tolist"], counter.syncs
        assert torch.equal(ei, want) and torch.equal(ptr, want_ptr), r
        assert torch.equal(dist_g[kept], edge_distance(pos, want))
        trip = ops.triplets(want, n, include_self_pairs=self_pairs)
        assert sizes == [trip.two_hop_kj.numel(), trip.one_hop_j2i.numel()], r
    assert (n - 2, n - 1) in set(map(tuple, radius_subgraph(ei_g, ptr_g, dist_g, 2.2)[0].t().tolist()))
    empty = radius_subgraph(ei_g[:, :0], torch.zeros(n + 1, dtype=torch.long), dist_g[:0], 2.0)
    assert empty[0].shape == (2, 0) and empty[3] == [0, 0]


def test_local_plex_cut_from_global_plex():
    """PAMNet with two radius plexes (RNA, PDBbind settings): the local plex cut from the global one
    (the GPU default) is the searched one, so the model's output is bitwise the same; it reads
    the local plex's size and triplet sizes once (here on the CPU, after the input checks)."""
    torch.manual_seed(0)
    data = rna_structure(6, max_atoms=200)
    model = PAMNetS(PAMNetConfig.rna(knn=False, cutoff_g=6.0)).double()
    searched = build_graphs(model.config, data.pos, None, local_from_global=False)
    with HostSyncCounter() as counter:
        cut = build_graphs(model.config, data.pos, None, local_from_global=True)
    assert counter.syncs == ["tolist"] * 2, counter.syncs
    for name in ("edge_index_l", "ptr_l", "dist_l", "pair_l", "edge_row_l", "edge_index_g"):
        assert torch.equal(getattr(cut, name), getattr(searched, name)), name
    for a, b in zip(cut.trip, searched.trip):
        assert torch.equal(a, b)
    assert torch.equal(model(data, cut), model(data, searched))
    # a local cutoff above the global one is searched
    wide = PAMNetConfig.rna(knn=False, cutoff_g=2.0, cutoff_l=2.6)
    g = build_graphs(wide, data.pos, None, local_from_global=True)
    assert torch.equal(g.edge_index_l, ops.radius_graph(data.pos, 2.6))


def test_forward_with_prebuilt_graphs_equals_forward():
    torch.manual_seed(0)
    data = random_batch([9, 14, 6], seed=1)
    rna = rna_structure(6, max_atoms=150)
    cases = [(PAMNet(PAMNetConfig.qm9(dim=16, n_layer=2)), data),
             (PAMNetS(PAMNetConfig.qm9(dim=16, n_layer=2, target="mu")), data),
             (PAMNet(PAMNetConfig.rna(reference_compat=True, knn_k=10)), rna),
             (PAMNetS(PAMNetConfig.rna(knn=False, cutoff_g=6.0)), rna)]
    for model, d in cases:
        model = model.double()
        with HostSyncCounter() as counter:
            g = model.build_graphs(d)
        assert counter.syncs == ["tolist"], counter.syncs  # input check + sizes: one read
        assert g.num_graphs == (d.num_graphs if hasattr(d, "num_graphs") else 1)
        assert torch.equal(model(d, g), model(d))
        assert torch.equal(model.encode(d, g).node_out, model.encode(d).node_out)


def test_bad_atomic_numbers_name_the_problem():
    model = PAMNet(PAMNetConfig.qm9(dim=16, n_layer=1))
    data = random_batch([6, 5], seed=2, dtype=torch.float32)
    data.z[3] = 17
    with pytest.raises(ValueError, match=r"atomic numbers \[17\] have no embedding row"):
        model.build_graphs(data)
    with pytest.raises(ValueError, match=r"atomic numbers \[17\] have no embedding row"):
        model(data)
    data.z[3] = 200
    with pytest.raises(ValueError, match=r"atomic numbers \[200\]"):
        model(data)
    # the check rides on the kNN cut's read, or is read alone for radius plexes
    rna = rna_structure(6, max_atoms=60)
    rna.z[5] = 9
    for cfg in (PAMNetConfig.rna(reference_compat=True, knn_k=8), PAMNetConfig.rna(knn=False)):
        with pytest.raises(ValueError, match=r"atomic numbers \[9\] have no embedding row"):
            PAMNet(cfg).build_graphs(rna)
    data.x = torch.zeros(data.num_nodes, dtype=torch.long)
    data.x[0] = 7
    del data.z
    with pytest.raises(ValueError, match=r"data.x holds embedding rows outside \[0, 5\)"):
        model.build_graphs(data)


def test_bad_positions_batch_and_bonds_name_the_problem():
    """build_graphs checks what its neighbor searches and triplets no longer check (they run with
    check_values=False): finite positions, a sorted batch, bond indices in range; one read."""
    import math
    data = random_batch([6, 5], seed=4)
    rna = rna_structure(6, max_atoms=60)
    models = [(PAMNet(PAMNetConfig.qm9(dim=16, n_layer=1)), data),
              (PAMNet(PAMNetConfig.rna(knn=False, dim=16, n_layer=1)), rna)]
    for model, d in models:
        bad = d.clone()
        bad.pos[2, 1] = math.nan
        with pytest.raises(ValueError, match="build_graphs: pos contains NaN or infinite values"):
            model.build_graphs(bad)
        bad = d.clone()
        bad.batch = torch.zeros(bad.num_nodes, dtype=torch.long)
        bad.batch[0] = 1
        with pytest.raises(ValueError, match="build_graphs: batch must be sorted"):
            model(bad)
    bad = data.clone()
    bad.edge_index = bad.edge_index.clone()
    bad.edge_index[0, 3] = data.num_nodes
    with pytest.raises(ValueError, match=r"bond list \(data.edge_index\) has atom indices outside"):
        models[0][0](bad)
    with pytest.raises(ValueError, match=r"must have shape \[2, E\]"):
        models[0][0].build_graphs(Data(pos=data.pos, z=data.z, edge_index=data.edge_index[0]))


def test_global_plex_alone_builds_no_local_graphs():
    data = random_batch([6, 5], seed=5)
    model = PAMNet(PAMNetConfig.qm9(dim=16, n_layer=1, local_plex=False)).double()
    del data.edge_index  # the bonds are not needed without the local plex
    g = model.build_graphs(data)
    assert g.edge_index_l is None and g.trip is None and g.angles is None
    assert g.edge_index_g.size(1) > 0
    assert torch.isfinite(model(data, g)).all()


def test_batch_of_single_graph_and_batch():
    d = Data(pos=torch.zeros(3, 3), batch=torch.tensor([0, 0, 1]))
    assert batch_of(d, 3, "cpu")[1] == 2
    assert batch_of(Data(pos=torch.zeros(3, 3)), 3, "cpu")[1] == 1


# --- host synchronizations and op counts on a real QM9 batch of 128 ----------------------------

@pytest.fixture(scope="module")
def qm9_batch():
    return Batch.from_data_list(qm9_molecules(128, min_atoms=1, dtype=torch.float32))


# Measured (CPU, no_grad, QM9 U0 settings: dim 128, 6 layers, batch of 128): aten ops dispatched per
# forward given the graphs (views included) / of them not views: PAMNet 810 / 489, PAMNet-s 804 / 484
# (before the graph module: 951 / 589 and 911 / 562 per forward, graph building included, with 10
# synchronizations). Regression guards, a little above.
OP_BUDGET = {"PAMNet": (840, 510), "PAMNetS": (835, 505)}


@pytest.mark.parametrize("name", ["PAMNet", "PAMNetS"])
def test_forward_is_sync_free_on_qm9(qm9_batch, name):
    torch.manual_seed(0)
    model = {"PAMNet": PAMNet, "PAMNetS": PAMNetS}[name](PAMNetConfig.qm9())
    with HostSyncCounter() as counter:
        graphs = model.build_graphs(qm9_batch)
    # one read: the atom-type check with the bond list's sizes (self-loops dropped, symmetry)
    assert counter.syncs == ["tolist"], counter.syncs
    with torch.no_grad():
        model(qm9_batch, graphs)  # warm-up (first-call caches)
        with HostSyncCounter() as counter:
            out = model(qm9_batch, graphs)
    assert counter.syncs == [], counter.syncs
    total, kernels = OP_BUDGET[name]
    assert counter.ops <= total and counter.kernel_ops <= kernels, (counter.ops, counter.kernel_ops)
    assert out.shape == (128, 1) and torch.isfinite(out).all()
    with HostSyncCounter() as counter:
        model(qm9_batch, graphs).sum().backward()
    assert counter.syncs == [], counter.syncs
    assert all(p.grad is not None for p in model.parameters())


def test_synchronizing_calls_are_counted():
    t = torch.arange(5)
    with HostSyncCounter() as counter:
        t.nonzero(), t[t > 2], int(t.sum()), t.tolist(), bool(t.any()), torch.bincount(t)
        t.repeat_interleave(t), t.repeat_interleave(t, output_size=10)
    assert counter.syncs == ["nonzero", "index[bool]", "int", "tolist", "bool", "bincount",
                             "repeat_interleave"], counter.syncs


def test_protein_ligand_head_reads_no_sample_count():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4)
    pockets = [Data(x=torch.rand(n, 18, generator=gen), pos=torch.rand(n, 3, generator=gen) * 4)
               for n in (7, 9)]
    ligands = [Data(x=torch.rand(n, 18, generator=gen), pos=torch.rand(n, 3, generator=gen) * 4 + 1)
               for n in (4, 5)]
    batch = complex_batch(pockets, ligands)
    head = ProteinLigandHead(PAMNet(PAMNetConfig.pdbbind(dim=16, n_layer=1)))
    graphs = head.model.build_graphs(batch)
    with torch.no_grad():
        with HostSyncCounter() as counter:
            out = head(batch, graphs)
        assert counter.syncs == [] and out.shape == (2, 1)
        assert torch.equal(out, head(batch))


def test_transposes_built_once_per_batch(monkeypatch):
    """``build_graphs(transposes=True)``: the transposed CSRs of every gather index of both plexes
    (what the GPU backward would sort in each layer). The model passes each to its op: on the CPU
    the C++ kernels check their sizes, so a transpose given to the wrong argument fails, and the
    gradients are those without them."""
    data = Batch.from_data_list(qm9_molecules(6))
    for cls in (PAMNet, PAMNetS):
        torch.manual_seed(0)
        model = cls(PAMNetConfig.qm9(dim=16, n_layer=2)).double()
        assert not cls.backward_transposes(data.pos)  # the CPU kernels transpose on the fly
        g = build_graphs(model.config, data.pos, data.batch, data.edge_index, transposes=True,
                         merge_angles=cls is PAMNet)
        n = data.num_nodes
        tg, tl = g.transposes_g, g.transposes_l
        assert torch.equal(tg.src, ops.transposed_csr(g.edge_index_g[0], n, g.ptr_g))
        assert torch.equal(tg.row, ops.transposed_csr(g.edge_row_g, g.pair_g.numel(), g.ptr_g))
        assert torch.equal(tl.row, ops.transposed_csr(g.edge_row_l, g.pair_l.numel(), g.ptr_l))
        sending, ptr = ((g.angles.src, g.angles.ptr) if cls is PAMNet
                        else (g.trip.one_hop_j2i, g.trip.one_hop_ptr))
        assert torch.equal(tl.angles, ops.transposed_csr(sending, g.edge_index_l.size(1), ptr))
        grads = []
        for transposes in (False, True):
            monkeypatch.setattr(cls, "backward_transposes", staticmethod(lambda pos, t=transposes: t))
            model.zero_grad()
            model(data).sum().backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        assert all(torch.equal(a, b) for a, b in zip(*grads))
    # a plex without pair rows (the authors' kNN plexes): every edge its own row, transposed
    # without a sort
    rna = rna_structure(6, max_atoms=150)
    g = build_graphs(PAMNetConfig.rna(reference_compat=True, knn_k=10), rna.pos, None, transposes=True)
    for ei, ptr, t in ((g.edge_index_g, g.ptr_g, g.transposes_g), (g.edge_index_l, g.ptr_l, g.transposes_l)):
        e = ei.size(1)
        assert torch.equal(t.row, ops.transposed_csr(torch.arange(e), e, ptr))
        assert torch.equal(t.src, ops.transposed_csr(ei[0], rna.num_nodes, ptr))


def test_read_counts_reads_scalars_and_vectors_at_once():
    from pamnet_fast.nn.graphs import read_counts
    flags = torch.tensor([True, False])
    with HostSyncCounter() as counter:
        got = read_counts(torch.tensor(3), torch.tensor([4, 5, 6]), flags.all(),
                          torch.zeros(0, dtype=torch.long))
    assert got == [3, [4, 5, 6], 0, []] and counter.syncs == ["tolist"]
    assert read_counts(torch.tensor(2), flags.any()) == [2, 1]
