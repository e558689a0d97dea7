"""Shared helpers of the benchmark suite: settings, real data, and the out-of-process memory probe.

* Settings: ``PAMNET_BENCH_QUICK=1`` (or ``pytest benchmarks --quick``) shrinks every case so the whole
  suite runs in well under two minutes; ``PAMNET_BENCH_THREADS`` fixes ``torch.set_num_threads``;
  ``PAMNET_BENCH_MEMORY=0`` turns the memory probes off; ``PAMNET_BENCH_MEM_BUDGET_GB`` (default 16)
  is the peak above which a case is skipped instead of run.
* Data: QM9 batches (from :class:`pamnet_fast.data.qm9.QM9`, or parsed here from qm9pack's CSV files
  when that module is unavailable), RNA-Puzzle 5 (3,823 atoms) and the 6zu5 ribosome from
  ``../shared/data`` (tests skip when it is absent).
* Memory: :func:`peak_memory` runs one case in a fresh Python process and reports the high-water RSS
  of one call above the RSS after the inputs were built (and one warm-up call made), by resetting the
  kernel's peak counter (``/proc/self/clear_refs``) right before the call.

Run as a script (``python _data.py --probe JSON``) it is the child side of the probe.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import json
import os
import pickle
import platform
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DATA_DIR = Path(os.environ.get("PAMNET_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE_DIR = Path(os.environ.get("PAMNET_FAST_CACHE", Path.home() / ".cache" / "pamnet_fast")) / "bench"


def quick() -> bool:
    return os.environ.get("PAMNET_BENCH_QUICK", "0") not in ("", "0", "false", "False")


def memory_probes_enabled() -> bool:
    return os.environ.get("PAMNET_BENCH_MEMORY", "1") not in ("", "0", "false", "False")


def memory_budget_bytes() -> int:
    gb = float(os.environ.get("PAMNET_BENCH_MEM_BUDGET_GB", "16"))
    try:
        import psutil
        gb = min(gb, 0.85 * psutil.virtual_memory().total / 2**30)
    except ImportError:  # pragma: no cover
        pass
    return int(gb * 2**30)


def set_threads() -> None:
    n = os.environ.get("PAMNET_BENCH_THREADS")
    if n:
        torch.set_num_threads(int(n))


def rounds(full: int, quick_rounds: int = 1) -> Dict[str, int]:
    """Keyword arguments for ``benchmark.pedantic``."""
    if quick():
        return dict(rounds=quick_rounds, iterations=1, warmup_rounds=1)
    return dict(rounds=full, iterations=1, warmup_rounds=1)


def ops_backend(op: str = "radius_graph") -> str:
    from pamnet_fast import ops
    return ops.backend()[op]["cpu"]


# --------------------------------------------------------------------------------- real structures

def require_data(*parts: str) -> Path:
    import pytest
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"benchmark data not found: {path}")
    return path


@functools.lru_cache(maxsize=None)
def rna_puzzle5():
    """RNA-Puzzle 5 native structure (3,823 heavy atoms): ``Structure(name, pos, z)``."""
    from pamnet_fast.data.structures import read_tu_structures
    return read_tu_structures(str(require_data("rna_puzzles_native")))[18]


@functools.lru_cache(maxsize=None)
def ribosome():
    """The 6zu5 ribosome (heavy atoms, no waters or ligands)."""
    from pamnet_fast.data.structures import read_structure
    return read_structure(str(require_data("structures", "6zu5.cif.gz")))


# ------------------------------------------------------------------------------------------- QM9

_QM9_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
_SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


def _parse_qm9pack(limit: int):
    """(z, pos, edge_index) of the first ``limit`` molecules, straight from qm9pack's CSV files (without
    importing qm9pack, which needs pkg_resources); bonds by RDKit's DetermineConnectivity."""
    import csv
    import numpy as np
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds
    RDLogger.DisableLog("rdApp.*")
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("qm9pack is not installed")
    data_dir = next(Path(loc) / "data" for loc in spec.submodule_search_locations
                    if (Path(loc) / "data" / _QM9_FILES[0]).exists())
    mols = []
    for fname in _QM9_FILES:
        with open(data_dir / fname, newline="") as f:
            reader = csv.reader(f)
            col = {name: i for i, name in enumerate(next(reader))}
            for row in reader:
                if len(mols) >= limit:
                    break
                el = [e.strip().strip("'\"") for e in row[col["Elements"]].strip("[]").split(",")]
                xyz = np.array([float(t) for t in row[col["XYZ_Ang"]].replace("[", " ").replace("]", " ")
                                .split(",")]).reshape(-1, 3)
                block = f"{len(el)}\n\n" + "".join(f"{e} {x:.6f} {y:.6f} {z:.6f}\n" for e, (x, y, z) in zip(el, xyz))
                mol = Chem.MolFromXYZBlock(block)
                try:
                    rdDetermineBonds.DetermineConnectivity(mol, useHueckel=True)
                    pairs = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
                except Exception:  # fall back to a covalent-radius-free distance rule
                    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
                    pairs = [(i, j) for i in range(len(el)) for j in range(i + 1, len(el)) if d[i, j] < 1.6]
                e = torch.tensor(pairs, dtype=torch.long).t().reshape(2, -1)
                e = torch.cat([e, e.flip(0)], 1)
                e = e[:, torch.argsort(e[1] * len(el) + e[0])]
                mols.append((torch.tensor([_SYMBOLS[s] for s in el]), torch.tensor(xyz, dtype=torch.float32), e))
        if len(mols) >= limit:
            break
    return mols


@functools.lru_cache(maxsize=None)
def _qm9_source():
    """A list-like of PyG ``Data`` (z, pos, edge_index = bonds): the full QM9 when its cache is built,
    else the first 2,000 molecules."""
    from torch_geometric.data import Data
    try:
        from pamnet_fast.data.qm9 import QM9
        from pamnet_fast.data.cache import default_cache_dir
    except ImportError:
        QM9 = None
    if QM9 is not None:
        full = Path(default_cache_dir("qm9")) / "qm9_full.pt"
        ds = QM9(verbose=False) if full.exists() else QM9(limit=2000, verbose=False)
        return ds, ("QM9 (full)" if full.exists() else "QM9 (first 2,000)")
    mols = _parse_qm9pack(2000)
    return [Data(z=z, pos=p, edge_index=e) for z, p, e in mols], "QM9 (first 2,000, parsed here)"


@functools.lru_cache(maxsize=None)
def qm9_batch(batch_size: int, seed: int = 0):
    """A fixed, seeded random batch of ``batch_size`` QM9 molecules (PyG ``Batch`` with z, pos,
    edge_index = bonds, batch)."""
    from torch_geometric.data import Batch, Data
    ds, source = _qm9_source()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:batch_size].tolist()
    items = []
    for i in idx:
        d = ds[i]
        items.append(Data(z=d.z.long(), pos=d.pos.float(), edge_index=d.edge_index.long()))
    batch = Batch.from_data_list(items)
    batch.source = source
    return batch


def batch_stats(batch) -> Dict[str, float]:
    b = int(batch.num_graphs)
    return {"molecules": b, "atoms_per_molecule": round(batch.num_nodes / b, 2),
            "bond_edges_per_molecule": round(batch.edge_index.size(1) / b, 2),
            "data": getattr(batch, "source", "QM9")}


# ------------------------------------------------------------------------- PyG DimeNet's sympy setup

def cache_dimenet_sympy() -> None:
    """Memoize PyG's symbolic DimeNet basis construction on disk.

    ``SphericalBasisLayer.__init__`` derives the spherical Bessel functions with sympy (tens of seconds
    for num_spherical=7, num_radial=6, in every process). The expressions it returns are pickled under
    ``~/.cache/pamnet_fast/bench`` and reused: the same sympy objects, so the same model.
    """
    from torch_geometric.nn.models import dimenet_utils as du
    if getattr(du.bessel_basis, "_pamnet_cached", False):
        return
    original = du.bessel_basis

    def bessel_basis(n, k):
        path = CACHE_DIR / f"dimenet_bessel_basis_{n}_{k}.pkl"
        with contextlib.suppress(Exception):
            with open(path, "rb") as f:
                return pickle.load(f)
        forms = original(n, k)
        with contextlib.suppress(Exception):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                pickle.dump(forms, f)
            os.replace(tmp, path)
        return forms

    bessel_basis._pamnet_cached = True
    du.bessel_basis = bessel_basis


# ------------------------------------------------------------------------------------ memory probe

@dataclass
class Case:
    """A benchmark case, built once: ``run()`` is the timed call; ``reset()`` (untimed) restores the
    state before a call, e.g. drops gradients so that each call allocates them as the first one did."""
    run: Callable[[], object]
    reset: Callable[[], None] = lambda: None
    info: Dict[str, object] = field(default_factory=dict)


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def _hwm_kb() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _probe_child(spec: dict) -> dict:
    set_threads()
    module_spec = importlib.util.spec_from_file_location("_pamnet_bench_probe", spec["module"])
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    case: Case = getattr(module, spec["builder"])(**spec["kwargs"])
    if spec.get("warmup", True):
        case.run()
    case.reset()
    gc.collect()
    exact = _reset_hwm()
    base = _rss_kb()
    hwm_before = _hwm_kb()
    t0 = time.perf_counter()
    case.run()
    secs = time.perf_counter() - t0
    peak = _hwm_kb() if exact else max(_hwm_kb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    out = {"baseline_mb": base / 1024, "peak_rss_mb": peak / 1024, "peak_extra_mb": (peak - base) / 1024,
           "seconds": secs, "method": "VmHWM after clear_refs" if exact else "ru_maxrss (upper bound)"}
    if not exact and hwm_before > base:
        out["note"] = "peak counter could not be reset: the extra includes the input construction"
    return out


_PROBE_CACHE: Dict[str, dict] = {}
_QUICK_PROBED = set()


def peak_memory(module_file: str, builder: str, kwargs: dict, warmup: bool = True,
                timeout: float = 3600) -> Optional[dict]:
    """Run ``builder(**kwargs)`` (a :class:`Case`) in a fresh process; return the RSS high-water of one
    ``run()`` call above the RSS before it (``peak_extra_mb``), plus the absolute peak. ``None`` when
    probes are disabled, and in quick mode for all but the first case of each builder (the probe path
    is still exercised; a probe costs a Python start-up); ``{"error": ...}`` when the child failed (the
    benchmark still runs)."""
    if not memory_probes_enabled():
        return None
    if quick():
        if builder in _QUICK_PROBED:
            return None
        _QUICK_PROBED.add(builder)
    spec = {"module": str(module_file), "builder": builder, "kwargs": kwargs, "warmup": warmup}
    key = json.dumps(spec, sort_keys=True)
    if key in _PROBE_CACHE:
        return _PROBE_CACHE[key]
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    # A fixed glibc mmap threshold (no dynamic growth) and an eager trim: memory freed by the warm-up
    # call goes back to the OS, so RSS tracks live memory and the measured call's peak is not hidden
    # by heap pages kept from the warm-up.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "131072")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(BENCH_DIR), env.get("PYTHONPATH", "")])
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--probe", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO))
    except subprocess.TimeoutExpired:
        result = {"error": f"memory probe timed out after {timeout:.0f} s"}
    else:
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PAMNET_PROBE ")]
        if proc.returncode == 0 and lines:
            result = json.loads(lines[-1][len("PAMNET_PROBE "):])
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            result = {"error": f"memory probe failed (rc {proc.returncode}): {' | '.join(tail)}"}
    _PROBE_CACHE[key] = result
    return result


def attach_memory(benchmark, mem: Optional[dict]) -> None:
    if mem is None:
        return
    if "error" in mem:
        benchmark.extra_info["memory_error"] = mem["error"]
        return
    benchmark.extra_info["peak_extra_mb"] = round(mem["peak_extra_mb"], 1)
    benchmark.extra_info["peak_rss_mb"] = round(mem["peak_rss_mb"], 1)
    benchmark.extra_info["memory_method"] = mem["method"]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        sys.path[:0] = [str(REPO), str(BENCH_DIR)]
        result = _probe_child(json.loads(sys.argv[2]))
        print("PAMNET_PROBE " + json.dumps(result), flush=True)
    else:
        print(__doc__)


def cpu_model() -> str:
    """The CPU's model name (recorded beside benchmark results)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
