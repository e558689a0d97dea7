"""Protein-ligand affinity (issue 14): features, pocket, ΔG head, pose scoring, PDBbind layout, CLI.

Real data: the receptor, crystal ligand and 9 Vina poses in ../shared/data/complexes/prolif_vina.
"""
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

import _complexes as C
from pamnet_fast.data.complexes import (FEATURE_NAMES, ComplexError, ReceptorFeatures, load_complexes,
                                        read_ligands, read_protein, vina_score)
from pamnet_fast.data.pdbbind import PDBbind, PDBbindError, paper_split, read_index
from pamnet_fast.nn import PAMNet, PAMNetConfig, ProteinLigandHead, expand_complexes


# tiny tensors: intra-op threads only add overhead (and spin under load)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vina(shared_data):
    d = C.complex_dir(shared_data)
    return d / "rec.pdb", d / "vina_output.sdf"


@pytest.fixture(scope="module")
def poses(vina):
    return load_complexes(*vina)


def _feat(**kw):
    v = np.zeros(18, dtype=np.float32)
    for k, val in kw.items():
        v[FEATURE_NAMES.index(k)] = val
    return v


def _check(row, expect, charge_sign):
    q = FEATURE_NAMES.index("partialcharge")
    mask = np.arange(18) != q
    np.testing.assert_array_equal(row[mask], expect[mask])
    assert np.sign(row[q]) == charge_sign and abs(row[q]) < 1.0


# ----------------------------------------------------------------------------- features
def test_ligand_features_hand_checked(vina):
    # pose 0, heavy atoms in file order; SMILES of the ligand (an ergot alkaloid, protonated amine):
    # C[N@@H+]1C[C@H](C(=O)N[C@]2(C)O[C@@]3(O)...)C=C2c3cccc4[nH]cc(c34)C[C@H]21
    lig = read_ligands(vina[1])[0]
    assert lig.x.shape == (43, 18) and lig.pos.shape == (43, 3)
    x = lig.x
    # 11: amide carbonyl O (C=O): sp2, 1 heavy neighbour, acceptor, not in a ring
    _check(x[11], _feat(O=1, hyb=2, heavydegree=1, acceptor=1), -1)
    # 15: secondary amide N-H: sp2, 2 heavy neighbours (both C), acceptor by tfbio's pattern, donor
    _check(x[15], _feat(N=1, hyb=2, heavydegree=2, acceptor=1, donor=1), -1)
    # 20: protonated tertiary amine N+ (ring): sp3, 3 C neighbours, donor only (charged: no acceptor)
    _check(x[20], _feat(N=1, hyb=3, heavydegree=3, donor=1, ring=1), -1)
    # 28: indole [nH]: aromatic sp2, donor, not acceptor (nX3 excluded)
    _check(x[28], _feat(N=1, hyb=2, heavydegree=2, aromatic=1, donor=1, ring=1), -1)
    # 35: hydroxyl O on a quaternary C (hemiketal OH): sp3, donor and acceptor
    _check(x[35], _feat(O=1, hyb=3, heavydegree=1, acceptor=1, donor=1), -1)
    # 9: the hemiketal C bonded to two O and one N: sp3, 4 heavy / 3 hetero neighbours, positive
    _check(x[9], _feat(C=1, hyb=3, heavydegree=4, heterodegree=3, ring=1), 1)
    # 40: benzyl phenyl CH: aromatic, hydrophobic, ring
    _check(x[40], _feat(C=1, hyb=2, heavydegree=2, hydrophobic=1, aromatic=1, ring=1), -1)
    # 10: methyl on C: hydrophobic, not in a ring
    _check(x[10], _feat(C=1, hyb=3, heavydegree=1, hydrophobic=1), -1)
    assert set(np.unique(x[:, :9].sum(1))) == {1.0}  # every heavy atom has an element class


def test_protein_features_hand_checked(vina):
    prot = read_protein(vina[0])
    assert (prot.z > 1).all()  # hydrogens (present in the file) removed
    lig = read_ligands(vina[1])[0]
    pocket = ReceptorFeatures(prot, [lig.pos]).pocket(lig.pos, 7.0)
    by_name = {}
    for k, a in enumerate(pocket.atom_ids):
        by_name.setdefault((prot.residue_name[prot.residue[a]], prot.atom_name[a]), pocket.x[k])
    # serine hydroxyl: sp3 O, donor + acceptor
    _check(by_name[("SER", "OG")], _feat(O=1, hyb=3, heavydegree=1, acceptor=1, donor=1), -1)
    # serine CB: bonded to CA and OG, so 1 hetero neighbour, positive charge, not hydrophobic (C-O)
    _check(by_name[("SER", "CB")], _feat(C=1, hyb=3, heavydegree=2, heterodegree=1), 1)
    # backbone carbonyl C: sp2, bonded to CA, O and the next N
    _check(by_name[("ASP", "C")], _feat(C=1, hyb=2, heavydegree=3, heterodegree=2), 1)
    # backbone carbonyl O and amide N (non-proline): the template's bond orders make them sp2
    _check(by_name[("ASP", "O")], _feat(O=1, hyb=2, heavydegree=1, acceptor=1), -1)
    _check(by_name[("VAL", "N")], _feat(N=1, hyb=2, heavydegree=2, acceptor=1, donor=1), -1)
    # phenylalanine CZ: aromatic, hydrophobic, in the side-chain ring
    _check(by_name[("PHE", "CZ")], _feat(C=1, hyb=2, heavydegree=2, hydrophobic=1, aromatic=1, ring=1), -1)
    # methionine SD: thioether S, sp3, hydrophobic (tfbio: S^3), acceptor
    _check(by_name[("MET", "SD")], _feat(S=1, hyb=3, heavydegree=2, hydrophobic=1, acceptor=1), -1)
    # isoleucine CD (CHARMM's name for CD1, not in the template): bonded by distance to CG1, a methyl
    _check(by_name[("ILE", "CD")], _feat(C=1, hyb=3, heavydegree=1, hydrophobic=1), -1)
    # proline N: no H, so no donor; in the pyrrolidine ring
    _check(by_name[("PRO", "N")], _feat(N=1, hyb=2, heavydegree=3, acceptor=1, ring=1), -1)


def test_mol2_and_sdf_give_the_same_ligand(vina, tmp_path):
    from rdkit import Chem
    sdf = read_ligands(vina[1])
    mols = list(Chem.SDMolSupplier(str(vina[1]), removeHs=False))
    path = tmp_path / "poses.mol2"
    path.write_text("".join(C.to_mol2(m) for m in mols[:3]))  # multi-molecule MOL2
    mol2 = read_ligands(path)
    assert len(mol2) == 3
    for a, b in zip(mol2, sdf):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_allclose(a.pos, b.pos, atol=1e-4)


def test_ligand_flag_option(vina):
    lig = read_ligands(vina[1], ligand_flag=True)[0]
    assert lig.x.shape == (43, 19) and (lig.x[:, 18] == 1).all()
    data, _ = load_complexes(*vina, ligand_flag=True)
    x, is_lig = data[0].x, data[0].ligand
    assert x.shape[1] == 19 and (x[is_lig, 18] == 1).all() and (x[~is_lig, 18] == -1).all()


# ----------------------------------------------------------------------------- pocket
def test_pocket_extraction(vina, poses):
    data, ligands = poses
    prot = read_protein(vina[0])
    for k in (0, 4):
        lig_pos = ligands[k].pos
        d = np.sqrt(((prot.pos[:, None] - lig_pos[None]) ** 2).sum(-1)).min(1)  # brute force
        for cutoff in (6.0, 4.0):
            f = ReceptorFeatures(prot, [lig_pos])
            p = f.pocket(lig_pos, cutoff)
            assert sorted(p.atom_ids.tolist()) == np.flatnonzero(d <= cutoff).tolist()
        # the model input: pocket (6 Å) atoms first, then the ligand, same coordinates as the files
        n_p = int((~data[k].ligand).sum())
        assert n_p == int((d <= 6.0).sum()) and data[k].ligand[n_p:].all()
        assert torch.allclose(data[k].pos[n_p:].double(), torch.from_numpy(lig_pos), atol=1e-5)
    # the 10 Å feature margin gives the features of the whole receptor (up to Gasteiger's tail)
    lig_pos = ligands[0].pos
    near = ReceptorFeatures(prot, [lig_pos]).pocket(lig_pos)
    whole = ReceptorFeatures(prot, [lig_pos], margin=1000.0).pocket(lig_pos)
    np.testing.assert_array_equal(near.atom_ids, whole.atom_ids)
    np.testing.assert_allclose(near.x, whole.x, atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------- ΔG head
def _model(seed=0):
    torch.manual_seed(seed)
    return ProteinLigandHead(PAMNet(PAMNetConfig.pdbbind(dim=16, n_layer=2))).double()


def _as_double(batch):
    b = batch.clone()
    b.x, b.pos = b.x.double(), b.pos.double()
    return b


def test_delta_g_head_matches_three_separate_calls(poses):
    data, _ = poses
    head = _model()
    batch = _as_double(Batch.from_data_list(data[:3]))
    dg = head(batch)
    assert dg.shape == (3, 1)
    g = expand_complexes(batch)
    assert g.num_graphs == 9 and g.sign.tolist() == [1.0, -1.0, -1.0] * 3
    for s in range(3):
        d = data[s]
        lig = d.ligand
        x, pos = d.x.double(), d.pos.double()
        parts = [head.model(Batch.from_data_list([type(d)(x=x[m], pos=pos[m])]))
                 for m in (torch.ones_like(lig), ~lig, lig)]
        assert torch.allclose(dg[s], parts[0] - parts[1] - parts[2], rtol=1e-10, atol=1e-10)


def test_delta_g_invariances(poses):
    data, _ = poses
    head = _model(1)
    batch = _as_double(Batch.from_data_list(data))
    ref = head(batch)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    moved = batch.clone()
    moved.pos = batch.pos @ q.T + torch.tensor([40.0, -7.0, 12.5], dtype=torch.float64)
    assert torch.allclose(head(moved), ref, rtol=1e-9, atol=1e-9)
    # the order of the complexes in the batch does not matter either
    perm = [8, 3, 0, 5, 1, 7, 2, 6, 4]
    shuffled = _as_double(Batch.from_data_list([data[i] for i in perm]))
    assert torch.allclose(head(shuffled), ref[perm], rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- pose scoring
def test_nine_poses_scored_in_one_batch_deterministic(vina, tmp_path, monkeypatch):
    from pamnet_fast.train.pose_scoring import score_poses
    from pamnet_fast.train.target_norm import TargetNormalizer
    head = _model(2).float().eval()
    norm = TargetNormalizer(torch.tensor([6.0]), torch.tensor([1.5]))
    st = {"norm": norm.state_dict(), "meta": {"dataset": "pdbbind", "cutoff": 6.0}}
    calls = []
    head.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    rows = score_poses(head, st, *vina, tmp_path / "a.csv")
    assert calls == [9]  # one model call for the 9 poses
    rows2 = score_poses(head, st, *vina, tmp_path / "b.csv")
    assert [r["pred_affinity"] for r in rows] == [r["pred_affinity"] for r in rows2]
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    table = list(csv.DictReader(open(tmp_path / "a.csv")))
    assert [int(r["pose"]) for r in table] == list(range(9))
    assert all(math.isfinite(float(r["pred_affinity"])) for r in table)
    assert len({r["pred_affinity"] for r in table}) > 1  # the poses differ, so do the scores
    assert all(r["vina_score"] == "" for r in table)  # this SDF carries no score fields


def test_vina_score_fields():
    assert vina_score({"minimizedAffinity": "-9.3"}) == -9.3
    assert vina_score({"REMARK": " VINA RESULT:    -8.1      0.000      0.000"}) == -8.1
    assert vina_score({"other": "1"}) is None


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_get_clear_errors(vina, tmp_path, shared_data):
    rec, sdf = vina
    crystal_sdf = C.crystal_ligand_sdf(shared_data, tmp_path / "crystal.sdf")
    with pytest.raises(ComplexError, match="does not exist"):
        load_complexes(rec, tmp_path / "nope.sdf")
    with pytest.raises(ComplexError, match="did you swap"):
        load_complexes(sdf, rec)
    with pytest.raises(ComplexError, match="SDF or MOL2"):
        load_complexes(rec, rec.parent / "lig.pdb")
    bad = tmp_path / "bad.sdf"
    bad.write_text("garbage\n\n\n  3  2  0  0\nnot an sdf\n$$$$\n")
    with pytest.raises(ComplexError, match="molecule 0.*could not parse"):
        read_ligands(bad)
    empty = tmp_path / "empty.sdf"
    empty.write_text("")
    with pytest.raises(ComplexError, match="no molecules"):
        read_ligands(empty)
    junk_rec = tmp_path / "rec.pdb"
    junk_rec.write_text("HEADER    nothing here\nEND\n")
    with pytest.raises(ComplexError, match="rec.pdb"):
        load_complexes(junk_rec, sdf)
    # a ligand from another frame: far from every receptor atom
    from rdkit import Chem
    m = next(iter(Chem.SDMolSupplier(str(sdf), removeHs=False)))
    conf = m.GetConformer()
    for i in range(m.GetNumAtoms()):
        p = conf.GetAtomPosition(i)
        conf.SetAtomPosition(i, (p.x + 150.0, p.y, p.z))
    far = tmp_path / "far.sdf"
    w = Chem.SDWriter(str(far))
    w.write(m)
    w.close()
    with pytest.raises(ComplexError, match="same complex and frame"):
        load_complexes(rec, far)
    # a receptor file that still contains the ligand
    holo = tmp_path / "holo.pdb"
    lig_lines = [ln for ln in (rec.parent / "lig.pdb").read_text().splitlines() if ln.startswith(("ATOM", "HETATM"))]
    rec_lines = [ln for ln in rec.read_text().splitlines() if ln.startswith(("ATOM", "HETATM"))]
    holo.write_text("\n".join(rec_lines + ["TER"] + ["HETATM" + ln[6:21] + "L" + ln[22:] for ln in lig_lines]
                              + ["END"]) + "\n")
    with pytest.raises(ComplexError, match="contain the ligand"):
        load_complexes(holo, crystal_sdf)
    mol2 = tmp_path / "x.mol2"
    mol2.write_text("not mol2\n")
    with pytest.raises(ComplexError, match="TRIPOS"):
        read_ligands(mol2)


# ----------------------------------------------------------------------------- PDBbind layout
@pytest.fixture(scope="module")
def pdbbind_root(shared_data, tmp_path_factory):
    return C.make_pdbbind_copy(shared_data, tmp_path_factory.mktemp("pdbbind"))


def test_index_parsing_and_split(tmp_path):
    idx = tmp_path / "INDEX_refined_data.2016"
    idx.write_text("# comment\n1abc  1.80  2004   5.22  Kd=6uM // ref (LIG)\n2xyz 2.0 2010 7.00 Ki=0.1uM\n")
    assert read_index(idx) == {"1abc": 5.22, "2xyz": 7.0}
    idx.write_text("1abc  1.80  2004\n")
    with pytest.raises(PDBbindError, match="line 1"):
        read_index(idx)
    ids = [f"{k}abc" for k in range(10)] + [f"{k}xyz" for k in range(10)]
    sp = paper_split(ids, ["3abc", "5xyz"], seed=1)
    assert [ids[i] for i in sp["test"]] == ["3abc", "5xyz"]
    assert len(sp["val"]) == 2 and len(sp["train"]) == 16
    assert not set(sp["train"]) & set(sp["val"]) and not (set(sp["train"]) | set(sp["val"])) & set(sp["test"])
    assert paper_split(ids, ["3abc"], seed=1) != paper_split(ids, ["3abc"], seed=2)
    assert paper_split(ids, ["3abc"], seed=1) == paper_split(ids, ["3abc"], seed=1)


def test_pdbbind_reader_split_and_cache(pdbbind_root, tmp_path, monkeypatch):
    ds = PDBbind(pdbbind_root, cache_dir=tmp_path, verbose=False)
    assert ds.ids == sorted(C.IDS) and ds.core == C.CORE and not ds.skipped
    sp = ds.split(seed=42)
    assert sorted(ds.ids[i] for i in sp["test"]) == C.CORE
    assert len(sp["val"]) == 1 and len(sp["train"]) == 7
    assert int(ds[ds.ids.index("1pv2")].ligand.sum()) == 43  # the MOL2 ligand
    d = ds[ds.ids.index("1pv0")]  # crystal ligand, full protein file
    assert d.x.shape[1] == 18 and int(d.ligand.sum()) == 43
    assert float(d.y) == pytest.approx(C.AFFINITY["1pv0"], abs=1e-5)
    # the pocket file (10 Å residues) and the full protein give the same complex
    data, _ = load_complexes(pdbbind_root / "refined-set" / "1pv1" / "1pv1_pocket.pdb",
                             pdbbind_root / "refined-set" / "1pv1" / "1pv1_ligand.sdf")
    full, _ = load_complexes(pdbbind_root / "refined-set" / "1pv0" / "1pv0_protein.pdb",
                             pdbbind_root / "refined-set" / "1pv1" / "1pv1_ligand.sdf")
    torch.testing.assert_close(data[0].pos, full[0].pos)
    torch.testing.assert_close(data[0].x, full[0].x, atol=1e-3, rtol=0)
    # second load comes from the cache: nothing is processed again
    import pamnet_fast.data.pdbbind as P

    def boom(*a, **k):
        raise AssertionError("recomputed")
    monkeypatch.setattr(P, "process_complex", boom)
    again = PDBbind(pdbbind_root, cache_dir=tmp_path, verbose=False)
    assert torch.equal(again.x, ds.x) and again.ids == ds.ids


@pytest.mark.slow
def test_pdbbind_parallel_processing_matches_serial(pdbbind_root, tmp_path):
    par = PDBbind(pdbbind_root, cache_dir=tmp_path / "par", verbose=False, num_workers=2)  # spawned pool
    serial = PDBbind(pdbbind_root, cache_dir=tmp_path / "serial", verbose=False, num_workers=1)
    assert par.ids == serial.ids
    assert torch.equal(serial.x, par.x) and torch.equal(serial.pos, par.pos) and torch.equal(serial.ptr, par.ptr)


def test_pdbbind_layout_errors(tmp_path, pdbbind_root):
    with pytest.raises(PDBbindError, match="not a directory"):
        PDBbind(tmp_path / "missing", cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PDBbindError, match="INDEX_refined_data"):
        PDBbind(tmp_path / "empty", cache_dir=tmp_path)
    import shutil
    copy = tmp_path / "nocore"
    shutil.copytree(pdbbind_root / "refined-set" / "index", copy / "index")
    (copy / "index" / "INDEX_core_data.2016").unlink()
    with pytest.raises(PDBbindError, match="core-set"):
        PDBbind(copy, cache_dir=tmp_path)
    from pamnet_fast.train.datasets import load_dataset
    with pytest.raises(PDBbindError, match="--root"):
        load_dataset("pdbbind")


# ----------------------------------------------------------------------------- CLI end to end
def test_cli_train_evaluate_predict(pdbbind_root, vina, tmp_path, capsys):
    from pamnet_fast.cli import main
    out = tmp_path / "run"
    rc = main(["train", "--dataset", "pdbbind", "--root", str(pdbbind_root), "--cache-dir", str(tmp_path / "c"),
               "--model-config", '{"dim": 16, "n_layer": 1}', "--epochs", "2", "--batch-size", "2",
               "--out", str(out), "--quiet", "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "test MAE" in text and "SD" in text and "Pearson R" in text
    from pamnet_fast.train import load_checkpoint
    st = load_checkpoint(out / "model.pt")
    assert st["meta"]["dataset"] == "pdbbind" and st["train_config"]["loss"] == "mse"
    assert Path(st["meta"]["root"]).is_absolute()  # evaluate/predict work from any directory
    assert st["train_config"]["decay_staircase"] and st["train_config"]["decay_rate"] == 0.2
    assert st["results"]["test_n"] == 2
    rc = main(["evaluate", str(out), "--cache-dir", str(tmp_path / "c"), "--quiet", "--device", "cpu"])
    assert rc == 0 and "test MAE" in capsys.readouterr().out
    csv_path = tmp_path / "poses.csv"
    rc = main(["predict", str(out), "--receptor", str(vina[0]), "--ligand", str(vina[1]),
               "--output", str(csv_path), "--quiet", "--device", "cpu"])
    assert rc == 0
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 9 and list(rows[0]) == ["pose", "name", "vina_score", "pocket_atoms", "ligand_atoms",
                                                "pred_affinity"]
    rc = main(["predict", str(out), "--receptor", str(vina[1]), "--ligand", str(vina[0]), "--quiet"])
    assert rc == 2 and "did you swap" in capsys.readouterr().err


def test_step_decay_schedule():
    from pamnet_fast.train import TrainConfig, Trainer
    from pamnet_fast.train.tiny import TinyConfig, TinyModel, synthetic_dataset
    ds = synthetic_dataset(64, seed=0)
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=5, batch_size=16, lr=1e-2, warmup_epochs=0.0, decay_rate=0.2, decay_epochs=2.0,
                      decay_staircase=True, target_index=0, quiet=True, checkpoint_every=0, plots=False,
                      element_ref=False)
    tr = Trainer(TinyModel(TinyConfig()), ds[:48], ds[48:], None, cfg)
    tr.fit()
    lrs = [h["lr"] for h in tr.history]  # lr after the last step of epochs 1..5 (4 steps each)
    expect = [1e-2 * 0.2 ** ((4 * e) // 8) for e in range(1, 6)]
    assert lrs == pytest.approx(expect, rel=1e-12)


@pytest.mark.slow
def test_cutoff_benchmark_script_quick(shared_data, tmp_path, monkeypatch):
    import importlib.util
    import json
    monkeypatch.setenv("PAMNET_BENCH_MEMORY", "0")
    monkeypatch.setenv("PAMNET_SHARED_DATA", str(shared_data))
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pdbbind_cutoff.py"
    spec = importlib.util.spec_from_file_location("pdbbind_cutoff", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod._data, "DATA_DIR", Path(shared_data))
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "cutoff.json").read_text())["rows"]
    assert {(r["model"], r["cutoff"]) for r in rows} == {(m, c) for m in ("PAMNet", "DimeNet++") for c in (2.0, 4.0)}
    assert all(r["time_ms"] > 0 for r in rows) and (tmp_path / "cutoff.png").stat().st_size > 0
    small, large = [r for r in rows if r["model"] == "DimeNet++"]
    assert large["dimenet_triplets"] > small["dimenet_triplets"] > 0
