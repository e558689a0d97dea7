"""The GPU benchmark suite in one command: ``pytest benchmarks/test_gpu.py`` then the results writer.

On a GPU machine (inputs from ``python3 benchmarks/save_gpu_inputs.py`` in ``benchmarks/gpu_inputs``)::

    PYTHONPATH=. PAMNET_FAST_DISABLE_EXTENSION=1 python3 benchmarks/gpu_suite.py [--tests] [--out DIR]

runs ``pytest benchmarks/test_gpu.py --benchmark-only --benchmark-json=DIR/gpu_results.json`` (each
finished case is also appended to ``DIR/gpu_results.jsonl``) and writes ``DIR/RESULTS_GPU.md`` with
``benchmarks/write_gpu_results.py`` (from the JSON, or from the JSON lines if pytest was cut short).
``--tests`` first runs ``tests/test_triton*.py`` on the device (its summary and failures go into the
results file). ``DIR`` defaults to ``benchmarks/``. Extra arguments after ``--`` go to pytest (e.g. ``-- -k message``).
Cases that would start after ``--budget`` seconds (default 480) are skipped and listed as such, so
that a 10-minute slot on a lent GPU always ends with the results file written.

CPU smoke run (Triton's interpreter, tiny sizes, no torch.compile baseline; proves the pipeline)::

    TRITON_INTERPRET=1 PYTHONPATH=. python3 benchmarks/gpu_suite.py --device cpu --quick --out /tmp/gpu_smoke
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke run: TRITON_INTERPRET=1)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds after which the remaining cases are skipped (0: none; default 480 on "
                         "CUDA, none for the CPU smoke run); the writer still runs")
    ap.add_argument("--autotune", action="store_true",
                    help="PAMNET_FAST_TRITON_AUTOTUNE=1: the segment kernels' tiles by triton.autotune "
                         "instead of the rule (compare the two runs' message-op rows)")
    ap.add_argument("--tests", action="store_true",
                    help="first run tests/test_triton*.py on the device (the kernels against the "
                         "reference ops); its summary goes into RESULTS_GPU.md")
    ap.add_argument("--tests-timeout", type=float, default=240.0,
                    help="seconds the --tests step may take before it is stopped (the benchmarks still "
                         "run; default 240)")
    ap.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = ap.parse_args(argv)
    if args.budget is None:
        args.budget = 480.0 if args.device.startswith("cuda") else 0.0
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        ap.error("--device cpu runs the kernels through Triton's interpreter: set TRITON_INTERPRET=1")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, log_path = args.out / "gpu_results.json", args.out / "gpu_results.jsonl"
    for p in (json_path, log_path):
        p.unlink(missing_ok=True)
    env = dict(os.environ, PAMNET_GPU_BENCH_DEVICE=args.device, PAMNET_GPU_BENCH_LOG=str(log_path),
               PAMNET_GPU_BENCH_BUDGET_S=str(args.budget))
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    if args.autotune:
        env["PAMNET_FAST_TRITON_AUTOTUNE"] = "1"
    cache = HERE / "gpu_inputs" / "cache"
    if "PAMNET_FAST_CACHE" not in env and cache.is_dir():
        env["PAMNET_FAST_CACHE"] = str(cache)  # PyG DimeNet's sympy expressions, saved with the inputs
    tests_path = args.out / "gpu_tests.txt"
    tests_path.unlink(missing_ok=True)
    if args.tests:
        t0 = time.time()
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   *sorted(str(p) for p in (REPO / "tests").glob("test_triton*.py"))],
                                  env=env, cwd=REPO,
                                  capture_output=True, text=True, timeout=args.tests_timeout)
            stdout = proc.stdout
            summary = (stdout.strip().splitlines() or ["(no output)"])[-1]
        except subprocess.TimeoutExpired as exc:  # a lent GPU's minutes go to the benchmarks then
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            summary = f"stopped after {args.tests_timeout:.0f} s (--tests-timeout)"
        failed = [ln for ln in stdout.splitlines() if ln.startswith("FAILED")]
        text = f"tests/test_triton*.py on {args.device}: {summary} ({time.time() - t0:.0f} s)\n"
        tests_path.write_text(text + "".join(f"{ln}\n" for ln in failed))
        print(text + stdout[-3000:], flush=True)
    cmd = [sys.executable, "-m", "pytest", str(HERE / "test_gpu.py"), "--benchmark-only",
           f"--benchmark-json={json_path}", "-p", "no:cacheprovider", "-q", "-rs"]
    if args.quick:
        cmd.append("--quick")
    cmd += args.pytest_args
    print("+", " ".join(cmd), flush=True)
    t0 = time.time()
    rc = subprocess.call(cmd, env=env, cwd=REPO)
    print(f"pytest exited {rc} after {time.time() - t0:.0f} s", flush=True)
    source = json_path if json_path.exists() and json_path.stat().st_size else log_path
    if not source.exists():
        print("no results to write", file=sys.stderr)
        return rc or 1
    sys.path.insert(0, str(HERE))
    import write_gpu_results
    write_gpu_results.main([str(source), "-o", str(args.out / "RESULTS_GPU.md")])
    return rc


if __name__ == "__main__":
    sys.exit(main())
