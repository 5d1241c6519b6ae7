"""A cell's history.csv as the GPU benchmarks read it (no torch here): epoch times by column name, and pooled
training throughput."""

from __future__ import annotations

import csv
import math
from pathlib import Path

EPOCH_TIME_COLUMN = "epoch_s"  # history.csv: wall seconds of the epoch (training + validation pass)


def epoch_times(history_csv: Path) -> list[float]:
    """The ``epoch_s`` column of a history.csv, by name; RuntimeError if it is missing or not a time."""
    with open(history_csv, newline="") as fh:
        reader = csv.DictReader(fh)
        if EPOCH_TIME_COLUMN not in (reader.fieldnames or ()):
            raise RuntimeError(
                f"{history_csv}: no {EPOCH_TIME_COLUMN!r} column (columns: {reader.fieldnames}); "
                "history.csv changed format: update benchmarks/cell_history.py"
            )
        times = [float(row[EPOCH_TIME_COLUMN]) for row in reader]
    bad = [t for t in times if not (math.isfinite(t) and t > 0)]
    if bad:
        raise RuntimeError(f"{history_csv}: {EPOCH_TIME_COLUMN} values that are not positive times: {bad[:5]}")
    return times


def pooled_images_per_s(rows: list[dict]) -> float | None:
    """Σ training images × epochs / Σ epoch seconds over rows with ``n_train``, ``epochs_run`` and
    ``train_epochs_s`` (the grid's throughput, not a mean of per-cell rates; a cell without ``n_train``, e.g.
    one that failed, adds its seconds and no images)."""
    secs = sum(r["train_epochs_s"] for r in rows)
    return round(sum((r["n_train"] or 0) * r["epochs_run"] for r in rows) / secs, 1) if secs else None
