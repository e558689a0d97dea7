"""pytest configuration of the benchmark suite (pytest-benchmark).

    pytest benchmarks/ --benchmark-only --benchmark-json=benchmarks/results.json   # full
    pytest benchmarks/ --quick --benchmark-disable                                   # CI smoke run

``--quick`` (or ``PAMNET_BENCH_QUICK=1``) shrinks every case. Never asserts on timings.
"""
import os
import platform
import sys

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("pamnet-fast benchmarks")
    group.addoption("--quick", action="store_true", default=False,
                    help="small cases, one round, no ribosome (same as PAMNET_BENCH_QUICK=1)")


def pytest_configure(config):
    if config.getoption("--quick", default=False):
        os.environ["PAMNET_BENCH_QUICK"] = "1"
    import warnings
    warnings.filterwarnings("ignore", message=".*compiled extension.*", category=RuntimeWarning)
    import _data
    _data.set_threads()


def machine_description() -> dict:
    import _data
    import torch
    info = {
        "cpu_model": _data.cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "quick": os.environ.get("PAMNET_BENCH_QUICK", "0"),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import psutil
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import torch_geometric
        info["torch_geometric"] = torch_geometric.__version__
    except ImportError:
        pass
    try:
        from pamnet_fast import ops
        info["pamnet_fast_backend"] = {k: v["cpu"] for k, v in ops.backend().items()}
    except Exception as exc:  # pragma: no cover
        info["pamnet_fast_backend"] = f"unavailable: {exc}"
    return info


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["pamnet"] = machine_description()
    machine_info["pamnet"]["command"] = " ".join(["pytest"] + sys.argv[1:])
    if os.environ.get("PAMNET_BENCH_QUICK", "0") not in ("", "0"):
        machine_info["pamnet"]["command"] = "PAMNET_BENCH_QUICK=1 " + machine_info["pamnet"]["command"]


def pytest_runtest_logreport(report):
    if report.skipped and report.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPS.append({"test": report.nodeid, "reason": reason.replace("Skipped: ", "", 1)})


_SKIPS = []


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["pamnet_skipped"] = list(_SKIPS)
    if hasattr(os, "getloadavg"):
        output_json["pamnet_load_average_at_end"] = list(os.getloadavg())


@pytest.fixture(scope="session")
def quick():
    import _data
    return _data.quick()
