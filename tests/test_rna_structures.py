"""Structure I/O (PDB/mmCIF, selections, errors) and RMSD after Kabsch superposition."""
import gzip
import math

import numpy as np
import pytest
import torch

gemmi = pytest.importorskip("gemmi")

from pamnet_fast.data.structures import (AtomId, Structure, kabsch, match_atoms,  # noqa: E402
                                         read_rna_structure, read_structure, read_tu_structures, rmsd)


def _atom(serial, name, alt, res, chain, num, x, y, z, el, het=False):
    rec = "HETATM" if het else "ATOM  "
    return (f"{rec}{serial:5d} {name:<4s}{alt:1s}{res:>3s} {chain:1s}{num:4d}    "
            f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00          {el:>2s}")


# Chain A: RNA (G1 with P and an alternate location of C1', C2); chain B: one alanine; a water and a
# hydrogen that are always dropped.
ATOMS = [
    ("P", "", "G", "A", 1, 0.0, 0.0, 0.0, "P"), ("OP1", "", "G", "A", 1, 1.4, 0.0, 0.0, "O"),
    ("O5'", "", "G", "A", 1, 0.0, 1.5, 0.0, "O"), ("C5'", "", "G", "A", 1, 0.0, 2.9, 0.3, "C"),
    ("C1'", "A", "G", "A", 1, 1.0, 3.5, 1.0, "C"), ("C1'", "B", "G", "A", 1, 9.0, 9.0, 9.0, "C"),
    ("N9", "", "G", "A", 1, 2.0, 4.0, 1.5, "N"), ("H1'", "", "G", "A", 1, 0.5, 3.9, 1.8, "H"),
    ("P", "", "C", "A", 2, 3.0, 5.0, 2.0, "P"), ("O5'", "", "C", "A", 2, 4.0, 5.5, 2.5, "O"),
    ("C5'", "", "C", "A", 2, 5.0, 6.0, 2.0, "C"), ("N1", "", "C", "A", 2, 6.0, 6.5, 3.0, "N"),
    ("N", "", "ALA", "B", 1, 10.0, 0.0, 0.0, "N"), ("CA", "", "ALA", "B", 1, 11.4, 0.0, 0.0, "C"),
    ("C", "", "ALA", "B", 1, 12.0, 1.3, 0.0, "C"), ("O", "", "ALA", "B", 1, 13.2, 1.4, 0.0, "O"),
]


@pytest.fixture(scope="module")
def pdb_text():
    lines = [_atom(k + 1, *a) for k, a in enumerate(ATOMS)]
    lines.append(_atom(len(ATOMS) + 1, "O", "", "HOH", "B", 101, 20.0, 20.0, 20.0, "O", het=True))
    return "\n".join(lines + ["TER", "END"]) + "\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory, pdb_text):
    d = tmp_path_factory.mktemp("structs")
    pdb = d / "two_chains.pdb"
    pdb.write_text(pdb_text)
    gz = d / "two_chains.pdb.gz"
    gz.write_bytes(gzip.compress(pdb_text.encode()))
    st = gemmi.read_structure(str(pdb))
    st.setup_entities()
    cif = d / "two_chains.cif"
    st.make_mmcif_document().write_file(str(cif))
    cifgz = d / "two_chains.cif.gz"
    cifgz.write_bytes(gzip.compress(cif.read_bytes()))
    return {"pdb": pdb, "pdb.gz": gz, "cif": cif, "cif.gz": cifgz, "dir": d}


@pytest.mark.parametrize("kind", ["pdb", "pdb.gz", "cif", "cif.gz"])
def test_read_formats_and_selections(files, kind):
    path = files[kind]
    allh = read_structure(path)
    # heavy atoms only, water and H removed, altloc B of C1' dropped: 16 atoms minus H minus altloc B
    assert allh.pos.shape == (14, 3) and allh.name == "two_chains"
    c1 = [k for k, a in enumerate(allh.atoms) if a.name == "C1'"]
    assert len(c1) == 1 and allh.pos[c1[0]].tolist() == [1.0, 3.5, 1.0]  # the first altloc
    rna = read_rna_structure(path)
    assert [a.name for a in rna.atoms] == ["OP1", "O5'", "C5'", "C1'", "N9", "O5'", "C5'", "N1"]
    assert rna.z.tolist() == [8, 8, 6, 6, 7, 8, 6, 7]
    assert rna.atoms[0] == AtomId("A", 1, "", "G", "OP1")
    with_p = read_rna_structure(path, keep_phosphorus=True)
    assert with_p.pos.size(0) == 10 and (with_p.z == 15).sum() == 2
    prot = read_structure(path, polymer="protein")
    assert {a.chain for a in prot.atoms} == {"B"} and prot.pos.size(0) == 4
    assert read_structure(path, chains=["B"]).pos.size(0) == 4
    assert [a.residue for a in read_rna_structure(path, residues="2-2").atoms] == [2, 2, 2]
    assert read_rna_structure(path, residues=(1, 1)).pos.size(0) == 5


def test_read_errors(files, tmp_path):
    with pytest.raises(ValueError, match=r"no chain \['Z'\].*chains: \['A', 'B'\]"):
        read_structure(files["pdb"], chains=["Z"])
    with pytest.raises(ValueError, match="no atoms selected"):
        read_rna_structure(files["pdb"], chains=["B"])
    with pytest.raises(ValueError, match="no atoms selected"):
        read_rna_structure(files["pdb"], residues="5-9")
    with pytest.raises(ValueError, match="polymer must be one of"):
        read_structure(files["pdb"], polymer="sugar")
    with pytest.raises(ValueError, match="FIRST-LAST"):
        read_structure(files["pdb"], residues="a-b")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_structure(tmp_path / "missing.pdb")
    junk = tmp_path / "junk.pdb"
    junk.write_text("this is not a structure\n")
    with pytest.raises(ValueError, match="junk.pdb"):
        read_structure(junk)
    broken = tmp_path / "broken.cif"
    broken.write_text("data_x\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1 2 3\n")
    with pytest.raises(ValueError, match="broken.cif"):
        read_structure(broken)
    with pytest.raises(ValueError, match="model=3"):
        read_structure(files["pdb"], model=3)


def test_missing_coordinates_are_an_error(files, tmp_path):
    text = files["cif"].read_text().splitlines()
    # blank out one coordinate of an RNA atom in the mmCIF atom_site loop
    for k, line in enumerate(text):
        if line.startswith("ATOM") and " N9 " in line:
            parts = line.split()
            xi = parts.index("2")  # x coordinate of N9 is 2 (written as '2' or '2.0...')
            parts[xi] = "?"
            text[k] = " ".join(parts)
            break
    else:
        pytest.skip("unexpected mmCIF layout")
    bad = tmp_path / "missing_xyz.cif"
    bad.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match="missing or non-finite coordinates"):
        read_rna_structure(bad)


# ----------------------------------------------------------------------------- RMSD
def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def test_rmsd_hand_computed():
    # Four points at distance 1 from their centroid; b = 2 a, rotated and shifted. The optimal
    # rotation undoes the rotation (the scaling is symmetric), leaving |2a - a| = 1 for every atom.
    a = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])
    R = _random_rotation(np.random.default_rng(0))
    b = (2 * a) @ R.T + np.array([3.0, -1.0, 7.0])
    res = rmsd(a, b)
    assert res.rmsd == pytest.approx(1.0, abs=1e-12) and res.n == 4
    assert np.allclose(res.rotation, R, atol=1e-10)
    # identical up to a rigid motion: 0; a mirror image is not superposable (no reflections)
    assert rmsd(torch.tensor(a), torch.tensor(a @ R.T + 5)).rmsd == pytest.approx(0.0, abs=1e-12)
    tet = np.array([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3]])
    mirror = tet * np.array([1, 1, -1])
    assert rmsd(tet, mirror).rmsd > 0.3
    with pytest.raises(ValueError, match="same number of atoms"):
        rmsd(a, b[:3])
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        rmsd(a[:, :2], b[:, :2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rmsd_matches_gemmi_random(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(50, 3)) * 10
    b = a @ _random_rotation(rng).T + rng.normal(size=3) * 5 + rng.normal(size=(50, 3)) * rng.uniform(0.1, 3)
    ref = gemmi.superpose_positions([gemmi.Position(*p) for p in b], [gemmi.Position(*p) for p in a])
    value, R, t = kabsch(a, b)
    assert value == pytest.approx(ref.rmsd, rel=1e-9)
    assert np.sqrt(((a @ R.T + t - b) ** 2).sum(1).mean()) == pytest.approx(value, rel=1e-12)


def test_rmsd_matches_by_name_and_reports_unmatched():
    rng = np.random.default_rng(3)
    ids = [AtomId("A", r, "", "G", n) for r in range(1, 6) for n in ("C1'", "N9", "O5'")]
    pos = rng.normal(size=(15, 3)) * 5
    a = Structure("a", torch.tensor(pos), torch.full((15,), 6), ids)
    perm = rng.permutation(15)[:12]  # b: shuffled, three atoms missing, one extra atom
    bpos = pos[perm] @ _random_rotation(rng).T + 2.0
    bids = [ids[i] for i in perm] + [AtomId("A", 9, "", "C", "N1")]
    b = Structure("b", torch.tensor(np.vstack([bpos, np.zeros((1, 3))])), torch.full((13,), 6), bids)
    res = rmsd(a, b)
    assert res.n == 12 and res.rmsd == pytest.approx(0.0, abs=1e-9)
    assert sorted(res.unmatched_a) == sorted(ids[i] for i in set(range(15)) - set(perm.tolist()))
    assert res.unmatched_b == [AtomId("A", 9, "", "C", "N1")]
    # another chain name matches only with ignore_chain
    c = b._replace(atoms=[x._replace(chain="X") for x in bids])
    with pytest.raises(ValueError, match="only 0 matched"):
        rmsd(a, c)
    assert rmsd(a, c, ignore_chain=True).n == 12
    dup = a._replace(atoms=ids[:-1] + [ids[0]])
    with pytest.raises(ValueError, match="twice"):
        match_atoms(dup, b)


@pytest.mark.slow
def test_rp13_models_rmsd_against_gemmi_and_tu_native(shared_data):
    d = shared_data / "rna_decoys" / "rp13"
    sol = read_rna_structure(d / "13_0_solution_4XW7_rpr.pdb")
    # the TU native of puzzle 13 is this solution's C/N/O atoms, in file order
    tu = [s for s in read_tu_structures(shared_data / "rna_puzzles_native") if "puzzle_13_" in s.name][0]
    assert torch.equal(tu.pos, sol.pos) and torch.equal(tu.z, sol.z)
    model = read_rna_structure(d / "DASLAB_Problem13_Rank1.pdb")
    res = rmsd(model, sol)
    # the solution lacks residues 46-56 of the models: 224 model atoms unmatched, none of the solution
    assert res.n == sol.pos.size(0) == 1235 and len(res.unmatched_a) == 224 and not res.unmatched_b
    assert {a.residue for a in res.unmatched_a} == set(range(46, 57))
    ia, ib, _, _ = match_atoms(model, sol)
    ref = gemmi.superpose_positions([gemmi.Position(*p) for p in sol.pos.double().numpy()[ib]],
                                    [gemmi.Position(*p) for p in model.pos.double().numpy()[ia]])
    assert res.rmsd == pytest.approx(ref.rmsd, rel=1e-9) and 5.0 < res.rmsd < 10.0
    assert math.isfinite(res.rmsd)
