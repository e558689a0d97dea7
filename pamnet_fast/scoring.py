"""``pamnet-fast score``: predicted RMSD to the native of RNA 3D models (PDB/mmCIF, plain or gzipped).

The score is the output of an RMSD-trained checkpoint (``pamnet-fast train --dataset rna_decoys``) on
the RNA residues' C/N/O atoms (the paper's setting); lower = closer to native. ``--checkpoint`` is
required: no trained scorer is shipped (the ones trained here so far do not beat simple baselines;
see results/rna_scoring/README.md).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import List, Sequence

STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")


def is_structure_file(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(STRUCTURE_SUFFIXES)


def expand_inputs(inputs: Sequence[str]) -> List[Path]:
    """Files as given, plus the structure files (``.pdb .ent .cif .mmcif``, optionally ``.gz``) of
    given directories, sorted by name. A missing path or an empty directory is an error."""
    files: List[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and is_structure_file(f))
            if not found:
                raise ValueError(f"score: no structure files (.pdb/.ent/.cif/.mmcif[.gz]) in directory {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"score: no such file or directory: {p}")
    return files


def add_score_parser(sub, common) -> None:
    s = sub.add_parser("score", help="score RNA 3D models (predicted RMSD to the native, Å) into a CSV")
    s.add_argument("inputs", nargs="+", metavar="FILE", help="PDB/mmCIF files (plain or .gz) or directories")
    s.add_argument("--chain", action="append", default=None, metavar="C",
                   help="score only this chain (repeat for several; default: every RNA chain, together)")
    s.add_argument("--checkpoint", required=True,
                   help="run dir or model.pt of a model trained on RMSD (pamnet-fast train --dataset rna_decoys)")
    s.add_argument("--output", "-o", default="scores.csv", help="CSV path (default scores.csv)")
    s.add_argument("--keep-phosphorus", action="store_true",
                   help="include P atoms (only for a checkpoint trained with them)")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory budget of a forward, e.g. 2GiB: the global plex is streamed in blocks "
                        "(whole ribosomes; same scores)")
    common(s)


def score_structures(model, st, structures, device: str = "cpu", batch_size: int = 8) -> List[float]:
    """Predicted target (denormalized, e.g. RMSD in Å) of each :class:`Structure`."""
    import torch
    from torch_geometric.data import Data
    from .cli import _infer
    data = [Data(pos=s.pos, z=s.z, idx=torch.tensor(k)) for k, s in enumerate(structures)]
    rows = sorted(_infer(model, data, st, device, batch_size))
    return [r[2][0] for r in rows]


def _atomic_csv(path: Path, header, rows) -> None:
    from .data.cache import atomic_write

    def write(fh):
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    atomic_write(path, write)


def cmd_score(args) -> int:
    from .cli import _device, _setup, apply_max_memory, load_trained
    from .data.structures import read_rna_structure
    _setup(args)
    device = _device(args.device)
    ckpt = args.checkpoint
    try:
        files = expand_inputs(args.inputs)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model, st, f = load_trained(str(ckpt), device)
    apply_max_memory(model, args.max_memory)
    target = (st.get("train_config") or {}).get("target_name")
    if target != "rmsd":
        print(f"warning: {f} was trained on {target!r}, not on RMSD; its outputs are not RMSD scores",
              file=sys.stderr)
    rows, failed = [], []
    iterator = files
    if not args.quiet:
        from tqdm import tqdm
        iterator = tqdm(files, desc="scoring", unit="file", dynamic_ncols=True)
    for path in iterator:
        try:
            s = read_rna_structure(str(path), args.chain, keep_phosphorus=args.keep_phosphorus)
            score = score_structures(model, st, [s], device, 1)[0]
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            failed.append((path, str(e)))
            continue
        chains = ",".join(sorted({a.chain for a in s.atoms}))
        rows.append([str(path), chains, s.pos.size(0), f"{score:.4f}"])
    out = Path(args.output)
    _atomic_csv(out, ["file", "chain", "atoms", "score"], rows)
    for path, msg in failed:
        print(f"error: {path}: {msg}", file=sys.stderr)
    print(f"wrote {len(rows)} score(s) to {out} (score: predicted RMSD to the native in Å, lower is better; "
          f"checkpoint {f})" + (f"; {len(failed)} file(s) failed" if failed else ""))
    return 1 if failed else 0
