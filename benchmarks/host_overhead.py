"""Host time of one eager forward / train step on a tiny QM9 batch: the launch-bound regime.

On a GPU at QM9 batch sizes most kernels take a few microseconds, so an eager step costs about what
the host spends issuing it: Python, the dispatcher, one launch per op. On the CPU with a 2-molecule
batch and one thread the arithmetic is negligible too, so the same host cost is what gets timed here,
without a GPU. Dense layers go through aten (``ops.aten_linear()``: the CUDA path, not oneDNN; except
that CUDA inference runs each Linear+SiLU, with a residual block's add, as one Triton GEMM, see
:func:`pamnet_fast.ops.linear_silu`) and the optimizer is fused Adam, as on CUDA. Also reported: the
non-view aten ops per call (each launches a kernel on CUDA; PAMNet's fused ops are one Triton kernel
each).

    python3 benchmarks/host_overhead.py [--molecules 2] [--repeats 30]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODELS = ["PAMNet", "PAMNet (full activation checkpointing)", "PAMNet (no activation checkpointing)",
          "PAMNet-s", "DimeNet++", "SchNet"]


def _median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--molecules", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    import _data
    import test_models
    from pamnet_fast.host_syncs import HostSyncCounter
    from pamnet_fast.ops.dense import aten_linear
    batch = _data.qm9_batch(args.molecules)
    print(f"QM9 batch of {args.molecules} molecules ({batch.num_nodes} atoms), 1 thread, "
          f"aten dense layers, fused Adam; {_data.cpu_model()}, torch {torch.__version__}\n")
    print("| model | inference | aten ops | train step | aten ops |")
    print("|---|---|---|---|---|")
    for name in MODELS:
        model, forward = test_models.make_model(name)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)

        def infer():
            with torch.no_grad(), aten_linear():
                return forward(batch)

        def step():
            with aten_linear():
                opt.zero_grad(set_to_none=True)
                forward(batch).float().pow(2).mean().backward()
                opt.step()
        counts = []
        for mode, fn in (("eval", infer), ("train", step)):
            getattr(model, mode)()
            fn()
            with HostSyncCounter() as counter:
                fn()
            counts.append((_median_ms(fn, args.repeats), counter.kernel_ops))
        (ti, ki), (tt, kt) = counts
        print(f"| {name} | {ti:.2f} ms | {ki} | {tt:.2f} ms | {kt} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
