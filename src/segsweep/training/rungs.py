"""A rung job: train a cell up to a pruner's rung epoch and record where it stands (``rungs/<epoch>.json``).

The cell's ``last.pt`` is kept, so the next rung (or the cell's ordinary train job) continues from it: no
epoch is trained twice, and the numbers equal an uninterrupted run's (`segsweep.training.loop.train_cell`,
``stop_at``). The retry policy is the train job's (`segsweep.training.job.run_attempt`): a user error propagates, a crash
before the last attempt is retried, a crash on the last attempt is recorded as status ``failed`` in the rung
file, so the pruner's decision (which never promotes it) and the rest of the study go on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from segsweep.io import json_safe, write_json
from segsweep.training.job import failure_reason, run_attempt, speed_settings, train
from segsweep.training.params import CellParams

log = logging.getLogger("segsweep.jobs")


def run_rung_job(
    params: CellParams,
    *,
    stop_at: int,
    data_dir: Path,
    split_path: Path,
    out: Path,
    threads: int = 1,
    device: str = "auto",
    attempt: int = 1,
    max_attempts: int = 1,
    amp: bool = False,
    channels_last: bool = False,
    evaluation: Mapping | None = None,
    checkpoint_every_epochs: int = 1,
    checkpoint_every_s: float = 0,
    worker: bool = False,
    worker_idle_s: float = 60,
    amp_auto: bool = False,
    channels_last_auto: bool = False,
    train_stop_margin_s: float = 0,
    train_max_stops: int = 0,
) -> dict:
    """Train ``params`` to epoch ``stop_at`` in ``out``'s cell directory (``<cell>/rungs/<epoch>.json``);
    ``amp_auto`` / ``channels_last_auto`` as in `segsweep.training.job.run_train_job`."""
    out = Path(out)
    amp, channels_last = speed_settings(amp, amp_auto), speed_settings(channels_last, channels_last_auto)
    cell_dir = out.parent.parent

    def run() -> dict:
        return train(
            params,
            data_dir,
            split_path,
            cell_dir,
            worker=worker,
            worker_idle_s=worker_idle_s,
            train_stop_margin_s=train_stop_margin_s,
            threads=threads,
            device=device,
            amp=amp,
            channels_last=channels_last,
            evaluation=evaluation,
            stop_at=stop_at,
            checkpoint_every_epochs=checkpoint_every_epochs,
            checkpoint_every_s=checkpoint_every_s,
        )

    def failed(exc: BaseException, seconds: float) -> dict:
        return {
            "stop_at": stop_at,
            "status": "failed",
            "reason": failure_reason(exc),
            "epochs_run": None,
            "best_val_dice": None,
            "best_epoch": None,
            "wall_s": round(seconds, 2),
            "history": [],
        }

    summary = run_attempt(
        run, failed, out_dir=cell_dir, attempt=attempt, max_attempts=max_attempts, max_stops=train_max_stops
    )
    summary = json_safe({"cell": cell_dir.name, **summary})
    write_json(out, summary)
    log.info(
        "cell %s at rung epoch %d: %s, %s epochs, best val Dice %s",
        cell_dir.name,
        stop_at,
        summary["status"],
        summary["epochs_run"],
        summary["best_val_dice"],
    )
    return summary
