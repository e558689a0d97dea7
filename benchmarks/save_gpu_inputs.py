"""Save the real inputs of ``benchmarks/gpu_check.py`` as ``.pt`` files (the GPU machine has no gemmi).

    python3 benchmarks/save_gpu_inputs.py            # -> benchmarks/gpu_inputs/ (git-ignored, ~2 MB)

Writes ``rna5.pt`` (RNA-Puzzle 5, 3,823 heavy atoms) and ``6zu5.pt`` (the 6zu5 ribosome, heavy atoms),
each ``{"name", "pos": float32 [N, 3]}``, atomically. Needs ``../shared/data`` and gemmi.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402

DEFAULT_DIR = Path(__file__).resolve().parent / "gpu_inputs"


def _save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, load in (("rna5", _data.rna_puzzle5), ("6zu5", _data.ribosome)):
        s = load()
        pos = s.pos.to(torch.float32).contiguous()
        _save({"name": name, "pos": pos}, args.out / f"{name}.pt")
        print(f"{args.out / (name + '.pt')}: {pos.size(0)} atoms")


if __name__ == "__main__":
    main()
