"""QM9 (130,831 molecules) from the ``qm9pack`` package's CSV files, as PyG ``Data`` objects.

Each item has ``z`` (int64 [N]), ``pos`` (float32 [N, 3], angstrom), ``edge_index`` (int64 [2, E],
covalent bonds from the geometry, both directions, sorted by target then source), ``y`` (float32
[1, 12], all targets in the units of the PAMNet paper, Table 1) and ``idx`` (position in the dataset).

The processed arrays are cached on disk as a few concatenated tensors (see :mod:`.cache`).
"""
from __future__ import annotations

import csv
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch_geometric.data import Data

from . import bonds as _bonds
from .cache import default_cache_dir, files_fingerprint, load_or_build

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
NUM_MOLECULES = 130_831
SPLIT_SIZES = (110_000, 10_000, 10_831)
HARTREE_TO_MEV = 27211.386246

TARGETS = ("mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "cv")
TARGET_UNITS = {"mu": "D", "alpha": "a0^3", "homo": "meV", "lumo": "meV", "gap": "meV",
                "r2": "a0^2", "zpve": "meV", "U0": "meV", "U": "meV", "H": "meV", "G": "meV",
                "cv": "cal/mol K"}
_COLUMNS = {"mu": "Dipole_debye", "alpha": "Polarizability_bohr3", "homo": "HOMO_au",
            "lumo": "LUMO_au", "gap": "HOMO_LUMO_gap_au", "r2": "R2_bohr2", "zpve": "ZPVE_au",
            "U0": "InternalEnergy_0K_au", "U": "InternalEnergy_298K_au", "H": "Enthalphy_298K_au",
            "G": "GibbsFreeEnergy_298K_au", "cv": "Heatcapacity_Cv_cal_mol_K"}
_HARTREE_TARGETS = ("homo", "lumo", "gap", "zpve", "U0", "U", "H", "G")

# Atomic reference energies (Hartree) of the QM9 paper (Ramakrishnan et al. 2014, "atomref" table),
# B3LYP/6-31G(2df,p): columns U0, U(298.15 K), H(298.15 K), G(298.15 K).
ATOMREF_HARTREE = {
    1: (-0.500273, -0.498857, -0.497912, -0.510927),     # H
    6: (-37.846772, -37.845355, -37.844411, -37.861317),  # C
    7: (-54.583861, -54.582445, -54.581501, -54.598897),  # N
    8: (-75.064579, -75.063162, -75.062219, -75.079532),  # O
    9: (-99.718730, -99.717314, -99.716370, -99.733544),  # F
}
_SYMBOL_TO_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
_DATA_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")


def target_index(target: str) -> int:
    if target not in TARGETS:
        raise ValueError(f"unknown QM9 target {target!r}; valid targets: {', '.join(TARGETS)}")
    return TARGETS.index(target)


def qm9pack_data_dir() -> Path:
    """Directory of qm9pack's CSV files, found without importing qm9pack (it needs pkg_resources)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("QM9 needs the `qm9pack` package, which is not installed: "
                          "`pip install qm9pack` (or `pip install pamnet-fast[qm9]`).")
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "data"
        if all((d / f).exists() for f in _DATA_FILES):
            return d
    raise FileNotFoundError(f"qm9pack is installed but its data files {_DATA_FILES} were not found "
                            f"under {list(spec.submodule_search_locations)}; reinstall it: "
                            "`pip install --force-reinstall qm9pack`.")


def _floats(s: str) -> List[float]:
    return [float(t) for t in s.replace("[", " ").replace("]", " ").split(",")]


def read_qm9pack(data_dir: Path, limit: Optional[int] = None) -> dict:
    """Parse the CSV files (molecule order of qm9pack, i.e. increasing QM9 index)."""
    zs, poss, smiles, ids, raw = [], [], [], [], []
    cols = None
    for fname in _DATA_FILES:
        with open(data_dir / fname, newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            col = {name: i for i, name in enumerate(header)}
            cols = [col[_COLUMNS[t]] for t in TARGETS]
            ci_el, ci_xyz, ci_smi, ci_id = col["Elements"], col["XYZ_Ang"], col["SMILES"], col["Index"]
            for row in reader:
                if limit is not None and len(zs) >= limit:
                    break
                el = [_SYMBOL_TO_Z[e.strip().strip("'\"")] for e in row[ci_el].strip("[]").split(",")]
                xyz = np.asarray(_floats(row[ci_xyz]), dtype=np.float64).reshape(-1, 3)
                if xyz.shape[0] != len(el):
                    raise ValueError(f"molecule {row[ci_id]}: {len(el)} elements but {xyz.shape[0]} positions")
                zs.append(el)
                poss.append(xyz)
                smiles.append(row[ci_smi])
                ids.append(int(row[ci_id]))
                raw.append([float(row[c]) for c in cols])
        if limit is not None and len(zs) >= limit:
            break
    return {"z": zs, "pos": poss, "smiles": smiles, "ids": ids, "raw": np.asarray(raw, dtype=np.float64)}


def convert_targets(raw: np.ndarray, zs: Sequence[Sequence[int]]) -> np.ndarray:
    """Raw qm9pack columns (TARGETS order) -> paper units; U0/U/H/G as atomization energies."""
    y = raw.astype(np.float64).copy()
    ref = np.zeros((len(zs), 4), dtype=np.float64)
    table = np.zeros((10, 4))
    for zz, v in ATOMREF_HARTREE.items():
        table[zz] = v
    for k, zz in enumerate(zs):
        ref[k] = table[np.asarray(zz)].sum(0)
    for j, t in enumerate(("U0", "U", "H", "G")):
        y[:, TARGETS.index(t)] -= ref[:, j]
    for t in _HARTREE_TARGETS:
        y[:, TARGETS.index(t)] *= HARTREE_TO_MEV
    return y


def split_indices(n: int = NUM_MOLECULES, seed: int = 42, train_size: Optional[int] = None,
                  sizes: Optional[Sequence[int]] = None) -> Dict[str, torch.Tensor]:
    """Random train/val/test split: a permutation of range(n) with ``numpy.random.default_rng(seed)``.

    For the full dataset the sizes are 110,000 / 10,000 / 10,831; for a smaller (``limit``) dataset
    they are scaled proportionally. ``train_size`` keeps the first ``train_size`` training indices.
    """
    if sizes is None:
        if n == NUM_MOLECULES:
            sizes = SPLIT_SIZES
        else:
            n_val = int(round(n * SPLIT_SIZES[1] / NUM_MOLECULES))
            n_test = int(round(n * SPLIT_SIZES[2] / NUM_MOLECULES))
            sizes = (n - n_val - n_test, n_val, n_test)
    n_train, n_val, n_test = sizes
    if n_train + n_val + n_test > n:
        raise ValueError(f"split sizes {tuple(sizes)} exceed the dataset size {n}")
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n).astype(np.int64))
    train = perm[:n_train]
    if train_size is not None:
        if not 0 < train_size <= n_train:
            raise ValueError(f"train_size must be in [1, {n_train}], got {train_size}")
        train = train[:train_size]
    return {"train": train, "val": perm[n_train:n_train + n_val],
            "test": perm[n_train + n_val:n_train + n_val + n_test]}


class QM9(torch.utils.data.Dataset):
    """QM9 from qm9pack with RDKit bonds; cached on disk.

    Args:
        root: cache directory (default ``$PAMNET_FAST_CACHE/qm9`` or ``~/.cache/pamnet_fast/qm9``).
        target: name of the target used by :attr:`target_index` (``y`` always holds all 12).
        transform: optional callable applied to each ``Data``.
        force_rebuild: reprocess even when a valid cache exists.
        limit: process only the first ``limit`` molecules (tests, quick experiments).
        num_workers: processes for the RDKit bond perception (default: usable cores, at most 8).
        source_dir: directory holding qm9pack's CSV files (default: found from the installed package).
    """

    def __init__(self, root: Optional[Union[str, os.PathLike]] = None, *, target: str = "U0",
                 transform: Optional[Callable] = None, force_rebuild: bool = False,
                 limit: Optional[int] = None, num_workers: Optional[int] = None,
                 source_dir: Optional[Union[str, os.PathLike]] = None, verbose: bool = True):
        self.target = target
        self.target_index = target_index(target)
        self.transform = transform
        self.root = Path(root) if root is not None else default_cache_dir("qm9")
        self.limit = limit
        self.verbose = verbose
        if num_workers is None:
            try:
                num_workers = min(8, len(os.sched_getaffinity(0)))
            except AttributeError:  # pragma: no cover - not Linux
                num_workers = min(8, os.cpu_count() or 1)
        self.num_workers = num_workers
        self.source_dir = Path(source_dir) if source_dir is not None else qm9pack_data_dir()
        tag = "full" if limit is None else f"limit{int(limit)}"
        self.path = self.root / f"qm9_{tag}.pt"
        key = {
            "format_version": FORMAT_VERSION,
            "sources": files_fingerprint(self.source_dir / f for f in _DATA_FILES),
            "limit": limit,
            "bonds": "rdkit.DetermineConnectivity(useHueckel=True,charge=0)+smiles-check",
            "atomref": ATOMREF_HARTREE,
            "hartree_to_mev": HARTREE_TO_MEV,
        }
        t0 = time.perf_counter()
        obj = load_or_build(self.path, key, self._build, force_rebuild=force_rebuild, verbose=verbose)
        self.load_seconds = time.perf_counter() - t0
        meta, t = obj["meta"], obj["tensors"]
        self.meta = meta
        self.bond_stats: dict = meta["bond_stats"]
        self.smiles: List[str] = meta["smiles"]
        self._z = t["z"]
        self._pos = t["pos"]
        self._edge = t["edge_index"]
        self._atom_ptr = t["atom_ptr"]
        self._edge_ptr = t["edge_ptr"]
        self._y64 = t["y"]
        self._y = t["y"].float()
        self.mol_id = t["mol_id"]
        self.bond_flags = t["bond_flags"]

    # ------------------------------------------------------------------ processing
    def _build(self):
        t0 = time.perf_counter()
        if self.verbose:
            log.warning("processing QM9 from %s into %s (once; RDKit bond perception on %d "
                        "process(es))", self.source_dir, self.path, self.num_workers)
        src = read_qm9pack(self.source_dir, self.limit)
        n = len(src["z"])
        y = convert_targets(src["raw"], src["z"])
        items = list(zip(src["z"], src["pos"], src["smiles"]))
        bar = None
        if self.verbose and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                bar = tqdm(total=n, desc="QM9 bonds", unit="mol", leave=False)
            except ImportError:  # pragma: no cover
                bar = None
        res = _bonds.bonds_for_molecules(items, num_workers=self.num_workers,
                                         progress=bar.update if bar is not None else None)
        if bar is not None:
            bar.close()
        counts = np.array([len(zz) for zz in src["z"]], dtype=np.int64)
        ecounts = np.array([e.shape[1] for e, _ in res], dtype=np.int64)
        atom_ptr = np.concatenate([[0], np.cumsum(counts)])
        edge_ptr = np.concatenate([[0], np.cumsum(ecounts)])
        flags = np.array([f for _, f in res], dtype=np.uint8)
        edges = np.concatenate([e for e, _ in res], axis=1) if n else np.zeros((2, 0), np.int64)
        tensors = {
            "z": torch.from_numpy(np.concatenate(src["z"]).astype(np.uint8)),
            "pos": torch.from_numpy(np.concatenate(src["pos"]).astype(np.float32)),
            "edge_index": torch.from_numpy(edges.astype(np.int8)),  # local (per molecule) indices
            "atom_ptr": torch.from_numpy(atom_ptr),
            "edge_ptr": torch.from_numpy(edge_ptr),
            "y": torch.from_numpy(y),
            "mol_id": torch.tensor(src["ids"], dtype=torch.int64),
            "bond_flags": torch.from_numpy(flags),
        }
        stats = _bonds.summarize_flags(flags)
        secs = time.perf_counter() - t0
        meta = {"bond_stats": stats, "smiles": src["smiles"], "targets": list(TARGETS),
                "units": [TARGET_UNITS[t] for t in TARGETS], "process_seconds": secs,
                "num_workers": self.num_workers}
        if self.verbose:
            log.warning("processed %d molecules in %.1f s; bonds vs SMILES: %s", n, secs, stats)
        return tensors, meta

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self._atom_ptr.numel() - 1)

    def get(self, i: int) -> Data:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for QM9 of size {n}")
        a0, a1 = int(self._atom_ptr[i]), int(self._atom_ptr[i + 1])
        e0, e1 = int(self._edge_ptr[i]), int(self._edge_ptr[i + 1])
        data = Data(z=self._z[a0:a1].long(), pos=self._pos[a0:a1],
                    edge_index=self._edge[:, e0:e1].long(), y=self._y[i:i + 1],
                    idx=torch.tensor(i, dtype=torch.long))
        return data

    def __getitem__(self, i):
        if isinstance(i, (slice, list, np.ndarray, torch.Tensor)) and not (
                isinstance(i, torch.Tensor) and i.dim() == 0):
            idx = torch.arange(len(self))[i] if isinstance(i, slice) else torch.as_tensor(i).long()
            return torch.utils.data.Subset(self, idx.tolist())
        data = self.get(int(i))
        return self.transform(data) if self.transform is not None else data

    @property
    def y(self) -> torch.Tensor:
        """All targets, float64 [num_molecules, 12]."""
        return self._y64

    def compositions(self, num_elements: int = 119) -> torch.Tensor:
        """Element counts of every molecule, ``[num_molecules, num_elements]`` (float64)."""
        counts = torch.zeros(len(self), num_elements, dtype=torch.float64)
        mol = torch.repeat_interleave(torch.arange(len(self)), self._atom_ptr.diff())
        counts.index_put_((mol, self._z.long()), torch.ones(mol.numel(), dtype=torch.float64),
                          accumulate=True)
        return counts

    def split(self, seed: int = 42, train_size: Optional[int] = None) -> Dict[str, torch.Tensor]:
        return split_indices(len(self), seed=seed, train_size=train_size)

    def row_info(self, i: int) -> Dict[str, object]:
        """Columns that identify molecule ``i`` in prediction files."""
        return {"qm9_index": int(self.mol_id[i]), "smiles": self.smiles[i]}

    def summary(self) -> str:
        s = self.bond_stats
        return (f"QM9: {len(self)} molecules ({self.path}); bonds: RDKit failed on {s['rdkit_failed']} "
                f"(fallback: {s['fallback_smiles']} SMILES-mapped, {s['fallback_distance']} distance), "
                f"disagree with SMILES on {s['graph_mismatch']} (bond count on "
                f"{s['bond_count_mismatch']}), unparsable SMILES {s['smiles_unparsable']}")

    def __repr__(self) -> str:
        return f"QM9({len(self)}, target={self.target!r})"
