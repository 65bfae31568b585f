#!/usr/bin/env bash
# One-shot accelerator benchmark (no downloads, random weights at the papers' sizes); written for one H100 / H200
# and meant to finish in under 8 minutes. Writes bench/results/gpu.json; see bench/gpu.py for what is measured.
#   bash bench/gpu.sh            # paper sizes on the first device
#   bash bench/gpu.sh --small    # tiny configs: the same code path on CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec timeout "${GPU_BENCH_TIMEOUT:-470}" "$PY" bench/gpu.py "$@"
