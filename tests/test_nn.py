"""The fused PAMNet models against the plain unfused twin (pamnet_fast.nn.reference): outputs and
gradients w.r.t. parameters and positions, float64 and float32, default and reference_compat."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch_geometric.data import Batch, Data

from pamnet_fast.nn import (PAMNet, PAMNetConfig, PAMNetS, ProteinLigandHead, complex_batch, sort_edges)
from pamnet_fast.nn.basis import BesselBasis, SphericalBasis, compat_envelope
from pamnet_fast.nn.reference import reference_dipole, reference_forward
from test_nn_common import outputs_and_grads, qm9_molecules, random_batch, rel_err, rna_structure

TOL = {torch.float64: 1e-9, torch.float32: 1e-4}
MODELS = {"PAMNet": PAMNet, "PAMNetS": PAMNetS}


def fused(model, data):
    return model(data)


def check_equivalent(model, data, dtype):
    model = model.to(dtype)
    data = data.clone()
    data.pos = data.pos.to(dtype)
    out, grads = outputs_and_grads(fused, model, data)
    ref_out, ref_grads = outputs_and_grads(reference_forward, model, data)
    assert out.shape == ref_out.shape
    assert torch.isfinite(out).all() and ref_out.abs().max() > 0
    tol = TOL[dtype]
    assert rel_err(out, ref_out) <= tol, (rel_err(out, ref_out), tol)
    bad = {n: rel_err(grads[n], ref_grads[n]) for n in ref_grads}
    assert all(math.isfinite(v) for v in bad.values())
    worst = max(bad, key=bad.get)
    assert bad[worst] <= tol, (worst, bad[worst])
    assert ref_grads["pos"].abs().max() > 0
    # every parameter receives a gradient (with the dipole head, the layers' scalar W_out are unused)
    # (with the global plex alone, the attention vectors W score nothing)
    unused = lambda n: ((model.dipole_head is not None and "W_out" in n)
                        or (not model.config.local_plex and n.endswith(".W")))
    used = {n: g for n, g in ref_grads.items() if not unused(n)}
    nonzero = sum(int(g is not None and g.abs().max() > 0) for g in used.values())
    assert nonzero == len(used), [n for n, g in used.items() if g is None or g.abs().max() == 0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("name", ["PAMNet", "PAMNetS"])
def test_fused_matches_reference_random(name, compat, dtype):
    torch.manual_seed(0)
    model = MODELS[name](PAMNetConfig.qm9(dim=32, n_layer=2, reference_compat=compat))
    check_equivalent(model, random_batch([9, 14, 6], seed=1), dtype)


@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("name", ["PAMNet", "PAMNetS"])
def test_fused_matches_reference_qm9(name, compat):
    mols = qm9_molecules(4)
    torch.manual_seed(1)
    model = MODELS[name](PAMNetConfig.qm9(dim=64, n_layer=3, reference_compat=compat))
    check_equivalent(model, Batch.from_data_list(mols), torch.float64)


def test_fused_matches_reference_qm9_full_preset_float32():
    mols = qm9_molecules(2)
    torch.manual_seed(2)
    check_equivalent(PAMNet(PAMNetConfig.qm9()), Batch.from_data_list(mols), torch.float32)


@pytest.mark.parametrize("compat", [False, True])
def test_fused_matches_reference_rna(compat):
    data = rna_structure(6, max_atoms=320)
    torch.manual_seed(3)
    model = PAMNet(PAMNetConfig.rna(reference_compat=compat))
    check_equivalent(model, Batch.from_data_list([data]), torch.float64)


@pytest.mark.parametrize("preset", ["qm9", "rna"])
def test_global_plex_alone_matches_reference(preset):
    """The distance-only ablation (local_plex=False): no local parameters; fused = reference twin; the
    local plex's geometry (cutoff_l) no longer changes the output."""
    if preset == "qm9":
        cfg, data = PAMNetConfig.qm9(dim=32, n_layer=2, local_plex=False), random_batch([9, 14, 6], seed=1)
    else:
        cfg, data = PAMNetConfig.rna(local_plex=False), Batch.from_data_list([rna_structure(6, max_atoms=320)])
    torch.manual_seed(5)
    model = PAMNet(cfg)
    assert not [n for n, _ in model.named_parameters() if "local" in n or "sbf" in n or "rbf_l" in n]
    check_equivalent(model, data, torch.float64)
    other = PAMNet(replace(cfg, cutoff_l=1.0, local_graph="radius")).double()
    other.load_state_dict(model.state_dict())
    data.pos = data.pos.double()
    torch.testing.assert_close(other(data), model(data), rtol=0, atol=0)
    with pytest.raises(ValueError, match="local_plex"):
        PAMNet(replace(cfg, target="mu"))


def test_rna_radius_global_and_pamnet_s():
    data = rna_structure(6, max_atoms=320)
    torch.manual_seed(4)
    model = PAMNetS(PAMNetConfig.rna(knn=False, cutoff_g=8.0))
    check_equivalent(model, Batch.from_data_list([data]), torch.float64)


def test_dipole_head_matches_reference():
    torch.manual_seed(5)
    model = PAMNet(PAMNetConfig.qm9(dim=32, n_layer=2, target="mu")).double()
    data = random_batch([8, 12], seed=2)
    vec, ref = model.dipole(data), reference_dipole(model, data)
    assert vec.shape == (2, 3) and ref.abs().max() > 0
    assert rel_err(vec, ref) <= 1e-9
    norm = model(data)
    assert norm.shape == (2, 1)
    assert torch.allclose(norm[:, 0], vec.norm(dim=-1), rtol=1e-12, atol=0)
    check_equivalent(model, data, torch.float64)


def test_pdbbind_delta_g():
    gen = torch.Generator().manual_seed(6)

    def part(n):
        return Data(x=torch.randn(n, 18, generator=gen, dtype=torch.float64),
                    pos=torch.rand(n, 3, generator=gen, dtype=torch.float64) * 8)

    pockets, ligands = [part(30), part(25)], [part(8), part(11)]
    torch.manual_seed(6)
    model = PAMNet(PAMNetConfig.pdbbind(dim=32, n_layer=2)).double()
    head = ProteinLigandHead(model)
    batch = complex_batch(pockets, ligands)
    assert batch.num_graphs == 6 and batch.sign.tolist() == [1, -1, -1] * 2
    dg = head(batch)
    assert dg.shape == (2, 1)
    for s in range(2):
        cplx = Data(x=torch.cat([pockets[s].x, ligands[s].x]), pos=torch.cat([pockets[s].pos, ligands[s].pos]))
        expect = model(cplx) - model(pockets[s]) - model(ligands[s])
        assert torch.allclose(dg[s], expect[0], rtol=1e-10, atol=1e-10)
    assert dg.abs().max() > 0
    check_equivalent(model, batch, torch.float64)


def test_unsorted_bonds_and_self_loops_are_handled():
    data = random_batch([10, 7], seed=3)
    torch.manual_seed(7)
    model = PAMNet(PAMNetConfig.qm9(dim=16, n_layer=1)).double()
    e_sorted, ptr = sort_edges(data.edge_index, data.num_nodes)
    assert bool((e_sorted[1][1:] >= e_sorted[1][:-1]).all()) and ptr[-1] == e_sorted.size(1)
    ref = model(data)
    data2 = data.clone()
    loops = torch.arange(3).repeat(2, 1)
    data2.edge_index = torch.cat([data.edge_index.flip(1), loops], dim=1)
    assert torch.allclose(model(data2), ref, rtol=1e-12, atol=0)


def test_presets():
    q, r, p = PAMNetConfig.qm9(), PAMNetConfig.rna(), PAMNetConfig.pdbbind()
    assert (q.dim, q.n_layer, q.cutoff_g, q.local_graph, q.readout) == (128, 6, 5.0, "bonds", "sum")
    assert (r.dim, r.n_layer, r.cutoff_l, r.cutoff_g, r.global_graph, r.knn_k, r.readout) == \
        (16, 1, 2.6, 20.0, "knn", 50, "mean")
    assert (p.dim, p.n_layer, p.cutoff_l, p.cutoff_g, p.in_features) == (128, 3, 2.0, 6.0, 18)
    m = PAMNet(q)
    assert sum(x.numel() for x in m.parameters()) > 1_000_000
    assert m.rbf_g.freq.numel() == 16 and m.sbf.num_spherical * m.sbf.num_radial == 42


def test_reset_parameters_reinitialises():
    torch.manual_seed(8)
    m = PAMNet(PAMNetConfig.qm9(dim=16, n_layer=1))
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(0.123)
    m.reset_parameters()
    assert torch.allclose(m.rbf_g.freq, torch.arange(1, 17, dtype=torch.float32) * math.pi)
    assert m.embeddings.abs().max() <= math.sqrt(3) and m.embeddings.std() > 0.5
    changed = sum(int(not torch.all(p == 0.123)) for p in m.parameters())
    assert changed == len(before)


# --- bases ----------------------------------------------------------------------------------

def test_bessel_default_is_dimenet_with_p6():
    b = BesselBasis(16, 5.0, 5).double()
    d = torch.tensor([0.3, 1.7, 4.2, 4.99, 5.5], dtype=torch.float64)
    x = d.unsqueeze(-1) / 5.0
    p = 6
    u = 1 - (p + 1) * (p + 2) / 2 * x ** p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    expect = torch.where(x < 1, u, torch.zeros_like(x)) * torch.sin(torch.arange(1, 17) * math.pi * x) / x
    assert torch.allclose(b(d), expect, rtol=1e-12, atol=1e-12)
    assert b(d)[-1].abs().max() == 0 and b(d)[0].abs().max() > 1


def test_compat_bases_follow_authors_formulas():
    scipy_special = pytest.importorskip("scipy.special")
    b = BesselBasis(16, 5.0, 5, reference_compat=True).double()
    d = torch.tensor([0.5, 2.0, 4.5], dtype=torch.float64)
    x = d.unsqueeze(-1) / 5.0
    env = 1 / x - 21 * x ** 5 + 35 * x ** 6 - 15 * x ** 7  # p = 5: a = -21, b = 35, c = -15
    assert torch.allclose(compat_envelope(x, 5), env, rtol=1e-13)
    assert torch.allclose(b(d), env * torch.sin(torch.arange(1, 17) * math.pi * x), rtol=1e-12)
    # Spherical: env(x) * sqrt(2)/|j_{l+1}(z)| * j_l(z x) * sqrt((2l+1)/4pi) P_l(cos a)
    s = SphericalBasis(7, 6, 5.0, 5, reference_compat=True)
    ang = torch.tensor([0.3, 1.9, 2.8], dtype=torch.float64)
    out = s(d, ang)
    from pamnet_fast.ops.reference import spherical_bessel_zeros
    zeros = spherical_bessel_zeros(7, 6).float().double().numpy()
    for t in range(3):
        xt = float(d[t]) / 5.0
        e = 1 / xt - 21 * xt ** 5 + 35 * xt ** 6 - 15 * xt ** 7
        for l in range(7):
            y = math.sqrt((2 * l + 1) / (4 * math.pi)) * scipy_special.eval_legendre(l, math.cos(float(ang[t])))
            for n in range(6):
                z = zeros[l, n]
                val = e * math.sqrt(2) / abs(scipy_special.spherical_jn(l + 1, z)) * \
                    scipy_special.spherical_jn(l, z * xt) * y
                assert abs(float(out[t, l * 6 + n]) - val) <= 1e-9 * max(1.0, abs(val))
    # the default differs (p = 6 polynomial, no 1/x in the spherical basis)
    assert not torch.allclose(SphericalBasis(7, 6, 5.0, 5)(d, ang), out)


def test_global_pairs_share_edge_terms():
    from pamnet_fast import ops
    from pamnet_fast.nn.pamnet import pair_rows
    data = random_batch([9, 14, 6], seed=3)
    ei = ops.radius_graph(data.pos, 5.0, data.batch)
    pair, row = pair_rows(ei, data.num_nodes)
    src, dst = ei
    assert bool((src[pair] < dst[pair]).all()) and 2 * pair.numel() == ei.size(1)
    # each edge and its reverse share a row, and that row's edge is one of the two
    key = {(int(j), int(i)): e for e, (j, i) in enumerate(ei.t().tolist())}
    for e, (j, i) in enumerate(ei.t().tolist()):
        assert row[e] == row[key[(i, j)]]
        assert int(pair[row[e]]) in (e, key[(i, j)])
    # a kNN graph is not symmetric: no sharing
    assert pair_rows(ops.knn_graph(data.pos, 3, data.batch), data.num_nodes) is None
    # the model gives the same result with and without sharing
    torch.manual_seed(0)
    model = PAMNet(PAMNetConfig.qm9(dim=32, n_layer=2)).double()
    g = model.build_graphs(data)
    assert g.edge_row_g is not None and g.edge_row_l is not None  # radius plex and bonds
    shared = model.encode(data, g).node_out
    unshared = g._replace(pair_g=None, edge_row_g=None, pair_l=None, edge_row_l=None)
    for graphs in (unshared, g._replace(pair_g=None, edge_row_g=None),
                   g._replace(pair_l=None, edge_row_l=None)):
        assert rel_err(shared, model.encode(data, graphs).node_out) <= 1e-12


def test_checkpoint_recomputes_with_the_forward_dense_backend():
    # The dense layers' backend (oneDNN or aten) chosen in the forward is the one the checkpointed
    # recomputation uses, even when the backward runs outside ops.aten_linear().
    from pamnet_fast import ops
    torch.manual_seed(0)
    model = PAMNet(PAMNetConfig.qm9(dim=16, n_layer=2))
    data = random_batch([5, 7, 4], seed=2, dtype=torch.float32)
    grads = []
    for forward_only in (False, True):
        model.zero_grad()
        with ops.aten_linear():
            out = model(data).sum()
            if not forward_only:
                out.backward()
        if forward_only:
            out.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_mlp_forward_is_its_layers_with_sequential_names():
    """MLP's forward (linear_silu on each layer's weights, without the sub-module calls) is its
    Sequential(Linear, SiLU) layers applied in turn, with the state-dict names of nested
    Sequentials (checkpoints of either form load into the other), in float64 and float32."""
    from pamnet_fast.nn import MLP
    torch.manual_seed(0)
    mlp = MLP([5, 7, 3])
    assert list(mlp.state_dict()) == ["0.0.weight", "0.0.bias", "1.0.weight", "1.0.bias"]
    assert mlp.linear(1) is mlp[1][0] and isinstance(mlp[0][1], torch.nn.SiLU)
    for dtype in (torch.float64, torch.float32):
        mlp = mlp.to(dtype)
        x = torch.randn(4, 5, dtype=dtype, requires_grad=True)
        want = x
        for layer in mlp:
            want = torch.nn.functional.silu(torch.nn.functional.linear(want, layer[0].weight, layer[0].bias))
        got = mlp(x)
        if dtype == torch.float64:
            assert torch.equal(got, want)
        torch.testing.assert_close(got, want)
        torch.autograd.grad(got.sum(), x)  # differentiable


def test_activation_checkpointing_modes_give_the_same_gradients():
    """``activation_checkpointing`` True (every block recomputed), ``"edges"`` (the default: the
    local layers' edge and triplet blocks) and False (nothing): the same values and gradients (the
    recomputation is the same forward), fewer ops the less is recomputed; a bad value is refused."""
    from pamnet_fast.host_syncs import HostSyncCounter
    data = random_batch([5, 7, 4], seed=3)
    grads, counts = [], []
    assert PAMNetConfig().activation_checkpointing == "edges"
    for on in (True, "edges", False):
        torch.manual_seed(0)
        model = PAMNet(PAMNetConfig.qm9(dim=16, n_layer=2, activation_checkpointing=on)).double()
        assert all(layer.grad_checkpointing is on for layer in model.global_layer)
        with HostSyncCounter() as counter:
            model(data).sum().backward()
        counts.append(counter.kernel_ops)
        grads.append([p.grad for p in model.parameters()])
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert counts[0] > counts[1] > counts[2], counts  # less recomputation
    for bad in ("nodes", 1, None):
        with pytest.raises(ValueError, match="activation_checkpointing must be True, False or 'edges'"):
            PAMNet(PAMNetConfig.qm9(dim=16, n_layer=1, activation_checkpointing=bad))


def test_checkpointed_training_keeps_no_triplet_or_local_edge_features():
    """With activation checkpointing, a local layer's neighbour messages ``[E, F]``, its angle MLP
    and its angle sum run as one recomputed block: per layer, no ``[T, F]`` angle term is kept for
    backward and one ``[E, F]`` tensor (the block's output) instead of two (they are the largest
    activations of a local layer). Counted per added layer; without checkpointing more are kept."""
    data = Batch.from_data_list(qm9_molecules(6))
    dim = 24

    def kept(cls, n_layer, on):
        torch.manual_seed(0)
        model = cls(PAMNetConfig.qm9(dim=dim, n_layer=n_layer, activation_checkpointing=on)).double()
        g = model.build_graphs(data)
        angles = g.angles.src.numel() if cls is PAMNet else g.trip.one_hop_j2i.numel()
        rows = {g.edge_index_l.size(1): "edges", angles: "angles"}
        saved = []

        def pack(t):
            if t.dim() == 2 and t.size(1) == dim and t.size(0) in rows:
                saved.append(rows[t.size(0)])
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(data, g)
        out.sum().backward()
        return {k: saved.count(k) for k in ("edges", "angles")}

    for cls in (PAMNet, PAMNetS):
        for mode in (True, "edges"):
            on = [kept(cls, n, mode) for n in (2, 3)]
            per_layer_on = {k: on[1][k] - on[0][k] for k in on[0]}
            assert per_layer_on == {"edges": 1, "angles": 0}, (cls.__name__, mode, on)
        off = [kept(cls, n, False) for n in (2, 3)]
        per_layer_off = {k: off[1][k] - off[0][k] for k in off[0]}
        assert per_layer_off["edges"] > 1 and per_layer_off["angles"] > 0, (cls.__name__, off)


def test_recomputed_blocks_give_position_gradients():
    """With the checkpointed blocks, gradients w.r.t. positions (torch.autograd.grad) equal those
    without checkpointing, and the MLP of the spherical basis (whose input needs no grad when the
    positions do not) still gets its gradients."""
    data = random_batch([5, 7, 4], seed=6)
    data.pos.requires_grad_(True)
    forces = []
    for on in (True, "edges", False):
        torch.manual_seed(0)
        model = PAMNet(PAMNetConfig.qm9(dim=16, n_layer=2, activation_checkpointing=on)).double()
        energy = model(data).sum()
        forces.append(torch.autograd.grad(energy, data.pos)[0])
    torch.testing.assert_close(forces[0], forces[1], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(forces[0], forces[2], rtol=1e-12, atol=1e-14)
    torch.manual_seed(0)
    model = PAMNet(PAMNetConfig.qm9(dim=16, n_layer=2)).double()
    data.pos.requires_grad_(False)
    model(data).sum().backward()
    assert model.local_layer[0].mlp_sbf[0][0].weight.grad.abs().sum() > 0
