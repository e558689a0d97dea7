"""One-shot GPU check of the Triton neighbor search: exactness against brute force, then timings.

    python3 benchmarks/save_gpu_inputs.py   # once, on a machine with ../shared/data and gemmi
    PYTHONPATH=. PAMNET_FAST_DISABLE_EXTENSION=1 python3 benchmarks/gpu_check.py --out results/gpu/

(carry ``benchmarks/gpu_inputs`` to the GPU machine). Cases: the issue-13 table: RNA-Puzzle 5 at 20 Å,
6zu5 at 5 and 8 Å, 512 random systems x 2,048 atoms at 5 Å in one batch; plus kNN (k = 16) on RNA-Puzzle 5
and 6zu5. For each: the Triton result must equal a plain-PyTorch brute force (all pairs, in blocks,
distances by ``reference.pair_distance``) bit for bit; then the median of CUDA-event timings of both
in the same run; then one profiled call (torch.profiler): CUDA kernels launched and device->host
copies / synchronizations. Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out``. About 1-3 minutes
on an H200. ``--device cpu --quick`` runs tiny cases through Triton's interpreter (a smoke test of this
script without a GPU; no timings worth reading).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
INPUTS = REPO / "benchmarks" / "gpu_inputs"


def _args(argv):
    ap = argparse.ArgumentParser(description="GPU check of the Triton neighbor search")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "gpu")
    ap.add_argument("--inputs", type=Path, default=INPUTS)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny cases (smoke test)")
    ap.add_argument("--repeats", type=int, default=20)
    return ap.parse_args(argv)


# ------------------------------------------------------------------------------- brute force

def brute_radius(pos, r, batch_size=None):
    """All pairs within r (``pair_distance <= r``), sorted by target then source; ``batch_size``: the
    positions are equal systems of that many atoms, searched system by system (batched)."""
    from pamnet_fast.ops.reference import pair_distance
    n, dev = pos.size(0), pos.device
    r_t = torch.tensor(r, dtype=pos.dtype, device=dev)
    parts = []
    if batch_size is None:
        block = max(1, (1 << 27) // max(n, 1))
        for t0 in range(0, n, block):
            d = pair_distance(pos[t0:t0 + block, None, :], pos[None, :, :])
            m = d <= r_t
            t = torch.arange(t0, min(n, t0 + block), device=dev)
            m[t - t0, t] = False
            ij = m.nonzero()
            parts.append(torch.stack([ij[:, 1], ij[:, 0] + t0]))
    else:
        p = pos.view(-1, batch_size, 3)
        block = max(1, (1 << 27) // (batch_size * batch_size))
        eye = torch.eye(batch_size, dtype=torch.bool, device=dev)
        for s0 in range(0, p.size(0), block):
            d = pair_distance(p[s0:s0 + block, :, None, :], p[s0:s0 + block, None, :, :])
            m = (d <= r_t) & ~eye
            sij = m.nonzero()
            base = (sij[:, 0] + s0) * batch_size
            parts.append(torch.stack([base + sij[:, 2], base + sij[:, 1]]))
    edge = torch.cat(parts, 1)
    ptr = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    ptr[1:] = torch.cumsum(torch.bincount(edge[1], minlength=n), 0)
    return edge, ptr


def brute_knn(pos, k):
    from pamnet_fast.ops.reference import pair_distance
    n, dev = pos.size(0), pos.device
    block = max(1, (1 << 26) // max(n, 1))
    src = []
    for t0 in range(0, n, block):
        d = pair_distance(pos[t0:t0 + block, None, :], pos[None, :, :])
        t = torch.arange(t0, min(n, t0 + block), device=dev)
        d[t - t0, t] = float("inf")
        # (distance, index) order: a stable sort by distance of the index-ordered row
        idx = torch.sort(d, dim=1, stable=True).indices[:, :k]
        src.append(torch.sort(idx, dim=1).values)
    src = torch.cat(src).reshape(-1)
    kk = min(k, n - 1)
    dst = torch.arange(n, device=dev).repeat_interleave(kk)
    return torch.stack([src, dst]), torch.arange(0, n * kk + 1, kk, device=dev)


# ------------------------------------------------------------------------------- measurement

def _sync(dev):
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def time_ms(fn, dev, repeats):
    fn()
    _sync(dev)
    times = []
    for _ in range(repeats):
        if dev.startswith("cuda"):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


def profile_counts(fn, dev):
    """CUDA kernels launched and device->host copies / syncs in one call, by torch.profiler."""
    if not dev.startswith("cuda"):
        return {}
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = dtoh = syncs = 0
    names = {}
    for e in prof.events():
        name = e.name
        if str(e.device_type).endswith("CUDA"):
            if "Memcpy DtoH" in name:
                dtoh += 1
            elif "Memcpy" not in name and "Memset" not in name:
                kernels += 1
                names[name[:60]] = names.get(name[:60], 0) + 1
        elif name in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"):
            syncs += 1
    return {"cuda_kernels": kernels, "memcpy_dtoh": dtoh, "host_syncs_api": syncs - 1,  # minus ours
            "kernel_names": dict(sorted(names.items(), key=lambda kv: -kv[1])[:25])}


def _equal(got, want):
    return all(torch.equal(a, b) for a, b in zip(got, want))


# ------------------------------------------------------------------------------- cases

def cases(args, dev):
    def load(name):
        return torch.load(args.inputs / f"{name}.pt")["pos"].to(dev)

    g = torch.Generator().manual_seed(0)
    if args.quick:
        rna = torch.rand(300, 3, generator=g) * 30
        yield dict(case="radius rand-300 r=6", kind="radius", pos=rna.to(dev), r=6.0)
        yield dict(case="radius 8 x 64 random r=5 (batch)", kind="radius", r=5.0, sys=64,
                   pos=(torch.rand(8, 64, 3, generator=g) * 12).view(-1, 3).to(dev))
        yield dict(case="knn rand-300 k=16", kind="knn", pos=rna.to(dev), k=16)
        return
    rna, ribo = load("rna5"), load("6zu5")
    yield dict(case=f"radius RNA-Puzzle 5 ({rna.size(0)} atoms) r=20", kind="radius", pos=rna, r=20.0)
    yield dict(case="radius RNA-Puzzle 5 float64 r=20", kind="radius", pos=rna.double(), r=20.0, repeats=5)
    yield dict(case=f"radius 6zu5 ({ribo.size(0)} atoms) r=5", kind="radius", pos=ribo, r=5.0, brute_repeats=3)
    yield dict(case="radius 6zu5 r=8", kind="radius", pos=ribo, r=8.0, brute_repeats=3)
    # 512 systems of 2,048 atoms at ~0.1 atoms / Å^3 (heavy-atom density of proteins)
    side = (2048 / 0.1) ** (1 / 3)
    batch = (torch.rand(512, 2048, 3, generator=g) * side).view(-1, 3)
    yield dict(case=f"radius 512 x 2048 random (box {side:.1f} Å) r=5, one batch", kind="radius",
               pos=batch.to(dev), r=5.0, sys=2048, brute_repeats=3)
    yield dict(case="knn RNA-Puzzle 5 k=16", kind="knn", pos=rna, k=16)
    yield dict(case="knn 6zu5 k=16", kind="knn", pos=ribo, k=16, brute_repeats=2)


def run_case(c, args, dev):
    from pamnet_fast.ops.triton import neighbors as nb
    pos, n = c["pos"], c["pos"].size(0)
    batch = None
    if c.get("sys"):
        batch = torch.arange(n // c["sys"], device=dev).repeat_interleave(c["sys"])
    if c["kind"] == "radius":
        ours = lambda: nb.radius_graph(pos, c["r"], batch, False, -1, False)  # noqa: E731
        brute = lambda: brute_radius(pos, c["r"], c.get("sys"))  # noqa: E731
    else:
        ours = lambda: nb.knn_graph(pos, c["k"], batch, None, False)  # noqa: E731
        brute = lambda: brute_knn(pos, c["k"])  # noqa: E731
    got, want = ours(), brute()
    row = {"case": c["case"], "atoms": n, "edges": int(want[0].size(1)), "exact": _equal(got, want)}
    if not row["exact"]:  # how far off: edges only ours / only brute force, order or ptr wrong
        row["edges_ours"] = int(got[0].size(1))
        k_got, k_want = got[0][1] * n + got[0][0], want[0][1] * n + want[0][0]
        row["only_ours"] = int((~torch.isin(k_got, k_want)).sum())
        row["only_brute"] = int((~torch.isin(k_want, k_got)).sum())
        row["same_set"] = row["only_ours"] == row["only_brute"] == 0
        row["ptr_equal"] = torch.equal(got[1], want[1])
    del got, want
    row["ours_ms"] = time_ms(ours, dev, c.get("repeats", args.repeats))
    row["brute_ms"] = time_ms(brute, dev, c.get("brute_repeats", 5))
    row["speedup_vs_brute"] = row["brute_ms"] / row["ours_ms"]
    row.update(profile_counts(ours, dev))
    return row


def markdown(rows, meta):
    out = [f"# GPU check of the neighbor search ({meta['device']})", "",
           f"`{meta['command']}` · torch {meta['torch']} · triton {meta['triton']} · {meta['utc']}", "",
           "| case | atoms | edges | exact | ours (ms) | brute force (ms) | speed-up | CUDA kernels | DtoH copies |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['case']} | error: {r['error'].splitlines()[-1][:120]} |||||||")
            continue
        out.append(f"| {r['case']} | {r['atoms']:,} | {r['edges']:,} | {r['exact']} | {r['ours_ms']:.3f} | "
                   f"{r['brute_ms']:.2f} | {r['speedup_vs_brute']:.1f}x | {r.get('cuda_kernels', '-')} | "
                   f"{r.get('memcpy_dtoh', '-')} |")
    return "\n".join(out) + "\n"


def main(argv=None):
    args = _args(argv)
    dev = args.device
    import triton
    meta = {"device": torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu (Triton interpreter)",
            "torch": torch.__version__, "triton": triton.__version__,
            "utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "PYTHONPATH=. PAMNET_FAST_DISABLE_EXTENSION=1 python3 benchmarks/gpu_check.py "
                       + " ".join(argv if argv is not None else sys.argv[1:])}
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for c in cases(args, dev):
        t0 = time.time()
        try:
            rows.append(run_case(c, args, dev))
        except Exception as exc:  # keep going: one broken case must not hide the others
            rows.append({"case": c["case"], "error": "".join(traceback.format_exception(exc))[-3000:]})
        rows[-1]["wall_s"] = round(time.time() - t0, 1)
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "kernel_names"}), flush=True)
        for name, text in (("gpu_check.json", json.dumps({"meta": meta, "rows": rows}, indent=1)),
                           ("gpu_check.md", markdown(rows, meta))):
            tmp = args.out / (name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, args.out / name)
    print(markdown(rows, meta))
    return 0 if all(r.get("exact") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
