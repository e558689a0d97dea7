"""Datasets the trainer and the CLI know by name (``pamnet-fast train --dataset NAME``).

Each entry is a loader ``load(**options) -> TaskData``: the train/val/test splits of PyG ``Data``
(each with ``y [1, k]``) plus what the trainer needs to know about the target. ``TaskData.meta``
holds the options that reproduce the same splits, so ``evaluate`` / ``predict`` on a checkpoint call
:func:`load_dataset` with the stored meta and get the same molecules back.

A new dataset registers itself with :func:`register_dataset`; its loader takes the common options
below as keywords (and ignores those that do not apply to it by accepting ``**_``):
``root`` (a path, for datasets the user owns), ``target``, ``split_seed``, ``train_size``,
``val_size``, ``test_size``, ``limit`` (the first N samples, for tests), ``cache_dir``, ``verbose``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from typing import Any

Dataset = Any  # torch.utils.data.Dataset; imported lazily to keep the CLI start fast


@dataclass
class TaskData:
    """Splits and target description of one training task.

    ``target_index``: the column of ``data.y`` to learn (``None``: all columns). ``element_ref``: the
    samples carry atomic numbers ``z``, so the per-element linear baseline applies. ``loss``: the
    default loss (``"l1"`` or ``"mse"``; the CLI's ``--loss`` overrides it). ``full``: the whole dataset
    (for ``predict`` rows that need more than the split, e.g. names). ``train_defaults``:
    :class:`~pamnet_fast.train.TrainConfig` fields the CLI uses unless given (e.g. PDBbind's schedule).
    """
    train: Dataset
    val: Optional[Dataset]
    test: Optional[Dataset]
    target_name: str
    unit: str = ""
    target_index: Optional[int] = None
    element_ref: bool = True
    loss: str = "l1"
    meta: Dict = field(default_factory=dict)
    summary: str = ""
    full: Optional[Dataset] = None
    train_defaults: Dict = field(default_factory=dict)  # the dataset's paper settings (lr, epochs, decay)

    def split(self, name: str) -> Dataset:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; valid: train, val, test")
        ds = getattr(self, name)
        if ds is None:
            raise ValueError(f"dataset {self.meta.get('dataset')!r} has no {name} split")
        return ds


Loader = Callable[..., TaskData]
DATASETS: Dict[str, Loader] = {}
_TARGETS: Dict[str, Sequence[str]] = {}


def register_dataset(name: str, targets: Sequence[str] = ()):
    """Decorator: ``@register_dataset("esol")`` on a loader ``(**options) -> TaskData``. ``targets``:
    the names ``--target`` accepts for this dataset (empty: the dataset has one target)."""
    def deco(fn: Loader) -> Loader:
        DATASETS[name] = fn
        _TARGETS[name] = tuple(targets)
        return fn
    return deco


def dataset_names() -> List[str]:
    _register_builtin()
    return sorted(DATASETS)


def dataset_targets_of(name: str) -> Sequence[str]:
    _register_builtin()
    return _TARGETS.get(name, ())


def load_dataset(dataset: str = "qm9", **options) -> TaskData:
    """Load ``dataset`` (a registered name) with the given options; ``TaskData.meta`` records them
    (and the dataset name) so that ``load_dataset(**task.meta)`` reproduces the same splits."""
    _register_builtin()
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(sorted(DATASETS))}")
    targets = _TARGETS.get(dataset, ())
    target = options.get("target")
    if target is not None and targets and target not in targets:
        raise ValueError(f"dataset {dataset!r} has no target {target!r}; valid: {', '.join(targets)}")
    task = DATASETS[dataset](**options)
    stored = {k: v for k, v in options.items() if k not in ("cache_dir", "verbose")}
    task.meta = {"dataset": dataset, **stored, **task.meta}
    return task


def subsets(full: Dataset, split: Dict[str, Sequence[int]]):
    """``(train, val, test)`` Subsets of ``full`` from index lists (a missing key gives None)."""
    from torch.utils.data import Subset
    return tuple(Subset(full, [int(i) for i in split[k]]) if k in split else None
                 for k in ("train", "val", "test"))


def random_split(n: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> Dict[str, List[int]]:
    """Random split of ``range(n)`` with the given train/val/test fractions (the rest goes to test)."""
    import torch
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g).tolist()
    n_tr = int(round(fractions[0] * n))
    n_va = int(round(fractions[1] * n))
    return {"train": perm[:n_tr], "val": perm[n_tr:n_tr + n_va], "test": perm[n_tr + n_va:]}


def _cut(idx, size):
    return idx if size is None else idx[:size]


# ----------------------------------------------------------------------------- built-in datasets
_REGISTERED = False


def _register_builtin() -> None:
    """Register the built-in datasets on first use (their modules import RDKit etc. lazily)."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    from ..data.qm9 import TARGETS as QM9_TARGETS

    @register_dataset("qm9", targets=QM9_TARGETS)
    def load_qm9(target: Optional[str] = None, split_seed: int = 42, train_size: Optional[int] = None,
                 val_size: Optional[int] = None, test_size: Optional[int] = None,
                 limit: Optional[int] = None, cache_dir: Optional[str] = None, verbose: bool = True,
                 **_) -> TaskData:
        """QM9 from ``qm9pack`` (bonds by RDKit), the paper's 110k/10k/rest split."""
        from ..data.qm9 import QM9, TARGET_UNITS, target_index
        target = target or "U0"
        ds = QM9(cache_dir, target=target, limit=limit, verbose=verbose)
        sp = ds.split(seed=split_seed, train_size=train_size)
        sp = {"train": sp["train"], "val": _cut(sp["val"], val_size), "test": _cut(sp["test"], test_size)}
        tr, va, te = subsets(ds, {k: v.tolist() for k, v in sp.items()})
        return TaskData(tr, va, te, target_name=target, unit=TARGET_UNITS[target],
                        target_index=target_index(target), element_ref=True, loss="l1",
                        summary=ds.summary(), full=ds, meta={"target": target})

    @register_dataset("pdbbind", targets=("affinity",))
    def load_pdbbind(root=None, split_seed: int = 42, train_size: Optional[int] = None,
                     val_size: Optional[int] = None, test_size: Optional[int] = None,
                     limit: Optional[int] = None, cache_dir: Optional[str] = None, verbose: bool = True,
                     cutoff: float = 6.0, ligand_flag: bool = False, **_) -> TaskData:
        """PDBbind from the user's copy at ``root``: test = core set, refined minus core 9:1 (paper)."""
        from ..data.pdbbind import PDBbind, PDBbindError
        if root is None:
            raise PDBbindError("dataset pdbbind needs --root PATH: your copy of PDBbind (it is licensed and "
                               "not shipped), with <id>/<id>_pocket.pdb, <id>_ligand.mol2 and index/")
        ds = PDBbind(root, cutoff=cutoff, ligand_flag=ligand_flag, cache_dir=cache_dir, limit=limit,
                     verbose=verbose)
        sp = ds.split(split_seed)
        sp = {"train": _cut(sp["train"], train_size), "val": _cut(sp["val"], val_size),
              "test": _cut(sp["test"], test_size)}
        tr, va, te = subsets(ds, sp)
        return TaskData(tr, va, te, target_name="affinity", unit="pK", element_ref=False, loss="mse",
                        summary=ds.summary(), full=ds, meta={"target": "affinity", "root": str(ds.root),
                                                             "cutoff": cutoff, "ligand_flag": ligand_flag},
                        train_defaults={"lr": 5e-4, "epochs": 200, "warmup_epochs": 0.0, "decay_rate": 0.2,
                                        "decay_epochs": 50.0, "decay_staircase": True})
    from .physchem_tasks import register_datasets as register_physchem_datasets
    register_physchem_datasets()

    @register_dataset("rna_decoys")
    def load_rna_decoys(root: Optional[str] = None, split_seed: int = 42, limit: Optional[int] = None,
                        cache_dir: Optional[str] = None, verbose: bool = True, **_) -> TaskData:
        """RMSD of synthetic decoys of the RNA-Puzzles natives (``root``: their TU files), leave-puzzles-out."""
        from .rna_scoring import rna_decoy_task
        return rna_decoy_task(root, split_seed=split_seed, limit=limit, cache_dir=cache_dir, verbose=verbose)
