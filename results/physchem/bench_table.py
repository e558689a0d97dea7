"""Markdown table of bench_direct.jsonl (the minimum over the repeats of each case)."""
import json
import sys
rows = {}
for ln in open(sys.argv[1] if len(sys.argv) > 1 else "bench_direct.jsonl"):
    r = json.loads(ln); ds, m, mode, bs = r["case"]
    d = rows.setdefault((ds, bs, mode), {}).setdefault("dense" if "dense" in m else "ours", {"t": [], "mem": [], "skip": None})
    if "skipped" in r: d["skip"] = r["skipped"]; continue
    d["t"].append(r["seconds"]); d["mem"].append(r["peak_extra_mb"])
print("| case | ours: time, peak extra memory | dense twin: time, peak extra memory | time ratio | memory ratio |")
print("| --- | --- | --- | --- | --- |")
order = {("qm9",128):0, ("lipop",32):1, ("lipop",8):2}
for (ds, bs, mode), r in sorted(rows.items(), key=lambda kv: (order[(kv[0][0], kv[0][1])], kv[0][2])):
    o = r.get("ours"); d = r.get("dense")
    f = lambda x: f"{min(x['t']):.2f} s, {min(x['mem']):.0f} MB" if x and x["t"] else (x["skip"] if x and x["skip"] else "not run")
    tr = f"{min(o['t'])/min(d['t']):.3f}" if o and d and o["t"] and d["t"] else "-"
    mr = f"{min(o['mem'])/min(d['mem']):.3f}" if o and d and o["t"] and d["t"] else "-"
    print(f"| {'QM9' if ds=='qm9' else 'Lipophilicity'} batch {bs}, {'forward' if mode=='inference' else 'train step'} | {f(o)} | {f(d)} | {tr} | {mr} |")
