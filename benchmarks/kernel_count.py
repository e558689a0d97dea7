"""CUDA kernels of one eager PAMNet inference, counted on the CPU (issue 12: <= 600 at QM9 batch 128).

Every op goes where it goes on CUDA: the custom ops to their Triton kernels, the dense layers to the
Triton GEMM (``ops.linear_silu``) or aten, run on CPU tensors by Triton's interpreter. Counted per
phase (``build_graphs``, the forward given the graphs): the aten ops that launch a kernel on CUDA
(non-view ops other than bare allocations) and the Triton launches (the interpreter's own torch work
is not counted), and the host reads. An estimate: cuBLAS may split a GEMM, CUB a sort, into several
kernels; the GPU suite (``benchmarks/test_gpu.py``) counts them with the profiler.

    python3 benchmarks/kernel_count.py [--molecules 128] [--model PAMNet]
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import types
import warnings
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"  # before anything imports Triton

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ALLOCATIONS = frozenset({"empty", "new_empty", "empty_like", "empty_strided", "new_empty_strided"})


def _route_to_triton():
    """The public ops and the dense layers call the Triton kernels on CPU tensors; returns the list
    the launches are recorded in."""
    import importlib

    import triton.runtime.interpreter as interpreter
    from torch.utils._python_dispatch import _disable_current_modes

    from pamnet_fast.ops import dense, library
    from pamnet_fast.ops import triton as tk
    ns = types.SimpleNamespace(**{n: tk.KERNELS[n] for n in library.FORWARD_OPS})
    for module in ("message", "basis", "graph", "triplets"):
        importlib.import_module(f"pamnet_fast.ops.{module}")._ops = lambda: ns
    dense._gemm_launcher = lambda x: tk.linear_act
    dense._fast = lambda x, weight: False
    launches = []
    run = interpreter.InterpretedFunction.run

    def counted_run(self, *args, **kwargs):
        launches.append(self.fn.__name__)
        with _disable_current_modes():
            return run(self, *args, **kwargs)
    interpreter.InterpretedFunction.run = counted_run
    return launches


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--molecules", type=int, default=128)
    ap.add_argument("--model", default="PAMNet", choices=["PAMNet", "PAMNet-s"])
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import _data
    import test_models
    from pamnet_fast.host_syncs import HostSyncCounter, _VIEWS
    batch = _data.qm9_batch(args.molecules)
    model, _ = test_models.make_model(args.model)
    model.eval()
    launches = _route_to_triton()
    print(f"{args.model}, QM9 batch of {args.molecules} molecules ({batch.num_nodes} atoms), eager "
          f"inference, the CUDA path's ops on CPU tensors (Triton interpreter)\n")
    print("| phase | aten kernels | Triton launches | kernels | host reads | top aten ops |")
    print("|---|---|---|---|---|---|")
    total = 0
    with torch.no_grad():
        graphs = model.build_graphs(batch)
        model(batch, graphs)  # warm-up: per-model constants (the spherical basis columns) are cached
        for phase, fn in (("build_graphs", lambda: model.build_graphs(batch)),
                          ("forward given the graphs", lambda: model(batch, graphs))):
            launches.clear()
            with HostSyncCounter() as counter:
                fn()
            names = collections.Counter(n for n in counter.op_names
                                        if n not in _VIEWS and n not in ALLOCATIONS)
            aten = sum(names.values())
            top = ", ".join(f"{n} {c}" for n, c in names.most_common(5))
            print(f"| {phase} | {aten} | {len(launches)} | {aten + len(launches)} | "
                  f"{len(counter.syncs)} | {top} |")
            total += aten + len(launches)
    print(f"\nkernels per inference: {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
