"""The benchmark suite runs in quick mode (so it never rots) and its results render to Markdown."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

pytest.importorskip("pytest_benchmark")


@pytest.mark.slow
def test_benchmark_suite_quick_mode(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PAMNET_BENCH_QUICK="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "benchmarks"), "--quick", "-q", "-p", "no:cacheprovider",
         f"--benchmark-json={out}", "--benchmark-min-rounds=1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["benchmarks"], "no benchmark ran"
    md = tmp_path / "RESULTS.md"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "write_results.py"), str(out), "-o", str(md)],
                   check=True, timeout=120)
    text = md.read_text()
    assert "## Machine and command" in text and "| method |" in text
