#!/usr/bin/env bash
# GPU benchmarks, prepared for a lent machine with one NVIDIA GPU (the `device` tool); the whole script stays
# under 9 minutes there (each part is time-boxed). Results land in benchmarks/results/.
#
#   benchmarks/gpu.sh          on the GPU machine → gpu_grid.json (the bar), gpu.json (fp32 vs bf16)
#   benchmarks/gpu.sh --dry    the same code paths on the CPU at toy size → gpu_grid_dry.json, gpu_dry.json
#
# On the GPU machine its image's python3 (torch, numpy, scipy, pandas, ... but no Snakemake) runs everything;
# what it lacks travels as wheels: run `.venv/bin/python benchmarks/gpu_wheels.py` here first (→ .whl/,
# ignored by git) and call the device with carry [".whl"]. Python: $PYTHON, else the project venv, else
# python3; the package is imported from src/, so it need not be installed there.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=()
[[ "${1:-}" == "--dry" ]] && DRY=(--dry)
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ ${#DRY[@]} -eq 0 ]]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    if [[ -d .whl ]]; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
        export PYTHONPATH="/tmp/site:$PYTHONPATH"
    fi
    "$PYTHON" -c "import torch, snakemake, pydicom, jsonschema; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
fi

# On the lent machine ($OUT set) the results and logs are copied to $OUT after each part, so that they come back
# even if the call is cut short, and a failing part 1 does not cost part 2.
ART=()
[[ -n "${OUT:-}" ]] && ART=(--artifacts "$OUT")
keep() { if [[ -n "${OUT:-}" ]]; then cp benchmarks/results/gpu*.json "$OUT"/ 2>/dev/null || true; fi; }

# ---- 1. the bar: the seed-000 grid (75 cells at 256×216, 30 epochs) end to end through Snakemake on one GPU,
# K = 8 cells at once in trainer workers (2 CPU threads each on 16 cores), GPU utilisation from nvidia-smi
# (bench_gpu_grid.py stops Snakemake at --budget-s and extrapolates from the cells done; the timeout is the
# hard stop behind it).
timeout -k 15 380 "$PYTHON" benchmarks/bench_gpu_grid.py --budget-s 300 "${DRY[@]}" "${ART[@]}" \
    || [[ -n "${OUT:-}" ]]
keep

# ---- 2. precision: fp32 vs bf16 autocast + channels_last images/s on cells of the same grid, each at its own
# training fraction, epoch times read from history.csv's `epoch_s` column by name (bench_gpu.py; --ks ''
# skips its K-threads-in-one-process runs on the GPU: the pipeline trains K cells in K worker processes,
# which part 1 measures).
timeout -s INT -k 15 170 "$PYTHON" benchmarks/bench_gpu.py --budget-s 150 --ks '' "${DRY[@]}"
keep
