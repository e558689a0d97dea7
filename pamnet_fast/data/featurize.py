"""RDKit featurization of heavy-atom molecular graphs for PhysChem (Yang et al., NeurIPS 2021).

Atom features (34): element one-hot over B, C, N, O, F, Si, P, S, Cl, As, Se, Br, Te, I, At, other (16);
degree 0-5 (6); formal charge (1); radical electrons (1); hybridization SP, SP2, SP3, SP3D, SP3D2,
other (6); aromatic (1); CIP code R, S (2); chirality possible (1).

Bond features (10): single, double, triple, aromatic (4); conjugated (1); in ring (1); stereo none,
any, Z, E (4).

A :class:`MolGraph` holds the heavy atoms in the order of ``Chem.MolFromSmiles(smiles)`` (hydrogens
removed), so a SMILES and a coordinate array in that order are all it takes to rebuild the molecule
(e.g. to write predicted conformations as SDF). Only numpy and rdkit are imported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .bonds import skeleton_mol

ELEMENTS = ("B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "As", "Se", "Br", "Te", "I", "At")
NUM_ATOM_FEATURES = 34
NUM_BOND_FEATURES = 10


@dataclass
class MolGraph:
    """One heavy-atom molecule: ``x [n, 34]``, ``bonds [2, B]`` (undirected, i < j), ``bond_attr [B, 10]``,
    ``mass [n]`` (amu / 12, i.e. carbon = ~1), ``z [n]`` and ``rank [n]``, RDKit's canonical atom ranks
    (ties broken), which give PhysChem's sequence initializer an order that does not depend on how the
    input numbers its atoms; float32 / int64 numpy arrays."""
    x: np.ndarray
    bonds: np.ndarray
    bond_attr: np.ndarray
    mass: np.ndarray
    z: np.ndarray
    rank: np.ndarray


def _hybridizations():
    from rdkit.Chem.rdchem import HybridizationType as H
    return (H.SP, H.SP2, H.SP3, H.SP3D, H.SP3D2)


def atom_features(atom) -> np.ndarray:
    """The 34 features of an RDKit atom (see the module docstring)."""
    f = np.zeros(NUM_ATOM_FEATURES, dtype=np.float32)
    sym = atom.GetSymbol()
    f[ELEMENTS.index(sym) if sym in ELEMENTS else len(ELEMENTS)] = 1.0            # 0..15
    f[16 + min(atom.GetDegree(), 5)] = 1.0                                        # 16..21
    f[22] = atom.GetFormalCharge()
    f[23] = atom.GetNumRadicalElectrons()
    hyb = _hybridizations()
    h = atom.GetHybridization()
    f[24 + (hyb.index(h) if h in hyb else 5)] = 1.0                               # 24..29
    f[30] = float(atom.GetIsAromatic())
    if atom.HasProp("_CIPCode"):
        code = atom.GetProp("_CIPCode")
        if code == "R":
            f[31] = 1.0
        elif code == "S":
            f[32] = 1.0
    f[33] = float(atom.HasProp("_ChiralityPossible"))
    return f


def bond_features(bond) -> np.ndarray:
    """The 10 features of an RDKit bond (see the module docstring)."""
    from rdkit.Chem.rdchem import BondStereo, BondType
    f = np.zeros(NUM_BOND_FEATURES, dtype=np.float32)
    bt = bond.GetBondType()
    for k, t in enumerate((BondType.SINGLE, BondType.DOUBLE, BondType.TRIPLE, BondType.AROMATIC)):
        f[k] = float(bt == t)
    f[4] = float(bond.GetIsConjugated())
    f[5] = float(bond.IsInRing())
    st = bond.GetStereo()
    stereo = {BondStereo.STEREONONE: 6, BondStereo.STEREOANY: 7, BondStereo.STEREOZ: 8,
              BondStereo.STEREOE: 9, BondStereo.STEREOCIS: 8, BondStereo.STEREOTRANS: 9}
    f[stereo.get(st, 6)] = 1.0
    return f


def mol_from_smiles(smiles: str):
    """Sanitized heavy-atom RDKit molecule with CIP labels assigned; ``ValueError`` if unparsable."""
    from rdkit import Chem
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    # flagPossibleStereoCenters sets _ChiralityPossible (feature 33) on every potential stereo centre
    Chem.AssignStereochemistry(mol, cleanIt=True, force=True, flagPossibleStereoCenters=True)
    return mol


def featurize_mol(mol) -> MolGraph:
    """Features of a heavy-atom molecule (hydrogens, if any, are removed first)."""
    from rdkit import Chem
    if any(a.GetAtomicNum() == 1 for a in mol.GetAtoms()):
        mol = Chem.RemoveHs(mol)
    if mol.GetNumAtoms() == 0:
        raise ValueError("molecule has no heavy atoms")
    x = np.stack([atom_features(a) for a in mol.GetAtoms()])
    nb = mol.GetNumBonds()
    bonds = np.zeros((2, nb), dtype=np.int64)
    battr = np.zeros((nb, NUM_BOND_FEATURES), dtype=np.float32)
    for k, b in enumerate(mol.GetBonds()):
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        bonds[:, k] = (min(i, j), max(i, j))
        battr[k] = bond_features(b)
    mass = np.array([a.GetMass() / 12.0 for a in mol.GetAtoms()], dtype=np.float32)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    rank = np.array(list(Chem.CanonicalRankAtoms(mol, breakTies=True)), dtype=np.int64)
    return MolGraph(x, bonds, battr, mass, z, rank)


def etkdg_conformer(smiles: str, seed: int = 0) -> Optional[np.ndarray]:
    """Heavy-atom coordinates ``[n, 3]`` (angstrom, order of :func:`mol_from_smiles`) of one RDKit
    ETKDGv3 conformer embedded with hydrogens; ``None`` when embedding fails (also with random
    starting coordinates)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem
    mol = mol_from_smiles(smiles)
    n = mol.GetNumAtoms()
    mh = Chem.AddHs(mol)  # hydrogens are appended: heavy atoms keep indices 0..n-1
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mh, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mh, params) != 0:
            return None
    return np.asarray(mh.GetConformer().GetPositions()[:n], dtype=np.float32)


def map_smiles_to_geometry(smiles: str, z, edge_index) -> Optional[np.ndarray]:
    """Geometry atom index of each heavy atom of :func:`mol_from_smiles` (``[n_heavy]``), found by
    matching the SMILES graph with explicit hydrogens onto the geometry's bond graph (``z``,
    ``edge_index`` of all atoms); ``None`` if the graphs differ."""
    from rdkit import Chem
    try:
        mol = mol_from_smiles(smiles)
    except ValueError:
        return None
    mh = Chem.AddHs(mol)
    if mh.GetNumAtoms() != len(z):
        return None
    sz = [a.GetAtomicNum() for a in mh.GetAtoms()]
    sb = np.array([[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] for b in mh.GetBonds()], dtype=np.int64).T
    sb = np.sort(sb, axis=0) if sb.size else sb.reshape(2, 0)
    ei = np.asarray(edge_index)
    if sb.shape[1] * 2 != ei.shape[1]:
        return None
    # sb is already one (i < j) column per bond; ei holds both directions, keep i < j in its order
    match = skeleton_mol(z, ei[:, ei[0] < ei[1]]).GetSubstructMatch(skeleton_mol(sz, sb))
    if not match:
        return None
    return np.asarray(match[:mol.GetNumAtoms()], dtype=np.int64)
