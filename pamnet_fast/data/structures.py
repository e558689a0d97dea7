"""Readers for 3D structures: TU-format graph collections (RNA-Puzzles) and mmCIF/PDB files (gemmi)."""
from __future__ import annotations

import os
from typing import List, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

# Element -> atomic number for the heavy atoms of biomolecules and drug-like ligands.
ATOMIC_NUMBERS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "P": 15, "S": 16, "CL": 17, "BR": 35, "I": 53,
                  "MG": 12, "NA": 11, "K": 19, "CA": 20, "ZN": 30, "FE": 26, "MN": 25, "SE": 34}


class Structure(NamedTuple):
    """One molecule: ``pos [N, 3]`` float32 (Å), ``z [N]`` int64 atomic numbers, and its name."""
    name: str
    pos: Tensor
    z: Tensor


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


def read_structure(path: str, chains: Optional[Sequence[str]] = None, *, ligands: bool = False,
                   model: int = 0) -> Structure:
    """Heavy atoms of an mmCIF/PDB file (gzipped or not) with gemmi; waters always removed, ligands and
    ions unless ``ligands=True``; optionally only the given chains."""
    try:
        import gemmi
    except ImportError as exc:
        raise ImportError("read_structure needs gemmi: pip install gemmi") from exc
    st = gemmi.read_structure(str(path))
    st.remove_hydrogens()
    if ligands:
        st.remove_waters()
    else:
        st.remove_ligands_and_waters()
    coords, numbers = [], []
    wanted = None if chains is None else set(chains)
    for chain in st[model]:
        if wanted is not None and chain.name not in wanted:
            continue
        for residue in chain:
            for atom in residue:
                coords.append((atom.pos.x, atom.pos.y, atom.pos.z))
                numbers.append(atom.element.atomic_number)
    if not coords:
        raise ValueError(f"read_structure: no atoms selected from {path} (chains={chains})")
    name = os.path.basename(str(path)).split(".")[0]
    return Structure(name, torch.tensor(coords, dtype=torch.float32), torch.tensor(numbers))
