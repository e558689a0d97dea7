"""Featurized heavy-atom molecule graphs with conformations (the input of PhysChem), cached on disk.

Each item is a PyG ``Data`` with ``x [n, 34]`` atom features, ``edge_index [2, 2B]`` (bonds in both
directions, sorted by target then source), ``edge_attr [2B, 10]`` bond features, ``mass [n]``, ``z [n]``, ``rank [n]`` (canonical atom ranks),
``pos [n, 3]`` (the conformation target: the real geometry where the dataset has one, else an RDKit
ETKDG conformer), ``rdkit_pos [n, 3]`` (an RDKit ETKDG conformer), ``y [1, k]`` and ``idx``. Atoms are
in the order of ``Chem.MolFromSmiles(smiles)``, so :attr:`MolGraphDataset.smiles` and a coordinate
array rebuild the molecule (see :func:`pamnet_fast.data.featurize.mol_from_smiles`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch_geometric.data import Data

from .cache import default_cache_dir, load_or_build
from .featurize import etkdg_conformer, featurize_mol, mol_from_smiles

log = logging.getLogger(__name__)


def directed_edges(bonds: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Undirected ``[2, B]`` -> (directed ``[2, 2B]`` sorted by target then source, bond id of each)."""
    e = np.concatenate([bonds, bonds[::-1]], axis=1)
    bid = np.concatenate([np.arange(bonds.shape[1])] * 2)
    order = np.lexsort((e[0], e[1]))
    return e[:, order], bid[order]


def etkdg_conformers(smiles: Sequence[str], seed: int = 0, path=None, verbose: bool = True,
                     progress: Optional[Callable[[int], None]] = None) -> List[Optional[np.ndarray]]:
    """One ETKDG conformer per SMILES (``None`` where RDKit cannot parse or embed it); cached at
    ``path`` (atomic write) under a key of the SMILES list, the seed and the RDKit version, apart from
    the features so that a feature change does not re-embed (Lipophilicity: ~10 min on one core)."""
    import hashlib
    from rdkit import RDLogger, rdBase
    RDLogger.DisableLog("rdApp.*")

    def embed():
        out = []
        for s in smiles:
            if progress is not None:
                progress(1)
            try:
                out.append(etkdg_conformer(s, seed))
            except ValueError:
                out.append(None)
        return out

    if path is None:
        return embed()

    def build():
        confs = embed()
        ok = torch.tensor([c is not None for c in confs])
        n = torch.tensor([0 if c is None else c.shape[0] for c in confs], dtype=torch.long)
        pos = torch.from_numpy(np.concatenate([c for c in confs if c is not None], 0)) if ok.any() \
            else torch.zeros(0, 3)
        return {"ok": ok, "n": n, "pos": pos}, {}

    key = {"smiles_sha256": hashlib.sha256("\n".join(smiles).encode()).hexdigest(), "seed": seed,
           "rdkit": rdBase.rdkitVersion, "method": "ETKDGv3+H, random-coords retry"}
    t = load_or_build(path, key, build, verbose=verbose)["tensors"]
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.where(t["ok"], t["n"], 0).cumsum(0)])
    return [t["pos"][int(ptr[k]):int(ptr[k + 1])].numpy() if bool(t["ok"][k]) else None
            for k in range(len(smiles))]


def build_graphs(records: Sequence[Tuple[str, np.ndarray, Optional[np.ndarray]]], seed: int = 0,
                 progress: Optional[Callable[[int], None]] = None, conformer_cache=None):
    """Featurize ``(smiles, y [k], pos [n, 3] in SMILES heavy-atom order or None)`` records.

    Returns ``(tensors, kept, dropped)``: concatenated tensors for :class:`MolGraphDataset`, the
    positions of the kept records and ``{reason: count}`` of the dropped ones (unparsable SMILES,
    failed ETKDG embedding). ``conformer_cache``: file for :func:`etkdg_conformers`.
    """
    from rdkit import RDLogger
    RDLogger.DisableLog("rdApp.*")
    records = list(records)
    confs = etkdg_conformers([r[0] for r in records], seed, conformer_cache, progress=progress)
    xs, eis, eas, ms, zs, poss, rps, ys, kept, rks = [], [], [], [], [], [], [], [], [], []
    dropped = {}
    for k, (smi, y, pos) in enumerate(records):
        try:
            g = featurize_mol(mol_from_smiles(smi))
        except ValueError:
            dropped["unparsable_smiles"] = dropped.get("unparsable_smiles", 0) + 1
            continue
        rp = confs[k]
        if rp is None:
            dropped["etkdg_failed"] = dropped.get("etkdg_failed", 0) + 1
            continue
        ei, bid = directed_edges(g.bonds)
        xs.append(g.x)
        eis.append(ei)
        eas.append(g.bond_attr[bid])
        ms.append(g.mass)
        zs.append(g.z)
        rks.append(g.rank)
        poss.append(rp if pos is None else np.asarray(pos, dtype=np.float32))
        rps.append(rp)
        ys.append(np.asarray(y, dtype=np.float64).reshape(-1))
        kept.append(k)
    n_at = np.array([x.shape[0] for x in xs], dtype=np.int64)
    n_e = np.array([e.shape[1] for e in eis], dtype=np.int64)
    cat = (lambda a, w: torch.from_numpy(np.concatenate(a, 0)) if a else torch.zeros((0, w)))
    tensors = {
        "x": cat(xs, 34), "edge_attr": cat(eas, 10), "mass": cat(ms, 0).float(), "z": cat(zs, 0).long(), "rank": cat(rks, 0).long(),
        "pos": cat(poss, 3), "rdkit_pos": cat(rps, 3),
        "edge_index": torch.from_numpy(np.concatenate(eis, 1) if eis else np.zeros((2, 0), np.int64)),
        "atom_ptr": torch.from_numpy(np.concatenate([[0], np.cumsum(n_at)])),
        "edge_ptr": torch.from_numpy(np.concatenate([[0], np.cumsum(n_e)])),
        "y": torch.from_numpy(np.stack(ys) if ys else np.zeros((0, 1))),
    }
    return tensors, kept, dropped


class MolGraphDataset(torch.utils.data.Dataset):
    """Featurized molecules with conformations, built once by ``build()`` and cached at ``path``.

    ``build() -> (tensors, meta)`` as :func:`build_graphs` plus a ``meta`` that holds ``smiles`` (per
    kept molecule), ``names`` (optional) and ``source``. ``key`` identifies the inputs (see
    :func:`pamnet_fast.data.cache.load_or_build`).
    """

    def __init__(self, path, key: dict, build: Callable[[], tuple], *, force_rebuild: bool = False,
                 verbose: bool = True, name: str = "molecules"):
        t0 = time.perf_counter()
        obj = load_or_build(path, key, build, force_rebuild=force_rebuild, verbose=verbose)
        self.load_seconds = time.perf_counter() - t0
        self.path = path
        self.name = name
        self.meta = obj["meta"]
        t = obj["tensors"]
        self._t = t
        self.smiles: List[str] = list(self.meta["smiles"])
        self.names: Optional[List[str]] = self.meta.get("names")
        self.target_names: Optional[List[str]] = None  # names of the columns of y, where known

    def __len__(self) -> int:
        return int(self._t["atom_ptr"].numel() - 1)

    def get(self, i: int) -> Data:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {self.name} of size {n}")
        t = self._t
        a0, a1 = int(t["atom_ptr"][i]), int(t["atom_ptr"][i + 1])
        e0, e1 = int(t["edge_ptr"][i]), int(t["edge_ptr"][i + 1])
        return Data(x=t["x"][a0:a1], edge_index=t["edge_index"][:, e0:e1], edge_attr=t["edge_attr"][e0:e1],
                    mass=t["mass"][a0:a1], z=t["z"][a0:a1], rank=t["rank"][a0:a1], pos=t["pos"][a0:a1],
                    rdkit_pos=t["rdkit_pos"][a0:a1], y=t["y"][i:i + 1].float(),
                    idx=torch.tensor(i, dtype=torch.long))

    def __getitem__(self, i):
        return self.get(int(i))

    @property
    def y(self) -> torch.Tensor:
        """All targets, float64 ``[num_molecules, k]``."""
        return self._t["y"]

    def row_info(self, i: int) -> dict:
        out = {"smiles": self.smiles[i]}
        if self.names is not None:
            out = {"name": self.names[i], **out}
        return out

    def summary(self) -> str:
        dropped = self.meta.get("dropped") or {}
        extra = f"; dropped {dropped}" if dropped else ""
        return f"{self.name}: {len(self)} molecules ({self.path}){extra}"

    def __repr__(self) -> str:
        return f"MolGraphDataset({self.name!r}, {len(self)})"


def graphs_meta(smiles: Sequence[str], kept: Sequence[int], dropped: dict, source: str,
                names: Optional[Sequence[str]] = None, seconds: float = 0.0, extra: Optional[dict] = None) -> dict:
    meta = {"smiles": [smiles[k] for k in kept], "dropped": dropped, "source": source,
            "process_seconds": seconds, "kept": [int(k) for k in kept]}
    if names is not None:
        meta["names"] = [names[k] for k in kept]
    meta.update(extra or {})
    return meta


def qm9_graphs(cache_dir=None, limit: Optional[int] = None, seed: int = 0, verbose: bool = True,
               force_rebuild: bool = False) -> MolGraphDataset:
    """QM9 (from :class:`pamnet_fast.data.QM9`) as featurized heavy-atom graphs whose ``pos`` is the real
    DFT geometry (heavy atoms) and ``y [1, 12]`` all twelve targets (QM9's units).

    Atom order: each molecule's SMILES graph (with hydrogens) is matched onto the bond graph of its
    geometry, which gives the geometry index of every SMILES heavy atom. Molecules whose SMILES graph
    differs from the geometry's bonds (a few hundred of the 130,831) are dropped and counted
    (``summary()``); ``meta["qm9_index"]`` maps items back to QM9 positions.
    """
    from .qm9 import QM9
    from .featurize import map_smiles_to_geometry
    base = QM9(cache_dir, limit=limit, verbose=verbose)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir("physchem")
    tag = "full" if limit is None else f"limit{int(limit)}"
    key = {"format_version": 3, "dataset": "qm9", "qm9_cache": str(base.path), "qm9_n": len(base),
           "qm9_checksum": base.meta.get("checksum"), "etkdg_seed": seed, "features": "physchem-34-10"}

    def build():
        t0 = time.perf_counter()
        records, smiles, qm9_index, mismatch = [], [], [], 0
        for i in range(len(base)):
            d = base.get(i)
            m = map_smiles_to_geometry(base.smiles[i], d.z.numpy(), d.edge_index.numpy())
            if m is None:
                mismatch += 1
                continue
            records.append((base.smiles[i], base.y[i].numpy(), d.pos.numpy()[m]))
            smiles.append(base.smiles[i])
            qm9_index.append(i)
        if verbose:
            log.warning("featurizing %d QM9 molecules and embedding ETKDG conformers (once)", len(records))
        tensors, kept, dropped = build_graphs(records, seed=seed,
                                              conformer_cache=root / f"qm9_{tag}_etkdg{seed}.pt")
        if mismatch:
            dropped["smiles_graph_mismatch"] = mismatch
        meta = graphs_meta(smiles, kept, dropped, str(base.path), None, time.perf_counter() - t0,
                           {"qm9_index": [qm9_index[k] for k in kept]})
        return tensors, meta

    from .qm9 import TARGETS
    ds = MolGraphDataset(root / f"qm9_{tag}.pt", key, build, force_rebuild=force_rebuild,
                         verbose=verbose, name="QM9 (PhysChem graphs)")
    ds.target_names = list(TARGETS)
    return ds
