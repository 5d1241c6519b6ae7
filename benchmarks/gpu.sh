#!/usr/bin/env bash
# GPU benchmarks, prepared for a machine with one NVIDIA GPU; the whole script stays under 8 minutes on an
# H100 (each part is time-boxed). Results land in benchmarks/results/gpu.json.
#
#   benchmarks/gpu.sh          on the GPU machine
#   benchmarks/gpu.sh --dry    the same code paths on the CPU at toy size → benchmarks/results/gpu_dry.json
#
# Python: $PYTHON, else the project venv, else python3 (on a bare GPU image, whose python3 has torch); the
# package is imported from src/, so it need not be installed there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ "${1:-}" != "--dry" ]]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi

# ---- training: AMP bf16 + channels_last vs fp32 on the seed-000 grid (optimizer × fraction × lr, each cell
# at its own training fraction); K = 1, 2, 4, 8 cells trained at once in ONE process (K threads, one CUDA
# stream each) -> cells/hour. Epoch times are history.csv's `epoch_s` column, read by name.
# bench_gpu.py keeps itself to --budget-s (420 s); the timeout is the hard stop behind it.
timeout -s INT -k 15 465 "$PYTHON" benchmarks/bench_gpu.py --budget-s 420 "$@"
