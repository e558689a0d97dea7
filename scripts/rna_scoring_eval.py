"""Evaluate RMSD scorers on held-out RNA puzzles (synthetic decoys) and on RNA-Puzzle 13's real models.

    python3 scripts/rna_scoring_eval.py --root ../shared/data/rna_puzzles_native \
        --rp13 ../shared/data/rna_decoys/rp13 --run pamnet_dim16=runs/rna-pamnet-dim16 \
        --run pamnet_dim32=runs/rna-pamnet-dim32 --out results/rna_scoring

Writes ``metrics.json`` (the paper's three ranking metrics and the mean Spearman per scorer, on the test
puzzles of the checkpoints' leave-puzzles-out split, with the exact random-order expectation),
``test_scores.csv``, ``rp13.csv`` (RMSD of each predicted model to the solution and its scores) and
``rp13_scatter.png``. Baselines: the contact count and the distance-histogram ridge regression of
:mod:`pamnet_fast.train.rna_scoring` (fit on the same training puzzles, ridge strength on validation).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pamnet_fast.cli import load_trained  # noqa: E402
from pamnet_fast.data.structures import read_rna_structure, rmsd  # noqa: E402
from pamnet_fast.scoring import expand_inputs, score_structures  # noqa: E402
from pamnet_fast.train.datasets import load_dataset  # noqa: E402
from pamnet_fast.train.ranking import random_ranking_metrics, ranking_metrics  # noqa: E402
from pamnet_fast.train.rna_scoring import (contact_score, distance_histogram,  # noqa: E402
                                           fit_histogram_baseline, group_by_puzzle)


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_test_predictions(run: Path, test_idx):
    """The run's own test predictions (``test_predictions.csv``: decoy ``idx`` -> ``pred_0``, from the
    weights saved in model.pt), in ``test_idx`` order; None when absent or not of this split."""
    f = (run if run.is_dir() else run.parent) / "test_predictions.csv"
    if not f.exists():
        return None
    with open(f) as fh:
        pred = {int(r["idx"]): float(r["pred_0"]) for r in csv.DictReader(fh)}
    if set(pred) != set(test_idx):
        return None
    return np.array([pred[k] for k in test_idx])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--rp13", required=True)
    ap.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR")
    ap.add_argument("--out", default="results/rna_scoring")
    ap.add_argument("--split-seed", type=int, default=42)
    ap.add_argument("--features-cache", default=None, help="npz of the baseline's histogram features")
    ap.add_argument("--baselines-only", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = dict(r.split("=", 1) for r in args.run)

    task = load_dataset("rna_decoys", root=args.root, split_seed=args.split_seed, verbose=False)
    ds = task.full
    idx = {k: list(getattr(task, k).indices) for k in ("train", "val", "test")}
    native_name = lambda k: ds.natives[int(ds.native_of[k])].name  # noqa: E731
    test_groups_of = [native_name(k).split("_NATIVE")[0].replace("rna_puzzle_", "") for k in idx["test"]]
    y = {k: ds.rmsd[v].numpy() for k, v in idx.items()}
    scores = {}

    # distance-only baselines
    t0 = time.time()
    cache = Path(args.features_cache) if args.features_cache else None
    if cache is not None and cache.exists():
        feats = dict(np.load(cache))
    else:
        feats = {k: np.stack([distance_histogram(ds[i].pos, ds[i].z) for i in v]) for k, v in idx.items()}
        if cache is not None:
            np.savez(cache, **feats)
    ridge, ridge_info = fit_histogram_baseline(feats["train"], y["train"], feats["val"], y["val"])
    scores["distance_histogram_ridge"] = ridge.predict(feats["test"])
    scores["contact_count"] = np.array([contact_score(ds[i].pos) for i in idx["test"]])
    print(f"baselines in {time.time() - t0:.0f} s (ridge alpha {ridge_info['alpha']})", flush=True)
    if args.baselines_only:
        return 0

    models = {}
    for name, run in runs.items():
        model, st, f = load_trained(run)
        if st["meta"].get("puzzle_split") != task.meta["puzzle_split"]:
            raise SystemExit(f"{run} was trained on another split: {st['meta'].get('puzzle_split')}")
        t0 = time.time()
        scores[name] = run_test_predictions(Path(run), idx["test"])
        if scores[name] is None:  # the run wrote no test predictions: score the test decoys here
            scores[name] = np.array(score_structures(model, st, [ds[i] for i in idx["test"]]))
        print(f"{name}: {len(idx['test'])} test decoys in {time.time() - t0:.0f} s", flush=True)
        models[name] = (model, st, f)

    metrics = {"split": task.meta["puzzle_split"], "decoys_per_native": task.meta["decoys_per_native"],
               "test_natives": sorted(set(test_groups_of)), "near_native_A": 2.0,
               "ridge": ridge_info, "test": {}}
    for name, s in scores.items():
        m = ranking_metrics(group_by_puzzle(test_groups_of, s, y["test"]))
        m["mae"] = float(np.abs(s - y["test"]).mean()) if not name.startswith("contact") else None
        metrics["test"][name] = m
    metrics["test"]["random_order"] = random_ranking_metrics(
        {p: r for p, (_, r) in group_by_puzzle(test_groups_of, y["test"], y["test"]).items()})
    with open(out / "test_scores.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["decoy", "native", "rmsd"] + list(scores))
        for j, k in enumerate(idx["test"]):
            w.writerow([k, native_name(k), f"{y['test'][j]:.4f}"] + [f"{scores[n][j]:.4f}" for n in scores])

    # RNA-Puzzle 13: real models from modelling groups, RMSD to the solution on matched atoms
    files = expand_inputs([args.rp13])
    sol_path = [f for f in files if "solution" in f.name]
    if len(sol_path) != 1:
        raise SystemExit(f"expected one *solution* file in {args.rp13}")
    solution = read_rna_structure(str(sol_path[0]))
    rows = []
    for f in files:
        s = read_rna_structure(str(f))
        r = rmsd(s, solution)
        row = {"file": f.name, "atoms": s.pos.size(0), "matched": r.n, "unmatched_model": len(r.unmatched_a),
               "unmatched_solution": len(r.unmatched_b), "rmsd": r.rmsd,
               "contact_count": contact_score(s.pos),
               "distance_histogram_ridge": float(ridge.predict(distance_histogram(s.pos, s.z)[None])[0])}
        for name, (model, st, _) in models.items():
            row[name] = score_structures(model, st, [s])[0]
        rows.append(row)
    from scipy.stats import spearmanr
    preds = [r for r in rows if "solution" not in r["file"]]
    rmsds = np.array([r["rmsd"] for r in preds])
    rp13 = {"models": len(preds), "rmsd_range": [float(rmsds.min()), float(rmsds.max())],
            "atoms_matched": sorted({r["matched"] for r in preds}),
            "matching": "chain, residue number, insertion code, atom name (C/N/O of RNA residues); the "
                        "solution lacks residues 46-56 of the models (rna-pdb-tools renumbered its residues "
                        "48-62 to 57-71, so the numbering matches the models; unmatched model atoms are left out)",
            "spearman": {}}
    scorers = ["contact_count", "distance_histogram_ridge"] + list(models)
    for name in scorers:
        rp13["spearman"][name] = float(spearmanr([r[name] for r in preds], rmsds).statistic)
        rp13.setdefault("best_scored_model_rmsd", {})[name] = float(
            rmsds[int(np.argmin([r[name] for r in preds]))])
    rp13["best_model_rmsd"] = float(rmsds.min())
    metrics["rp13"] = rp13
    with open(out / "rp13.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=1))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(scorers), figsize=(4 * len(scorers), 3.6), squeeze=False)
    for ax, name in zip(axes[0], scorers):
        ax.scatter(rmsds, [r[name] for r in preds], s=18)
        ax.set_xlabel("RMSD to the solution (Å)")
        ax.set_ylabel("score")
        ax.set_title(f"{name}\nSpearman {rp13['spearman'][name]:.2f}", fontsize=9)
    fig.suptitle("RNA-Puzzle 13: 12 predicted models", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "rp13_scatter.png", dpi=120)
    print(json.dumps({k: {m: v[m] for m in ("frac_best_near_native", "frac_top10_near_native", "geo_mean_rank",
                                              "mean_spearman")} for k, v in metrics["test"].items()}, indent=1))
    print(json.dumps(rp13, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
