"""Usage: python3 results/physchem/bench_direct.py > bench_direct.jsonl; python3 results/physchem/bench_table.py

Direct measurement of the benchmark cases: one warm-up + one measured call per case in a fresh
process (time of that call and its RSS high-water above the RSS before it), via benchmarks/_data.py."""
import json, os, sys
from pathlib import Path
REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO)]
os.environ.setdefault("PAMNET_BENCH_THREADS", "1")
import _data  # noqa: E402
HERE = str(REPO / "benchmarks" / "test_physchem.py")
cases = [(ds, m, mode, bs) for ds, bs in (("qm9", 128), ("lipop", 32), ("lipop", 8))
         for mode in ("inference", "train") for m in ("PhysChem", "PhysChem (dense, authors' formulation)")]
for ds, m, mode, bs in cases:
    if ds == "lipop" and bs == 32 and mode == "train" and "dense" in m:
        print(json.dumps({"case": [ds, m, mode, bs], "skipped": "dense train step needs > 5 GB here"}), flush=True)
        continue
    for rep in range(2):
        r = _data.peak_memory(HERE, "build_physchem_case", dict(dataset=ds, model_name=m, mode=mode, batch_size=bs))
        _data._PROBE_CACHE.clear()
        print(json.dumps({"case": [ds, m, mode, bs], "rep": rep, **r}), flush=True)
