"""Time and peak memory of PAMNet inference vs atom count, streamed and unstreamed, up to a whole ribosome.

Model: ``PAMNet(PAMNetConfig.rna(knn=False, dim=128))`` (the RNA preset's layers, the paper's plain 20 Å
global cutoff, no kNN cap), float32, inference. Inputs: C/N/O atoms of the 6zu5 80S ribosome
(``../shared/data/structures/6zu5.cif.gz``): prefixes of the LSU rRNA chain L50 (contiguous residues;
1k, 3k, 10k, 25k atoms), the whole chain L50 (50k), the 60S subunit (every L* chain) and the whole
particle (every chain, protein included). Each case runs in a fresh process; peak memory is the
process's high-water RSS (``VmHWM``) and its increase over the RSS before the forward.

The unstreamed path runs until its predicted peak (bytes per global edge fitted on the cases already
measured, times the case's edge count) exceeds ``--unstreamed-limit`` (default 5 GiB: the machine is
shared); the skipped cases are recorded with their prediction.

    python benchmarks/ribosome_scaling.py                  # all cases -> results/ribosome/
    python benchmarks/ribosome_scaling.py --cases 1k,3k    # some cases (merged into the JSON)
    python benchmarks/ribosome_scaling.py --plot           # only redraw the PNG from the JSON
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PAMNET_SHARED_DATA", REPO.parent / "shared" / "data"))
OUT = REPO / "results" / "ribosome"
CASES = {"1k": ("L50", 1000), "3k": ("L50", 3000), "10k": ("L50", 10000), "25k": ("L50", 25000),
         "L50": ("L50", None), "60S": ("L*", None), "80S": ("*", None)}


def load_case(case: str):
    """C/N/O atoms of a case: ``(pos [N, 3] float32, z [N])``."""
    import torch
    from pamnet_fast.data.structures import read_structure
    import gemmi
    path = DATA / "structures" / "6zu5.cif.gz"
    chain, limit = CASES[case]
    if chain == "*":
        chains = None
    elif chain == "L*":
        chains = [c.name for c in gemmi.read_structure(str(path))[0] if c.name.startswith("L")]
    else:
        chains = [chain]
    st = read_structure(str(path), chains)
    keep = (st.z == 6) | (st.z == 7) | (st.z == 8)
    pos, z = st.pos[keep], st.z[keep]
    if limit is not None:
        pos, z = pos[:limit], z[:limit]
    return pos.contiguous(), z


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(key + r":\s+(\d+)", f.read()).group(1)) * 1024.0


def run_case(case: str, streamed: bool, dim: int, max_memory: str, threads: int, train: bool = False) -> dict:
    """The child: one forward (``train``: forward, smooth-L1 loss and backward), timed, with its peak
    RSS."""
    import torch
    from torch_geometric.data import Data
    from pamnet_fast import ops
    from pamnet_fast.nn import PAMNet, PAMNetConfig
    torch.set_num_threads(threads)
    pos, z = load_case(case)
    torch.manual_seed(0)  # the same weights in every process: outputs comparable across runs
    model = PAMNet(PAMNetConfig.rna(knn=False, dim=dim)).eval()
    data = Data(pos=pos, z=z)
    with torch.no_grad():  # warm-up on a few atoms (lazy initialisations, basis constants)
        model(Data(pos=pos[:200], z=z[:200]))
    base = _status("VmRSS")
    t0 = time.perf_counter()
    with torch.set_grad_enabled(train):
        if streamed:
            with model.stream(max_memory):
                y = model(data)
                if train:
                    torch.nn.functional.smooth_l1_loss(y.view(-1), torch.tensor([5.0])).backward()
        else:
            y = model(data)
            if train:
                torch.nn.functional.smooth_l1_loss(y.view(-1), torch.tensor([5.0])).backward()
    secs = time.perf_counter() - t0
    out = {"case": case, "atoms": int(pos.size(0)), "streamed": streamed, "train": train, "dim": dim,
           "threads": threads,
           "seconds": secs, "peak_rss_gib": _status("VmHWM") / 2**30,
           "peak_extra_gib": (_status("VmHWM") - base) / 2**30, "output": float(y.view(-1)[0])}
    if streamed:
        out["max_memory"] = max_memory
        out["global_blocks"] = len(model.last_stream_plan.global_blocks)
        out["local_blocks"] = len(model.last_stream_plan.local_blocks)
        out["edges"] = model.last_stream_edges
    if train:
        out["grad_norm"] = float(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()
                                                if p.grad is not None)))
    return out


def _child(args_list, timeout):
    env = dict(os.environ, PYTHONPATH=str(REPO), MALLOC_MMAP_THRESHOLD_="131072",
               MALLOC_TRIM_THRESHOLD_="131072")
    proc = subprocess.run([sys.executable, __file__, *args_list], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=str(REPO))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": f"rc {proc.returncode}: " + " | ".join((proc.stderr or "").strip().splitlines()[-3:])}
    return json.loads(lines[-1][len("RESULT "):])


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for streamed, style, label in ((True, "o-", "streamed (--max-memory 2GiB)"), (False, "s--", "unstreamed")):
        rows = sorted((r for r in results["runs"] if r.get("streamed") == streamed and "seconds" in r
                       and not r.get("train")),
                      key=lambda r: r["atoms"])
        if rows:
            x = [r["atoms"] for r in rows]
            ax_t.plot(x, [r["seconds"] for r in rows], style, label=label)
            ax_m.plot(x, [r["peak_rss_gib"] for r in rows], style, label=label)
            for r in rows:
                if streamed and r.get("max_memory") not in (None, "2GiB"):
                    ax_m.annotate(f"--max-memory {r['max_memory']}", (r["atoms"], r["peak_rss_gib"]),
                                  textcoords="offset points", xytext=(-60, 8), fontsize=7)
    skipped = [r for r in results["runs"] if r.get("skipped")]
    for r in skipped:
        ax_m.plot([r["atoms"]], [r["predicted_peak_gib"]], "x", color="C1")
    if skipped:
        ax_m.plot([], [], "x", color="C1", label="unstreamed, predicted (not run)")
    ax_m.axhline(2.0, color="grey", lw=0.8, ls=":")
    for ax, title in ((ax_t, "time of one forward [s]"), (ax_m, "peak RSS [GiB]")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("atoms (C/N/O of 6zu5: L50 prefixes, L50, whole 80S)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("PAMNet RNA preset, dim 128, 20 Å global plex without kNN cap, CPU inference")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ",".join(CASES))
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--max-memory", default="2GiB")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--unstreamed-limit", type=float, default=5.0, help="GiB of predicted peak")
    ap.add_argument("--no-unstreamed", action="store_true")
    ap.add_argument("--timeout", type=float, default=4 * 3600)
    ap.add_argument("--plot", action="store_true", help="only redraw the PNG")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        case, mode = args.child
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
        res = run_case(case, mode.endswith("streamed") and not mode.endswith("unstreamed"), args.dim,
                       args.max_memory, args.threads, train=mode.startswith("train-"))
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    json_path = OUT / "scaling.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {"runs": []}
    if not args.plot:
        common = ["--dim", str(args.dim), "--max-memory", args.max_memory, "--threads", str(args.threads)]
        for case in args.cases.split(","):
            edges = None
            for streamed in (True, False):
                if not streamed and args.no_unstreamed:
                    continue
                results["runs"] = [r for r in results["runs"]
                                   if not (r.get("case") == case and r.get("streamed") == streamed)]
                if not streamed:
                    # bytes per directed edge, from the largest unstreamed run so far
                    done = [r for r in results["runs"] if r.get("streamed") is False and "seconds" in r
                            and r.get("edges")]
                    if done:
                        ref = max(done, key=lambda r: r["edges"])
                        predicted = ref["peak_rss_gib"] * edges / ref["edges"]
                        if predicted > args.unstreamed_limit:
                            results["runs"].append({"case": case, "streamed": False, "edges": edges,
                                                    "atoms": ref_atoms(case, results), "skipped": True,
                                                    "predicted_peak_gib": predicted,
                                                    "limit_gib": args.unstreamed_limit})
                            print(f"{case} unstreamed: skipped, predicted peak {predicted:.1f} GiB", flush=True)
                            _save(results, json_path)
                            continue
                res = _child(["--child", case, "streamed" if streamed else "unstreamed", *common], args.timeout)
                edges = res.get("edges", edges)
                res.update(case=case, streamed=streamed, edges=edges)
                results["runs"].append(res)
                print(json.dumps(res), flush=True)
                _save(results, json_path)
    plot(results, OUT / "scaling.png")
    return 0


def _save(results: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)


def ref_atoms(case: str, results: dict) -> int:
    for r in results["runs"]:
        if r.get("case") == case and "atoms" in r:
            return r["atoms"]
    return 0


if __name__ == "__main__":
    sys.exit(main())
