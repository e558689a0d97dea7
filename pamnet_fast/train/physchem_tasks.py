"""PhysChem's datasets and model in the trainer's registries, and its prediction outputs.

Datasets (``pamnet-fast train --dataset NAME``): ``qm9-physchem`` (QM9 as featurized heavy-atom graphs,
the 12 targets learned jointly on standardized targets, real geometries as conformation targets) and
``esol``, ``freesolv``, ``lipop`` (MoleculeNet CSVs given by ``--root``, ETKDG conformers as targets),
each split randomly 80/10/10 with ``--split-seed``. Model: ``physchem`` (config presets per dataset).
"""
from __future__ import annotations

from typing import Optional

from ..data.cache import atomic_write
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


# ----------------------------------------------------------------------------- prediction outputs
def conformation_records(model, dataset, device: str = "cpu", batch_size: int = 128):
    """Per molecule of ``dataset``: ``(idx, predicted [n, 3], target pos [n, 3], rdkit_pos [n, 3], dl_rs,
    kabsch, dl_rs_rdkit, kabsch_rdkit)``, the metrics against ``pos`` (numpy / floats)."""
    from torch_geometric.loader import DataLoader
    from ..nn.physchem import distance_rmse, kabsch_rmsd
    import torch
    from .precision import Precision
    fp64 = any(p.dtype == torch.float64 for p in model.parameters())  # a --precision fp64 run
    out = []
    for b in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        b = b.to(device)
        b = Precision("fp64").batch(b) if fp64 else b
        pred = model.predict_conformations(b).double()
        pos, rd = b.pos.double(), b.rdkit_pos.double()
        g = b.num_graphs
        m = [f(x, pos, b.batch, g).cpu() for x in (pred, rd) for f in (distance_rmse, kabsch_rmsd)]
        ptr = b.ptr.cpu()
        for k in range(g):
            a0, a1 = int(ptr[k]), int(ptr[k + 1])
            out.append((int(b.idx[k]), pred[a0:a1].cpu().numpy(), pos[a0:a1].cpu().numpy(),
                        rd[a0:a1].cpu().numpy(), float(m[0][k]), float(m[1][k]), float(m[2][k]), float(m[3][k])))
    return out


def plot_distance_errors(recs, path, title: str = "") -> None:
    """PNG: predicted (and RDKit ETKDG) vs real interatomic distances, and per-molecule DL-RS histograms."""
    import numpy as np
    from .plots import _plt
    plt = _plt()
    dr, dp, dk = [], [], []
    for _, pred, pos, rd, *_ in recs:
        iu = np.triu_indices(pos.shape[0], 1)
        dist = (lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)[iu])
        dr.append(dist(pos)), dp.append(dist(pred)), dk.append(dist(rd))
    dr, dp, dk = (np.concatenate(v) if v else np.zeros(0) for v in (dr, dp, dk))
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.8))
    ax[0].scatter(dr, dk, s=2, alpha=0.25, label="RDKit ETKDG", rasterized=True, color="tab:orange")
    ax[0].scatter(dr, dp, s=2, alpha=0.25, label="PhysChem (learned)", rasterized=True, color="tab:blue")
    hi = float(max(dr.max(initial=1), dp.max(initial=1)))
    ax[0].plot([0, hi], [0, hi], "k--", lw=1)
    ax[0].set_xlabel("real distance [Å]")
    ax[0].set_ylabel("predicted distance [Å]")
    ax[0].legend(markerscale=5, loc="upper left")
    ax[0].set_title("all atom pairs")
    a = np.array([r[4] for r in recs])
    b = np.array([r[6] for r in recs])
    bins = np.linspace(0, max(a.max(initial=1), b.max(initial=1)), 40)
    ax[1].hist(a, bins, alpha=0.6, label=f"PhysChem: mean {a.mean():.3f} Å")
    ax[1].hist(b, bins, alpha=0.6, label=f"RDKit ETKDG: mean {b.mean():.3f} Å")
    ax[1].set_xlabel("DL-RS per molecule [Å] (RMS of the distance-matrix error)")
    ax[1].set_ylabel("molecules")
    ax[1].legend(loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"), "wb")
    plt.close(fig)


def write_physchem_outputs(model, dataset, full, rows, stem, device: str = "cpu", batch_size: int = 128,
                           target_names=None) -> str:
    """Next to the property predictions: ``<stem>.sdf`` (the learned conformations, RDKit molecules with
    their SMILES' bonds), ``<stem>.csv`` (per-molecule DL-RS and Kabsch-RMSD of the learned and of the
    RDKit ETKDG conformation against ``pos``), ``<stem>.png`` (:func:`plot_distance_errors`) and
    ``<stem>_summary.json`` (means, and the test MAE per target from ``rows``). Returns a summary line."""
    import csv
    import json
    from pathlib import Path
    import numpy as np
    from rdkit import Chem
    from rdkit.Geometry import Point3D
    from ..data.featurize import mol_from_smiles
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    model = model.to(device)
    recs = conformation_records(model, dataset, device, batch_size)
    smiles = full.smiles
    target_names = target_names if target_names is not None else getattr(full, "target_names", None)

    def write_sdf(f):
        w = Chem.SDWriter(f)
        for idx, pred, *_, dl, kb, _, _ in recs:
            mol = mol_from_smiles(smiles[idx])
            conf = Chem.Conformer(mol.GetNumAtoms())
            for a, p in enumerate(pred):
                conf.SetAtomPosition(a, Point3D(*map(float, p)))
            mol.AddConformer(conf, assignId=True)
            mol.SetProp("_Name", f"idx{idx}")
            mol.SetProp("idx", str(idx))
            mol.SetProp("smiles", smiles[idx])
            mol.SetProp("dl_rs", f"{dl:.4f}")
            mol.SetProp("kabsch_rmsd", f"{kb:.4f}")
            w.write(mol)
        w.close()

    def write_csv(f):
        cw = csv.writer(f)
        cw.writerow(["idx", "smiles", "heavy_atoms", "dl_rs", "kabsch_rmsd", "dl_rs_rdkit", "kabsch_rmsd_rdkit"])
        for idx, pred, _, _, dl, kb, dlr, kbr in recs:
            cw.writerow([idx, smiles[idx], pred.shape[0], f"{dl:.5f}", f"{kb:.5f}", f"{dlr:.5f}", f"{kbr:.5f}"])

    atomic_write(stem.with_suffix(".sdf"), write_sdf)
    atomic_write(stem.with_suffix(".csv"), write_csv)
    summary = {"molecules": len(recs),
               "dl_rs": float(np.mean([r[4] for r in recs])), "kabsch_rmsd": float(np.mean([r[5] for r in recs])),
               "dl_rs_rdkit": float(np.mean([r[6] for r in recs])),
               "kabsch_rmsd_rdkit": float(np.mean([r[7] for r in recs])),
               "conformation_target": "pos (real geometry on QM9, an ETKDG conformer on MoleculeNet sets)"}
    if rows and rows[0][1] is not None:
        y = np.array([r[1] for r in rows], dtype=np.float64)
        p = np.array([r[2] for r in rows], dtype=np.float64)
        names = list(target_names) if target_names is not None and len(target_names) == y.shape[1] else \
            [f"y{k}" for k in range(y.shape[1])]
        summary["mae"] = {n: float(np.abs(y[:, k] - p[:, k]).mean()) for k, n in enumerate(names)}
        summary["rmse"] = {n: float(np.sqrt(((y[:, k] - p[:, k]) ** 2).mean())) for k, n in enumerate(names)}
    try:
        plot_distance_errors(recs, stem.with_suffix(".png"), f"{len(recs)} molecules")
    except ImportError:  # matplotlib missing
        pass
    summary_text = json.dumps(summary, indent=1)
    atomic_write(stem.with_name(stem.name + "_summary.json"), lambda f: f.write(summary_text))
    return (f"conformations of {len(recs)} molecules -> {stem.with_suffix('.sdf')} (+ .csv, .png): DL-RS "
            f"{summary['dl_rs']:.3f} Å, Kabsch-RMSD {summary['kabsch_rmsd']:.3f} Å vs the target conformation "
            f"(RDKit ETKDG: {summary['dl_rs_rdkit']:.3f} Å, {summary['kabsch_rmsd_rdkit']:.3f} Å)")
