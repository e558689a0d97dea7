r"""Protein-ligand complexes: readers, the paper's 18 atom features (with RDKit), pocket extraction.

A complex becomes one PyG ``Data`` with ``x [N, F]`` (pocket atoms first, then ligand atoms),
``pos [N, 3]`` (Å, float32) and ``ligand [N]`` (bool): the ΔG head
(:class:`pamnet_fast.nn.ProteinLigandHead`) turns a collated batch of these into the complex, pocket
and ligand graphs of each sample.

Atom features (PAMNet's PDBbind featurization, originally openbabel/pybel via tfbio; here RDKit):

====  ==========================================================================================
0-8   element class one-hot: B, C, N, O, P, S, Se, halogen (F, Cl, Br, I), metal
9     hybridization by RDKit (1 sp, 2 sp2, 3 sp3 and hypervalent, 0 other; conjugated N/O are sp2)
10    heavy-atom degree (bonded non-H neighbours)
11    hetero-atom degree (bonded neighbours other than C and H)
12    Gasteiger partial charge (0 where RDKit has no parameters, e.g. metals)
13-17 hydrophobic, aromatic, H-bond acceptor, H-bond donor, in ring (tfbio's SMARTS patterns)
(18)  optional protein/ligand flag: -1 protein, +1 ligand (``ligand_flag=True``)
====  ==========================================================================================

Hydrogens take part in the chemistry (H counts, charges) and are then removed: every graph holds heavy
atoms only. Protein residues get their bond orders from standard amino-acid templates (RDKit's
``MolFromSequence``, matched by PDB atom name); other residues (cofactors, modified residues) are
bonded by distance with single bonds; waters are dropped, metal ions kept unbonded.
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from .errors import InputDataError

FEATURE_NAMES = ("B", "C", "N", "O", "P", "S", "Se", "halogen", "metal", "hyb", "heavydegree",
                 "heterodegree", "partialcharge", "hydrophobic", "aromatic", "acceptor", "donor", "ring")
NUM_FEATURES = len(FEATURE_NAMES)  # 18

_METALS = ([3, 4, 11, 12, 13] + list(range(19, 32)) + list(range(37, 51)) + list(range(55, 84))
           + list(range(87, 104)))
ELEMENT_CLASS: Dict[int, int] = {5: 0, 6: 1, 7: 2, 8: 3, 15: 4, 16: 5, 34: 6,
                                 **{z: 7 for z in (9, 17, 35, 53)}, **{z: 8 for z in _METALS}}
# tfbio's SMARTS for hydrophobic, aromatic, acceptor, donor, ring (as used by the PAMNet authors).
SMARTS = ("[#6+0!$(*~[#7,#8,F]),SH0+0v2,s+0,S^3,Cl+0,Br+0,I+0]",
          "[a]",
          "[!$([#1,#6,F,Cl,Br,I,o,s,nX3,#7v5,#15v5,#16v4,#16v6,*+1,*+2,*+3])]",
          "[!$([#6,H0,-,-2,-3]),$([!H0;#7,#8,#9])]",
          "[r]")
AMINO_ACIDS = {"ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E",
               "GLY": "G", "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F",
               "PRO": "P", "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V",
               # common protonation-state / variant names of MD and docking tools
               "HID": "H", "HIE": "H", "HIP": "H", "HSD": "H", "HSE": "H", "HSP": "H", "CYX": "C",
               "CYM": "C", "ASH": "D", "GLH": "E", "LYN": "K"}
WATERS = {"HOH", "WAT", "H2O", "DOD", "TIP", "TIP3", "SOL"}


class ComplexError(InputDataError):
    """A receptor or ligand file that cannot be used (unreadable, empty, or not matching)."""


# ----------------------------------------------------------------------------- atom features
@lru_cache(maxsize=1)
def _patterns():
    from rdkit import Chem
    return [Chem.MolFromSmarts(s) for s in SMARTS]


def atom_features(mol) -> np.ndarray:
    """The 18 features of every atom of a sanitized RDKit molecule (hydrogens included if present):
    ``[num_atoms, 18]`` float32. Charges are computed on ``mol`` as given (explicit H count)."""
    from rdkit.Chem import rdPartialCharges
    from rdkit.Chem.rdchem import HybridizationType as H
    n = mol.GetNumAtoms()
    out = np.zeros((n, NUM_FEATURES), dtype=np.float32)
    hyb = {H.SP: 1, H.SP2: 2, H.SP3: 3, H.SP3D: 3, H.SP3D2: 3}
    try:
        rdPartialCharges.ComputeGasteigerCharges(mol, 12, False)
    except Exception:  # unsupported atoms: charges stay 0
        pass
    for a in mol.GetAtoms():
        i = a.GetIdx()
        cls = ELEMENT_CLASS.get(a.GetAtomicNum())
        if cls is not None:
            out[i, cls] = 1.0
        out[i, 9] = hyb.get(a.GetHybridization(), 0)
        nbrs = [b.GetAtomicNum() for b in a.GetNeighbors()]
        out[i, 10] = sum(1 for z in nbrs if z > 1)
        out[i, 11] = sum(1 for z in nbrs if z not in (1, 6))
        q = a.GetDoubleProp("_GasteigerCharge") if a.HasProp("_GasteigerCharge") else 0.0
        out[i, 12] = q if np.isfinite(q) else 0.0
    for k, patt in enumerate(_patterns()):
        for match in mol.GetSubstructMatches(patt, uniquify=True, maxMatches=10 * n + 10):
            out[match[0], 13 + k] = 1.0
    return out


def _sanitize(mol, what: str):
    """Full sanitization, or (for unusual valences) everything but the valence check."""
    from rdkit import Chem
    try:
        Chem.SanitizeMol(mol)
    except Exception:
        try:
            mol.UpdatePropertyCache(strict=False)
            Chem.SanitizeMol(mol, Chem.SanitizeFlags.SANITIZE_ALL ^ Chem.SanitizeFlags.SANITIZE_PROPERTIES,
                             catchErrors=False)
        except Exception as e:
            raise ComplexError(f"{what}: RDKit cannot sanitize the molecule: {e}") from e
    return mol


def _heavy(mol, x: np.ndarray, ligand_flag: Optional[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Features and coordinates of the heavy atoms (optionally with the protein/ligand flag)."""
    keep = np.array([a.GetAtomicNum() > 1 for a in mol.GetAtoms()], dtype=bool)
    pos = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)[keep]
    x = x[keep]
    if ligand_flag is not None:
        x = np.concatenate([x, np.full((x.shape[0], 1), ligand_flag, dtype=np.float32)], 1)
    return x, pos


# ----------------------------------------------------------------------------- ligands
class Ligand(NamedTuple):
    """One ligand (pose): name, heavy-atom features ``[n, F]``, coordinates ``[n, 3]`` and the SD
    properties of its record (e.g. Vina's ``minimizedAffinity``)."""
    name: str
    x: np.ndarray
    pos: np.ndarray
    props: Dict[str, str]


def _read_text(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt") as f:
            return f.read()
    return path.read_text()


def _ligand_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    fmt = suffixes[-1].lstrip(".") if suffixes else ""
    if fmt in ("sdf", "mol", "sd"):
        return "sdf"
    if fmt == "mol2":
        return "mol2"
    if fmt in ("pdb", "ent", "cif", "mmcif", "pdbqt"):
        raise ComplexError(f"{path}: ligands must be SDF or MOL2 (PDB/PDBQT/mmCIF files have no bond "
                           f"orders, so the ligand's chemistry - aromaticity, charges, donors - is ambiguous)")
    raise ComplexError(f"{path}: unknown ligand format {fmt or '(no suffix)'!r}; use .sdf or .mol2")


def read_ligands(path, ligand_flag: bool = False) -> List[Ligand]:
    """Every molecule of an SDF (multi-pose) or MOL2 file, featurized. Raises :class:`ComplexError`
    naming the file and record when one cannot be read."""
    from rdkit import Chem
    path = Path(path)
    if not path.is_file():
        raise ComplexError(f"ligand file {path} does not exist")
    fmt = _ligand_format(path)
    text = _read_text(path)
    if fmt == "sdf":
        sup = Chem.SDMolSupplier()
        sup.SetData(text, sanitize=False, removeHs=False)
        mols = []
        for k in range(len(sup)):
            m = sup[k]
            props = {p: m.GetProp(p) for p in m.GetPropNames()} if m is not None else {}
            mols.append((k, m, props))
    else:
        blocks = ["@<TRIPOS>MOLECULE" + b for b in text.split("@<TRIPOS>MOLECULE")[1:]]
        if not blocks:
            raise ComplexError(f"{path}: no @<TRIPOS>MOLECULE record (not a MOL2 file?)")
        # RDKit's own MOL2 clean-up (charges of N.4, carboxylates...) runs only with sanitize=True
        mols = [(k, Chem.MolFromMol2Block(b, sanitize=True, removeHs=False) or
                 Chem.MolFromMol2Block(b, sanitize=False, removeHs=False), {}) for k, b in enumerate(blocks)]
    if not mols:
        raise ComplexError(f"{path}: no molecules in the file")
    out = []
    for k, m, props in mols:
        what = f"{path} (molecule {k})"
        if m is None or m.GetNumAtoms() == 0:
            raise ComplexError(f"{what}: RDKit could not parse the record")
        if m.GetNumConformers() == 0 or not m.GetConformer().Is3D() and \
                not np.abs(m.GetConformer().GetPositions()[:, 2]).any():
            raise ComplexError(f"{what}: the ligand has no 3D coordinates")
        _sanitize(m, what)
        x, pos = _heavy(m, atom_features(m), 1.0 if ligand_flag else None)
        if len(pos) == 0:
            raise ComplexError(f"{what}: no heavy atoms")
        name = m.GetProp("_Name").strip() if m.HasProp("_Name") else ""
        out.append(Ligand(name or f"pose{k}", x, pos, props))
    return out


def vina_score(props: Dict[str, str]) -> Optional[float]:
    """The docking score stored with a pose: Vina/Smina/Gnina ``minimizedAffinity``, or the first
    number of a ``REMARK VINA RESULT`` line kept by Open Babel conversions; ``None`` if absent."""
    for key in ("minimizedAffinity", "vina_score", "VINA_SCORE", "docking_score", "score"):
        if key in props:
            try:
                return float(props[key].split()[0])
            except (ValueError, IndexError):
                pass
    for v in props.values():
        if "VINA RESULT" in v:
            try:
                return float(v.split("VINA RESULT:")[1].split()[0])
            except (ValueError, IndexError):
                pass
    return None


# ----------------------------------------------------------------------------- proteins
@lru_cache(maxsize=None)
def _residue_template(code: str) -> Dict[Tuple[str, str], int]:
    """Kekulé bond orders of a standard amino acid by PDB atom-name pair (RDKit's MolFromSequence)."""
    from rdkit import Chem
    m = Chem.MolFromSequence(code)
    Chem.Kekulize(m, clearAromaticFlags=True)
    bonds = {}
    for b in m.GetBonds():
        a, c = (x.GetPDBResidueInfo().GetName().strip() for x in (b.GetBeginAtom(), b.GetEndAtom()))
        bonds[(a, c)] = bonds[(c, a)] = int(b.GetBondTypeAsDouble())
    return bonds


_COVALENT = {1: 0.31, 5: 0.84, 6: 0.76, 7: 0.71, 8: 0.66, 9: 0.57, 15: 1.07, 16: 1.05, 17: 1.02,
             34: 1.20, 35: 1.20, 53: 1.39}


class Protein(NamedTuple):
    """Heavy atoms of a receptor: residue index of each atom and the residue names/atoms."""
    path: str
    pos: np.ndarray          # [N, 3]
    z: np.ndarray            # [N]
    atom_name: List[str]
    residue: np.ndarray      # [N] residue index
    residue_name: List[str]  # per residue
    chain_break: np.ndarray  # [R] residue r is the first of its chain (no peptide bond to r - 1)


def read_protein(path) -> Protein:
    """Heavy atoms of a PDB/mmCIF receptor (gzipped or not) with gemmi: first model, first
    alternative conformation, no hydrogens, no waters."""
    try:
        import gemmi
    except ImportError as exc:
        raise ImportError("reading receptors needs gemmi: pip install gemmi") from exc
    path = Path(path)
    if not path.is_file():
        raise ComplexError(f"receptor file {path} does not exist")
    low = path.name.lower()
    if low.endswith((".sdf", ".mol2", ".sdf.gz", ".mol", ".xyz")):
        raise ComplexError(f"{path}: a receptor must be a PDB or mmCIF file (got a small-molecule format; "
                           f"did you swap --receptor and --ligand?)")
    try:
        st = gemmi.read_structure(str(path))
    except Exception as e:
        raise ComplexError(f"{path}: gemmi cannot read it as PDB/mmCIF: {e}") from e
    if len(st) == 0:
        raise ComplexError(f"{path}: no models (no ATOM/HETATM records)")
    st.remove_alternative_conformations()
    st.remove_hydrogens()
    pos, z, names, res, res_names, breaks = [], [], [], [], [], []
    for chain in st[0]:
        first = True
        for r in chain:
            if r.name.upper() in WATERS:
                continue
            atoms = [a for a in r if a.element.atomic_number > 1]
            if not atoms:
                continue
            ri = len(res_names)
            res_names.append(r.name.upper())
            breaks.append(first)
            first = False
            for a in atoms:
                pos.append((a.pos.x, a.pos.y, a.pos.z))
                z.append(a.element.atomic_number)
                names.append(a.name.strip().upper())
                res.append(ri)
    if not pos:
        raise ComplexError(f"{path}: no protein heavy atoms")
    return Protein(str(path), np.asarray(pos, dtype=np.float64), np.asarray(z, dtype=np.int64), names,
                   np.asarray(res, dtype=np.int64), res_names, np.asarray(breaks, dtype=bool))


def protein_molecule(prot: Protein, residues: np.ndarray):
    """RDKit molecule (implicit hydrogens) of the given residues: template bond orders for amino
    acids, peptide bonds between consecutive residues (C-N ≤ 1.75 Å), disulfides (SG-SG ≤ 2.3 Å),
    distance bonds (single) inside other residues. Returns ``(mol, atom_ids)``: the protein atom of
    each molecule atom."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D
    residues = np.unique(residues)
    atom_ids = np.flatnonzero(np.isin(prot.residue, residues))
    rw = Chem.RWMol()
    conf = Chem.Conformer(len(atom_ids))
    index_of: Dict[Tuple[int, str], int] = {}
    for k, i in enumerate(atom_ids):
        a = Chem.Atom(int(prot.z[i]))
        if ELEMENT_CLASS.get(int(prot.z[i])) == 8:  # metal ions: no implicit H, no bonds
            a.SetNoImplicit(True)
        rw.AddAtom(a)
        conf.SetAtomPosition(k, Point3D(*prot.pos[i]))
        index_of[(int(prot.residue[i]), prot.atom_name[i])] = k
    pos = prot.pos[atom_ids]
    res_of = prot.residue[atom_ids]

    def bond(a: int, b: int, order: int):
        if a != b and rw.GetBondBetweenAtoms(a, b) is None:
            rw.AddBond(a, b, Chem.BondType.DOUBLE if order == 2 else
                       Chem.BondType.TRIPLE if order == 3 else Chem.BondType.SINGLE)

    starts = np.searchsorted(res_of, residues)
    ends = np.searchsorted(res_of, residues, side="right")
    for r, s, e in zip(residues.tolist(), starts, ends):
        code = AMINO_ACIDS.get(prot.residue_name[r])
        local = list(range(s, e))
        unmatched = local
        if code is not None:
            tpl = _residue_template(code)
            names = {a for a, _ in tpl}
            for p in local:
                for q in local:
                    if p < q:
                        order = tpl.get((prot.atom_name[atom_ids[p]], prot.atom_name[atom_ids[q]]))
                        if order is not None:
                            bond(p, q, order)
            # atoms the template does not name (force-field names such as OT1/OT2 or ILE CD)
            unmatched = [p for p in local if prot.atom_name[atom_ids[p]] not in names]
        if unmatched:  # cofactors, modified residues, unnamed atoms: single bonds by covalent radii
            for p in unmatched:
                zp = int(prot.z[atom_ids[p]])
                if zp not in _COVALENT:
                    continue
                for q in local:
                    zq = int(prot.z[atom_ids[q]])
                    if p != q and zq in _COVALENT and \
                            np.linalg.norm(pos[p] - pos[q]) <= _COVALENT[zp] + _COVALENT[zq] + 0.4:
                        bond(p, q, 1)
        # peptide bond to the previous residue of the chain
        if not prot.chain_break[r]:
            c, n = index_of.get((r - 1, "C")), index_of.get((r, "N"))
            if c is not None and n is not None and np.linalg.norm(pos[c] - pos[n]) <= 1.75:
                bond(c, n, 1)
    sg = [k for (r, name), k in index_of.items() if name == "SG"]
    for i, a in enumerate(sg):
        for b in sg[i + 1:]:
            if np.linalg.norm(pos[a] - pos[b]) <= 2.3:
                bond(a, b, 1)
    mol = rw.GetMol()
    mol.AddConformer(conf, assignId=True)
    _sanitize(mol, prot.path)
    return mol, atom_ids


def pocket_indices(pos: np.ndarray, ligand_pos: np.ndarray, cutoff: float) -> np.ndarray:
    """Sorted indices of the atoms of ``pos`` within ``cutoff`` Å of any ligand atom."""
    from scipy.spatial import cKDTree
    if len(pos) == 0 or len(ligand_pos) == 0:
        return np.zeros(0, dtype=np.int64)
    near = cKDTree(ligand_pos).query(pos, k=1, distance_upper_bound=cutoff)[0]
    return np.flatnonzero(near <= cutoff)


class Pocket(NamedTuple):
    x: np.ndarray    # [n, F]
    pos: np.ndarray  # [n, 3]
    atom_ids: np.ndarray  # [n] heavy-atom index in the receptor


class ReceptorFeatures:
    """Features of the receptor atoms near a set of ligand poses, computed once for all poses.

    Residues with an atom within ``margin`` Å of any pose form the molecule whose chemistry is
    perceived (10 Å, PDBbind's pocket definition): a pocket atom within ``cutoff`` ≤ ``margin`` - 3 Å
    of the ligand is then at least ~3 Å inside, so its bonded neighbourhood is complete and its
    features equal those computed on the whole receptor (tested). The ring flag of receptor atoms
    counts rings within one residue (side-chain rings, not disulfide-closed macrocycles).
    """

    def __init__(self, protein: Protein, ligand_pos: Sequence[np.ndarray], margin: float = 10.0,
                 ligand_flag: bool = False):
        allpos = np.concatenate(list(ligand_pos), 0)
        near = pocket_indices(protein.pos, allpos, margin)
        if len(near) == 0:
            raise ComplexError(f"{protein.path}: no receptor atom within {margin} Å of the ligand; do the "
                               f"receptor and ligand files belong to the same complex and frame?")
        mol, self.atom_ids = protein_molecule(protein, protein.residue[near])
        x = atom_features(mol)
        # Ring flag: rings inside one residue only. Disulfides close backbone macrocycles whose extent
        # would depend on how much of the protein is loaded; side-chain rings do not.
        res = protein.residue[self.atom_ids]
        x[:, 17] = 0.0
        for ring in mol.GetRingInfo().AtomRings():
            if len({int(res[a]) for a in ring}) == 1:
                x[list(ring), 17] = 1.0
        if ligand_flag:
            x = np.concatenate([x, np.full((len(x), 1), -1.0, dtype=np.float32)], 1)
        self.x, self.pos, self.margin = x, protein.pos[self.atom_ids], margin
        self.protein = protein

    def pocket(self, ligand_pos: np.ndarray, cutoff: float = 6.0) -> Pocket:
        """Receptor heavy atoms within ``cutoff`` Å of any ligand heavy atom."""
        if cutoff > self.margin - 3.0:
            raise ValueError(f"pocket cutoff {cutoff} Å needs a feature margin of at least {cutoff + 3} Å "
                             f"(got {self.margin})")
        idx = pocket_indices(self.pos, ligand_pos, cutoff)
        if len(idx) == 0:
            raise ComplexError(f"{self.protein.path}: no receptor atom within {cutoff} Å of the ligand; do "
                               f"the receptor and ligand files belong to the same complex and frame?")
        # heavy atoms never come closer than ~1.2 Å (a covalent bond); overlapping atoms mean the
        # receptor file still holds this ligand (or a copy of it)
        overlap = len(pocket_indices(ligand_pos, self.pos[idx], 0.5))
        if overlap >= max(3, len(ligand_pos) // 2):
            raise ComplexError(f"{self.protein.path}: {overlap} of the {len(ligand_pos)} ligand atoms sit on "
                               f"receptor atoms (< 0.5 Å); the receptor file seems to contain the ligand "
                               f"itself: remove it (HETATM records) from the receptor")
        return Pocket(self.x[idx], self.pos[idx], self.atom_ids[idx])


# ----------------------------------------------------------------------------- complexes
def complex_data(pocket_x: np.ndarray, pocket_pos: np.ndarray, ligand_x: np.ndarray,
                 ligand_pos: np.ndarray, y: Optional[float] = None, **extra):
    """One complex as a PyG ``Data``: ``x``, ``pos`` (pocket atoms, then ligand atoms), ``ligand``
    (bool mask) and optionally ``y [1, 1]``."""
    from torch_geometric.data import Data
    x = torch.from_numpy(np.concatenate([pocket_x, ligand_x]).astype(np.float32))
    pos = torch.from_numpy(np.concatenate([pocket_pos, ligand_pos]).astype(np.float32))
    lig = torch.zeros(len(pos), dtype=torch.bool)
    lig[len(pocket_pos):] = True
    d = Data(x=x, pos=pos, ligand=lig, **extra)
    if y is not None:
        d.y = torch.tensor([[float(y)]], dtype=torch.float32)
    return d


def load_complexes(receptor, ligand, cutoff: float = 6.0, ligand_flag: bool = False,
                   margin: float = 10.0) -> Tuple[list, List[Ligand]]:
    """Every pose of ``ligand`` (SDF/MOL2) in ``receptor`` (PDB/mmCIF) as complex ``Data`` (see
    :func:`complex_data`), each with its own pocket; also returns the ligands (names, SD props)."""
    protein = read_protein(receptor)
    ligands = read_ligands(ligand, ligand_flag)
    feats = ReceptorFeatures(protein, [l.pos for l in ligands], margin=max(margin, cutoff + 3.0),
                             ligand_flag=ligand_flag)
    data = []
    for k, lig in enumerate(ligands):
        p = feats.pocket(lig.pos, cutoff)
        data.append(complex_data(p.x, p.pos, lig.x, lig.pos, idx=torch.tensor(k)))
    return data, ligands


def find_file(directory, stem: str, suffixes: Sequence[str]) -> Optional[Path]:
    """``directory/stem + suffix`` for the first suffix that exists (also gzipped)."""
    for s in suffixes:
        for cand in (Path(directory) / f"{stem}{s}", Path(directory) / f"{stem}{s}.gz"):
            if cand.is_file():
                return cand
    return None


__all__ = ["FEATURE_NAMES", "NUM_FEATURES", "ComplexError", "Ligand", "Protein", "ReceptorFeatures",
           "atom_features", "read_ligands", "read_protein", "protein_molecule", "pocket_indices",
           "complex_data", "load_complexes", "vina_score", "find_file"]
