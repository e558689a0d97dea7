"""``pamnet-fast`` command line: train | evaluate | predict | data | score.

``pamnet-fast train`` with no arguments trains PAMNet on QM9 U0 within a 10-minute training budget
(counted from when the data is loaded and the model built; processing QM9 the first time adds about
4 minutes) and prints the test MAE in meV next to the MAE of predicting the training mean.
``--model schnet|dimenet++`` trains PyG's stock baselines (on our ops) under the same defaults, so
the default runs compare models at equal wall-clock time. Under
``torchrun --nproc_per_node N pamnet-fast train ...`` it trains with DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import List, Optional

# Defaults of the budgeted quick run (``pamnet-fast train`` without --epochs/--max-time).
# PAMNet costs ~0.4 s per batch of 32 on 2 CPU cores, so in 10 minutes it sees ~50k molecules: a
# training subset of 10k gives ~5 epochs (the EMA model is validated a few times), with subsampled
# val/test sets so that evaluation stays short.
QUICK = {"max_time": 600.0, "train_size": 10000, "val_size": 500, "test_size": 2000, "lr": 1e-3,
         "batch_size": 32}


# ---------------------------------------------------------------------- registries
from .train.models import build_model, default_model_config, model_names  # noqa: E402  (re-exported)


def _model_type(s: str) -> str:
    if s in model_names(public_only=False):
        return s
    raise argparse.ArgumentTypeError(f"unknown model {s!r}; valid models: {', '.join(model_names())}")


def parse_duration(s: str) -> float:
    """'600', '600s', '10m', '1.5h' -> seconds."""
    s = str(s).strip().lower()
    mult = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
    for suf in ("min", "s", "m", "h"):
        if s.endswith(suf):
            try:
                return float(s[:-len(suf)]) * mult[suf]
            except ValueError:
                break
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {s!r} (examples: 600, 600s, 10m, 1.5h)")


def _qm9_targets():
    from .data.qm9 import TARGETS
    return TARGETS


def _dataset_type(s: str) -> str:
    from .train.datasets import dataset_names
    if s in dataset_names():
        return s
    raise argparse.ArgumentTypeError(f"unknown dataset {s!r}; valid datasets: {', '.join(dataset_names())}")


def _device(s: str) -> str:
    import torch
    if s == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return s


# ---------------------------------------------------------------------- parser
def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pamnet-fast", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", metavar="{train,evaluate,predict,data,score}")

    def common(sp):
        sp.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
        sp.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
        sp.add_argument("--cache-dir", default=None,
                        help="processed-data cache (default $PAMNET_FAST_CACHE/qm9 or ~/.cache/pamnet_fast/qm9)")
        sp.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
        sp.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)

    def memory(sp):
        sp.add_argument("--max-memory", default=None, metavar="SIZE",
                        help="memory budget of a forward, e.g. 2GiB: PAMNet streams its global plex in "
                             "blocks sized to it (large structures; same outputs)")

    from .train.datasets import dataset_names
    t = sub.add_parser("train", help="train a model on a dataset (default: QM9 U0)")
    t.add_argument("--model", type=_model_type, default="pamnet", metavar="{" + ",".join(model_names()) + "}",
                   help="pamnet (default), pamnet-s, or the baselines schnet and dimenet++ (PyG's SchNet with "
                        "its defaults and DimeNet++ with its paper's QM9 settings, run on our ops)")
    # JSON overrides of the model config (small models for the tests)
    t.add_argument("--model-config", default=None, help=argparse.SUPPRESS)
    t.add_argument("--dataset", type=_dataset_type, default="qm9", metavar="{" + ",".join(dataset_names()) + "}",
                   help="training data (default qm9, from the qm9pack package)")
    t.add_argument("--root", default=None, help="dataset location, for datasets the user provides")
    t.add_argument("--target", default=None, metavar="TARGET",
                   help="target of the dataset (QM9: one of " + ", ".join(_qm9_targets()) + "; default U0)")
    t.add_argument("--loss", choices=("l1", "mse", "smooth_l1"), default=None, help="default: the dataset's (QM9: l1)")
    t.add_argument("--max-time", type=parse_duration, default=None,
                   help="time budget (e.g. 600, 10m, 2h) counted from when the data and model are ready "
                        "(a first-time QM9 processing is extra); training stops cleanly, evaluates the EMA "
                        "model on the test set and saves. Default: 10m unless --epochs is given")
    t.add_argument("--epochs", type=int, default=None, help="default 900 (paper)")
    t.add_argument("--train-size", type=int, default=None,
                   help="subsample the 110,000 training molecules (quick-run default 20000)")
    t.add_argument("--val-size", type=int, default=None, help="subsample the 10,000 validation molecules")
    t.add_argument("--test-size", type=int, default=None, help="subsample the 10,831 test molecules")
    t.add_argument("--batch-size", type=int, default=None, help="global batch size (default 32)")
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate (paper 1e-4; quick run 5e-4)")
    t.add_argument("--patience", type=int, default=100, help="early-stopping patience in epochs (0: off)")
    t.add_argument("--checkpoint-every", type=int, default=500, help="checkpoint every N steps")
    t.add_argument("--grad-clip", type=float, default=1000.0)
    t.add_argument("--no-standardize", action="store_true",
                   help="learn the raw target (no baseline, no scaling)")
    t.add_argument("--no-element-ref", action="store_true",
                   help="standardize with the training mean instead of a per-element linear baseline")
    t.add_argument("--out", default=None, help="output directory (default runs/<model>-<target>)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--seed", type=int, default=0, help="model init and data-order seed")
    t.add_argument("--precision", choices=("fp32", "bf16", "fp64"), default="fp32",
                   help="fp32 (default); bf16: mixed precision (bfloat16 autocast, float32 weights, loss and "
                        "fused-op sums); fp64: float64 weights and inputs. evaluate/predict use the run's")
    t.add_argument("--compile", action="store_true",
                   help="torch.compile the model (dynamic shapes) for training: slower start, faster steps")
    t.add_argument("--split-seed", type=int, default=42)
    common(t)
    memory(t)

    e = sub.add_parser("evaluate", help="report the MAE of a trained model on a split")
    e.add_argument("checkpoint", help="run directory, model.pt or checkpoint.pt")
    e.add_argument("--split", choices=("train", "val", "test"), default="test")
    e.add_argument("--batch-size", type=int, default=None, help="default: the run's evaluation batch size")
    common(e)
    memory(e)

    r = sub.add_parser("predict", help="write predictions (CSV) for a split, an XYZ/SDF file, or the poses "
                                       "of a ligand in a receptor")
    r.add_argument("checkpoint", help="run directory, model.pt or checkpoint.pt")
    r.add_argument("--split", choices=("train", "val", "test"), default="test")
    r.add_argument("--input", default=None, help="molecules to predict: .xyz (multi-frame) or .sdf")
    r.add_argument("--receptor", default=None, help="protein-ligand models: receptor .pdb/.cif (with --ligand)")
    r.add_argument("--ligand", default=None,
                   help="protein-ligand models: ligand .sdf (every pose of a multi-pose file) or .mol2")
    r.add_argument("--output", default=None, help="CSV path (default <run dir>/predictions_<split>.csv)")
    r.add_argument("--batch-size", type=int, default=None, help="default: the run's evaluation batch size")
    common(r)
    memory(r)

    d = sub.add_parser("data", help="process QM9 into the cache (once) and print a summary")
    d.add_argument("--rebuild", action="store_true")
    d.add_argument("--num-workers", type=int, default=None)
    common(d)

    from .scoring import add_score_parser
    add_score_parser(sub, common)
    return p


# ---------------------------------------------------------------------- helpers
def _setup(args):
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    import torch
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    return torch


def _eval_batch(args, st) -> int:
    """--batch-size, else the evaluation batch size the run was trained with (datasets of large
    structures lower it), else 128."""
    return args.batch_size or (st.get("train_config") or {}).get("eval_batch_size") or 128


def _load_task(args, meta: dict):
    """The dataset of a run: ``meta`` are :func:`~pamnet_fast.train.datasets.load_dataset` options (as
    stored in checkpoints); the command line's ``--cache-dir`` / ``--limit`` / ``--quiet`` apply."""
    from .train.datasets import load_dataset
    opts = {k: v for k, v in meta.items() if v is not None}
    opts.setdefault("dataset", "qm9")
    if args.limit is not None:
        opts["limit"] = args.limit
    return load_dataset(**opts, cache_dir=args.cache_dir, verbose=not args.quiet)


def _resolve_checkpoint(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in ("model.pt", "checkpoint.pt"):
            if (p / name).exists():
                return p / name
        raise FileNotFoundError(f"no model.pt or checkpoint.pt in {p}")
    return p


def apply_max_memory(model, max_memory) -> None:
    """``--max-memory``: set the model's budget (PAMNet / PAMNet-s); others refuse it clearly."""
    if max_memory is None:
        return
    if not hasattr(type(model), "max_memory"):
        raise SystemExit(f"--max-memory: {type(model).__name__} has no streamed path (PAMNet and PAMNet-s do)")
    try:
        model.max_memory = max_memory
    except ValueError as e:
        raise SystemExit(f"--max-memory: {e}") from e


def load_trained(path: str, device: str = "cpu"):
    """(module with the evaluation weights, in the run's precision; state dict of the file; path) from a
    run dir/file."""
    from .train.checkpoint import load_checkpoint
    from .train.precision import precision_of
    f = _resolve_checkpoint(path)
    st = load_checkpoint(f)
    model = build_model(st["model_name"], st.get("model_config"), (st.get("meta") or {}).get("dataset", "qm9"))
    weights = st.get("best_state") or (st["ema"]["module"] if "ema" in st else st["model"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        from .train.checkpoint import CheckpointMismatchError
        raise CheckpointMismatchError(f"{f}: weights do not fit model {st['model_name']!r}: {e}") from e
    precision_of(st).module(model.to(device)).eval()
    return model, st, f


def _infer(model, dataset, st, device, batch_size):
    import torch
    from torch_geometric.loader import DataLoader
    from .train.precision import precision_of
    from .train.target_norm import TargetNormalizer
    norm = TargetNormalizer.from_state_dict(st["norm"])
    ti = st["train_config"].get("target_index")
    prec = precision_of(st)
    rows = []
    with torch.no_grad():
        for b in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            b = prec.batch(b.to(device))
            with prec.autocast(device):
                out = prec.output(model(b))
            out = out[:, None] if out.dim() == 1 else out
            pred = norm.denormalize(out, b)
            y = None
            if getattr(b, "y", None) is not None:
                y = b.y if b.y.dim() == 2 else b.y[:, None]
                y = (y[:, ti:ti + 1] if ti is not None else y).double()
            for k in range(pred.shape[0]):
                rows.append((int(b.idx[k]) if getattr(b, "idx", None) is not None else len(rows),
                             None if y is None else y[k].tolist(), pred[k].tolist()))
    return rows


# ---------------------------------------------------------------------- commands
def cmd_train(args) -> int:
    t_origin = time.time()
    torch = _setup(args)
    import numpy as np
    from .train import TrainConfig, Trainer
    from .train.dist import env_world
    quick = args.epochs is None and args.max_time is None
    sizes = QUICK if quick and args.dataset == "qm9" else {}  # QM9's quick run subsamples its splits
    max_time = args.max_time if args.max_time is not None else (QUICK["max_time"] if quick else None)
    train_size = args.train_size if args.train_size is not None else sizes.get("train_size")
    val_size = args.val_size if args.val_size is not None else sizes.get("val_size")
    test_size = args.test_size if args.test_size is not None else sizes.get("test_size")
    batch = args.batch_size if args.batch_size is not None else QUICK["batch_size"]
    device = _device(args.device)
    info = env_world()
    say = (lambda m: None) if (args.quiet or info.rank != 0) else print

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = time.time()
    task = _load_task(args, {"dataset": args.dataset, "root": args.root, "target": args.target,
                             "split_seed": args.split_seed, "train_size": train_size, "val_size": val_size,
                             "test_size": test_size})
    target = task.target_name
    paper = dict(task.train_defaults)  # the dataset's own schedule (e.g. PDBbind: x0.2 every 50 epochs)
    paper_lr, paper_epochs = paper.pop("lr", None), paper.pop("epochs", None)
    lr = args.lr if args.lr is not None else (paper_lr or (QUICK["lr"] if quick else 1e-4))
    epochs = args.epochs if args.epochs is not None else (paper_epochs or 900)
    out = Path(args.out) if args.out else Path("runs") / f"{args.model}-{args.dataset}-{target}"
    if quick:
        say(f"quick run: {args.model} on {args.dataset} {target}, budget {max_time / 60:.0f} min of training "
            f"(after data loading and model set-up), train/val/test sizes {len(task.train)}/"
            f"{len(task.val or [])}/{len(task.test or [])}, lr {lr}, batch {batch} (pass --epochs/--max-time "
            f"for paper settings)")
    if info.rank == 0 and (out / "checkpoint.pt").exists() and not args.resume:
        say(f"note: {out}/checkpoint.pt exists and will be overwritten (use --resume to continue)")
    say(f"data: {task.summary} (loaded in {time.time() - t0:.1f} s)")
    torch.manual_seed(args.seed)
    model_config = None
    if args.model_config:
        model_config = {**default_model_config(args.model, args.dataset), **json.loads(args.model_config)}
    model = build_model(args.model, model_config, args.dataset)
    apply_max_memory(model, args.max_memory)
    # The budget starts after construction: DimeNet++'s first one derives its basis with sympy (~10 s).
    t_ready = time.time()
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, patience=args.patience or None,
                      max_time=max_time, checkpoint_every=args.checkpoint_every, seed=args.seed,
                      device=device, quiet=args.quiet, grad_clip=args.grad_clip or None,
                      standardize=not args.no_standardize,
                      element_ref=task.element_ref and not args.no_element_ref,
                      loss=args.loss or task.loss, target_index=task.target_index,
                      target_name=target, unit=task.unit, precision=args.precision, compile=args.compile,
                      **paper)
    trainer = Trainer(model, task.train, task.val, task.test, cfg, out_dir=out, model_name=args.model,
                      time_origin=t_ready, meta=task.meta)
    res = trainer.fit(resume=args.resume)
    # PhysChem modes that learn conformations (ChemNet-only modes do not): write them for the test set
    if info.rank == 0 and getattr(model, "learned", False) and task.test is not None:
        final, st, _ = load_trained(str(out), device)
        rows = _infer(final, task.test, st, device, trainer.cfg.eval_batch_size)
        _write_physchem_outputs(final, st, rows, out, task, "test", device, trainer.cfg.eval_batch_size)
    if info.rank == 0:
        u = task.unit
        base = res.get("test_mae_element_baseline")
        base = f" | per-element linear baseline: {base:.4g} {u}" if base is not None else ""
        rmse = f" | RMSE {res['test_rmse']:.4g} {u}" if "test_rmse" in res else ""
        if task.loss == "mse" and "test_sd" in res:  # affinity tasks: the paper's Table 2 columns too
            rmse += f" | SD {res['test_sd']:.4g} {u} | Pearson R {res['test_pearson_r']:.4f}"
        print(f"{args.model} {target}: test MAE {res['test_mae']:.4g} {u}{rmse} | predicting the training "
              f"mean: {res.get('test_mae_train_mean', float('nan')):.4g} {u}{base} | best val MAE "
              f"{res['best_val_mae']:.4g} {u} (epoch {res['best_epoch']}) | {res['steps']} steps, "
              f"stopped by {res['stop_reason']} after {time.time() - t_origin:.0f} s | outputs in {out}/")
    return 0


def _write_physchem_outputs(model, st, rows, out_dir, task, split: str, device: str, batch_size: int) -> None:
    """PhysChem: the learned conformations (SDF), their errors (CSV, PNG) of the split's molecules;
    ``rows``: the split's property predictions (:func:`_infer`) of the trained ``model``."""
    from .train.physchem_tasks import write_physchem_outputs
    print(write_physchem_outputs(model, task.split(split), task.full, rows,
                                 Path(out_dir) / f"{split}_conformations", device, batch_size))


def cmd_evaluate(args) -> int:
    _setup(args)
    import numpy as np
    from .train.metrics import regression_metrics
    device = _device(args.device)
    model, st, f = load_trained(args.checkpoint, device)
    apply_max_memory(model, args.max_memory)
    task = _load_task(args, st.get("meta") or {})
    rows = _infer(model, task.split(args.split), st, device, _eval_batch(args, st))
    m = regression_metrics(np.array([r[1][0] for r in rows]), np.array([r[2][0] for r in rows]))
    unit = task.unit
    print(f"{st['model_name']} {task.target_name} {args.split} MAE: {m['mae']:.6g} {unit} "
          f"(n={len(rows)}, {f}) | RMSE {m['rmse']:.6g} {unit} | Pearson R {m['pearson_r']:.4f}")
    return 0


def _read_molecules(path: Path):
    """[(name, z list, pos array)] from a multi-frame XYZ or an SDF file."""
    import numpy as np
    from .data.qm9 import _SYMBOL_TO_Z
    mols = []
    if path.suffix.lower() == ".sdf":
        from rdkit import Chem
        for k, m in enumerate(Chem.SDMolSupplier(str(path), removeHs=False, sanitize=False)):
            if m is None or m.GetNumConformers() == 0:
                raise ValueError(f"{path}: molecule {k} could not be read or has no coordinates")
            name = m.GetProp("_Name") if m.HasProp("_Name") and m.GetProp("_Name") else f"mol{k}"
            mols.append((name, [a.GetAtomicNum() for a in m.GetAtoms()],
                         np.asarray(m.GetConformer().GetPositions(), dtype=np.float64)))
        return mols
    from rdkit import Chem
    pt = Chem.GetPeriodicTable()
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n = int(lines[i].split()[0])
        name = lines[i + 1].strip() or f"mol{len(mols)}"
        z, pos = [], []
        for ln in lines[i + 2:i + 2 + n]:
            tok = ln.split()
            sym = tok[0]
            z.append(_SYMBOL_TO_Z.get(sym) or (int(sym) if sym.isdigit() else pt.GetAtomicNumber(sym)))
            pos.append([float(x.replace("*^", "e")) for x in tok[1:4]])
        mols.append((name, z, np.asarray(pos, dtype=np.float64)))
        i += 2 + n
    return mols


def cmd_predict(args) -> int:
    _setup(args)
    import torch
    device = _device(args.device)
    model, st, f = load_trained(args.checkpoint, device)
    apply_max_memory(model, args.max_memory)
    meta = st.get("meta") or {}
    target = meta.get("target", "y")
    if args.receptor or args.ligand:
        from .train.pose_scoring import score_poses
        if not (args.receptor and args.ligand):
            raise SystemExit("pamnet-fast predict: --receptor and --ligand go together")
        if meta.get("dataset") != "pdbbind":
            raise SystemExit(f"pamnet-fast predict: {f} is a {meta.get('dataset', 'qm9')} model; scoring "
                             f"poses needs one trained on protein-ligand complexes (--dataset pdbbind)")
        outp = Path(args.output) if args.output else Path(args.ligand).with_suffix(".affinity.csv")
        rows = score_poses(model, st, args.receptor, args.ligand, outp, device, _eval_batch(args, st))
        for r in rows:
            print(f"{r['pose']:>4} {r['name'][:30]:<30} vina {r['vina_score'] if r['vina_score'] != '' else '-':>7} "
                  f"predicted -logKd/Ki {r['pred_affinity']:.3f}")
    elif args.input:
        from torch_geometric.data import Data
        from .data.bonds import molecule_bonds
        mols = _read_molecules(Path(args.input))
        data = []
        for k, (name, z, pos) in enumerate(mols):
            e, _ = molecule_bonds(z, pos, None)
            data.append(Data(z=torch.tensor(z, dtype=torch.long), pos=torch.tensor(pos, dtype=torch.float32),
                             edge_index=torch.from_numpy(e).long(), idx=torch.tensor(k)))
        rows = _infer(model, data, st, device, _eval_batch(args, st))
        outp = Path(args.output) if args.output else Path(args.input).with_suffix(".predictions.csv")
        with open(outp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["name", f"pred_{target}"])
            for (i, _, p) in rows:
                w.writerow([mols[i][0], repr(p[0])])
    else:
        task = _load_task(args, meta)
        target = task.target_name
        rows = _infer(model, task.split(args.split), st, device, _eval_batch(args, st))
        outp = Path(args.output) if args.output else f.parent / f"predictions_{args.split}.csv"
        info = getattr(task.full, "row_info", None)  # dataset-specific columns (QM9: index, SMILES)
        extra = list(info(rows[0][0])) if info is not None and rows else []
        with open(outp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["idx"] + extra + [f"true_{target}", f"pred_{target}", "abs_error"])
            for (i, y, p) in rows:
                cols = list(info(i).values()) if extra else []
                w.writerow([i] + cols + [repr(y[0]), repr(p[0]), repr(abs(y[0] - p[0]))])
        if getattr(model, "learned", False):  # PhysChem modes that learn conformations
            _write_physchem_outputs(model, st, rows, Path(outp).parent, task, args.split, device,
                                    _eval_batch(args, st))
    print(f"wrote {len(rows)} predictions to {outp}")
    return 0


def cmd_data(args) -> int:
    _setup(args)
    from .data import QM9
    t0 = time.time()
    ds = QM9(args.cache_dir, limit=args.limit, force_rebuild=args.rebuild, num_workers=args.num_workers)
    t1 = time.time()
    print(ds.summary())
    print(f"ready in {t1 - t0:.2f} s (processing took {ds.meta.get('process_seconds', 0):.1f} s on "
          f"{ds.meta.get('num_workers')} process(es) when the cache was built)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "train" and args.target is not None:
        from .train.datasets import dataset_targets_of
        valid = dataset_targets_of(args.dataset)
        if valid and args.target not in valid:
            parser.error(f"dataset {args.dataset} has no target {args.target!r}; valid: {', '.join(valid)}")
    from .data.errors import InputDataError
    try:
        if args.command == "score":
            from .scoring import cmd_score
            return cmd_score(args)
        return {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
                "data": cmd_data}[args.command](args)
    except InputDataError as e:  # missing or bad input data: the message says what and where
        print(f"pamnet-fast: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
