"""Turn the GPU suite's results (``benchmarks/test_gpu.py``) into ``benchmarks/RESULTS_GPU.md``.

    python3 benchmarks/write_gpu_results.py benchmarks/gpu_results.json [-o benchmarks/RESULTS_GPU.md]

Reads the pytest-benchmark JSON, or the JSON-lines log the suite appends to as each case finishes
(``PAMNET_GPU_BENCH_LOG``; ``benchmarks/gpu_suite.py`` sets it), so a run cut short still gives a
table. One table per group (a case and its baselines, same inputs, same process): median time, the
ratio of each baseline's median to ours (> 1: ours is faster), the byte floor and ours / floor, the
memory peak of one call, CUDA kernels and device-to-host copies / host synchronizations per call; then
the issue's targets, met or not, and the skipped cases.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from write_results import fmt_time  # noqa: E402

HERE = Path(__file__).resolve().parent


def load(path: Path):
    """(rows, meta, skipped): rows as ``{"name", "group", "extra_info", "stats"}``."""
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()], {}, []
    data = json.loads(text)
    rows = [{"name": b["name"], "group": b["group"], "extra_info": b.get("extra_info", {}),
             "stats": b["stats"]} for b in data["benchmarks"]]
    meta = dict(data.get("machine_info", {}).get("pamnet", {}))
    meta["datetime"] = data.get("datetime", "")
    meta["commit"] = (data.get("commit_info") or {}).get("id", "")
    return rows, meta, data.get("pamnet_skipped", [])


def _impl(row):
    return row["extra_info"].get("impl") or row["name"]


def _fmt(x, digits=2):
    return "" if x is None else f"{x:.{digits}f}"


def group_table(name, rows):
    ours = next((r for r in rows if _impl(r) == "ours"), None)
    base = ours or next((r for r in rows if r["extra_info"].get("model") == "PAMNet"), None)
    out = [f"### {name}", "",
           "| impl | median | min | ours faster by | floor | × floor | peak +MB | kernels | DtoH / syncs | check |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, st = r["extra_info"], r["stats"]
        faster = st["median"] / base["stats"]["median"] if base and r is not base else None
        floor = e.get("floor_ms")
        xfloor = st["median"] * 1e3 / floor if floor else None
        check = ""
        if "exact" in e:
            check = "exact" if e["exact"] else "DIFFERS"
        elif "max_rel_err" in e:
            check = f"rel err {e['max_rel_err']:.1e}"
        syncs = ""
        if "memcpy_dtoh" in e:
            syncs = f"{e['memcpy_dtoh']} / {e.get('host_syncs', '')}"
        out.append(f"| {_impl(r)} | {fmt_time(st['median'])} | {fmt_time(st['min'])} | "
                   f"{_fmt(faster) + '×' if faster else ''} | {_fmt(floor, 3) + ' ms' if floor else ''} | "
                   f"{_fmt(xfloor)} | {e.get('cuda_peak_extra_mb', '')} | {e.get('cuda_kernels', '')} | "
                   f"{syncs} | {check} |")
    return out


def targets(groups):
    """The issue's goals, each with the measured value and whether it is met."""
    lines = ["## Issue 13 targets", "", "| target | measured | met |", "|---|---|---|"]

    def med(group_part, impl="ours"):
        for g, rows in groups.items():
            if group_part in g:
                for r in rows:
                    if _impl(r) == impl:
                        return r["stats"]["median"] * 1e3
        return None

    def add(text, value, ok):
        if value is not None:
            lines.append(f"| {text} | {value} | {'yes' if ok else 'no'} |")

    v = med("radius-6zu5-r5")
    add("radius_graph 6zu5 at 5 Å ≤ 1 ms", v and f"{v:.3f} ms", v is not None and v <= 1.0)
    v = med("radius-rna5-r20")
    add("radius_graph RNA-Puzzle 5 at 20 Å ≤ 0.5 ms", v and f"{v:.3f} ms", v is not None and v <= 0.5)
    v = med("radius-512x2048-r5")
    add("radius_graph 512 × 2,048 at 5 Å ≤ 3 ms", v and f"{v:.3f} ms", v is not None and v <= 3.0)
    for g, rows in groups.items():
        if not g.startswith("neighbors"):
            continue
        ours, brute = med(g.split(": ", 1)[1]), med(g.split(": ", 1)[1], "brute_force")
        if ours and brute:
            add(f"{g}: faster than brute force", f"{brute / ours:.3g}×", brute > ours)
    for g, rows in groups.items():
        if "fwd+bwd" not in g:
            continue
        by = {_impl(r): r for r in rows}
        if "ours" not in by:
            continue
        o = by["ours"]
        if "torch.compile" in by:
            ratio = by["torch.compile"]["stats"]["median"] / o["stats"]["median"]
            big = (o["extra_info"].get("edges") or o["extra_info"].get("rows") or 0) >= 1_000_000
            add(f"{g}: faster than torch.compile{' (≥ 1.5×)' if big else ''}", f"{ratio:.3g}×",
                ratio >= (1.5 if big else 1.0))
        floor = o["extra_info"].get("floor_ms")
        if floor:
            x = o["stats"]["median"] * 1e3 / floor
            add(f"{g}: within 2× of the byte floor", f"{x:.2f}× floor", x <= 2.0)
    return lines


# Issue 12's goals per PAMNet variant: time (inference / train step) and memory against DimeNet++ in
# the same group, CUDA kernels per inference at batch 128.
MODEL_TIME_GOALS = {"inference": 0.5, "train step": 0.7}
MEMORY_GOAL = 0.15
KERNEL_GOAL = 600
SYNC_GOAL = 2


def model_targets(groups):
    lines = ["## Issue 12 targets (PAMNet vs DimeNet++, same group)", "",
             "| target | measured | met |", "|---|---|---|"]
    for g, rows in groups.items():
        if not g.startswith("QM9 batch"):
            continue
        by = {r["extra_info"].get("model"): r for r in rows}
        dimenet = by.get("DimeNet++")
        kind = g.split(": ", 1)[1]
        goal = MODEL_TIME_GOALS.get(kind)
        for name, r in by.items():
            if not name or not name.startswith("PAMNet"):
                continue
            e = r["extra_info"]
            if dimenet is not None and goal is not None:
                ratio = r["stats"]["median"] / dimenet["stats"]["median"]
                lines.append(f"| {g}, {name}: time ≤ {goal}× DimeNet++ | {ratio:.3g}× | "
                             f"{'yes' if ratio <= goal else 'no'} |")
                mem, mem_d = e.get("cuda_peak_extra_mb"), dimenet["extra_info"].get("cuda_peak_extra_mb")
                if mem is not None and mem_d:
                    m = mem / mem_d
                    lines.append(f"| {g}, {name}: memory ≤ {MEMORY_GOAL}× DimeNet++ | {m:.3g}× | "
                                 f"{'yes' if m <= MEMORY_GOAL else 'no'} |")
            if kind == "inference" and g.startswith("QM9 batch 128") and "cuda_kernels" in e:
                k = e["cuda_kernels"]
                lines.append(f"| {g}, {name}: ≤ {KERNEL_GOAL} CUDA kernels | {k} | "
                             f"{'yes' if k <= KERNEL_GOAL else 'no'} |")
            if kind == "inference" and "forward_memcpy_dtoh" in e:
                reads = e["forward_memcpy_dtoh"] + e.get("forward_host_syncs", 0)
                lines.append(f"| {g}, {name}: forward given the graphs ≤ {SYNC_GOAL} host syncs | "
                             f"{e['forward_memcpy_dtoh']} DtoH / {e.get('forward_host_syncs', 0)} syncs "
                             f"(graph building: {e.get('build_memcpy_dtoh', '?')} / "
                             f"{e.get('build_host_syncs', '?')}; kernels {e.get('build_cuda_kernels', '?')} "
                             f"+ {e.get('forward_cuda_kernels', '?')}) | {'yes' if reads <= SYNC_GOAL else 'no'} |")
    return lines if len(lines) > 4 else []


def render(rows, meta, skipped, source: Path) -> str:
    groups = OrderedDict()
    for r in rows:
        groups.setdefault(r["group"] or r["name"], []).append(r)
    device = next((r["extra_info"].get("device") for r in rows if r["extra_info"].get("device")), "CPU")
    bw = next((r["extra_info"]["copy_gb_per_s"] for r in rows if "copy_gb_per_s" in r["extra_info"]), None)
    out = [f"# GPU benchmarks ({device})", "",
           f"Source: `{source.name}`" + (f" · {meta['datetime']}" if meta.get("datetime") else "")
           + (f" · commit {meta['commit'][:10]}" if meta.get("commit") else "")
           + (f" · torch {meta['torch']}" if meta.get("torch") else ""), ""]
    if meta.get("command"):
        out += [f"Command: `{meta['command']}`", ""]
    tests = source.parent / "gpu_tests.txt"  # written by gpu_suite.py --tests
    if tests.exists():
        out += ["Correctness: " + tests.read_text().strip().replace("\n", "  \n"), ""]
    out += ["Times: median of the rounds of one call, synchronized (wall clock, host overhead included). "
            "`ours faster by`: that row's median / ours (> 1: ours is faster). `floor`: bytes of each "
            "input read once and each output written once, forward + backward, at the copy bandwidth "
            f"measured on the card ({bw} GB/s, read + write)." if bw else "", "",
            "`peak +MB`: CUDA memory peak of one call above what was allocated before it. `kernels`, "
            "`DtoH / syncs`: CUDA kernels, device-to-host copies and host synchronizations in one call "
            "(torch.profiler).", ""]
    out += targets(groups) + [""]
    model_lines = model_targets(groups)
    if model_lines:
        out += model_lines + [""]
    for name, grp in groups.items():
        out += group_table(name, grp) + [""]
    if skipped:
        out += ["## Skipped", ""] + [f"* `{s['test']}`: {s['reason']}" for s in skipped] + [""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="pytest-benchmark JSON or the suite's .jsonl log")
    ap.add_argument("-o", "--output", type=Path, default=HERE / "RESULTS_GPU.md")
    args = ap.parse_args(argv)
    rows, meta, skipped = load(args.source)
    text = render(rows, meta, skipped, args.source)
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, args.output)
    print(f"{args.output}: {len(rows)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
