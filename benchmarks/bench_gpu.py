"""GPU training benchmarks on the seed-000 optimizer × fraction × learning-rate grid at real size (run by gpu.sh).

The grid is the study's (config/studies/seed000_lr_optimizer.yaml): 3 optimizers × 5 training fractions ×
5 learning rates = 75 cells on its base (depth 4, base width 16, batch 16, Dice loss, 30 epochs), each at
its own training fraction. Cells run in a fixed interleaved order (`grid_order`): every 5 consecutive cells
cover every fraction, optimizer and learning rate, so a grid cut short by the time box is still a
representative sample of the 75.

1. **precision**: cells of the grid trained by ``train_cell`` twice each (the order of the two alternating
   from cell to cell), in fp32 (torch's default, i.e. TF32 convolutions on Ampere+) and with bf16 autocast +
   channels_last. images/s of a cell = its training images (``n_train`` of its metrics.json: the
   fraction's patients) × epochs run / Σ ``epoch_s`` of its history.csv (an epoch includes its validation
   pass). history.csv is read by column NAME; a missing ``epoch_s`` column, a row count that is not
   ``epochs_run``, non-positive times, epoch times adding up to more than the cell's wall time or an
   ``n_train`` that is not the fraction's stop the benchmark. The speed-up is the ratio of pooled images/s
   (Σ images × epochs / Σ epoch seconds over the cells run in both modes), also given per fraction. Best
   val Dice is recorded for both modes, so a speed-up that costs accuracy shows. From the median cell wall
   time per fraction: an estimate of the whole 75-cell grid trained one cell after another.
2. **concurrency**: K = 1, 2, 4, 8 cells trained at once inside ONE process (the benchmark's own, warm):
   K Python threads, each pulling the next cell from one shared queue of ``--conc-cells`` grid cells (the
   same cells for every K) and training it with ``train_cell``, each thread on its own CUDA stream
   (``torch.cuda.stream``) on a GPU; on the CPU the threads share the process's cores. torch's CPU threads
   (a process-wide setting) are T // K per cell, T being the precision runs' (min(8, cpus); 1 in --dry:
   more threads than free cores on a shared VM make OpenMP spin). cells/hour = cells / wall; aggregate
   images/s = Σ n_train × epochs / wall; grid estimate at K = the serial estimate × wall(K=1) / wall(K).
   The threads call ``train_cell`` without its `preempt.stop_signals_caught` wrapper
   (``train_cell.__wrapped__``): signal handlers can only be installed by the main thread, and the stack
   of stop requests (``preempt._active``) is process-wide (the notes in ``concurrency.slot``).

Earlier versions read the LAST column of history.csv as the epoch time; it is ``lr_encoder``, so their
images/s were n_train × epochs / Σ lr and their bf16 speed-up 1.0: any result from them is invalid. They
also trained every cell at fraction 1.0 and ran K separate worker processes instead of K cells in one.

Data: a synthetic set in the ingest format (``bench_train.write_synthetic_dataset``): 32 patients × 10
slices of 256×216; 8 validation patients (80 images); a pool of 24 training patients, of which fraction f
trains round(24 f) (50, 100, 140, 190 and 240 images for f = 0.2 … 1.0). Its files have no
native-resolution arrays, so the final evaluation runs on the network grid (as in bench_train.py).

The whole run is time-boxed (``--budget-s``, default 420 s): the precision grid is cut short after half of
it and a K whose worst case (no overlap at all) would overrun is skipped (both recorded). ``--dry`` runs
every code path on the CPU at toy size (64×56, 10 patients × 3 slices, U-Net depth 3 / width 8, 3 epochs,
the first 5 cells of the order, K = 1, 2 on 4 cells) and writes ``gpu_dry.json`` instead, so this script
is tested without a GPU.

Run: benchmarks/gpu.sh [--dry]   (or python benchmarks/bench_gpu.py [--dry])
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

from bench_train import write_synthetic_dataset  # noqa: E402
from cell_history import EPOCH_TIME_COLUMN, epoch_times, pooled_images_per_s  # noqa: E402

from segsweep.data.splits import n_train as split_n_train  # noqa: E402
from segsweep.io import write_json  # noqa: E402
from segsweep.plan.config import cell_params  # noqa: E402
from segsweep.training.device import hardware_description  # noqa: E402
from segsweep.training.loop import HISTORY_COLUMNS, train_cell  # noqa: E402

STUDY_FILE = ROOT / "config" / "studies" / "seed000_lr_optimizer.yaml"
MODES = {"fp32": {"amp": False, "channels_last": False}, "amp_bf16_cl": {"amp": True, "channels_last": True}}
GRID_BAR_S = 300.0  # the bar: the whole 75-cell grid in ≤ 5 min on one H100
# train_cell without its stop-signal wrapper, for the threads of the concurrency test (see `slot`)
train_cell_core = getattr(train_cell, "__wrapped__", train_cell)

if EPOCH_TIME_COLUMN not in HISTORY_COLUMNS:  # fail at import, not after minutes of training
    raise RuntimeError(
        f"segsweep.training.loop.HISTORY_COLUMNS {HISTORY_COLUMNS} has no {EPOCH_TIME_COLUMN!r}: "
        "update bench_gpu.py to the new history.csv format"
    )


# ------------------------------------------------------------------------------------------------ grid
def _interleave_ends(values: list) -> list:
    """[0.2, 0.4, 0.6, 0.8, 1.0] → [1.0, 0.2, 0.8, 0.4, 0.6]: every prefix has a mean near the middle."""
    v, out = sorted(values), []
    while v:
        out.append(v.pop())
        if v:
            out.append(v.pop(0))
    return out


def grid_order(study: dict) -> list[dict]:
    """Every cell of the study's grid once, interleaved: cell 5r + j has the j-th fraction of
    `_interleave_ends` and (optimizer, lr) combination (r + 4j) mod 15, so each run of 5 consecutive cells
    covers every fraction, optimizer and learning rate."""
    opts, fracs, lrs = study["axes"]["optimizer"], study["axes"]["fraction"], study["axes"]["lr"]
    n = len(opts) * len(lrs)
    if math.gcd(len(opts), len(lrs)) == 1:  # Chinese remainder: c → (c mod 3, c mod 5) is a bijection
        combos = [(opts[c % len(opts)], lrs[c % len(lrs)]) for c in range(n)]
    else:
        combos = [(o, lr) for o in opts for lr in lrs]
    step = n // len(fracs) + 1
    cells = []
    for r in range(n):
        for j, f in enumerate(_interleave_ends(fracs)):
            o, lr = combos[(r + j * step) % n]
            cells.append(dict(study["base"], optimizer=o, lr=lr, fraction=f))
    assert len({(c["optimizer"], c["lr"], c["fraction"]) for c in cells}) == len(opts) * len(fracs) * len(lrs)
    return cells


def load_study() -> dict:
    return next(iter(yaml.safe_load(STUDY_FILE.read_text())["studies"].values()))


def grid(dry: bool) -> list[dict]:
    """The seed-000 cells in `grid_order` (dry: the first 5, one per fraction, at toy size)."""
    cells = grid_order(load_study())
    if dry:
        toy = {"epochs": 3, "base_width": 8, "depth": 3, "batch_size": 4}
        cells = [dict(c, **toy) for c in cells[:5]]
    return cells


# ------------------------------------------------------------------------------------------ one cell
def run_cell(
    cell: dict,
    data_dir: Path,
    split: Path,
    out_dir: Path,
    device: str,
    threads: int,
    mode: str,
    expected_n_train: dict[float, int],
    train=train_cell,
) -> dict:
    params = cell_params(cell)
    t0 = time.perf_counter()
    m = train(params, data_dir, split, out_dir, threads=threads, device=device, **MODES[mode]).to_json()
    wall = time.perf_counter() - t0
    epoch_s = epoch_times(out_dir / "history.csv")
    where = f"cell {cell['optimizer']} lr {cell['lr']} fraction {cell['fraction']} ({mode})"
    if len(epoch_s) != m["epochs_run"]:
        raise RuntimeError(f"{where}: history.csv has {len(epoch_s)} epochs, metrics.json {m['epochs_run']}")
    if sum(epoch_s) > wall:
        raise RuntimeError(f"{where}: epoch times add up to {sum(epoch_s):.3f} s, more than the {wall:.3f} s wall")
    if m["n_train"] != expected_n_train[cell["fraction"]]:
        raise RuntimeError(
            f"{where}: trained on {m['n_train']} images, the fraction's patients have "
            f"{expected_n_train[cell['fraction']]}"
        )
    return {
        "optimizer": cell["optimizer"],
        "lr": cell["lr"],
        "fraction": cell["fraction"],
        "mode": mode,
        "status": m["status"],
        "best_val_dice": m["best_val_dice"],
        "epochs_run": m["epochs_run"],
        "n_train": m["n_train"],
        "wall_s": round(wall, 3),
        "train_epochs_s": round(sum(epoch_s), 3),
        "images_per_s": round(m["n_train"] * len(epoch_s) / sum(epoch_s), 1),
    }


# --------------------------------------------------------------------------------------- concurrency
def concurrency(
    k: int,
    threads_total: int,
    queue: list[dict],
    data_dir: Path,
    split: Path,
    tmp: Path,
    device: str,
    mode: str,
    expected_n_train: dict[float, int],
) -> dict:
    """Train the cells of ``queue`` with K threads of this process, each on its own CUDA stream."""
    threads = max(1, threads_total // k)
    todo = list(enumerate(queue))
    lock = threading.Lock()
    rows: list[dict] = []
    errors: list[BaseException] = []

    def slot(w: int) -> None:
        # Thread safety of train_cell (segsweep.training.loop / preempt), as used here:
        # * signal.signal works only in the main thread: preempt.catch_stop_signals installs nothing in other
        #   threads, but its stack of stop requests (preempt._active) is process-wide and popped by equality;
        #   the threads therefore call train_cell.__wrapped__, which never touches it;
        # * torch.set_num_threads is process-wide: every thread passes the same value;
        # * torch.manual_seed (weight init, dropout) and the RNG state saved in last.pt are process-wide:
        #   concurrent cells draw from one generator, so their numbers are not bit-reproducible (speed is
        #   what is measured here); the shuffle and augmentation generators are per cell.
        stream = torch.cuda.Stream() if device == "cuda" else None
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                while True:
                    with lock:
                        if not todo or errors:
                            break
                        i, cell = todo.pop(0)
                    out = tmp / f"k{k}" / f"c{i}"
                    r = run_cell(cell, data_dir, split, out, device, threads, mode, expected_n_train, train_cell_core)
                    rows.append(dict(r, thread=w, queue_index=i))
            if stream is not None:
                stream.synchronize()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            with lock:
                errors.append(exc)

    t0 = time.perf_counter()
    workers = [threading.Thread(target=slot, args=(w,), name=f"cell-slot-{w}") for w in range(k)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"K={k}: a training thread failed: {errors[0]!r}") from errors[0]
    rows.sort(key=lambda r: r["queue_index"])
    return {
        "k": k,
        "cells": len(rows),
        "torch_threads": threads,
        "wall_s": round(wall, 2),
        "cells_per_hour": round(len(rows) / wall * 3600, 1),
        "images_per_s": round(sum(r["n_train"] * r["epochs_run"] for r in rows) / wall, 1),
        "median_cell_wall_s": round(statistics.median(r["wall_s"] for r in rows), 3),
        "median_cell_images_per_s": round(statistics.median(r["images_per_s"] for r in rows), 1),
        "cells_detail": rows,
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


def _preimport() -> None:
    """train_cell imports these lazily; import them once in the main thread, before any clock or thread."""
    import segsweep.training.evaluate  # noqa: F401
    import segsweep.training.finetune  # noqa: F401
    import segsweep.training.losses  # noqa: F401
    import segsweep.training.metrics  # noqa: F401
    import segsweep.training.model  # noqa: F401
    import segsweep.training.optim  # noqa: F401
    import segsweep.training.regularizers  # noqa: F401
    import segsweep.training.schedules  # noqa: F401


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry", action="store_true", help="CPU, toy size: exercise every code path without a GPU")
    ap.add_argument("--budget-s", type=float, default=420.0, help="time box for the whole run")
    ap.add_argument("--ks", default="1,2,4,8", help="concurrent cells per process to measure ('' = none; dry: 1,2)")
    ap.add_argument("--conc-cells", type=int, default=8, help="cells per concurrency run, same for every K (dry: 4)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    device = "cpu" if args.dry else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA GPU visible (use --dry for the CPU check of this script)")
    _preimport()
    # per-cell warnings (collapsed / diverged cells: their status is in the rows; the synthetic data's lack of
    # native-resolution arrays, so the final evaluation runs on the network grid, as in bench_train.py)
    logging.getLogger("segsweep").setLevel(logging.ERROR)
    out = args.out or HERE / "results" / ("gpu_dry.json" if args.dry else "gpu.json")
    ks = [1, 2] if args.dry else [int(k) for k in args.ks.split(",") if k.strip()]
    n_conc = 4 if args.dry else args.conc_cells
    study = load_study()
    cells = grid(args.dry)
    size, patients, slices, n_val_pat = ((64, 56), 10, 3, 2) if args.dry else ((256, 216), 32, 10, 8)
    threads = 1 if args.dry else min(8, os.cpu_count() or 1)
    budget_grid = 0.5 * args.budget_s if ks else args.budget_s  # half for the precision grid, the rest for K
    pool = patients - n_val_pat
    fractions = sorted(study["axes"]["fraction"])
    expected_n_train = {f: split_n_train(pool, f) * slices for f in fractions}
    cells_per_fraction = {f: sum(1 for c in grid_order(study) if c["fraction"] == f) for f in fractions}

    result = {
        "benchmark": "gpu_training",
        "dry": args.dry,
        "machine": machine(device),
        "setup": {
            "study": STUDY_FILE.name,
            "grid_cells": sum(cells_per_fraction.values()),
            "image_size": list(size),
            "epochs": cells[0]["epochs"],
            "batch_size": cells[0]["batch_size"],
            "depth": cells[0]["depth"],
            "base_width": cells[0]["base_width"],
            "loss": cells[0]["loss"],
            "modes": {k: v for k, v in MODES.items()},
            "n_train_by_fraction": {str(f): n for f, n in expected_n_train.items()},
            "n_val": n_val_pat * slices,
            "torch_threads_precision": threads,
            "epoch_time_column": EPOCH_TIME_COLUMN,
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir, split = write_synthetic_dataset(tmp / "data", patients, slices, size, val_patients=n_val_pat)
        # warm-up (CUDA context, cuDNN autotuning for each fraction's last-batch shape, each mode; the thread
        # and stream path) so that no measured cell pays a first-time cost
        for f in fractions:
            warm = cell_params(dict(cells[0], fraction=f, epochs=1))
            for mode in MODES:
                warm_dir = tmp / f"warm_{f}_{mode}"
                train_cell(warm, data_dir, split, warm_dir, threads=threads, device=device, stop_at=1, **MODES[mode])
        if ks:
            warm_cells = [dict(c, epochs=1) for c in cells[:2]]
            concurrency(2, threads, warm_cells, data_dir, split, tmp / "warm_threads", device, "fp32", expected_n_train)
        result["setup"]["warmup_s"] = round(time.perf_counter() - t_start, 1)

        # -- 1. precision
        rows, skipped = [], 0
        for i, cell in enumerate(cells):
            if time.perf_counter() - t_start > budget_grid:
                skipped = len(cells) - i
                break
            for mode in list(MODES)[:: 1 if i % 2 == 0 else -1]:  # alternate which mode goes first
                rows.append(
                    run_cell(cell, data_dir, split, tmp / f"g{i}_{mode}", device, threads, mode, expected_n_train)
                )
                print(json.dumps(rows[-1]), flush=True)
        by_mode = {mode: [r for r in rows if r["mode"] == mode] for mode in MODES}
        pooled = {mode: pooled_images_per_s(v) for mode, v in by_mode.items()}
        by_fraction = {}
        for f in fractions:
            fr = {mode: [r for r in v if r["fraction"] == f] for mode, v in by_mode.items()}
            if not all(fr.values()):
                continue
            ips = {mode: pooled_images_per_s(v) for mode, v in fr.items()}
            by_fraction[str(f)] = {
                "cells": len(fr["fp32"]),
                "n_train": expected_n_train[f],
                "images_per_s": ips,
                "speedup_amp_bf16_cl": round(ips["amp_bf16_cl"] / ips["fp32"], 3),
                "median_cell_wall_s": {
                    mode: round(statistics.median(r["wall_s"] for r in v), 3) for mode, v in fr.items()
                },
            }
        serial = None
        if len(by_fraction) == len(fractions):  # every fraction measured: Σ_f cells(f) × median wall(f)
            serial = {
                mode: round(
                    sum(cells_per_fraction[f] * by_fraction[str(f)]["median_cell_wall_s"][mode] for f in fractions), 1
                )
                for mode in MODES
            }
        result["precision"] = {
            "cells": rows,
            "cells_measured": len(by_mode["fp32"]),
            "cells_skipped_for_time": skipped,
            "images_per_s": pooled,
            "median_cell_images_per_s": {
                mode: round(statistics.median(r["images_per_s"] for r in v), 1) if v else None
                for mode, v in by_mode.items()
            },
            "speedup_amp_bf16_cl": round(pooled["amp_bf16_cl"] / pooled["fp32"], 3) if all(pooled.values()) else None,
            "by_fraction": by_fraction,
            "grid_serial_estimate_s": serial,
            "best_val_dice_median": {
                mode: statistics.median([r["best_val_dice"] for r in v if r["best_val_dice"] is not None] or [math.nan])
                for mode, v in by_mode.items()
            },
        }

        # -- 2. concurrency: K threads in this one process on one shared queue
        fast = max(MODES, key=lambda md: pooled[md] or 0.0)
        cell_s = statistics.median(r["wall_s"] for r in by_mode[fast])
        queue = cells[:n_conc]  # the first cells of the grid order: every fraction once in each 5
        conc, skipped_k = [], []
        for k in ks:
            elapsed = time.perf_counter() - t_start
            predicted = len(queue) * cell_s + 5  # worst case: no overlap at all
            if elapsed + predicted > args.budget_s:
                skipped_k.append(k)
                continue
            run = concurrency(k, threads, queue, data_dir, split, tmp / "conc", device, fast, expected_n_train)
            conc.append(run)
            print(json.dumps({key: v for key, v in run.items() if key != "cells_detail"}), flush=True)
        base = next((r for r in conc if r["k"] == 1), None)
        for r in conc:
            if base is not None:
                r["speedup_vs_k1"] = round(base["wall_s"] / r["wall_s"], 3)
                # cells whose best val Dice is not K=1's: the process-wide RNG (weight init) was shared
                alone = {c["queue_index"]: c["best_val_dice"] for c in base["cells_detail"]}
                r["cells_differing_from_k1"] = sum(
                    c["best_val_dice"] != alone[c["queue_index"]] for c in r["cells_detail"]
                )
                if serial is not None:
                    r["grid_estimate_s"] = round(serial[fast] * r["wall_s"] / base["wall_s"], 1)
        result["concurrency"] = {
            "mode": fast,
            "how": "K Python threads in one process, one CUDA stream each, one shared queue of cells",
            "note": "speed only: train_cell seeds torch's process-wide generator (weight init), so cells started "
            "together by different threads do not get a lone run's initial weights (cells_differing_from_k1)",
            "queue": [{key: c[key] for key in ("optimizer", "lr", "fraction")} for c in queue],
            "queue_mean_fraction": round(statistics.mean(c["fraction"] for c in queue), 3),
            "grid_mean_fraction": round(statistics.mean(fractions), 3),
            "runs": conc,
            "k_skipped_for_time": skipped_k,
        }
        estimates = [r["grid_estimate_s"] for r in conc if "grid_estimate_s" in r]
        result["bar"] = {
            "grid_s_max": GRID_BAR_S,
            "best_grid_estimate_s": min(estimates) if estimates else None,
            "meets": (min(estimates) <= GRID_BAR_S) if estimates and not args.dry else None,
        }
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    write_json(out, result)
    print(f"wrote {out} in {result['total_s']} s")
    return result


if __name__ == "__main__":
    main()
