"""Save the real inputs of the GPU benchmarks as ``.pt`` files: the GPU machine has no gemmi, RDKit or
qm9pack, and no network.

    python3 benchmarks/save_gpu_inputs.py            # -> benchmarks/gpu_inputs/ (git-ignored, ~3 MB)

Writes, atomically:

* ``rna5.pt`` (RNA-Puzzle 5, 3,823 heavy atoms) and ``6zu5.pt`` (the 6zu5 ribosome, heavy atoms), each
  ``{"name", "pos": float32 [N, 3]}`` (needs ``../shared/data`` and gemmi);
* ``qm9_bs{32,128,1024}.pt``: the seeded QM9 batches of ``benchmarks/test_models.py``
  (``_data.qm9_batch``), as the collated tensors ``z, pos, edge_index`` (bonds), ``batch``, ``ptr``
  (needs qm9pack and RDKit);
* ``cache/bench/dimenet_bessel_basis_*.pkl``: PyG DimeNet's sympy basis expressions, memoized by
  ``_data.cache_dimenet_sympy`` (deriving them takes tens of seconds in every fresh process); the
  GPU suite points ``PAMNET_FAST_CACHE`` at ``gpu_inputs/cache``.

Prints the total size: it must stay under the 64 MiB carried to the GPU machine.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import _data  # noqa: E402

DEFAULT_DIR = Path(__file__).resolve().parent / "gpu_inputs"
QM9_BATCH_SIZES = (32, 128, 1024)
CARRY_LIMIT = 64 * 2**20


def _save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def qm9_tensors(batch_size: int) -> dict:
    b = _data.qm9_batch(batch_size)
    return {"name": f"QM9 batch {batch_size}", "source": getattr(b, "source", "QM9"),
            "z": b.z.long(), "pos": b.pos.float().contiguous(), "edge_index": b.edge_index.long(),
            "batch": b.batch.long(), "ptr": b.ptr.long()}


def load_qm9_batch(path: Path):
    """The PyG ``Batch`` saved by :func:`qm9_tensors` (split back into molecules and re-collated)."""
    from torch_geometric.data import Batch, Data
    d = torch.load(path)
    ptr, ei = d["ptr"].tolist(), d["edge_index"]
    owner = d["batch"][ei[0]]
    items = []
    for m in range(len(ptr) - 1):
        lo, hi = ptr[m], ptr[m + 1]
        items.append(Data(z=d["z"][lo:hi], pos=d["pos"][lo:hi], edge_index=ei[:, owner == m] - lo))
    out = Batch.from_data_list(items)
    out.source = d["source"]
    return out


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
    for bs in QM9_BATCH_SIZES:
        d = qm9_tensors(bs)
        _save(d, args.out / f"qm9_bs{bs}.pt")
        print(f"{args.out / f'qm9_bs{bs}.pt'}: {d['z'].numel()} atoms, {d['edge_index'].size(1)} bond edges "
              f"({d['source']})")
    _data.cache_dimenet_sympy()
    from torch_geometric.nn.models import DimeNetPlusPlus
    DimeNetPlusPlus(hidden_channels=8, out_channels=1, num_blocks=1, int_emb_size=8, basis_emb_size=8,
                    out_emb_channels=8, num_spherical=7, num_radial=6)  # fills the sympy cache (7, 6)
    cache = args.out / "cache" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    for f in _data.CACHE_DIR.glob("dimenet_bessel_basis_*.pkl"):
        shutil.copyfile(f, cache / f.name)
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"total {total / 2**20:.1f} MiB (limit {CARRY_LIMIT / 2**20:.0f} MiB)")
    if total > CARRY_LIMIT:
        raise SystemExit(f"{args.out} is {total / 2**20:.1f} MiB: over the {CARRY_LIMIT / 2**20:.0f} MiB carried")


if __name__ == "__main__":
    main()
