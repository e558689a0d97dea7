#!/usr/bin/env bash
# README command 1: set up, then train PAMNet on real QM9 (U0) within the default budget and report
# the test MAE next to the mean-predictor baseline. Extra arguments go to `pamnet-fast train`.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=qm9,train bash scripts/setup.sh
PY=${PYTHON:-python3}
"$PY" -m pamnet_fast.cli train "$@"
