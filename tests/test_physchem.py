"""PhysChem: featurization, data, the model against its dense twin, invariances, losses, CLI."""
import math

import numpy as np
import pytest
import torch

rdkit = pytest.importorskip("rdkit")
from torch_geometric.data import Batch, Data  # noqa: E402

from pamnet_fast.data.featurize import (NUM_ATOM_FEATURES, NUM_BOND_FEATURES, featurize_mol,  # noqa: E402
                                        map_smiles_to_geometry, mol_from_smiles)
from pamnet_fast.data.molgraphs import build_graphs, directed_edges  # noqa: E402
from pamnet_fast.nn.physchem import (MODES, PhysChem, PhysChemConfig, conn_loss, conn_pairs,  # noqa: E402
                                     distance_rmse, kabsch_rmsd)
from pamnet_fast.nn.physchem.reference import DensePhysChem  # noqa: E402

SMILES = ["CC(=O)Oc1ccccc1C(=O)O", "C[C@H](N)C(=O)O", "c1ccc2[nH]ccc2c1", "ClC(Cl)Cl", "C", "OCC#N",
          "CC1=CC(=O)C=CC1=O", "F/C=C/F"]
SMALL = dict(hv_dim=24, he_dim=16, mv_dim=20, me_dim=12, hm_dim=24, mm_dim=16, gcn_hidden=16, gcn_out=16,
             lstm_out=16)


def graphs(smiles=SMILES, seed=0):
    """Data items (float64) for a few molecules; pos = an ETKDG conformer perturbed (a 'real' geometry)."""
    tensors, kept, _ = build_graphs([(s, np.array([float(k)]), None) for k, s in enumerate(smiles)], seed=seed)
    g = torch.Generator().manual_seed(seed)
    out = []
    ap, ep = tensors["atom_ptr"], tensors["edge_ptr"]
    for k in range(len(kept)):
        a0, a1, e0, e1 = int(ap[k]), int(ap[k + 1]), int(ep[k]), int(ep[k + 1])
        rp = tensors["rdkit_pos"][a0:a1].double()
        out.append(Data(x=tensors["x"][a0:a1].double(), edge_index=tensors["edge_index"][:, e0:e1],
                        edge_attr=tensors["edge_attr"][e0:e1].double(), mass=tensors["mass"][a0:a1].double(),
                        z=tensors["z"][a0:a1], rank=tensors["rank"][a0:a1],
                        pos=rp + 0.2 * torch.randn(rp.shape, generator=g, dtype=torch.float64),
                        rdkit_pos=rp, y=tensors["y"][k:k + 1].float()))
    return out


def model(**kw):
    torch.manual_seed(0)
    return PhysChem(PhysChemConfig(**{**SMALL, **kw})).double()


def random_rotation(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.linalg.det(q))


# ----------------------------------------------------------------------------- featurization
def test_atom_and_bond_features():
    mol = mol_from_smiles("C[C@H](N)C(=O)O")  # L-alanine: one S centre
    g = featurize_mol(mol)
    assert g.x.shape == (6, NUM_ATOM_FEATURES) and g.bond_attr.shape == (5, NUM_BOND_FEATURES)
    assert g.x[:, :16].sum(1).tolist() == [1] * 6                        # one element each
    assert g.x[:, 1].sum() == 3 and g.x[:, 2].sum() == 1 and g.x[:, 3].sum() == 2   # C, N, O
    assert g.x[1, 32] == 1 and g.x[:, 31].sum() == 0                      # CIP S at atom 1
    assert g.x[1, 33] == 1                                                # chirality possible
    assert g.x[1, 16 + 3] == 1                                            # degree 3
    benzene = featurize_mol(mol_from_smiles("c1ccccc1"))
    assert (benzene.bond_attr[:, 3] == 1).all() and (benzene.bond_attr[:, 5] == 1).all()
    assert (benzene.x[:, 30] == 1).all() and (benzene.x[:, 25] == 1).all()   # aromatic, SP2
    e = featurize_mol(mol_from_smiles("F/C=C/F"))
    assert e.bond_attr[:, 9].sum() == 1                                   # the E double bond
    other = featurize_mol(mol_from_smiles("[Na+].[Cl-]"))
    assert other.x[0, 15] == 1 and other.x[0, 22] == 1 and other.x[1, 22] == -1
    with pytest.raises(ValueError, match="cannot parse"):
        mol_from_smiles("C1CC")


def test_directed_edges_sorted_with_bond_ids():
    e, bid = directed_edges(np.array([[0, 1, 1], [1, 2, 3]]))
    assert e.shape == (2, 6) and (np.diff(e[1]) >= 0).all()
    assert sorted(bid.tolist()) == [0, 0, 1, 1, 2, 2]


def test_qm9_atom_order_matches_geometry():
    """The SMILES -> geometry mapping puts bonded heavy atoms at bond lengths in the real geometry."""
    from pamnet_fast.data.qm9 import read_qm9pack, qm9pack_data_dir
    from pamnet_fast.data.bonds import molecule_bonds
    try:
        src = read_qm9pack(qm9pack_data_dir(), limit=60)
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(str(e))
    checked = 0
    for z, pos, smi in zip(src["z"], src["pos"], src["smiles"]):
        ei, _ = molecule_bonds(z, pos, smi)
        m = map_smiles_to_geometry(smi, z, ei)
        if m is None:
            continue
        g = featurize_mol(mol_from_smiles(smi))
        heavy = pos[m]
        assert (np.asarray(z)[m] == g.z).all()
        if g.bonds.size:
            d = np.linalg.norm(heavy[g.bonds[0]] - heavy[g.bonds[1]], axis=1)
            assert d.min() > 1.0 and d.max() < 1.75, (smi, d)
        checked += 1
    assert checked >= 55


def test_moleculenet_reader(shared_data, tmp_path):
    from pamnet_fast.data.moleculenet import find_file, moleculenet_dataset, read_csv
    root = shared_data / "moleculenet"
    smi, y, names = read_csv("freesolv", find_file("freesolv", root))
    assert len(smi) == 642 and y[0] == pytest.approx(-11.01) and smi[0] == "CN(C)C(=O)c1ccc(cc1)OC"
    ds = moleculenet_dataset("esol", root, cache_dir=tmp_path, limit=12, verbose=False)
    assert len(ds) == 12 and ds[0].y.item() == pytest.approx(-2.18) and ds.smiles[0] == "ClCC(Cl)(Cl)Cl"
    assert ds[0].x.shape == (6, 34) and ds[0].rdkit_pos.shape == (6, 3)
    ds2 = moleculenet_dataset("esol", root, cache_dir=tmp_path, limit=12, verbose=False)  # from cache
    assert torch.equal(ds2[5].pos, ds[5].pos)
    with pytest.raises(ValueError, match="needs --root"):
        find_file("lipop", None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_file("lipop", tmp_path / "nope")
    bad = tmp_path / "bad.csv"
    bad.write_text("smiles,value\nCC,1\n")
    with pytest.raises(ValueError, match="expected columns"):
        read_csv("freesolv", bad)


# ----------------------------------------------------------------------------- model vs dense twin
@pytest.mark.parametrize("mode", [m for m in MODES if m != "physchem-rdkit"])
@pytest.mark.parametrize("pair_forces", ["graph", "dense"])
def test_matches_dense_twin(mode, pair_forces):
    b = Batch.from_data_list(graphs())
    m = model(mode=mode, pair_forces=pair_forces).eval()
    ref = DensePhysChem(m)
    out, want = m(b), ref(b)
    torch.testing.assert_close(out, want, rtol=1e-9, atol=1e-10)
    assert len(m.conformations) == len(ref.conformations)
    for a, w in zip(m.conformations, ref.conformations):
        torch.testing.assert_close(a, w, rtol=1e-9, atol=1e-10)


def test_pair_cutoff_is_exact_when_it_covers_the_molecule():
    b = Batch.from_data_list(graphs())
    m = model().eval()
    out = m(b)
    conf = m.conformations[-1]
    m.physnet.pair_cutoff = 1e4  # ops.radius_graph with a cutoff beyond every molecule: all pairs
    torch.testing.assert_close(m(b), out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m.conformations[-1], conf, rtol=1e-10, atol=1e-12)
    m.physnet.pair_cutoff = 0.5  # a real cutoff changes the forces
    m(b)
    assert (m.conformations[-1] - conf).abs().max() > 1e-4


def test_hamiltonian_forces_are_minus_energy_gradient():
    b = Batch.from_data_list(graphs())
    m = model(dynamics="hamilton").eval()
    from pamnet_fast.nn.physchem.graph import mol_batch
    g = mol_batch(b.edge_index, b.num_nodes, b.batch, b.mass)
    hv, he, p, q = m.initializer(b.x, b.edge_attr, b.rank, g)
    bond = m.physnet.bond_terms(hv, he, g)
    q = q.detach().requires_grad_(True)
    bond = bond.detach()
    u = m.physnet.energy(bond, q, g)
    (grad,) = torch.autograd.grad(u, q)
    eps = 1e-6
    k = 3
    q2 = q.detach().clone()
    q2[k, 1] += eps
    q3 = q.detach().clone()
    q3[k, 1] -= eps
    num = (m.physnet.energy(bond, q2, g) - m.physnet.energy(bond, q3, g)) / (2 * eps)
    assert float(num) == pytest.approx(float(grad[k, 1].detach()), rel=1e-5, abs=1e-8)
    out = m(b)  # runs under no_grad-free eval too
    assert torch.isfinite(out).all() and len(m.conformations) == 1 + 2 * 4


# ----------------------------------------------------------------------------- invariances
def permute(d: Data, perm: torch.Tensor) -> Data:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    ei = inv[d.edge_index]
    order = torch.argsort(ei[1] * d.num_nodes + ei[0])
    return Data(x=d.x[perm], edge_index=ei[:, order], edge_attr=d.edge_attr[order], mass=d.mass[perm],
                z=d.z[perm], rank=d.rank[perm], pos=d.pos[perm], rdkit_pos=d.rdkit_pos[perm], y=d.y)


@pytest.mark.parametrize("mode", ["physchem", "chemnet-real"])
def test_predictions_invariant_to_atom_order(mode):
    items = graphs()
    g = torch.Generator().manual_seed(1)
    shuffled = [permute(d, torch.randperm(d.num_nodes, generator=g)) for d in items]
    m = model(mode=mode).eval()
    out = m(Batch.from_data_list(items))
    out2 = m(Batch.from_data_list(shuffled))
    torch.testing.assert_close(out, out2, rtol=1e-8, atol=1e-10)
    assert not torch.allclose(out[:, 0], out[0, 0].expand(out.shape[0]))


def test_losses_invariant_to_rigid_motion_and_kabsch_zero():
    b = Batch.from_data_list(graphs())
    x = b.pos + 0.3 * torch.randn(b.pos.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    pairs = conn_pairs(b.edge_index, b.batch, b.num_graphs, 3)
    base = conn_loss(x, b.pos, pairs)
    R = random_rotation(3)
    moved = b.pos @ R.T + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    assert float(conn_loss(x, moved, pairs)) == pytest.approx(float(base), rel=1e-10)
    assert float(base) > 0
    rm = kabsch_rmsd(moved, b.pos, b.batch, b.num_graphs)
    assert rm.abs().max() < 1e-10
    assert distance_rmse(moved, b.pos, b.batch, b.num_graphs).abs().max() < 1e-10
    # a mirror image is not a rotation: Kabsch-RMSD with the reflection fix stays > 0 for chiral shapes
    mirrored = b.pos * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert kabsch_rmsd(mirrored, b.pos, b.batch, b.num_graphs).max() > 0.1
    assert distance_rmse(mirrored, b.pos, b.batch, b.num_graphs).abs().max() < 1e-10
    # the atom slots of a MolBatch (what the model passes) give the same values as computing them
    from pamnet_fast.nn.physchem.graph import mol_batch
    g = mol_batch(b.edge_index, b.num_nodes, b.batch, torch.ones(b.num_nodes, dtype=torch.float64))
    assert torch.equal(kabsch_rmsd(x, b.pos, b.batch, b.num_graphs, g.counts, g.max_atoms, g.atom_slot),
                       kabsch_rmsd(x, b.pos, b.batch, b.num_graphs))


def test_conn_pairs_against_dense_definition():
    items = graphs()
    b = Batch.from_data_list(items)
    pairs = conn_pairs(b.edge_index, b.batch, b.num_graphs, 3)
    got = {(int(i), int(j)): float(w) for i, j, w in zip(*pairs)}
    want = {}
    start = 0
    for d in items:
        n = d.num_nodes
        a = torch.eye(n, dtype=torch.float64)
        a[d.edge_index[1], d.edge_index[0]] = 1
        c = (torch.linalg.matrix_power(a, 3) > 0).double()
        deg = c.sum(1)
        cn = c / torch.sqrt(deg[:, None] * deg[None])
        for i in range(n):
            for j in range(n):
                if i != j and c[i, j] > 0:
                    want[(start + i, start + j)] = float(cn[i, j]) / b.num_nodes
        start += n
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-6)


def test_kabsch_matches_brute_force_rotation_search():
    d = graphs()[0]
    R = random_rotation(5)
    y = d.pos @ R.T + 0.1 * torch.randn(d.pos.shape, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(4))
    batch = torch.zeros(d.num_nodes, dtype=torch.long)
    got = float(kabsch_rmsd(d.pos, y, batch, 1))
    xc, yc = d.pos - d.pos.mean(0), y - y.mean(0)
    at_true = float(((xc @ R.T - yc) ** 2).sum(1).mean().sqrt())
    assert got <= at_true + 1e-12 and got > 0.5 * at_true


# ----------------------------------------------------------------------------- training signals
def test_gradients_reach_every_parameter_and_aux_loss():
    b = Batch.from_data_list(graphs())
    m = model(mode="physchem", lam=1.0)
    m.train()
    out = m(b)
    aux = m.auxiliary_loss()
    assert aux is not None and float(aux) > 0 and m.auxiliary_loss() is None  # cleared once taken
    (out.pow(2).mean() + aux).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing
    m.eval()
    m(b)
    assert m.auxiliary_loss() is None  # evaluation adds nothing


def test_conformation_loss_decreases_when_fitting():
    b = Batch.from_data_list(graphs())
    m = model(mode="physnet", lam=1.0, num_blocks=1, steps=2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        m(b)
        loss = m.auxiliary_loss()
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.8 * first


def test_bad_input_errors():
    d = graphs()[0]
    m = model()
    with pytest.raises(ValueError, match="features"):
        m(Data(x=torch.zeros(3, 5, dtype=torch.float64), edge_index=torch.zeros(2, 0, dtype=torch.long),
               edge_attr=torch.zeros(0, 10, dtype=torch.float64), mass=torch.ones(3, dtype=torch.float64)))
    with pytest.raises(ValueError, match="edge_attr"):
        m(Data(x=d.x, edge_index=d.edge_index, mass=d.mass))
    one_way = Data(x=d.x, edge_index=d.edge_index[:, d.edge_index[0] < d.edge_index[1]],
                   edge_attr=d.edge_attr[d.edge_index[0] < d.edge_index[1]], mass=d.mass, pos=d.pos)
    with pytest.raises(ValueError, match="both directions|sorted"):
        m(one_way)
    with pytest.raises(ValueError, match="unknown mode"):
        PhysChemConfig(mode="xyz")
    with pytest.raises(ValueError, match="unknown fields"):
        PhysChemConfig.from_dict({"hv": 3})


def test_single_atom_and_float32():
    items = graphs(["C", "O", "CCO"])
    b = Batch.from_data_list(items)
    m = model().float()
    for k in ("x", "edge_attr", "mass", "pos", "rdkit_pos"):
        b[k] = b[k].float()
    out = m(b)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert all(torch.isfinite(c).all() for c in m.conformations)


def test_dense_conn_loss_matches():
    from pamnet_fast.nn.physchem import hierarchical_conn_loss
    from pamnet_fast.nn.physchem.reference import dense_conn_loss
    b = Batch.from_data_list(graphs())
    g = torch.Generator().manual_seed(7)
    xs = [b.pos + 0.3 * torch.randn(b.pos.shape, dtype=torch.float64, generator=g) for _ in range(3)]
    pairs = conn_pairs(b.edge_index, b.batch, b.num_graphs, 3)
    want = dense_conn_loss(xs, b.pos, b.edge_index, b.batch)
    assert float(hierarchical_conn_loss(xs, b.pos, pairs)) == pytest.approx(float(want), rel=1e-10)


@pytest.mark.slow
def test_cli_train_and_predict_write_conformations(shared_data, tmp_path):
    """``pamnet-fast train --model physchem --dataset esol`` then ``predict``: properties, SDF, PNG."""
    import json
    from pamnet_fast.cli import main
    out = tmp_path / "run"
    small = json.dumps({**SMALL, "num_blocks": 1, "steps": 2})
    args = ["--root", str(shared_data / "moleculenet"), "--cache-dir", str(tmp_path / "cache"), "--limit", "40"]
    assert main(["train", "--model", "physchem", "--dataset", "esol", *args, "--epochs", "1", "--batch-size", "8",
                 "--model-config", small, "--out", str(out), "--quiet", "--num-threads", "1"]) == 0
    for f in ("model.pt", "test_predictions.csv", "test_conformations.sdf", "test_conformations.png",
              "test_conformations_summary.json"):
        assert (out / f).exists(), f
    assert main(["predict", str(out), "--split", "val", "--cache-dir", str(tmp_path / "cache"), "--limit", "40",
                 "--quiet"]) == 0
    from rdkit import Chem
    mols = [m for m in Chem.SDMolSupplier(str(out / "val_conformations.sdf"))]
    assert len(mols) == 4 and all(m is not None and m.GetNumConformers() == 1 for m in mols)
    summary = json.loads((out / "val_conformations_summary.json").read_text())
    assert summary["molecules"] == 4 and summary["dl_rs"] > 0 and "esol" in summary["mae"]
    with pytest.raises(ValueError, match="qm9-physchem"):
        main(["train", "--model", "physchem", "--dataset", "qm9", "--limit", "50", "--epochs", "1",
              "--out", str(tmp_path / "bad"), "--quiet"])


# ----------------------------------------------------------------------------- host reads
# Before mol_batch read everything at once (CPU, no_grad, this batch): 15 reads per forward with the
# exact pair list (physchem, physnet, hamilton), 31 with dense pair forces, 7 in the ChemNet modes.
SYNC_CONFIGS = [dict(mode="physchem"), dict(mode="physchem", pair_forces="dense"), dict(mode="physnet"),
                dict(mode="chemnet"), dict(mode="chemnet-real"), dict(mode="physchem", dynamics="hamilton")]


@pytest.mark.parametrize("kw", SYNC_CONFIGS, ids=lambda kw: "-".join(map(str, kw.values())))
def test_forward_reads_the_device_once(kw):
    """The one read is mol_batch's (checks, triplet sizes, atoms per molecule); the rest of the forward
    (LSTM packing, pair lists, dense blocks, readout) takes its sizes from it. With ``pair_cutoff``
    the radius search reads its own edge total on a GPU (inside the op: not seen here)."""
    from pamnet_fast.host_syncs import HostSyncCounter
    b = Batch.from_data_list(graphs())
    m = model(**kw).eval()
    with torch.no_grad():
        with HostSyncCounter() as counter:
            out = m(b)
        assert counter.syncs == ["tolist"], counter.syncs
        if m.config.dynamics == "newton":  # (the dense twin's only engine)
            torch.testing.assert_close(out, DensePhysChem(m)(b), rtol=1e-9, atol=1e-10)
        assert torch.isfinite(out).all()


def test_training_forward_reads_twice():
    """A training forward: mol_batch's read and the Conn-k pair list (``nonzero``: its size)."""
    from pamnet_fast.host_syncs import HostSyncCounter
    b = Batch.from_data_list(graphs())
    m = model(mode="physchem", lam=1.0).train()
    with HostSyncCounter() as counter:
        m(b)
    assert counter.syncs == ["tolist", "nonzero"], counter.syncs
    aux = m.auxiliary_loss()
    assert m.last_conf_loss == pytest.approx(float(aux))


def test_mol_batch_counts_pairs_and_input_errors():
    from pamnet_fast.nn.physchem.graph import all_pairs, mol_batch
    items = graphs()
    b = Batch.from_data_list(items)
    n = b.num_nodes
    g = mol_batch(b.edge_index, n, b.batch, b.mass, pairs=True)            # num_graphs read
    assert g.num_graphs == len(items) and g.counts_cpu == [d.num_nodes for d in items]
    assert g.max_atoms == max(d.num_nodes for d in items) and g.counts.tolist() == g.counts_cpu
    assert torch.equal(g.atom_slot, torch.cat([torch.arange(d.num_nodes) for d in items]))
    assert torch.equal(g.src[g.rev], g.dst) and torch.equal(g.dst[g.rev], g.src)
    # all ordered pairs of a molecule, i != j, by i then j (the boolean-mask definition)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = (b.batch[i] == b.batch[j]) & (i != j)
    assert torch.equal(torch.stack(g.pairs), torch.stack([i[keep], j[keep]]))
    assert torch.equal(torch.stack(all_pairs(g)), torch.stack(g.pairs))
    # empty molecules after the last atom: num_graphs read from batch, counts with the zeros
    g = mol_batch(b.edge_index, n, torch.cat([b.batch[:-1], b.batch[-1:] + 2]), b.mass)
    assert g.counts_cpu == [d.num_nodes for d in items[:-1]] + [items[-1].num_nodes - 1, 0, 1]
    ei = b.edge_index
    with pytest.raises(ValueError, match="sorted by target"):
        mol_batch(ei.flip(1), n, b.batch, b.mass)
    with pytest.raises(ValueError, match="both directions"):
        mol_batch(ei[:, 1:], n, b.batch, b.mass)
    bad = ei.clone()
    bad[0, 0] = n
    with pytest.raises(ValueError, match=r"outside \[0, %d\)" % n):
        mol_batch(bad, n, b.batch, b.mass)
    with pytest.raises(ValueError, match="batch must be sorted"):
        mol_batch(ei, n, b.batch.flip(0), b.mass, num_graphs=len(items))
    with pytest.raises(ValueError, match=r"indices in \[0, 3\)"):
        mol_batch(ei, n, b.batch, b.mass, num_graphs=3)
