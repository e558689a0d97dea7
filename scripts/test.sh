#!/usr/bin/env bash
# README command 2: set up and run the test suite (what CI runs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test bash scripts/setup.sh
PY=${PYTHON:-python3}
"$PY" -m pytest tests -q -p no:cacheprovider --durations=15 "$@"
