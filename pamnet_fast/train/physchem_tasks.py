"""PhysChem's datasets and model in the trainer's registries, and its prediction outputs.

Datasets (``pamnet-fast train --dataset NAME``): ``qm9-physchem`` (QM9 as featurized heavy-atom graphs,
the 12 targets learned jointly on standardized targets, real geometries as conformation targets) and
``esol``, ``freesolv``, ``lipop`` (MoleculeNet CSVs given by ``--root``, ETKDG conformers as targets),
each split randomly 80/10/10 with ``--split-seed``. Model: ``physchem`` (config presets per dataset).
"""
from __future__ import annotations

from typing import Optional

from .datasets import TaskData, _cut, random_split, register_dataset, subsets

UNITS = {"esol": "log(mol/L)", "freesolv": "kcal/mol", "lipop": "logD"}


def _splits(ds, split_seed, train_size, val_size, test_size):
    sp = random_split(len(ds), split_seed)
    sp = {"train": _cut(sp["train"], train_size), "val": _cut(sp["val"], val_size),
          "test": _cut(sp["test"], test_size)}
    return subsets(ds, sp)


def register_datasets() -> None:
    @register_dataset("qm9-physchem")
    def load_qm9_physchem(target: Optional[str] = None, split_seed: int = 42, train_size=None, val_size=None,
                          test_size=None, limit: Optional[int] = None, cache_dir=None, verbose: bool = True,
                          **_) -> TaskData:
        """QM9 for PhysChem: all 12 targets jointly (``--target`` is not supported), random 80/10/10."""
        if target is not None:
            raise ValueError("dataset qm9-physchem learns the 12 QM9 targets jointly (the PhysChem paper's "
                             "setting); drop --target")
        from ..data.molgraphs import qm9_graphs
        ds = qm9_graphs(cache_dir, limit=limit, verbose=verbose)
        tr, va, te = _splits(ds, split_seed, train_size, val_size, test_size)
        return TaskData(tr, va, te, target_name="qm9-12", unit="", target_index=None, element_ref=False,
                        loss="l1", summary=ds.summary(), full=ds, meta={"target": None})

    def moleculenet(name: str):
        def load(root=None, split_seed: int = 42, train_size=None, val_size=None, test_size=None,
                 limit: Optional[int] = None, cache_dir=None, verbose: bool = True, **_) -> TaskData:
            from ..data.moleculenet import moleculenet_dataset
            ds = moleculenet_dataset(name, root, cache_dir=cache_dir, limit=limit, verbose=verbose)
            tr, va, te = _splits(ds, split_seed, train_size, val_size, test_size)
            return TaskData(tr, va, te, target_name=name, unit=UNITS[name], target_index=None,
                            element_ref=False, loss="mse", summary=ds.summary(), full=ds,
                            meta={"root": str(root) if root is not None else None})
        load.__doc__ = f"MoleculeNet {name} (CSV at --root), random 80/10/10 split with split_seed."
        return load

    for name in ("esol", "freesolv", "lipop"):
        register_dataset(name)(moleculenet(name))


def register_models(register_model) -> None:
    from .checkpoint import config_to_dict

    def build(config: dict, dataset: str):
        from ..nn.physchem import PhysChem, PhysChemConfig
        if dataset == "qm9":
            raise ValueError("model physchem needs featurized molecule graphs: use --dataset qm9-physchem "
                             "(or esol, freesolv, lipop)")
        return PhysChem(PhysChemConfig.from_dict(config))

    def default(dataset: str):
        from ..nn.physchem import PhysChemConfig
        return config_to_dict(PhysChemConfig.preset(dataset))

    register_model("physchem", build, default)
