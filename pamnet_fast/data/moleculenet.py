"""MoleculeNet regression sets for PhysChem: ESOL, FreeSolv, Lipophilicity (user-provided CSV files).

The package ships no data; ``root`` is the file or a directory holding it:

=============  ==========================  ==================================  =========================
dataset        file                        target column                       source
=============  ==========================  ==================================  =========================
``esol``       ``esol_delaney_si.txt``     ``measured log(solubility:mol/L)``  Delaney 2004, SI (1,128)
``freesolv``   ``freesolv.csv``            ``expt`` (kcal/mol)                 Mobley & Guthrie 2014 (642)
``lipop``      ``lipophilicity.csv``       ``exp`` (logD 7.4)                  ChEMBL via MoleculeNet (4,200)
=============  ==========================  ==================================  =========================

(the MoleculeNet copies: ``delaney-processed.csv``, ``SAMPL.csv`` and ``Lipophilicity.csv`` at
https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/ have the same columns; ``SAMPL.csv`` and
``delaney-processed.csv`` are also accepted.) Molecules have no experimental geometry, so the
conformation target of PhysChem is one RDKit ETKDGv3 conformer per molecule (seeded), computed once
and cached with the features (atomic write).
"""
from __future__ import annotations

import csv
import logging
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from .cache import default_cache_dir, files_fingerprint
from .errors import InputDataError
from .molgraphs import MolGraphDataset, build_graphs, graphs_meta

log = logging.getLogger(__name__)

# name -> (file names accepted, SMILES column, target column, name column, unit)
SPECS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...], Tuple[str, ...], Optional[str], str]] = {
    "esol": (("esol_delaney_si.txt", "delaney-processed.csv"), ("SMILES", "smiles"),
             ("measured log(solubility:mol/L)", "measured log solubility in mols per litre"),
             "Compound ID", "log(mol/L)"),
    "freesolv": (("freesolv.csv", "SAMPL.csv"), ("smiles",), ("expt",), "iupac", "kcal/mol"),
    "lipop": (("lipophilicity.csv", "Lipophilicity.csv"), ("smiles",), ("exp",), "CMPD_CHEMBLID", "logD"),
}
FORMAT_VERSION = 3


def find_file(name: str, root) -> Path:
    """The CSV of dataset ``name`` at ``root`` (the file itself or a directory holding it)."""
    if name not in SPECS:
        raise ValueError(f"unknown MoleculeNet dataset {name!r}; valid: {', '.join(SPECS)}")
    if root is None:
        raise InputDataError(f"dataset {name!r} needs --root: the path of {SPECS[name][0][0]} (or a directory "
                         f"holding it); see pamnet_fast.data.moleculenet for where to get it")
    p = Path(root).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for f in SPECS[name][0]:
            if (p / f).is_file():
                return p / f
        raise FileNotFoundError(f"{p} holds none of {', '.join(SPECS[name][0])} (dataset {name!r})")
    raise FileNotFoundError(f"--root {p} does not exist (dataset {name!r} expects {SPECS[name][0][0]})")


def read_csv(name: str, path: Path):
    """``(smiles, targets float64 [n], names)`` of a MoleculeNet CSV; a missing column or a
    non-numeric target is a ``ValueError`` naming the row."""
    _, smi_cols, y_cols, name_col, _ = SPECS[name]
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        smi_c = next((c for c in smi_cols if c in header), None)
        y_c = next((c for c in y_cols if c in header), None)
        if smi_c is None or y_c is None:
            raise ValueError(f"{path}: expected columns {smi_cols[0]!r} and {y_cols[0]!r} for dataset "
                             f"{name!r}; found {header}")
        smiles, ys, names = [], [], []
        for k, row in enumerate(reader):
            try:
                ys.append(float(row[y_c]))
            except (TypeError, ValueError):
                raise ValueError(f"{path}, row {k + 2}: target {y_c!r} is not a number: {row[y_c]!r}")
            smiles.append(row[smi_c].strip())
            names.append(row.get(name_col) or f"row{k}")
    if not smiles:
        raise ValueError(f"{path}: no molecules")
    return smiles, np.asarray(ys, dtype=np.float64), names


def moleculenet_dataset(name: str, root, cache_dir=None, limit: Optional[int] = None, seed: int = 0,
                        verbose: bool = True, force_rebuild: bool = False) -> MolGraphDataset:
    """Featurized ``name`` molecules with ETKDG conformers (cached under ``cache_dir``)."""
    path = find_file(name, root)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir("physchem")
    tag = "full" if limit is None else f"limit{int(limit)}"
    key = {"format_version": FORMAT_VERSION, "dataset": name, "source": files_fingerprint([path]),
           "limit": limit, "etkdg_seed": seed, "features": "physchem-34-10"}

    def build():
        t0 = time.perf_counter()
        smiles, ys, names = read_csv(name, path)
        if limit is not None:
            smiles, ys, names = smiles[:limit], ys[:limit], names[:limit]
        if verbose:
            log.warning("featurizing %d %s molecules from %s and embedding ETKDG conformers (once)",
                        len(smiles), name, path)
        bar = None
        if verbose and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                bar = tqdm(total=len(smiles), desc=name, unit="mol", leave=False)
            except ImportError:  # pragma: no cover
                bar = None
        tensors, kept, dropped = build_graphs([(s, y, None) for s, y in zip(smiles, ys)], seed=seed,
                                              progress=bar.update if bar is not None else None,
                                              conformer_cache=cache / f"{name}_{tag}_etkdg{seed}.pt")
        if bar is not None:
            bar.close()
        return tensors, graphs_meta(smiles, kept, dropped, str(path), names, time.perf_counter() - t0,
                                    {"unit": SPECS[name][4]})

    ds = MolGraphDataset(cache / f"{name}_{tag}.pt", key, build, force_rebuild=force_rebuild,
                         verbose=verbose, name=name)
    ds.target_names = [name]
    return ds
