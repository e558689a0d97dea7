"""``pamnet-fast`` command line: train | evaluate | predict | data.

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

PUBLIC_MODELS = ("pamnet", "pamnet-s", "schnet", "dimenet++")  # the last two: baselines
_HIDDEN_MODELS = ("tiny",)  # used by the tests only

# Defaults of the budgeted quick run (``pamnet-fast train`` without --epochs/--max-time).
# PAMNet costs ~0.4 s per batch of 32 on 2 CPU cores, so in 10 minutes it sees ~50k molecules: a
# training subset of 10k gives ~5 epochs (the EMA model is validated a few times), with subsampled
# val/test sets so that evaluation stays short.
QUICK = {"max_time": 600.0, "train_size": 10000, "val_size": 500, "test_size": 2000, "lr": 1e-3,
         "batch_size": 32}


# ---------------------------------------------------------------------- model registry
def _unknown_model(name: str) -> str:
    return f"unknown model {name!r}; valid models: {', '.join(PUBLIC_MODELS)}"


def _model_classes(name: str):
    """(module class, config class) of a registered model name. Imports are lazy."""
    if name == "tiny":
        from .train.tiny import TinyConfig, TinyModel
        return TinyModel, TinyConfig
    if name not in PUBLIC_MODELS:
        raise ValueError(_unknown_model(name))
    from . import nn as pnn
    return {"pamnet": (pnn.PAMNet, pnn.PAMNetConfig), "pamnet-s": (pnn.PAMNetS, pnn.PAMNetConfig),
            "schnet": (pnn.SchNetBaseline, pnn.SchNetConfig),
            "dimenet++": (pnn.DimeNetPlusPlusBaseline, pnn.DimeNetPlusPlusConfig)}[name]


def _default_config(name: str):
    _, Cfg = _model_classes(name)
    return Cfg.qm9() if hasattr(Cfg, "qm9") else Cfg()


def default_model_config(name: str) -> dict:
    """The config dict ``build_model(name)`` uses (the QM9 preset), without building the model."""
    from .train.checkpoint import config_to_dict
    return config_to_dict(_default_config(name))


def build_model(name: str, config: Optional[dict] = None):
    """``pamnet`` -> ``PAMNet(PAMNetConfig.qm9())``, ``pamnet-s`` -> ``PAMNetS(...)``, ``schnet`` ->
    :class:`~pamnet_fast.nn.SchNetBaseline` (PyG defaults), ``dimenet++`` ->
    :class:`~pamnet_fast.nn.DimeNetPlusPlusBaseline` (paper QM9 settings); a stored config dict (from a
    checkpoint) recreates the same architecture."""
    cls, Cfg = _model_classes(name)
    if not config:
        return cls(_default_config(name))
    if hasattr(Cfg, "from_dict"):
        return cls(Cfg.from_dict(config))
    import dataclasses
    names = {f.name for f in dataclasses.fields(Cfg)}
    return cls(Cfg(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in names}))


def _model_type(s: str) -> str:
    if s in PUBLIC_MODELS or s in _HIDDEN_MODELS:
        return s
    raise argparse.ArgumentTypeError(_unknown_model(s))


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


def _targets():
    from .data.qm9 import TARGETS
    return TARGETS


def _device(s: str) -> str:
    import torch
    if s == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return s


# ---------------------------------------------------------------------- parser
def make_parser() -> argparse.ArgumentParser:
    targets = _targets()
    p = argparse.ArgumentParser(prog="pamnet-fast", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", metavar="{train,evaluate,predict,data}")

    def common(sp):
        sp.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
        sp.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
        sp.add_argument("--cache-dir", default=None,
                        help="processed-data cache (default $PAMNET_FAST_CACHE/qm9 or ~/.cache/pamnet_fast/qm9)")
        sp.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
        sp.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)

    t = sub.add_parser("train", help="train a model on a QM9 target")
    t.add_argument("--model", type=_model_type, default="pamnet", metavar="{" + ",".join(PUBLIC_MODELS) + "}",
                   help="pamnet (default), pamnet-s, or the baselines schnet and dimenet++ (PyG's SchNet with "
                        "its defaults and DimeNet++ with its paper's QM9 settings, run on our ops)")
    # JSON overrides of the model config (small models for the tests)
    t.add_argument("--model-config", default=None, help=argparse.SUPPRESS)
    t.add_argument("--target", choices=targets, default="U0", metavar="TARGET",
                   help=f"QM9 target, one of: {', '.join(targets)} (default U0)")
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
    t.add_argument("--split-seed", type=int, default=42)
    common(t)

    e = sub.add_parser("evaluate", help="report the MAE of a trained model on a split")
    e.add_argument("checkpoint", help="run directory, model.pt or checkpoint.pt")
    e.add_argument("--split", choices=("train", "val", "test"), default="test")
    e.add_argument("--batch-size", type=int, default=128)
    common(e)

    r = sub.add_parser("predict", help="write predictions (CSV) for a split or an XYZ/SDF file")
    r.add_argument("checkpoint", help="run directory, model.pt or checkpoint.pt")
    r.add_argument("--split", choices=("train", "val", "test"), default="test")
    r.add_argument("--input", default=None, help="molecules to predict: .xyz (multi-frame) or .sdf")
    r.add_argument("--output", default=None, help="CSV path (default <run dir>/predictions_<split>.csv)")
    r.add_argument("--batch-size", type=int, default=128)
    common(r)

    d = sub.add_parser("data", help="process QM9 into the cache (once) and print a summary")
    d.add_argument("--rebuild", action="store_true")
    d.add_argument("--num-workers", type=int, default=None)
    common(d)
    return p


# ---------------------------------------------------------------------- helpers
def _setup(args):
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    import torch
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    return torch


def _load_qm9(args, target="U0"):
    from .data import QM9
    return QM9(args.cache_dir, target=target, limit=args.limit, verbose=not args.quiet)


def _split(ds, seed, train_size=None, val_size=None, test_size=None):
    sp = ds.split(seed=seed, train_size=train_size)
    if val_size is not None:
        sp["val"] = sp["val"][:val_size]
    if test_size is not None:
        sp["test"] = sp["test"][:test_size]
    return sp


def _resolve_checkpoint(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in ("model.pt", "checkpoint.pt"):
            if (p / name).exists():
                return p / name
        raise FileNotFoundError(f"no model.pt or checkpoint.pt in {p}")
    return p


def load_trained(path: str, device: str = "cpu"):
    """(module with the evaluation weights, state dict of the file, path) from a run dir/file."""
    from .train.checkpoint import load_checkpoint
    f = _resolve_checkpoint(path)
    st = load_checkpoint(f)
    model = build_model(st["model_name"], st.get("model_config"))
    weights = st.get("best_state") or (st["ema"]["module"] if "ema" in st else st["model"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        from .train.checkpoint import CheckpointMismatchError
        raise CheckpointMismatchError(f"{f}: weights do not fit model {st['model_name']!r}: {e}") from e
    model.to(device).eval()
    return model, st, f


def _infer(model, dataset, st, device, batch_size):
    import torch
    from torch_geometric.loader import DataLoader
    from .train.target_norm import TargetNormalizer
    norm = TargetNormalizer.from_state_dict(st["norm"])
    ti = st["train_config"].get("target_index")
    rows = []
    with torch.no_grad():
        for b in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            b = b.to(device)
            out = model(b)
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
    from torch.utils.data import Subset
    from .data.qm9 import TARGET_UNITS, target_index
    from .train import TrainConfig, Trainer
    from .train.dist import env_world
    quick = args.epochs is None and args.max_time is None
    max_time = args.max_time if args.max_time is not None else (QUICK["max_time"] if quick else None)
    train_size = args.train_size if args.train_size is not None else (QUICK["train_size"] if quick else None)
    val_size = args.val_size if args.val_size is not None else (QUICK["val_size"] if quick else None)
    test_size = args.test_size if args.test_size is not None else (QUICK["test_size"] if quick else None)
    lr = args.lr if args.lr is not None else (QUICK["lr"] if quick else 1e-4)
    batch = args.batch_size if args.batch_size is not None else QUICK["batch_size"]
    epochs = args.epochs if args.epochs is not None else 900
    device = _device(args.device)
    out = Path(args.out) if args.out else Path("runs") / f"{args.model}-{args.target}"
    info = env_world()
    say = (lambda m: None) if (args.quiet or info.rank != 0) else print
    if quick:
        say(f"quick run: {args.model} on {args.target}, budget {max_time / 60:.0f} min of training (after "
            f"data loading and model set-up), train/val/test sizes {train_size}/{val_size}/{test_size}, "
            f"lr {lr}, batch {batch} (pass --epochs/--max-time for paper settings)")
    if info.rank == 0 and (out / "checkpoint.pt").exists() and not args.resume:
        say(f"note: {out}/checkpoint.pt exists and will be overwritten (use --resume to continue)")

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = time.time()
    ds = _load_qm9(args, args.target)
    say(f"data: {ds.summary()} (loaded in {time.time() - t0:.1f} s)")
    sp = _split(ds, args.split_seed, train_size, val_size, test_size)
    torch.manual_seed(args.seed)
    model_config = None
    if args.model_config:
        model_config = {**default_model_config(args.model), **json.loads(args.model_config)}
    model = build_model(args.model, model_config)
    # The budget starts after construction: DimeNet++'s first one derives its basis with sympy (~10 s).
    t_ready = time.time()
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, patience=args.patience or None,
                      max_time=max_time, checkpoint_every=args.checkpoint_every, seed=args.seed,
                      device=device, quiet=args.quiet, grad_clip=args.grad_clip or None,
                      standardize=not args.no_standardize, element_ref=not args.no_element_ref,
                      target_index=target_index(args.target),
                      target_name=args.target, unit=TARGET_UNITS[args.target])
    meta = {"dataset": "qm9", "target": args.target, "split_seed": args.split_seed,
            "train_size": train_size, "val_size": val_size, "test_size": test_size, "limit": args.limit}
    trainer = Trainer(model, Subset(ds, sp["train"].tolist()), Subset(ds, sp["val"].tolist()),
                      Subset(ds, sp["test"].tolist()), cfg, out_dir=out, model_name=args.model,
                      time_origin=t_ready, meta=meta)
    res = trainer.fit(resume=args.resume)
    if info.rank == 0:
        u = TARGET_UNITS[args.target]
        base = res.get("test_mae_element_baseline")
        base = f" | per-element linear baseline: {base:.4g} {u}" if base is not None else ""
        print(f"{args.model} {args.target}: test MAE {res['test_mae']:.4g} {u} | predicting the training "
              f"mean: {res.get('test_mae_train_mean', float('nan')):.4g} {u}{base} | best val MAE "
              f"{res['best_val_mae']:.4g} {u} (epoch {res['best_epoch']}) | {res['steps']} steps, "
              f"stopped by {res['stop_reason']} after {time.time() - t_origin:.0f} s | outputs in {out}/")
    return 0


def cmd_evaluate(args) -> int:
    _setup(args)
    from torch.utils.data import Subset
    from .data.qm9 import TARGET_UNITS
    device = _device(args.device)
    model, st, f = load_trained(args.checkpoint, device)
    meta = st.get("meta") or {}
    if args.limit is None:
        args.limit = meta.get("limit")
    ds = _load_qm9(args, meta.get("target", "U0"))
    sp = _split(ds, meta.get("split_seed", 42), meta.get("train_size"), meta.get("val_size"),
                meta.get("test_size"))
    rows = _infer(model, Subset(ds, sp[args.split].tolist()), st, device, args.batch_size)
    import numpy as np
    err = np.array([abs(r[1][0] - r[2][0]) for r in rows])
    unit = TARGET_UNITS.get(meta.get("target", ""), "")
    print(f"{st['model_name']} {meta.get('target', '')} {args.split} MAE: {err.mean():.6g} {unit} "
          f"(n={len(rows)}, {f})")
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
    from torch.utils.data import Subset
    device = _device(args.device)
    model, st, f = load_trained(args.checkpoint, device)
    meta = st.get("meta") or {}
    target = meta.get("target", "y")
    if args.input:
        from torch_geometric.data import Data
        from .data.bonds import molecule_bonds
        mols = _read_molecules(Path(args.input))
        data = []
        for k, (name, z, pos) in enumerate(mols):
            e, _ = molecule_bonds(z, pos, None)
            data.append(Data(z=torch.tensor(z, dtype=torch.long), pos=torch.tensor(pos, dtype=torch.float32),
                             edge_index=torch.from_numpy(e).long(), idx=torch.tensor(k)))
        rows = _infer(model, data, st, device, args.batch_size)
        outp = Path(args.output) if args.output else Path(args.input).with_suffix(".predictions.csv")
        with open(outp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["name", f"pred_{target}"])
            for (i, _, p) in rows:
                w.writerow([mols[i][0], repr(p[0])])
    else:
        if args.limit is None:
            args.limit = meta.get("limit")
        ds = _load_qm9(args, meta.get("target", "U0"))
        sp = _split(ds, meta.get("split_seed", 42), meta.get("train_size"), meta.get("val_size"),
                meta.get("test_size"))
        rows = _infer(model, Subset(ds, sp[args.split].tolist()), st, device, args.batch_size)
        outp = Path(args.output) if args.output else f.parent / f"predictions_{args.split}.csv"
        with open(outp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["idx", "qm9_index", "smiles", f"true_{target}", f"pred_{target}", "abs_error"])
            for (i, y, p) in rows:
                w.writerow([i, int(ds.mol_id[i]), ds.smiles[i], repr(y[0]), repr(p[0]), repr(abs(y[0] - p[0]))])
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
    try:
        return {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
                "data": cmd_data}[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
