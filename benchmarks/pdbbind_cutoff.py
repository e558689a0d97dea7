"""PAMNet vs DimeNet++ on a real protein-ligand complex: memory and time vs the largest cutoff (paper Fig. 3).

    python benchmarks/pdbbind_cutoff.py [--quick] [--out results/pdbbind_cutoff]

The complex: ``../shared/data/complexes/prolif_vina`` (receptor + Vina pose 0), 6 Å pocket, heavy atoms;
both models run the ΔG setting: the complex, pocket and ligand graphs in one batch, one inference call.
PAMNet: ``PAMNetConfig.pdbbind()`` (dim 128, 3 layers) with the local cutoff min(2 Å, c) and the global
cutoff c. DimeNet++: PyG's model with its QM9 hyper-parameters and cutoff c, on our radius graph and
triplets (``pamnet_fast.pyg.accelerate()``); it embeds atomic numbers (PAMNet: the 18 features).
Time: the fastest of ``--repeats`` calls after a warm-up (and their median). Memory: RSS high-water of
one call above the RSS before it, in a fresh process (``_data.peak_memory``). Writes ``cutoff.json``,
``cutoff.md`` and ``cutoff.png``; ``--models PAMNet`` re-measures one model and keeps the other's rows.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]
import _data  # noqa: E402

# element class (first 9 features) -> a representative atomic number for DimeNet++'s embedding
_CLASS_Z = torch.tensor([5, 6, 7, 8, 15, 16, 34, 17, 30])
DIMENET_MEM_LIMIT_GB = float(os.environ.get("PAMNET_BENCH_MEM_BUDGET_GB", "5"))


@functools.lru_cache(maxsize=None)
def complex_batch():
    from torch_geometric.data import Batch
    from pamnet_fast.data.complexes import load_complexes
    from pamnet_fast.nn import expand_complexes
    d = _data.require_data("complexes", "prolif_vina")
    data, _ = load_complexes(d / "rec.pdb", d / "vina_output.sdf")
    batch = Batch.from_data_list(data[:1])
    g = expand_complexes(batch)
    g.z = _CLASS_Z[g.x[:, :9].argmax(1)]
    return batch, g


def _pamnet(cutoff: float):
    from pamnet_fast.nn import PAMNet, PAMNetConfig, ProteinLigandHead
    torch.manual_seed(0)
    return ProteinLigandHead(PAMNet(PAMNetConfig.pdbbind(cutoff_g=cutoff, cutoff_l=min(2.0, cutoff)))).eval()


def _dimenet(cutoff: float):
    import pamnet_fast.pyg
    from torch_geometric.nn.models import DimeNetPlusPlus
    from test_models import dimenet_pp_kwargs
    pamnet_fast.pyg.accelerate()
    _data.cache_dimenet_sympy()
    torch.manual_seed(0)
    kw = dimenet_pp_kwargs(cutoff)
    kw["max_num_neighbors"] = 10_000
    return DimeNetPlusPlus(**kw).eval()


def build_case(model: str, cutoff: float) -> _data.Case:
    batch, g = complex_batch()
    if model == "PAMNet":
        m = _pamnet(cutoff)
        fwd = functools.partial(m, batch)
    else:
        from pamnet_fast.nn.fusion import signed_sum
        m = _dimenet(cutoff)

        def fwd():
            return signed_sum(m(g.z, g.pos, g.batch), g.sign, g.sample, 1)

    def run():
        with torch.no_grad():
            return fwd()
    return _data.Case(run=run)


def graph_sizes(cutoff: float) -> dict:
    from pamnet_fast import ops
    _, g = complex_batch()
    ei_g = ops.radius_graph(g.pos, cutoff, g.batch, max_num_neighbors=10_000)
    ei_l = ops.radius_graph(g.pos, min(2.0, cutoff), g.batch)
    trip_l = ops.triplets(ei_l, g.num_nodes)
    trip_g = ops.triplets(ei_g, g.num_nodes)
    return {"edges": int(ei_g.size(1)), "dimenet_triplets": int(trip_g.two_hop_kj.numel()),
            "pamnet_local_edges": int(ei_l.size(1)),
            "pamnet_triplets": int(trip_l.two_hop_kj.numel() + trip_l.one_hop_j2i.numel())}


def measure(model: str, cutoff: float, repeats: int) -> dict:
    case = build_case(model, cutoff)
    case.run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        case.run()
        times.append(time.perf_counter() - t0)
    mem = _data.peak_memory(__file__, "build_case", {"model": model, "cutoff": cutoff}) or {}
    # min: the least-disturbed call on a shared machine; the median is kept beside it
    return {"model": model, "cutoff": cutoff, "time_ms": 1e3 * min(times),
            "time_median_ms": 1e3 * statistics.median(times),
            "peak_extra_mb": mem.get("peak_extra_mb"), "memory_error": mem.get("error")}


def plot(rows, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for model, style in (("PAMNet", "o-"), ("DimeNet++", "s--")):
        r = [x for x in rows if x["model"] == model and x.get("time_ms") is not None]
        axes[0].plot([x["cutoff"] for x in r], [x["peak_extra_mb"] or float("nan") for x in r], style, label=model)
        axes[1].plot([x["cutoff"] for x in r], [x["time_ms"] for x in r], style, label=model)
    for ax, lab in zip(axes, ("peak memory of one call (MB)", "inference time (ms)")):
        ax.set_xlabel("largest cutoff (Å)")
        ax.set_ylabel(lab)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def _repeats(rows) -> dict:
    out = {}
    for r in rows:
        if r.get("repeats"):
            out.setdefault(r["model"], r["repeats"])
    return out


def write_table(rows, meta, path: Path) -> None:
    """The numbers as a Markdown table (``cutoff.md``)."""
    lines = [f"Complex: {meta['complex']} ({meta['complex_atoms']} heavy atoms: {meta['pocket_atoms']} pocket + "
             f"{meta['ligand_atoms']} ligand; {meta['nodes_in_three_graphs']} nodes in the complex, pocket and "
             f"ligand graphs), inference, {meta['threads']} thread(s), time = fastest of "
             f"{', '.join(f'{n} calls ({m})' for m, n in _repeats(rows).items())}; "
             f"{meta.get('machine', '')}.", "",
             "| cutoff (Å) | edges | DimeNet++ triplets | PAMNet ms | DimeNet++ ms | PAMNet peak MB "
             "| DimeNet++ peak MB |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def fmt(v, spec):
        return "—" if v is None else format(v, spec)
    for c in sorted({r["cutoff"] for r in rows}):
        p = next((r for r in rows if r["cutoff"] == c and r["model"] == "PAMNet"), {})
        d = next((r for r in rows if r["cutoff"] == c and r["model"] == "DimeNet++"), {})
        lines.append(f"| {c:g} | {fmt(p.get('edges'), ',')} | {fmt(p.get('dimenet_triplets'), ',')} | "
                     f"{fmt(p.get('time_ms'), '.1f')} | {fmt(d.get('time_ms'), '.1f')} | "
                     f"{fmt(p.get('peak_extra_mb'), '.1f')} | {fmt(d.get('peak_extra_mb'), '.1f')}"
                     f"{' (' + d['skipped'] + ')' if d.get('skipped') else ''} |")
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="cutoffs 2 and 4 Å, one timed call")
    p.add_argument("--out", default=str(BENCH.parent / "results" / "pdbbind_cutoff"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default="PAMNet,DimeNet++",
                   help="comma-separated subset; rows of the other models are kept from an existing cutoff.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cutoffs = [2.0, 4.0] if args.quick else [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    repeats = 1 if args.quick else args.repeats
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - {"PAMNet", "DimeNet++"}
    if unknown:
        p.error(f"unknown models {sorted(unknown)}; valid: PAMNet, DimeNet++")
    batch, g = complex_batch()
    rows = []
    old = Path(args.out) / "cutoff.json"
    kept = [r for r in json.loads(old.read_text())["rows"] if r["model"] not in models] if old.exists() else []
    for c in cutoffs:
        sizes = graph_sizes(c)
        for model in models:
            # DimeNet++ holds ~(num_spherical*num_radial + basis_emb + 2*int_emb) floats per triplet
            est_gb = 4.0 * (7 * 6 + 8 + 2 * 64) * sizes["dimenet_triplets"] / 2**30
            if model == "DimeNet++" and est_gb > DIMENET_MEM_LIMIT_GB:
                rows.append({"model": model, "cutoff": c, "time_ms": None, "peak_extra_mb": None,
                             "skipped": f"estimated >= {est_gb:.1f} GiB"})
                continue
            row = {**measure(model, c, repeats), **sizes, "repeats": repeats}
            rows.append(row)
            print(f"{model:>10} cutoff {c:4.1f} Å: {row['time_ms']:9.1f} ms, peak +{row['peak_extra_mb']} MB, "
                  f"{sizes['edges']:,} edges, {sizes['dimenet_triplets']:,} DimeNet++ triplets", flush=True)
    rows = sorted(rows + [r for r in kept if r["cutoff"] in cutoffs],
                  key=lambda r: (r["cutoff"], r["model"] != "PAMNet"))
    n_complex = int(batch.num_nodes)
    n_lig = int(batch.ligand.sum())
    meta = {"complex": "prolif_vina rec.pdb + vina_output.sdf pose 0", "complex_atoms": n_complex,
            "ligand_atoms": n_lig, "pocket_atoms": n_complex - n_lig, "nodes_in_three_graphs": int(g.num_nodes),
            "threads": torch.get_num_threads(), "machine": _data.cpu_model(),
            "load_average_at_end": list(os.getloadavg())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "cutoff.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    os.replace(tmp, out / "cutoff.json")
    write_table(rows, meta, out / "cutoff.md")
    try:
        plot(rows, out / "cutoff.png", f"ΔG inference on a real complex ({n_complex} heavy atoms: {n_complex - n_lig} "
                                       f"pocket + {n_lig} ligand; complex, pocket, ligand graphs in one batch), "
                                       f"{meta['threads']} thread(s)")
    except ImportError as e:
        print(f"plot skipped: {e}")
    print(f"wrote {out / 'cutoff.json'} and {out / 'cutoff.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
