"""Score the poses of a ligand in a receptor with a model trained on PDBbind (``pamnet-fast predict
--receptor R --ligand L CKPT``): every pose of a multi-pose SDF in one batch, one CSV row per pose."""
from __future__ import annotations

import csv
from typing import List

import torch

from ..data.cache import atomic_write


def predict_complexes(model, st: dict, complexes: list, device="cpu", batch_size: int = 128) -> torch.Tensor:
    """Predicted affinity (target units) of complex ``Data`` items, ``batch_size`` complexes per model
    call (the ΔG head runs the complex, pocket and ligand graphs of all of them in one pass)."""
    from torch_geometric.loader import DataLoader
    from .precision import precision_of
    from .target_norm import TargetNormalizer
    norm = TargetNormalizer.from_state_dict(st["norm"])
    prec = precision_of(st)
    out = []
    model.eval()
    with torch.no_grad():
        for b in DataLoader(complexes, batch_size=batch_size, shuffle=False):
            b = prec.batch(b.to(device))
            with prec.autocast(device):
                pred = prec.output(model(b))
            out.append(norm.denormalize(pred[:, None] if pred.dim() == 1 else pred, b)[:, 0].cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def score_poses(model, st: dict, receptor, ligand, output, device="cpu", batch_size: int = 128) -> List[dict]:
    """Rows ``{pose, name, vina_score, pocket_atoms, ligand_atoms, pred_affinity}`` written to ``output``
    (CSV, atomically). The pocket definition (cutoff, protein/ligand flag) is the checkpoint's."""
    from ..data.complexes import load_complexes, vina_score
    meta = st.get("meta") or {}
    complexes, ligands = load_complexes(receptor, ligand, cutoff=float(meta.get("cutoff", 6.0)),
                                        ligand_flag=bool(meta.get("ligand_flag", False)))
    want = getattr(getattr(model, "config", None), "in_features", None)
    have = complexes[0].x.shape[1]
    if want is not None and want != have:
        raise ValueError(f"the model expects {want} atom features, the complexes have {have}")
    pred = predict_complexes(model, st, complexes, device, batch_size)
    rows = []
    for k, (c, lig) in enumerate(zip(complexes, ligands)):
        v = vina_score(lig.props)
        n_lig = int(c.ligand.sum())
        rows.append({"pose": k, "name": lig.name, "vina_score": "" if v is None else v,
                     "pocket_atoms": c.num_nodes - n_lig, "ligand_atoms": n_lig,
                     "pred_affinity": float(pred[k])})

    def write_csv(fh):
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "pred_affinity": repr(r["pred_affinity"])})
    atomic_write(output, write_csv)
    return rows
