"""3D structures: TU-format graph collections (RNA-Puzzles), PDB/mmCIF files (gemmi) with chain, residue,
polymer and element selection, and the RMSD of two structures after Kabsch superposition."""
from __future__ import annotations

import os
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

# Element -> atomic number for the heavy atoms of biomolecules and drug-like ligands.
ATOMIC_NUMBERS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "P": 15, "S": 16, "CL": 17, "BR": 35, "I": 53,
                  "MG": 12, "NA": 11, "K": 19, "CA": 20, "ZN": 30, "FE": 26, "MN": 25, "SE": 34}


# The paper's RNA setting: heavy atoms C, N, O (P optional).
RNA_ELEMENTS = ("C", "N", "O")


class AtomId(NamedTuple):
    """Identity of an atom in a PDB/mmCIF file (what :func:`rmsd` matches on, less ``resname``)."""
    chain: str
    residue: int
    icode: str
    resname: str
    name: str


class Structure(NamedTuple):
    """One molecule: ``pos [N, 3]`` float32 (Å), ``z [N]`` int64 atomic numbers, its name and, when read
    from a PDB/mmCIF file, ``atoms``: the :class:`AtomId` of each atom (``None`` for TU collections)."""
    name: str
    pos: Tensor
    z: Tensor
    atoms: Optional[List[AtomId]] = None


def read_tu_structures(directory: str, prefix: Optional[str] = None) -> List[Structure]:
    """Read a TU-format collection whose node attributes are ``x, y, z`` and node labels element
    classes 0/1/2 = C/N/O (the RNA-Puzzles native set). Graph order follows the graph indicator."""
    files = os.listdir(directory)
    if prefix is None:
        matches = [f[: -len("_graph_indicator.txt")] for f in files if f.endswith("_graph_indicator.txt")]
        if len(matches) != 1:
            raise ValueError(f"read_tu_structures: expected one *_graph_indicator.txt in {directory}, "
                             f"found {len(matches)}")
        prefix = matches[0]

    def path(kind):
        p = os.path.join(directory, f"{prefix}_{kind}.txt")
        if not os.path.exists(p):
            raise FileNotFoundError(f"read_tu_structures: missing {p}")
        return p

    with open(path("graph_indicator")) as f:
        graph = torch.tensor([int(line) for line in f if line.strip()], dtype=torch.long)
    with open(path("node_attributes")) as f:
        pos = torch.tensor([[float(v) for v in line.split(",")[:3]] for line in f if line.strip()],
                           dtype=torch.float32)
    with open(path("node_labels")) as f:
        labels = torch.tensor([int(line) for line in f if line.strip()], dtype=torch.long)
    if not (graph.numel() == pos.size(0) == labels.numel()):
        raise ValueError(f"read_tu_structures: {prefix} files disagree on the number of nodes "
                         f"({graph.numel()}, {pos.size(0)}, {labels.numel()})")
    names_file = os.path.join(directory, f"{prefix}_graph_names.txt")
    names = []
    if os.path.exists(names_file):
        with open(names_file) as f:
            names = [line.strip() for line in f if line.strip()]
    z = torch.tensor([6, 7, 8], dtype=torch.long)[labels]
    out = []
    for g in torch.unique_consecutive(graph).tolist():
        mask = graph == g
        name = names[g - 1] if g - 1 < len(names) else f"graph_{g}"
        out.append(Structure(name, pos[mask].contiguous(), z[mask]))
    return out


def _gemmi():
    try:
        import gemmi
    except ImportError as exc:
        raise ImportError("reading PDB/mmCIF files needs gemmi: pip install gemmi") from exc
    return gemmi


_POLYMERS = ("rna", "dna", "nucleic", "protein")


def _residue_kind(gemmi, name: str) -> str:
    """'rna' | 'dna' | 'protein' | 'other' from gemmi's table of standard and modified residues."""
    info = gemmi.find_tabulated_residue(name)
    if info is None:
        return "other"
    kind = info.kind
    if kind == gemmi.ResidueKind.RNA:
        return "rna"
    if kind == gemmi.ResidueKind.DNA:
        return "dna"
    if info.is_amino_acid():
        return "protein"
    return "other"


def _parse_residue_range(residues) -> Optional[Tuple[int, int]]:
    if residues is None:
        return None
    if isinstance(residues, str):
        try:
            lo, hi = (int(v) for v in residues.split("-", 1)) if "-" in residues.lstrip("-") \
                else (int(residues),) * 2
        except ValueError:
            raise ValueError(f"read_structure: residues must be 'FIRST-LAST' (numbers), got {residues!r}")
        return lo, hi
    lo, hi = residues
    return int(lo), int(hi)


def read_structure(path: str, chains: Optional[Sequence[str]] = None, *, ligands: bool = False,
                   model: int = 0, polymer: Optional[str] = None, residues=None,
                   elements: Optional[Sequence[str]] = None) -> Structure:
    """Heavy atoms of a PDB or mmCIF file (plain or gzipped) with gemmi, with their identities.

    Hydrogens and waters are always removed, ligands and ions unless ``ligands=True``; alternate
    locations keep the first conformer. Selections: ``chains`` (chain names), ``polymer`` (``"rna"``,
    ``"dna"``, ``"nucleic"`` or ``"protein"``: residues of that kind, modified ones included, by gemmi's
    residue table), ``residues`` (``(first, last)`` or ``"first-last"`` sequence numbers, inclusive),
    ``elements`` (e.g. ``RNA_ELEMENTS``; default every heavy atom). An empty selection, a coordinate
    that is not a finite number, or a file gemmi cannot parse raises ``ValueError`` naming the file.
    """
    gemmi = _gemmi()
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"read_structure: no such file {path}")
    if polymer is not None and polymer not in _POLYMERS:
        raise ValueError(f"read_structure: polymer must be one of {', '.join(_POLYMERS)}, got {polymer!r}")
    span = _parse_residue_range(residues)
    try:
        st = gemmi.read_structure(path)
    except Exception as exc:  # gemmi raises RuntimeError/ValueError with its own message
        raise ValueError(f"read_structure: cannot parse {path}: {exc}") from exc
    if len(st) == 0:
        raise ValueError(f"read_structure: {path} has no models (not a PDB/mmCIF file, or empty)")
    if not 0 <= model < len(st):
        raise ValueError(f"read_structure: {path} has {len(st)} model(s); model={model} does not exist")
    if st[model].count_atom_sites() == 0:
        raise ValueError(f"read_structure: {path} contains no atoms (empty, or not a PDB/mmCIF file)")
    st.setup_entities()  # files without entity records (some PDB models) need them for ligand removal
    st.remove_alternative_conformations()  # keeps the first altloc of every atom
    st.remove_hydrogens()
    if ligands:
        st.remove_waters()
    else:
        st.remove_ligands_and_waters()
    wanted_elements = None if elements is None else {e.upper() for e in elements}
    wanted = None if chains is None else set(chains)
    kinds = {"nucleic": ("rna", "dna")}.get(polymer, (polymer,))
    coords, numbers, ids = [], [], []
    present = []
    for chain in st[model]:
        present.append(chain.name)
        if wanted is not None and chain.name not in wanted:
            continue
        for residue in chain:
            num = residue.seqid.num
            if span is not None and not span[0] <= num <= span[1]:
                continue
            if polymer is not None and _residue_kind(gemmi, residue.name) not in kinds:
                continue
            icode = residue.seqid.icode.strip()
            for atom in residue:
                if wanted_elements is not None and atom.element.name.upper() not in wanted_elements:
                    continue
                coords.append((atom.pos.x, atom.pos.y, atom.pos.z))
                numbers.append(atom.element.atomic_number)
                ids.append(AtomId(chain.name, num, icode, residue.name, atom.name))
    if wanted is not None and not wanted & set(present):
        raise ValueError(f"read_structure: {path} has no chain {sorted(wanted)}; chains: {sorted(set(present))}")
    if not coords:
        raise ValueError(f"read_structure: no atoms selected from {path} (chains={chains}, polymer={polymer}, "
                         f"residues={residues}, elements={elements})")
    pos = torch.tensor(coords, dtype=torch.float64)
    bad = ~torch.isfinite(pos).all(1)
    if bool(bad.any()):
        k = int(bad.nonzero()[0])
        raise ValueError(f"read_structure: {path}: atom {ids[k]} has missing or non-finite coordinates "
                         f"({int(bad.sum())} such atom(s))")
    name = os.path.basename(path)
    for ext in (".gz", ".cif", ".mmcif", ".pdb", ".ent"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return Structure(name, pos.float(), torch.tensor(numbers, dtype=torch.long), ids)


def read_rna_structure(path: str, chains: Optional[Sequence[str]] = None, *, keep_phosphorus: bool = False,
                       residues=None, model: int = 0) -> Structure:
    """The paper's RNA setting: RNA residues only, atoms C, N, O (and P with ``keep_phosphorus``)."""
    elements = RNA_ELEMENTS + (("P",) if keep_phosphorus else ())
    return read_structure(path, chains, model=model, polymer="rna", residues=residues, elements=elements)


# ----------------------------------------------------------------------------- RMSD
class RMSDResult(NamedTuple):
    """``rmsd`` (Å) after the optimal superposition of ``a`` onto ``b`` (``a @ rotation.T +
    translation``), over ``n`` matched atoms; ``unmatched_a`` / ``unmatched_b``: atoms present in
    one structure only (their :class:`AtomId`, or indices when matched by order)."""
    rmsd: float
    n: int
    unmatched_a: list
    unmatched_b: list
    rotation: np.ndarray
    translation: np.ndarray


def kabsch(a: np.ndarray, b: np.ndarray) -> Tuple[float, np.ndarray, np.ndarray]:
    r"""Minimal RMSD of ``a [N, 3]`` onto ``b [N, 3]`` over proper rotations (Kabsch 1976), float64.

    .. math:: \min_{R \in SO(3), t} \sqrt{\tfrac1N \sum_i \lVert R a_i + t - b_i \rVert^2}

    With centred ``A, B`` and ``H = A^T B = U S V^T``: ``R = V \,\mathrm{diag}(1, 1, d)\, U^T``,
    ``d = \mathrm{sign}\det(V U^T)`` (no reflections). Returns ``(rmsd, R, t)``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ca, cb = a.mean(0), b.mean(0)
    A, B = a - ca, b - cb
    u, s, vt = np.linalg.svd(A.T @ B)
    d = 1.0 if np.linalg.det(vt.T @ u.T) >= 0 else -1.0
    D = np.diag([1.0, 1.0, d])
    R = vt.T @ D @ u.T
    # E = |A|^2 + |B|^2 - 2 tr(S D); computing it from the rotated coordinates avoids cancellation
    diff = A @ R.T - B
    value = float(np.sqrt((diff * diff).sum() / len(a)))
    return value, R, cb - ca @ R.T


def _coords(x) -> np.ndarray:
    if isinstance(x, Structure):
        x = x.pos
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"rmsd: coordinates must be [N, 3], got shape {tuple(x.shape)}")
    return x


def match_atoms(a: Structure, b: Structure, *, ignore_chain: bool = False):
    """Indices ``(ia, ib)`` of the atoms ``a`` and ``b`` share, keyed by (chain, residue number,
    insertion code, atom name) (without the chain with ``ignore_chain``), in ``a``'s order, and the
    unmatched atoms of each. Duplicate keys are an error (the match would be ambiguous)."""
    def keyed(s: Structure):
        if s.atoms is None:
            raise ValueError(f"rmsd: {s.name} has no atom identities; match='order' compares by position")
        keys = {}
        for k, at in enumerate(s.atoms):
            key = (at.residue, at.icode, at.name) if ignore_chain else (at.chain, at.residue, at.icode, at.name)
            if key in keys:
                raise ValueError(f"rmsd: {s.name} has atom {key} twice; cannot match atoms by name")
            keys[key] = k
        return keys
    ka, kb = keyed(a), keyed(b)
    ia = [i for key, i in ka.items() if key in kb]
    ib = [kb[key] for key, i in ka.items() if key in kb]
    return (np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64),
            [a.atoms[i] for key, i in ka.items() if key not in kb],
            [b.atoms[j] for key, j in kb.items() if key not in ka])


def rmsd(a, b, *, match: str = "auto", ignore_chain: bool = False, min_matched: int = 3) -> RMSDResult:
    """RMSD after Kabsch superposition of ``a`` onto ``b`` (:class:`Structure`, tensors or arrays
    ``[N, 3]``).

    ``match="names"`` pairs atoms by (chain, residue number, insertion code, atom name) and reports
    the unmatched ones; ``"order"`` pairs them by position (same length required); ``"auto"`` uses
    names when both structures carry them. Fewer than ``min_matched`` matched atoms is an error.
    """
    if match not in ("auto", "names", "order"):
        raise ValueError(f"rmsd: match must be 'auto', 'names' or 'order', got {match!r}")
    named = isinstance(a, Structure) and isinstance(b, Structure) and a.atoms is not None \
        and b.atoms is not None
    if match == "names" or (match == "auto" and named):
        if not (isinstance(a, Structure) and isinstance(b, Structure)):
            raise ValueError("rmsd: match='names' needs two Structures with atom identities")
        ia, ib, ua, ub = match_atoms(a, b, ignore_chain=ignore_chain)
        xa, xb = _coords(a)[ia], _coords(b)[ib]
    else:
        xa, xb = _coords(a), _coords(b)
        if len(xa) != len(xb):
            raise ValueError(f"rmsd: match='order' needs the same number of atoms, got {len(xa)} and {len(xb)}")
        ua, ub = [], []
    if len(xa) < min_matched:
        raise ValueError(f"rmsd: only {len(xa)} matched atom(s) (need {min_matched}); "
                         f"{len(ua)} + {len(ub)} atoms unmatched")
    if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        raise ValueError("rmsd: coordinates contain NaN or inf")
    value, R, t = kabsch(xa, xb)
    return RMSDResult(value, len(xa), ua, ub, R, t)
