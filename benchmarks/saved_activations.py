"""Activation memory of one training forward: the bytes autograd keeps for backward, per model.

A device-independent measure of a train step's memory: every tensor saved for backward (by an op or a
custom function, outside the blocks that activation checkpointing recomputes) is recorded by
``torch.autograd.graph.saved_tensors_hooks``, each storage counted once, parameters left out. On a
GPU the peak of a train step is about this plus the parameters, their gradients, the optimizer state
and the transient buffers of the largest op, so the ratio between two models is close to their ratio
of peak memory (the GPU suite, ``benchmarks/test_gpu.py``, measures that peak). Real QM9 molecules.

    python3 benchmarks/saved_activations.py [--molecules 128]
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODELS = ["PAMNet", "PAMNet (full activation checkpointing)", "PAMNet (no activation checkpointing)",
          "PAMNet-s", "DimeNet++", "SchNet"]


def saved_bytes(forward, batch) -> int:
    """Bytes of the distinct storages saved for backward by one ``forward(batch)`` with grad."""
    sizes = {}

    def pack(t):
        if not isinstance(t, torch.nn.Parameter):
            storage = t.untyped_storage()
            sizes[(storage.device, storage.data_ptr())] = storage.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward(batch)
    del out
    return sum(sizes.values())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--molecules", type=int, default=128)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import _data
    import test_models
    batch = _data.qm9_batch(args.molecules)
    print(f"QM9 batch of {args.molecules} molecules ({batch.num_nodes} atoms), float32, "
          f"training forward, torch {torch.__version__}\n")
    print("| model | saved for backward | vs DimeNet++ |")
    print("|---|---|---|")
    rows = []
    for name in MODELS:
        model, forward = test_models.make_model(name)
        model.train()
        rows.append((name, saved_bytes(forward, batch)))
    base = dict(rows)["DimeNet++"]
    for name, size in rows:
        print(f"| {name} | {size / 2**20:.1f} MB | {size / base:.3f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
