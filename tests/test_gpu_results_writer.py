"""benchmarks/write_gpu_results.py on a synthetic pytest-benchmark file (the GPU suite itself needs a
GPU; its writer must not wait for one to be checked)."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bench(name, group, median, **extra):
    stats = {"min": median * 0.9, "max": median * 1.1, "mean": median, "median": median, "stddev": 0.0,
             "rounds": 5}
    return {"name": name, "group": group, "extra_info": extra, "stats": stats}


def test_write_gpu_results(tmp_path):
    benches = [
        _bench("n-ours", "neighbors: radius-6zu5-r5", 0.8e-3, impl="ours", exact=True, cuda_kernels=4,
               memcpy_dtoh=1, host_syncs=1, device="NVIDIA H200"),
        _bench("n-brute", "neighbors: radius-6zu5-r5", 1.0, impl="brute_force", baseline=True),
        _bench("m-ours", "fused_edge_message fwd+bwd E=1e+06 F=128 float32", 1.0e-3, impl="ours", edges=10**6,
               floor_ms=0.4, max_rel_err=1e-7, copy_gb_per_s=4000.0),
        _bench("m-compile", "fused_edge_message fwd+bwd E=1e+06 F=128 float32", 1.2e-3, impl="torch.compile",
               edges=10**6, floor_ms=0.4),
        _bench("m-eager", "fused_edge_message fwd+bwd E=1e+06 F=128 float32", 4e-3, impl="eager", edges=10**6),
        _bench("q-pamnet", "QM9 batch 128: inference", 12e-3, model="PAMNet", impl="PAMNet",
               cuda_peak_extra_mb=60.0, cuda_kernels=650, build_cuda_kernels=150, build_memcpy_dtoh=3,
               build_host_syncs=0, forward_cuda_kernels=500, forward_memcpy_dtoh=0,
               forward_host_syncs=0),
        _bench("q-graph", "QM9 batch 128: inference", 4e-3, model="PAMNet (CUDA graph)",
               impl="PAMNet (CUDA graph)", cuda_peak_extra_mb=60.0, cuda_kernels=5),
        _bench("q-dimenet", "QM9 batch 128: inference", 20e-3, model="DimeNet++", impl="DimeNet++",
               baseline=True, cuda_peak_extra_mb=600.0),
    ]
    src = tmp_path / "gpu.json"
    src.write_text(json.dumps({"benchmarks": benches, "datetime": "2026-12-01",
                               "machine_info": {"pamnet": {"torch": "2.11", "command": "pytest x"}},
                               "pamnet_skipped": [{"test": "t[a]", "reason": "no inputs"}]}))
    out = tmp_path / "RESULTS_GPU.md"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "write_gpu_results.py"), str(src), "-o", str(out)],
                   check=True, capture_output=True, text=True)
    text = out.read_text()
    assert text.startswith("# GPU benchmarks (NVIDIA H200)")
    assert "| radius_graph 6zu5 at 5 Å ≤ 1 ms | 0.800 ms | yes |" in text
    # 1.2x faster than torch.compile at 1e6 edges: the issue asks for 1.5x
    assert "faster than torch.compile (≥ 1.5×) | 1.2× | no |" in text
    assert "within 2× of the byte floor | 2.50× floor | no |" in text
    assert "| eager | 4.00 ms | 3.60 ms | 4.00× |" in text
    assert "rel err 1.0e-07" in text and "* `t[a]`: no inputs" in text
    # issue 12: PAMNet's time and memory against DimeNet++ in the same group, kernels at batch 128
    assert "| QM9 batch 128: inference, PAMNet: time ≤ 0.5× DimeNet++ | 0.6× | no |" in text
    assert "| QM9 batch 128: inference, PAMNet (CUDA graph): time ≤ 0.5× DimeNet++ | 0.2× | yes |" in text
    assert "| QM9 batch 128: inference, PAMNet: memory ≤ 0.15× DimeNet++ | 0.1× | yes |" in text
    assert "| QM9 batch 128: inference, PAMNet: ≤ 600 CUDA kernels | 650 | no |" in text
    assert ("| QM9 batch 128: inference, PAMNet: forward given the graphs ≤ 2 host syncs | 0 DtoH / 0 syncs "
            "(graph building: 3 / 0; kernels 150 + 500) | yes |") in text
    # a partial run: the JSON-lines log gives the same tables
    log = tmp_path / "gpu.jsonl"
    log.write_text("\n".join(json.dumps(b) for b in benches) + "\n")
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "write_gpu_results.py"), str(log), "-o", str(out)],
                   check=True, capture_output=True, text=True)
    assert "| radius_graph 6zu5 at 5 Å ≤ 1 ms | 0.800 ms | yes |" in out.read_text()
