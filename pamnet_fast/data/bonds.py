"""Bonds (the local plex) from 3-D geometry, checked against the SMILES connectivity.

Primary method: RDKit ``rdDetermineBonds.DetermineConnectivity(mol, useHueckel=True, charge=0)``
(the default van-der-Waals rule adds spurious bonds in strained cages).  Every molecule is compared
with the connectivity of its SMILES (bond count and graph isomorphism via a canonical SMILES of the
element-labelled, bond-order-free skeleton).  When RDKit cannot bond a molecule we fall back to the
SMILES bonds mapped onto the geometry (substructure match into a loose distance graph), and failing
that to a covalent-radius distance rule.  Nothing here raises for a single bad molecule.

Only numpy and rdkit are imported, so the functions are cheap to run in worker processes.
"""
from __future__ import annotations

import contextlib
import os
from typing import Optional, Sequence, Tuple

import numpy as np

# flags (bit mask) returned per molecule
FLAG_RDKIT_FAILED = 1        # DetermineConnectivity raised; a fallback was used
FLAG_COUNT_MISMATCH = 2      # number of bonds differs from the SMILES
FLAG_GRAPH_MISMATCH = 4      # bond graph not isomorphic to the SMILES graph (includes count mismatch)
FLAG_SMILES_UNPARSABLE = 8   # SMILES could not be parsed / does not match the atom composition
FLAG_FALLBACK_SMILES = 16    # bonds taken from the SMILES, mapped onto the geometry
FLAG_FALLBACK_DISTANCE = 32  # bonds from the covalent-radius distance rule

# Cordero et al. 2008 covalent radii (angstrom)
_COVALENT_RADII = {1: 0.31, 5: 0.84, 6: 0.76, 7: 0.71, 8: 0.66, 9: 0.57, 15: 1.07, 16: 1.05, 17: 1.02,
                   35: 1.20, 53: 1.39}


def rdkit_required():
    try:
        from rdkit import Chem  # noqa: F401
        from rdkit.Chem import rdDetermineBonds  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("RDKit is required to derive bonds for QM9: `pip install rdkit` "
                          "(or `pip install pamnet-fast[qm9]`).") from e


@contextlib.contextmanager
def silence_stderr():
    """Redirect the C-level stderr (RDKit/YAeHMOP print 'suspicious distance' warnings there)."""
    try:
        fd = os.dup(2)
    except OSError:  # pragma: no cover
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


def distance_bonds(z: Sequence[int], pos: np.ndarray, scale: float = 1.2) -> np.ndarray:
    """Undirected bonds (i < j) with d_ij < scale * (r_i + r_j). Returns int array [2, B]."""
    z = np.asarray(z)
    pos = np.asarray(pos, dtype=np.float64)
    r = np.array([_COVALENT_RADII.get(int(a), 0.8) for a in z])
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    cut = scale * (r[:, None] + r[None, :])
    i, j = np.nonzero(np.triu((d < cut) & (d > 1e-3), k=1))
    return np.stack([i, j]).astype(np.int64)


def _skeleton_smiles(z: Sequence[int], bonds: np.ndarray) -> str:
    from rdkit import Chem
    rw = Chem.RWMol()
    for a in z:
        atom = Chem.Atom(int(a))
        atom.SetNoImplicit(True)
        rw.AddAtom(atom)
    for i, j in bonds.T:
        rw.AddBond(int(i), int(j), Chem.BondType.SINGLE)
    return Chem.MolToSmiles(rw, canonical=True)


def _smiles_graph(smiles: str):
    """(atomic numbers, undirected bonds [2,B]) of the SMILES with explicit hydrogens, or None."""
    from rdkit import Chem
    try:
        m = Chem.MolFromSmiles(smiles)
        if m is None:
            m = Chem.MolFromSmiles(smiles, sanitize=False)
            if m is None:
                return None
            m.UpdatePropertyCache(strict=False)
        m = Chem.AddHs(m)
    except Exception:
        return None
    z = [a.GetAtomicNum() for a in m.GetAtoms()]
    b = np.array([[bd.GetBeginAtomIdx(), bd.GetEndAtomIdx()] for bd in m.GetBonds()],
                 dtype=np.int64).reshape(-1, 2).T
    return z, b


def _rdkit_bonds(z: Sequence[int], pos: np.ndarray) -> np.ndarray:
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds
    m = Chem.RWMol()
    for a in z:
        m.AddAtom(Chem.Atom(int(a)))
    conf = Chem.Conformer(len(z))
    for k, p in enumerate(np.asarray(pos, dtype=np.float64)):
        conf.SetAtomPosition(k, (float(p[0]), float(p[1]), float(p[2])))
    m.AddConformer(conf, assignId=True)
    rdDetermineBonds.DetermineConnectivity(m, useHueckel=True, charge=0)
    b = np.array([[bd.GetBeginAtomIdx(), bd.GetEndAtomIdx()] for bd in m.GetBonds()],
                 dtype=np.int64).reshape(-1, 2).T
    return b


def skeleton_mol(z: Sequence[int], pairs: np.ndarray):
    """Element-labelled, bond-order-free RDKit molecule with one single bond per column ``(i, j)`` of
    ``pairs [2, B]`` (each undirected bond once), for matching atom orders by substructure search."""
    from rdkit import Chem
    rw = Chem.RWMol()
    for a in z:
        at = Chem.Atom(int(a))
        at.SetNoImplicit(True)
        rw.AddAtom(at)
    for i, j in np.asarray(pairs).T:
        rw.AddBond(int(i), int(j), Chem.BondType.SINGLE)
    m = rw.GetMol()
    m.UpdatePropertyCache(strict=False)
    return m


def _map_smiles_onto_geometry(z, pos, sz, sb) -> Optional[np.ndarray]:
    """Map the SMILES graph onto the atoms of the geometry by a substructure match into a loose
    distance graph; returns the SMILES bonds in geometry atom indices, or None."""
    if sorted(sz) != sorted(int(a) for a in z):
        return None
    loose = distance_bonds(z, pos, scale=1.35)
    target, query = skeleton_mol(z, loose), skeleton_mol(sz, sb)
    match = target.GetSubstructMatch(query)
    if not match:
        return None
    mp = np.asarray(match, dtype=np.int64)
    return mp[sb] if sb.size else sb


def directed_sorted(bonds: np.ndarray) -> np.ndarray:
    """Undirected [2,B] -> directed both ways [2,2B], sorted by target (row 1) then source (row 0)."""
    if bonds.size == 0:
        return np.zeros((2, 0), dtype=np.int64)
    e = np.concatenate([bonds, bonds[::-1]], axis=1)
    e = np.unique(e, axis=1)  # also removes duplicates
    order = np.lexsort((e[0], e[1]))
    return e[:, order]


def molecule_bonds(z: Sequence[int], pos: np.ndarray, smiles: Optional[str]) -> Tuple[np.ndarray, int]:
    """Bonds of one molecule: (edge_index int64 [2, E] both directions, sorted by target then source,
    flags bit mask)."""
    flags = 0
    sg = _smiles_graph(smiles) if smiles else None
    if sg is not None and sorted(sg[0]) != sorted(int(a) for a in z):
        sg = None
    if sg is None:
        flags |= FLAG_SMILES_UNPARSABLE
    try:
        b = _rdkit_bonds(z, pos)
    except Exception:
        flags |= FLAG_RDKIT_FAILED
        b = None
        if sg is not None:
            try:
                b = _map_smiles_onto_geometry(z, pos, *sg)
            except Exception:
                b = None
            if b is not None:
                flags |= FLAG_FALLBACK_SMILES
        if b is None:
            b = distance_bonds(z, pos)
            flags |= FLAG_FALLBACK_DISTANCE
    if sg is not None:
        if b.shape[1] != sg[1].shape[1]:
            flags |= FLAG_COUNT_MISMATCH | FLAG_GRAPH_MISMATCH
        else:
            try:
                if _skeleton_smiles(z, b) != _skeleton_smiles(sg[0], sg[1]):
                    flags |= FLAG_GRAPH_MISMATCH
            except Exception:
                flags |= FLAG_GRAPH_MISMATCH
    return directed_sorted(b), flags


def _worker_init():
    # RDKit's Hueckel code prints warnings on the C stderr; a worker's stderr is not needed.
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 2)
        os.close(fd)
    except OSError:  # pragma: no cover
        pass
    from rdkit import RDLogger
    RDLogger.DisableLog("rdApp.*")


def _work(item):
    z, pos, smiles = item
    try:
        return molecule_bonds(z, pos, smiles)
    except Exception:  # never crash the whole build for one molecule
        return directed_sorted(distance_bonds(z, pos)), FLAG_RDKIT_FAILED | FLAG_FALLBACK_DISTANCE


def bonds_for_molecules(items, num_workers: int = 2, chunksize: int = 256, progress=None):
    """items: list of (z, pos, smiles). Returns a list of (edge_index, flags) in input order."""
    rdkit_required()
    n = len(items)
    out = []
    if num_workers <= 1 or n < 2 * chunksize:
        from rdkit import RDLogger
        RDLogger.DisableLog("rdApp.*")
        with silence_stderr():
            for it in items:
                out.append(_work(it))
                if progress is not None:
                    progress(1)
        return out
    import multiprocessing as mp
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    with ctx.Pool(num_workers, initializer=_worker_init) as pool:
        for r in pool.imap(_work, items, chunksize=chunksize):
            out.append(r)
            if progress is not None:
                progress(1)
    return out


def summarize_flags(flags: np.ndarray) -> dict:
    flags = np.asarray(flags)
    return {
        "molecules": int(flags.size),
        "rdkit_failed": int(((flags & FLAG_RDKIT_FAILED) > 0).sum()),
        "bond_count_mismatch": int(((flags & FLAG_COUNT_MISMATCH) > 0).sum()),
        "graph_mismatch": int(((flags & FLAG_GRAPH_MISMATCH) > 0).sum()),
        "smiles_unparsable": int(((flags & FLAG_SMILES_UNPARSABLE) > 0).sum()),
        "fallback_smiles": int(((flags & FLAG_FALLBACK_SMILES) > 0).sum()),
        "fallback_distance": int(((flags & FLAG_FALLBACK_DISTANCE) > 0).sum()),
    }
