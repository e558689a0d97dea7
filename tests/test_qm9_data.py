"""QM9 data layer: units, bonds (and their check against SMILES), split, on-disk cache."""
import importlib.util
import os
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")
if importlib.util.find_spec("qm9pack") is None:
    pytest.skip("qm9pack is not installed", allow_module_level=True)

from pamnet_fast.data import QM9, TARGETS, CacheWarning, split_indices  # noqa: E402
from pamnet_fast.data import bonds as B  # noqa: E402
from pamnet_fast.data import cache as C  # noqa: E402
from pamnet_fast.data import qm9 as Q  # noqa: E402

HA = 27211.386246  # meV per Hartree


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    # 600 molecules: > 2 chunks, so this goes through the 2-process pool
    return QM9(tmp_path_factory.mktemp("cache"), limit=600, num_workers=2)


def test_units_methane(small):
    d = small[0]
    assert d.z.tolist() == [6, 1, 1, 1, 1]
    assert d.z.dtype == torch.int64 and d.pos.dtype == torch.float32 and d.pos.shape == (5, 3)
    assert d.y.shape == (1, 12) and d.y.dtype == torch.float32
    y = dict(zip(TARGETS, small.y[0].tolist()))
    # raw qm9pack values of molecule 1 (dsgdb9nsd_000001, CH4)
    assert y["mu"] == 0.0
    assert y["alpha"] == pytest.approx(13.21)
    assert y["homo"] == pytest.approx(-0.3877 * HA)
    assert y["lumo"] == pytest.approx(0.1171 * HA)
    assert y["gap"] == pytest.approx(0.5048 * HA)
    assert y["r2"] == pytest.approx(35.3641)
    assert y["zpve"] == pytest.approx(0.044749 * HA)
    assert y["cv"] == pytest.approx(6.469)
    # atomization energies: E - (E_C + 4 E_H) with the QM9 atomref table
    assert y["U0"] == pytest.approx((-40.47893 - (-37.846772 + 4 * -0.500273)) * HA, abs=1e-6)
    assert y["U"] == pytest.approx((-40.476062 - (-37.845355 + 4 * -0.498857)) * HA, abs=1e-6)
    assert y["H"] == pytest.approx((-40.475117 - (-37.844411 + 4 * -0.497912)) * HA, abs=1e-6)
    assert y["G"] == pytest.approx((-40.498597 - (-37.861317 + 4 * -0.510927)) * HA, abs=1e-6)
    assert y["U0"] == pytest.approx(-17172.2, abs=0.1)  # the well-known 17.17 eV of methane


def test_atomref_matches_pyg_ev_table():
    # PyG's qm9.py atomref table (eV, columns U0, U, H, G) must be the same numbers as ours (Hartree)
    pyg = {1: [-13.61312172, -13.5745904, -13.54887564, -13.90303183],
           6: [-1029.86312267, -1029.82456413, -1029.79887659, -1030.25891228],
           7: [-1485.30251237, -1485.26398105, -1485.2382935, -1485.71166277],
           8: [-2042.61123593, -2042.5727046, -2042.54701705, -2043.01812778],
           9: [-2713.48485589, -2713.44632457, -2713.42063702, -2713.88796536]}
    for z, ev in pyg.items():
        np.testing.assert_allclose(np.array(Q.ATOMREF_HARTREE[z]) * 27.211386246, ev, atol=2e-5)


def test_bonds_sorted_symmetric_and_checked(small):
    d = small[0]
    assert d.edge_index.tolist() == [[1, 2, 3, 4, 0, 0, 0, 0], [0, 0, 0, 0, 1, 2, 3, 4]]
    for i in range(0, len(small), 7):
        e = small[i].edge_index
        assert e.dtype == torch.int64
        key = e[1] * 100 + e[0]
        assert torch.all(key[1:] > key[:-1])  # sorted by target, then source, no duplicates
        assert set(map(tuple, e.t().tolist())) == set(map(tuple, e.flip(0).t().tolist()))
    s = small.bond_stats
    flags = small.bond_flags.numpy()
    assert s["molecules"] == 600
    assert s["graph_mismatch"] == int(((flags & B.FLAG_GRAPH_MISMATCH) > 0).sum())
    assert s["rdkit_failed"] == 0 and s["smiles_unparsable"] == 0
    assert s["graph_mismatch"] <= 6  # useHueckel=True agrees with the SMILES for >99%
    assert "disagree with SMILES" in small.summary()


def _find(ds, smiles):
    return next(i for i, s in enumerate(ds.smiles) if s == smiles)


def test_bond_disagreement_and_fallbacks_are_counted(small, monkeypatch):
    i = _find(small, "CCO")  # ethanol
    d = small[i]
    z, pos = d.z.tolist(), d.pos.double().numpy()
    e, f = B.molecule_bonds(z, pos, "CCO")
    assert f == 0 and torch.equal(torch.from_numpy(e), d.edge_index)
    # same formula, other connectivity (dimethyl ether): same bond count, different graph
    _, f = B.molecule_bonds(z, pos, "COC")
    assert f & B.FLAG_GRAPH_MISMATCH and not f & B.FLAG_COUNT_MISMATCH
    _, f = B.molecule_bonds(z, pos, "C=CO")  # wrong composition -> SMILES not usable
    assert f & B.FLAG_SMILES_UNPARSABLE
    # RDKit failure: SMILES bonds mapped onto the geometry, then the distance rule
    monkeypatch.setattr(B, "_rdkit_bonds", lambda *a: (_ for _ in ()).throw(ValueError("boom")))
    e2, f = B.molecule_bonds(z, pos, "CCO")
    assert f & B.FLAG_RDKIT_FAILED and f & B.FLAG_FALLBACK_SMILES and not f & B.FLAG_GRAPH_MISMATCH
    assert np.array_equal(e2, e)
    e3, f = B.molecule_bonds(z, pos, None)
    assert f & B.FLAG_FALLBACK_DISTANCE and np.array_equal(e3, e)
    s = B.summarize_flags(np.array([0, B.FLAG_GRAPH_MISMATCH, B.FLAG_RDKIT_FAILED | B.FLAG_FALLBACK_DISTANCE]))
    assert s["graph_mismatch"] == 1 and s["rdkit_failed"] == 1 and s["fallback_distance"] == 1


def test_split_sizes_full_index_set():
    sp = split_indices()
    assert [len(sp[k]) for k in ("train", "val", "test")] == [110_000, 10_000, 10_831]
    allidx = torch.cat([sp["train"], sp["val"], sp["test"]])
    assert torch.equal(allidx.sort().values, torch.arange(130_831))
    assert torch.equal(split_indices()["test"], sp["test"])  # deterministic
    assert not torch.equal(split_indices(seed=1)["test"], sp["test"])
    sub = split_indices(train_size=1000)
    assert len(sub["train"]) == 1000 and torch.equal(sub["train"], sp["train"][:1000])
    assert torch.equal(sub["val"], sp["val"])
    with pytest.raises(ValueError):
        split_indices(train_size=200_000)


def test_dataloader_and_unknown_target(small):
    from torch_geometric.loader import DataLoader
    b = next(iter(DataLoader(small[:8], batch_size=8)))
    assert b.num_graphs == 8 and b.y.shape == (8, 12) and b.idx.tolist() == list(range(8))
    n0 = int((b.batch == 0).sum())
    assert int(b.edge_index[:, b.edge_index[1] >= n0].min()) >= n0  # offsets applied
    assert QM9(small.root, limit=600, target="gap").target_index == TARGETS.index("gap")
    with pytest.raises(ValueError, match="valid targets: mu, alpha"):
        QM9(small.root, limit=600, target="energy")


def test_missing_qm9pack_message(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "qm9pack" else real(n, *a))
    with pytest.raises(ImportError, match=r"pip install qm9pack.*pamnet-fast\[qm9\]"):
        Q.qm9pack_data_dir()


def test_cache_atomic_write(tmp_path, monkeypatch):
    p = tmp_path / "x.pt"
    C.atomic_torch_save({"a": torch.arange(3)}, p)
    real_save = torch.save

    def broken(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        C.atomic_torch_save({"a": torch.arange(5)}, p)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(torch.load(p)["a"], torch.arange(3))  # old file intact
    assert sorted(os.listdir(tmp_path)) == ["x.pt"]  # no temp file left


def test_corrupt_cache_is_rebuilt(tmp_path, small):
    ds = QM9(tmp_path, limit=40)
    ref = ds[39]
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
    size = ds.path.stat().st_size
    with open(ds.path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.warns(CacheWarning, match="corrupt"):
        ds2 = QM9(tmp_path, limit=40)
    assert torch.equal(ds2[39].pos, ref.pos) and torch.equal(ds2[39].edge_index, ref.edge_index)
    # flipped bytes inside a tensor (file still loadable) -> checksum mismatch
    obj = torch.load(ds2.path, weights_only=True)
    obj["tensors"]["pos"][0, 0] += 1.0
    torch.save(obj, ds2.path)
    with pytest.warns(CacheWarning, match="checksum"):
        ds3 = QM9(tmp_path, limit=40)
    assert torch.equal(ds3[0].pos, small[0].pos)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid cache loads silently
        QM9(tmp_path, limit=40)


def test_stale_cache_is_rebuilt(tmp_path, monkeypatch):
    src = Q.qm9pack_data_dir()
    fake = tmp_path / "src"
    fake.mkdir()
    with open(src / "qm9_part1.csv") as f:
        lines = [next(f) for _ in range(31)]
    (fake / "qm9_part1.csv").write_text("".join(lines))
    for name in ("qm9_part2.csv", "qm9_part3.csv"):
        (fake / name).write_text(lines[0])
    ds = QM9(tmp_path / "c", source_dir=fake)
    assert len(ds) == 30
    # processing options (format version) changed
    monkeypatch.setattr(Q, "FORMAT_VERSION", Q.FORMAT_VERSION + 100)
    with pytest.warns(CacheWarning, match="stale"):
        assert len(QM9(tmp_path / "c", source_dir=fake)) == 30
    # source files changed
    (fake / "qm9_part3.csv").write_text("".join(lines[:1] + lines[1:6]))
    with pytest.warns(CacheWarning, match="stale"):
        ds = QM9(tmp_path / "c", source_dir=fake)
    assert len(ds) == 35 and ds.mol_id[-1] == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        QM9(tmp_path / "c", source_dir=fake)


def test_compositions_fast_path_matches_items(small):
    from pamnet_fast.train.target_norm import dataset_compositions
    counts = small.compositions()
    assert counts.shape == (len(small), 119)
    for i in (0, 1, 77, len(small) - 1):
        assert torch.equal(counts[i], torch.bincount(small[i].z, minlength=119).double())
    sub = small[[5, 3, 400]]
    assert torch.equal(dataset_compositions(sub), counts[torch.tensor([5, 3, 400])])
