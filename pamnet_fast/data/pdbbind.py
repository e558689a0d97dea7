r"""PDBbind (user's copy): index files, the paper's split, processed and cached complexes.

Layout (PDBbind v2016 and later; the refined and core sets may sit in sub-directories of ``root``)::

    root/<id>/<id>_protein.pdb   <id>_pocket.pdb   <id>_ligand.mol2  (or <id>_ligand.sdf)
    root/.../index/INDEX_refined_data.2016    # PDB code, resolution, year, -logKd/Ki, Kd/Ki, ...
    root/.../CoreSet.dat  or  INDEX_core_data.2016  or a core-set/ (coreset/) directory of <id>/

The paper's split (PAMNet, Table 2): test = the core set (2016: 290 complexes), the refined set minus
the core set shuffled by ``split_seed`` and split 9:1 into train/validation. Each complex is
featurized once (:mod:`pamnet_fast.data.complexes`: pocket = receptor heavy atoms within ``cutoff`` Å of
the ligand's heavy atoms) and the whole set cached atomically, keyed by the files' sizes and mtimes
and the options.
"""
from __future__ import annotations

import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .cache import default_cache_dir, files_fingerprint, key_hash, load_or_build
from .errors import InputDataError
from .complexes import ComplexError, ReceptorFeatures, complex_data, find_file, read_ligands, read_protein

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
_PDB_ID = re.compile(r"^[0-9][0-9a-z]{3}$")
LIGAND_SUFFIXES = ("_ligand.mol2", "_ligand.sdf")
RECEPTOR_SUFFIXES = ("_pocket.pdb", "_protein.pdb", "_protein.cif")


class PDBbindError(InputDataError):
    """The directory given as the PDBbind root is missing something the loader needs."""


def read_index(path) -> Dict[str, float]:
    """``{pdb id: -log Kd/Ki}`` from a PDBbind index file (``INDEX_*_data.*``: code, resolution, year,
    -logKd/Ki, ...) or CASF's ``CoreSet.dat`` (code, resolution, year, logKa, ...). ``#`` lines are
    comments."""
    out = {}
    for k, line in enumerate(Path(path).read_text(errors="replace").splitlines()):
        tok = line.split()
        if not tok or tok[0].startswith("#"):
            continue
        code = tok[0].lower()
        if not _PDB_ID.match(code):
            continue
        try:
            out[code] = float(tok[3])
        except (IndexError, ValueError):
            raise PDBbindError(f"{path}, line {k + 1}: expected 'code resolution year -logKd/Ki ...', "
                               f"got {line.strip()!r}") from None
    return out


def _search(root: Path, patterns: Sequence[str], depth: int = 3) -> List[Path]:
    found = []
    for d in range(depth + 1):
        for pat in patterns:
            found += sorted(root.glob("/".join(["*"] * d + [pat])))
    return found


def _complex_dirs(root: Path) -> Dict[str, Path]:
    """``{id: directory}`` of every ``<id>/`` with a ligand file, at most two levels below ``root``
    (first found wins, so ``root/<id>`` beats ``root/refined-set/<id>``)."""
    dirs: Dict[str, Path] = {}
    for d in range(3):
        for lig in sorted(root.glob("/".join(["*"] * d + ["*", "*_ligand.*"]))):
            code = lig.parent.name.lower()
            if lig.name.lower().startswith(code + "_ligand.") and code not in dirs:
                dirs[code] = lig.parent
    return dirs


def pdbbind_index(root) -> Tuple[Dict[str, float], List[str], Dict[str, Path], List[Path]]:
    """``(affinities of the refined set, core ids, complex directories, index files used)`` of a
    PDBbind copy; raises :class:`PDBbindError` saying what is missing."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise PDBbindError(f"PDBbind root {root} is not a directory")
    refined = _search(root, ["INDEX_refined_data*", "INDEX_refined_set*"])
    if not refined:
        raise PDBbindError(f"no refined-set index (INDEX_refined_data.<year>, usually in index/) under {root}")
    labels = read_index(refined[0])
    if not labels:
        raise PDBbindError(f"{refined[0]} lists no complexes")
    used = [refined[0]]
    core_files = _search(root, ["CoreSet.dat", "INDEX_core_data*", "INDEX_core_set*"])
    dirs = _complex_dirs(root)
    if core_files:
        core_labels = read_index(core_files[0])
        used.append(core_files[0])
        core = sorted(core_labels)
        for c, v in core_labels.items():
            labels.setdefault(c, v)
    else:
        core_dir = [p for p in _search(root, ["core-set", "coreset", "core_set", "CASF-2016/coreset"], 2)
                    if p.is_dir()]
        if not core_dir:
            raise PDBbindError(f"no core-set list under {root}: expected CoreSet.dat, INDEX_core_data.<year> "
                               f"or a core-set/ (coreset/) directory")
        core = sorted(p.name.lower() for p in core_dir[0].iterdir() if p.is_dir() and _PDB_ID.match(p.name.lower()))
    if not dirs:
        raise PDBbindError(f"no complex directories (<id>/<id>_ligand.mol2 or .sdf) under {root}")
    return labels, core, dirs, used


def paper_split(ids: Sequence[str], core: Sequence[str], seed: int = 42, val_fraction: float = 0.1
                ) -> Dict[str, List[int]]:
    """Positions in ``ids``: test = the core set, the rest shuffled by ``seed`` and split 9:1."""
    core = set(core)
    test = [i for i, c in enumerate(ids) if c in core]
    rest = [i for i, c in enumerate(ids) if c not in core]
    g = torch.Generator().manual_seed(int(seed))
    rest = [rest[k] for k in torch.randperm(len(rest), generator=g).tolist()]
    n_val = int(round(val_fraction * len(rest)))
    return {"train": sorted(rest[n_val:]), "val": sorted(rest[:n_val]), "test": test}


def process_complex(directory: Path, code: str, cutoff: float, ligand_flag: bool):
    """``(x, pos, ligand mask)`` of one PDBbind complex: the MOL2 ligand (the SDF when RDKit cannot
    read the MOL2) and the pocket file (else the protein file)."""
    errors = []
    for suffix in LIGAND_SUFFIXES:
        path = find_file(directory, code, [suffix])
        if path is None:
            continue
        try:
            lig = read_ligands(path, ligand_flag)[0]
            break
        except ComplexError as e:
            errors.append(str(e))
    else:
        raise ComplexError("; ".join(errors) or f"{directory}: no {code}_ligand.mol2 or .sdf")
    rec = find_file(directory, code, RECEPTOR_SUFFIXES)
    if rec is None:
        raise ComplexError(f"{directory}: no {code}_pocket.pdb or {code}_protein.pdb")
    feats = ReceptorFeatures(read_protein(rec), [lig.pos], margin=max(10.0, cutoff + 3.0),
                             ligand_flag=ligand_flag)
    pocket = feats.pocket(lig.pos, cutoff)
    d = complex_data(pocket.x, pocket.pos, lig.x, lig.pos)
    return d.x, d.pos, d.ligand


def _process_job(job):
    """Worker side: ``(code, (x, pos, ligand) as numpy | error message)``; numpy, so that the worker
    process does no torch work and pickling stays cheap."""
    directory, code, cutoff, ligand_flag = job
    try:
        x, pos, lig = process_complex(Path(directory), code, cutoff, ligand_flag)
        return code, (x.numpy(), pos.numpy(), lig.numpy())
    except (ComplexError, ValueError) as e:
        return code, f"{e}"


def _process_all(jobs, num_workers: int, verbose: bool):
    """Results of :func:`_process_job` in job order, on ``num_workers`` spawned processes (RDKit is
    single-threaded; spawn, not fork, so no OpenMP state is inherited)."""
    if num_workers <= 1 or len(jobs) < 2:
        yield from map(_process_job, jobs)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(num_workers, mp_context=mp.get_context("spawn")) as ex:
        yield from ex.map(_process_job, jobs, chunksize=8)


class PDBbind(torch.utils.data.Dataset):
    """Processed PDBbind complexes (refined + core set) of a user's copy at ``root``.

    Items: ``Data(x [n, F], pos [n, 3], ligand [n], y [1, 1] = -log Kd/Ki, idx)``, pocket atoms first.
    ``ids``: PDB codes; ``split(seed)``: the paper's split; complexes that cannot be processed are
    skipped with a warning and listed in ``skipped``. The first load processes the complexes on
    ``num_workers`` processes (default: up to 8 CPUs from 64 complexes on) and caches them.
    """

    def __init__(self, root, cutoff: float = 6.0, ligand_flag: bool = False, cache_dir=None,
                 limit: Optional[int] = None, force_rebuild: bool = False, verbose: bool = True,
                 num_workers: Optional[int] = None):
        self.root = Path(root).expanduser().resolve()
        labels, core, dirs, index_files = pdbbind_index(self.root)
        wanted = sorted(c for c in dirs if c in labels)
        missing_core = sorted(set(core) - set(dirs))
        if not wanted:
            raise PDBbindError(f"none of the {len(dirs)} complex directories under {self.root} is listed in "
                               f"{index_files[0].name}")
        if limit is not None:
            wanted = wanted[:int(limit)]
        self.core = sorted(set(core) & set(wanted))
        files = [p for c in wanted for p in dirs[c].iterdir() if p.name.lower().startswith(c + "_")]
        key = {"version": FORMAT_VERSION, "root": str(self.root), "cutoff": float(cutoff),
               "ligand_flag": bool(ligand_flag), "ids": wanted, "files": files_fingerprint(files + index_files)}
        cache = Path(cache_dir) if cache_dir else default_cache_dir("pdbbind")
        path = cache / f"pdbbind_{key_hash(key)[:16]}.pt"

        def build():
            t0 = time.time()
            xs, poss, ligs, ys, ok, skipped = [], [], [], [], [], []
            workers = num_workers
            if workers is None:  # a process pool pays off from a few dozen complexes on
                workers = min(8, len(os.sched_getaffinity(0))) if len(wanted) >= 64 else 1
            jobs = [(str(dirs[c]), c, float(cutoff), bool(ligand_flag)) for c in wanted]
            for k, (c, res) in enumerate(_process_all(jobs, workers, verbose)):
                if isinstance(res, str):
                    skipped.append(f"{c}: {res}")
                    continue
                x, pos, lig = (torch.from_numpy(a) for a in res)
                xs.append(x), poss.append(pos), ligs.append(lig), ys.append(labels[c]), ok.append(c)
                if verbose and (k + 1) % 500 == 0:
                    log.info("PDBbind: %d/%d complexes processed", k + 1, len(wanted))
            if not ok:
                raise PDBbindError(f"no complex under {self.root} could be processed; first error: {skipped[0]}")
            counts = torch.tensor([len(p) for p in poss])
            tensors = {"x": torch.cat(xs), "pos": torch.cat(poss), "ligand": torch.cat(ligs),
                       "y": torch.tensor(ys, dtype=torch.float32).view(-1, 1),
                       "ptr": torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])}
            return tensors, {"ids": ok, "skipped": skipped, "process_seconds": time.time() - t0}

        obj = load_or_build(path, key, build, force_rebuild=force_rebuild, verbose=verbose)
        t, self.meta = obj["tensors"], obj["meta"]
        self.x, self.pos, self.ligand, self.y, self.ptr = t["x"], t["pos"], t["ligand"], t["y"], t["ptr"]
        self.ids: List[str] = list(self.meta["ids"])
        self.skipped: List[str] = list(self.meta["skipped"])
        self.missing_core = missing_core
        if self.skipped:
            warnings.warn(f"PDBbind: skipped {len(self.skipped)} complex(es) that could not be processed, "
                          f"e.g. {self.skipped[0]}", stacklevel=2)
        self.cutoff, self.ligand_flag = float(cutoff), bool(ligand_flag)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        from torch_geometric.data import Data
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"PDBbind index {i} out of range for {len(self)} complexes")
        i %= len(self)
        s, e = int(self.ptr[i]), int(self.ptr[i + 1])
        return Data(x=self.x[s:e], pos=self.pos[s:e], ligand=self.ligand[s:e], y=self.y[i:i + 1],
                    idx=torch.tensor(i))

    def split(self, seed: int = 42) -> Dict[str, List[int]]:
        return paper_split(self.ids, self.core, seed)

    def row_info(self, i: int) -> Dict[str, object]:
        return {"pdb_id": self.ids[i]}

    def summary(self) -> str:
        n_atoms = (self.ptr[1:] - self.ptr[:-1]).float()
        lig = int(self.ligand.sum())
        return (f"PDBbind at {self.root}: {len(self)} complexes ({len(self.core)} in the core set"
                f"{f', {len(self.missing_core)} core ids without files' if self.missing_core else ''}"
                f"{f', {len(self.skipped)} skipped' if self.skipped else ''}), pocket cutoff {self.cutoff} Å, "
                f"{n_atoms.mean():.0f} heavy atoms per complex on average ({lig / max(1, len(self)):.0f} "
                f"ligand), -logKd/Ki {self.y.mean():.2f} ± {self.y.std():.2f}")


__all__ = ["PDBbind", "PDBbindError", "read_index", "pdbbind_index", "paper_split", "process_complex"]
