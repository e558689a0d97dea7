#!/usr/bin/env bash
# Installs pamnet-fast into the current Python environment: the CPU build of torch first (so no
# dependency can pull a CUDA torch), then the package, compiled against that torch without build
# isolation. EXTRAS selects optional dependencies, e.g. EXTRAS=test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
"$PY" -m pip install -q "torch==${TORCH_VERSION}"
"$PY" -m pip install -q "setuptools>=64" wheel ninja
# MAX_JOBS: parallel compile jobs for the extension (one per core).
MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip install -q --no-build-isolation -e ".[${EXTRAS:-qm9,train}]"
"$PY" - <<'PY'
import warnings
import pamnet_fast
from pamnet_fast import ops
print("pamnet_fast", pamnet_fast.__version__, "| CPU backend:", ops.backend("radius_graph"),
      "| extension error:", ops.extension_error())
PY
