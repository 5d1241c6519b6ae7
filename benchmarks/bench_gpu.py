"""GPU training benchmarks on the seed-000 learning-rate × optimizer grid at real size (run by gpu.sh).

1. **precision**: every cell of the grid (3 optimizers × 5 learning rates, the study's base: depth 4, base
   width 16, batch 16, Dice loss, 30 epochs; training fraction 1.0) trained by ``train_cell`` twice, in fp32
   (torch's default, i.e. TF32 convolutions on Ampere+) and with bf16 autocast + channels_last; images/s =
   training images × epochs / Σ epoch seconds (an epoch includes its validation pass). Best val Dice is
   recorded for both, so a speed-up that costs accuracy shows.
2. **concurrency**: K = 1, 2, 4, 8 worker processes on the one GPU at once, each training ``--cells-per-worker``
   cells one after the other (as K Snakemake jobs sharing a GPU would); cells/hour = K × cells / wall, the
   wall including process start-up and CUDA initialisation (real per-job costs), plus the steady-state
   figure from the workers' own training time.

Data: a synthetic set in the ingest format (``bench_train.write_synthetic_dataset``): 32 patients × 10
slices of 256×216, 8 validation patients (80 images) and 24 training patients (240 images).

The whole run is time-boxed (``--budget-s``, default 420 s): the grid is cut short and large K skipped (both
recorded) rather than overrunning. ``--dry`` runs every code path on the CPU at toy size (48×40, 2 epochs,
2 cells, K = 1, 2) and writes ``gpu_dry.json`` instead, so this script is tested without a GPU.

Run: benchmarks/gpu.sh [--dry]   (or python benchmarks/bench_gpu.py [--dry])
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

from bench_train import write_synthetic_dataset  # noqa: E402

from segsweep.io import write_json  # noqa: E402
from segsweep.plan.config import cell_params  # noqa: E402
from segsweep.training.device import hardware_description  # noqa: E402
from segsweep.training.loop import train_cell  # noqa: E402

STUDY_FILE = ROOT / "config" / "studies" / "seed000_lr_optimizer.yaml"
MODES = {"fp32": {"amp": False, "channels_last": False}, "amp_bf16_cl": {"amp": True, "channels_last": True}}


def grid(dry: bool) -> list[dict]:
    """The seed-000 optimizer × lr cells at fraction 1.0 (dry: two cells at toy size)."""
    study = next(iter(yaml.safe_load(STUDY_FILE.read_text())["studies"].values()))
    base = dict(study["base"], fraction=1.0)
    cells = [dict(base, optimizer=o, lr=lr) for o in study["axes"]["optimizer"] for lr in study["axes"]["lr"]]
    if dry:
        toy = {"epochs": 2, "base_width": 4, "depth": 2, "batch_size": 4}
        cells = [dict(c, **toy) for c in cells if (c["optimizer"], c["lr"]) in {("adam", 0.001), ("sgd", 0.01)}]
    return cells


def run_cell(cell: dict, data_dir: Path, split: Path, out_dir: Path, device: str, threads: int, mode: str) -> dict:
    params = cell_params(cell)
    t0 = time.perf_counter()
    m = train_cell(params, data_dir, split, out_dir, threads=threads, device=device, **MODES[mode]).to_json()
    wall = time.perf_counter() - t0
    with open(out_dir / "history.csv") as fh:
        next(fh)
        epoch_s = [float(line.rstrip("\n").split(",")[-1]) for line in fh]
    return {
        "optimizer": cell["optimizer"],
        "lr": cell["lr"],
        "mode": mode,
        "status": m["status"],
        "best_val_dice": m["best_val_dice"],
        "epochs_run": m["epochs_run"],
        "wall_s": round(wall, 3),
        "train_epochs_s": round(sum(epoch_s), 3),
        "images_per_s": round(m["n_train"] * len(epoch_s) / sum(epoch_s), 1) if epoch_s else None,
    }


# --------------------------------------------------------------------------------------------- worker
def worker(args) -> None:
    """One process of the concurrency test: train the given cells in turn, print a JSON summary."""
    # train_cell imports these lazily; load them before the clock starts so train_s is training alone
    import segsweep.training.losses  # noqa: F401
    import segsweep.training.metrics  # noqa: F401
    import segsweep.training.optim  # noqa: F401
    import segsweep.training.regularizers  # noqa: F401
    import segsweep.training.schedules  # noqa: F401

    t0 = time.perf_counter()
    cells = json.loads(args.cells)
    results = []
    for i, cell in enumerate(cells):
        results.append(run_cell(cell, args.data, args.split, args.out / f"c{i}", args.device, args.threads, args.mode))
    print(json.dumps({"train_s": round(time.perf_counter() - t0, 3), "cells": results}), flush=True)


def concurrency(
    k: int, cells: list[dict], m: int, data_dir: Path, split: Path, tmp: Path, device: str, mode: str
) -> dict:
    threads = max(1, (os.cpu_count() or 1) // k)
    procs = []
    t0 = time.perf_counter()
    for w in range(k):
        mine = [cells[(w * m + j) % len(cells)] for j in range(m)] if m else []
        cmd = [
            sys.executable,
            __file__,
            "worker",
            "--data",
            str(data_dir),
            "--split",
            str(split),
            "--out",
            str(tmp / f"k{k}w{w}"),
            "--device",
            device,
            "--threads",
            str(threads),
            "--mode",
            mode,
            "--cells",
            json.dumps(mine),
        ]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    bad = [(p.returncode, err[-2000:]) for p, (_, err) in zip(procs, outs) if p.returncode]
    if bad:
        raise RuntimeError(f"K={k}: a worker failed: {bad[0]}")
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    n = k * m
    if n == 0:
        return {}
    slowest_train = max(r["train_s"] for r in reports)
    return {
        "k": k,
        "cells": n,
        "threads_per_worker": threads,
        "wall_s": round(wall, 2),
        "cells_per_hour": round(n / wall * 3600, 1),
        "cells_per_hour_steady": round(n / slowest_train * 3600, 1),
        "images_per_s_per_worker": statistics.median(c["images_per_s"] for r in reports for c in r["cells"]),
    }


# ----------------------------------------------------------------------------------------------- main
def machine(device: str) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "hardware": hardware_description(torch.device(device)),
    }
    if device == "cuda":
        prop = torch.cuda.get_device_properties(0)
        info.update(
            gpu=prop.name,
            gpu_memory_gib=round(prop.total_memory / 2**30, 1),
            multiprocessors=prop.multi_processor_count,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        )
    return info


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    w = sub.add_parser("worker", help="internal: one process of the concurrency test")
    w.add_argument("--data", type=Path, required=True)
    w.add_argument("--split", type=Path, required=True)
    w.add_argument("--out", type=Path, required=True)
    w.add_argument("--device", default="cuda")
    w.add_argument("--threads", type=int, default=1)
    w.add_argument("--mode", choices=list(MODES), default="amp_bf16_cl")
    w.add_argument("--cells", required=True, help="JSON list of cell dicts")
    ap.add_argument("--dry", action="store_true", help="CPU, toy size: exercise every code path without a GPU")
    ap.add_argument("--budget-s", type=float, default=420.0, help="time box for the whole run")
    ap.add_argument("--ks", default="1,2,4,8")
    ap.add_argument("--cells-per-worker", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cmd == "worker":
        worker(args)
        return None

    t_start = time.perf_counter()
    device = "cpu" if args.dry else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA GPU visible (use --dry for the CPU check of this script)")
    out = args.out or HERE / "results" / ("gpu_dry.json" if args.dry else "gpu.json")
    ks = [1, 2] if args.dry else [int(k) for k in args.ks.split(",")]
    m = 1 if args.dry else args.cells_per_worker
    cells = grid(args.dry)
    size, patients, slices, n_val_pat = ((48, 40), 6, 3, 2) if args.dry else ((256, 216), 32, 10, 8)
    threads = 1 if args.dry else min(8, os.cpu_count() or 1)
    budget_grid = 0.5 * args.budget_s  # half for the precision grid, the rest for concurrency

    result = {
        "benchmark": "gpu_training",
        "dry": args.dry,
        "machine": machine(device),
        "setup": {
            "study": STUDY_FILE.name,
            "image_size": list(size),
            "epochs": cells[0]["epochs"],
            "batch_size": cells[0]["batch_size"],
            "depth": cells[0]["depth"],
            "base_width": cells[0]["base_width"],
            "loss": cells[0]["loss"],
            "modes": {k: v for k, v in MODES.items()},
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir, split = write_synthetic_dataset(tmp / "data", patients, slices, size, val_patients=n_val_pat)
        result["setup"].update(n_train=(patients - n_val_pat) * slices, n_val=n_val_pat * slices)
        # warm-up (CUDA context, cuDNN autotuning) so the first measured cell is not penalised
        warm = dict(cells[0], epochs=1)
        for mode in MODES:
            run_cell(warm, data_dir, split, tmp / f"warm_{mode}", device, threads, mode)

        rows, skipped = [], 0
        for i, cell in enumerate(cells):
            if time.perf_counter() - t_start > budget_grid:
                skipped = len(cells) - i
                break
            for mode in MODES:
                rows.append(run_cell(cell, data_dir, split, tmp / f"g{i}_{mode}", device, threads, mode))
                print(json.dumps(rows[-1]), flush=True)
        ips = {mode: [r["images_per_s"] for r in rows if r["mode"] == mode and r["images_per_s"]] for mode in MODES}
        med = {mode: statistics.median(v) if v else None for mode, v in ips.items()}
        cell_s = {mode: statistics.median([r["wall_s"] for r in rows if r["mode"] == mode]) for mode in MODES}
        result["precision"] = {
            "cells": rows,
            "cells_skipped_for_time": skipped,
            "median_images_per_s": med,
            "speedup_amp_bf16_cl": round(med["amp_bf16_cl"] / med["fp32"], 3) if all(med.values()) else None,
            "median_cell_wall_s": cell_s,
        }
        fast = max(MODES, key=lambda md: med[md] or 0.0)
        # a throwaway worker with no cells: warms the file cache for the imports, so K=1 is not penalised
        concurrency(1, [], 0, data_dir, split, tmp, device, fast)
        conc, skipped_k = [], []
        for k in ks:
            elapsed = time.perf_counter() - t_start
            # worst case (no overlap at all) + ~15 s of process start-up per batch of workers
            predicted = k * m * cell_s[fast] + 15
            if elapsed + predicted > args.budget_s:
                skipped_k.append(k)
                continue
            conc.append(concurrency(k, cells, m, data_dir, split, tmp, device, fast))
            print(json.dumps(conc[-1]), flush=True)
        result["concurrency"] = {"mode": fast, "cells_per_worker": m, "runs": conc, "k_skipped_for_time": skipped_k}
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    write_json(out, result)
    print(f"wrote {out} in {result['total_s']} s")
    return result


if __name__ == "__main__":
    main()
