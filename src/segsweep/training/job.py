"""A training job as Snakemake runs it: retries for crashes, a `failed` cell on the last attempt.

- diverged: a normal, successful job (metrics.json says so); the study goes on.
- a crash (exception) on an attempt before the last: re-raised, so Snakemake/Slurm retries it (the run
  resumes from ``last.pt``).
- a crash on the last attempt: metrics.json with status ``failed`` and the reason, and the job succeeds, so
  one broken cell never blocks the study's table and report (the report lists it with its log tail).
A job killed from outside (node failure, scancel, OOM killer) writes nothing and is retried by Snakemake.
"""
from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

from segsweep.training.params import CellParams
from segsweep.io import write_json

log = logging.getLogger("segsweep.jobs")


def run_train_job(
    params: CellParams,
    *,
    data_dir: Path,
    split_path: Path,
    out_dir: Path,
    threads: int = 1,
    device: str = "auto",
    attempt: int = 1,
    max_attempts: int = 1,
    amp: bool = False,
    channels_last: bool = False,
) -> dict:
    from segsweep.training.loop import train_cell  # torch import only when a cell really trains

    t0 = time.time()
    try:
        return train_cell(params, data_dir, split_path, out_dir, threads=threads, device=device, log=log,
                          amp=amp, channels_last=channels_last)
    except Exception as exc:  # noqa: BLE001 - any crash becomes a retry or a recorded failure
        if attempt < max_attempts:
            log.error("attempt %d of %d failed (%s); Snakemake will retry", attempt, max_attempts, exc)
            raise
        log.error("attempt %d of %d failed; recording the cell as failed:\n%s", attempt, max_attempts,
                  traceback.format_exc())
        metrics = {
            "cell": out_dir.name,
            "status": "failed",
            "reason": f"{type(exc).__name__}: {exc}"[:500],
            "best_val_dice": None,
            "best_epoch": None,
            "final_val_dice": None,
            "best_val_iou": None,
            "best_val_hd95_mm": None,
            "epochs_run": None,
            "wall_s": round(time.time() - t0, 2),
            "device": device,
            "hardware": None,
            "n_train": None,
            "n_val": None,
            "params": params.to_dict(),
        }
        write_json(out_dir / "metrics.json", metrics)
        return metrics
