"""A rung job: train a cell up to a pruner's rung epoch and record where it stands (``rungs/<epoch>.json``).

The cell's ``last.pt`` is kept, so the next rung (or the cell's ordinary train job) continues from it: no
epoch is trained twice, and the numbers equal an uninterrupted run's (`segsweep.training.loop.train_cell`,
``stop_at``). The retry policy is the train job's (`segsweep.training.job.run_attempt`): a user error propagates, a crash
before the last attempt is retried, a crash on the last attempt is recorded as status ``failed`` in the rung
file, so the pruner's decision (which never promotes it) and the rest of the study go on.
"""

from __future__ import annotations

import logging
from pathlib import Path

from segsweep.io import json_safe, write_json
from segsweep.training.job import failure_reason, run_cell_attempt
from segsweep.training.params import CellParams

log = logging.getLogger("segsweep.jobs")


def run_rung_job(params: CellParams, *, stop_at: int, out: Path, **settings) -> dict:
    """Train ``params`` to epoch ``stop_at`` in ``out``'s cell directory (``<cell>/rungs/<epoch>.json``):
    `segsweep.training.job.run_cell_attempt` with ``settings`` (data, split, attempt, execution settings)."""
    out = Path(out)
    cell_dir = out.parent.parent

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

    summary = run_cell_attempt(params, cell_dir=cell_dir, record_failure=failed, stop_at=stop_at, **settings)
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
