"""A small PDBbind-layout directory built from the real complex in ../shared/data/complexes/prolif_vina
(receptor, crystal ligand, 9 Vina poses), with made-up affinities: the layout, not the numbers, is real."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

IDS = ["1pv0", "1pv1", "1pv2", "1pv3", "1pv4", "1pv5", "1pv6", "1pv7", "1pv8", "1pv9"]
CORE = ["1pv3", "1pv7"]
AFFINITY = {c: 4.0 + 0.37 * k for k, c in enumerate(IDS)}


def complex_dir(shared_data) -> Path:
    return Path(shared_data) / "complexes" / "prolif_vina"


def crystal_ligand_sdf(shared_data, out: Path) -> Path:
    """The crystal ligand (lig.pdb, no bond orders) as SDF, bond orders from the docked poses' SDF
    (same molecule), coordinates from the crystal structure."""
    from rdkit import Chem
    from rdkit.Chem import AllChem
    d = complex_dir(shared_data)
    template = next(iter(Chem.SDMolSupplier(str(d / "vina_output.sdf"), removeHs=False)))
    crystal = Chem.MolFromPDBFile(str(d / "lig.pdb"), removeHs=False)
    mol = AllChem.AssignBondOrdersFromTemplate(Chem.RemoveHs(template), Chem.RemoveHs(crystal))
    mol = Chem.AddHs(mol, addCoords=True)
    mol.SetProp("_Name", "crystal")
    w = Chem.SDWriter(str(out))
    w.write(mol)
    w.close()
    return out


def pocket_pdb(shared_data, ligand_pos: np.ndarray, out: Path, radius: float = 10.0) -> Path:
    """PDBbind-style pocket file: the receptor's residues with an atom within ``radius`` Å of the ligand."""
    lines = (complex_dir(shared_data) / "rec.pdb").read_text().splitlines()
    atoms = [ln for ln in lines if ln.startswith(("ATOM", "HETATM"))]
    pos = np.array([[float(ln[30:38]), float(ln[38:46]), float(ln[46:54])] for ln in atoms])
    key = [(ln[21], ln[22:27]) for ln in atoms]
    d = np.sqrt(((pos[:, None] - ligand_pos[None]) ** 2).sum(-1)).min(1)
    near = {key[i] for i in np.flatnonzero(d <= radius)}
    out.write_text("\n".join([ln for ln, k in zip(atoms, key) if k in near] + ["END"]) + "\n")
    return out


def to_mol2(m) -> str:
    """A Tripos MOL2 block of an RDKit molecule (with H), SYBYL types as Corina/PDBbind write them
    (aromatic 'ar' bonds, N.am amides, N.pl3 for pyrrole-type NH, N.4 ammonium)."""
    from rdkit import Chem
    HT, BT = Chem.HybridizationType, Chem.BondType

    def carbonyl_c(a):
        return a.GetSymbol() == "C" and any(b.GetBondType() == BT.DOUBLE and b.GetOtherAtom(a).GetSymbol() == "O"
                                            for b in a.GetBonds())

    def amide_n(a):
        return a.GetSymbol() == "N" and not a.GetIsAromatic() and any(carbonyl_c(n) for n in a.GetNeighbors())

    def sybyl(a):
        s, h = a.GetSymbol(), a.GetHybridization()
        if s == "H":
            return "H"
        if a.GetIsAromatic():
            return "N.pl3" if s == "N" and a.GetTotalNumHs(True) else f"{s}.ar"
        if s == "N":
            if a.GetFormalCharge() == 1 and h == HT.SP3:
                return "N.4"
            return "N.am" if amide_n(a) else {HT.SP2: "N.pl3", HT.SP: "N.1"}.get(h, "N.3")
        if s in ("C", "O", "S"):
            return s + {HT.SP2: ".2", HT.SP: ".1"}.get(h, ".3")
        return s

    conf = m.GetConformer()
    lines = ["@<TRIPOS>MOLECULE", m.GetProp("_Name") if m.HasProp("_Name") else "LIG",
             f"{m.GetNumAtoms()} {m.GetNumBonds()} 1 0 0", "SMALL", "NO_CHARGES", "", "@<TRIPOS>ATOM"]
    for a in m.GetAtoms():
        p = conf.GetAtomPosition(a.GetIdx())
        lines.append(f"{a.GetIdx() + 1} {a.GetSymbol()}{a.GetIdx() + 1} {p.x:.4f} {p.y:.4f} {p.z:.4f} "
                     f"{sybyl(a)} 1 LIG 0.0000")
    lines.append("@<TRIPOS>BOND")
    for k, b in enumerate(m.GetBonds()):
        a1, a2 = b.GetBeginAtom(), b.GetEndAtom()
        if b.GetIsAromatic():
            order = "ar"
        elif b.GetBondType() == BT.SINGLE and ((amide_n(a1) and carbonyl_c(a2)) or (amide_n(a2) and carbonyl_c(a1))):
            order = "am"
        else:
            order = str(int(b.GetBondTypeAsDouble()))
        lines.append(f"{k + 1} {a1.GetIdx() + 1} {a2.GetIdx() + 1} {order}")
    return "\n".join(lines) + "\n"


def make_pdbbind_copy(shared_data, root: Path) -> Path:
    """``root`` laid out like PDBbind v2016: refined-set/<id>/ files and index/, a CoreSet.dat-free core
    list in INDEX_core_data.2016. id 1pv0 = crystal ligand with the full protein file; the others = Vina
    poses 0..8 with pocket files (1pv2's ligand as MOL2)."""
    from rdkit import Chem
    root = Path(root)
    refined = root / "refined-set"
    (refined / "index").mkdir(parents=True, exist_ok=True)
    d = complex_dir(shared_data)
    poses = [m for m in Chem.SDMolSupplier(str(d / "vina_output.sdf"), removeHs=False)]
    for k, code in enumerate(IDS):
        cdir = refined / code
        cdir.mkdir(exist_ok=True)
        lig = cdir / f"{code}_ligand.sdf"
        if k == 0:
            crystal_ligand_sdf(shared_data, lig)
            shutil.copy(d / "rec.pdb", cdir / f"{code}_protein.pdb")
        else:
            m = poses[k - 1]
            m.SetProp("_Name", f"pose{k - 1}")
            if k == 2:  # one MOL2 ligand (PDBbind ships both; the reader prefers MOL2)
                lig.with_suffix(".mol2").write_text(to_mol2(m))
            else:
                w = Chem.SDWriter(str(lig))
                w.write(m)
                w.close()
            heavy = np.array([p for a, p in zip(m.GetAtoms(), m.GetConformer().GetPositions())
                              if a.GetAtomicNum() > 1])
            pocket_pdb(shared_data, heavy, cdir / f"{code}_pocket.pdb")
    header = ("# made-up affinities for tests\n"
              "# PDB code, resolution, release year, -logKd/Ki, Kd/Ki, reference, ligand name\n")
    (refined / "index" / "INDEX_refined_data.2016").write_text(header + "".join(
        f"{c}  2.00  2016   {AFFINITY[c]:.2f}  Kd=1uM  // test.pdf (LIG)\n" for c in IDS))
    (refined / "index" / "INDEX_core_data.2016").write_text(header + "".join(
        f"{c}  2.00  2016   {AFFINITY[c]:.2f}  Kd=1uM  // test.pdf (LIG)\n" for c in CORE))
    return root
