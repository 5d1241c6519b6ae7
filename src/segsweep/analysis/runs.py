"""Reading a study's results: one row per run (a cell of the study) from its metrics.json, and cells.csv back.

A *run* is one row of a study (a cell: one configuration × training seed × fold). A missing metrics.json means
the job crashed (status ``failed``); a cell a pruner stopped is ``pruned`` (`segsweep.study.pruned_cells`). Each
cell's ``metrics.json`` is a `segsweep.training.record.CellMetrics`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from segsweep.paths import METRICS
from segsweep.study import config_label
from segsweep.training.record import (
    CLASS_COLUMNS,
    FIELDS,
    NUMERIC_FIELDS,
    OBJECT_FIELDS,
    QUALITY_FIELDS,
    CellMetrics,
    class_values,
)

if TYPE_CHECKING:  # only for annotations: aggregation works on any object with the Study fields
    from segsweep.study import Study

# cells.csv metric columns: every CellMetrics field but the run's identity, status/reason and parameters
METRIC_COLUMNS = tuple(k for k in FIELDS if k not in ("cell", "status", "reason", *OBJECT_FIELDS))
NUMERIC_METRICS = tuple(k for k in METRIC_COLUMNS if k in NUMERIC_FIELDS)
# + multi-class targets: one column per class and metric, val_<metric>_<class> (record.class_columns); cells.csv
# has those of the classes its runs report, in CLASS_COLUMNS order
RUN_COLUMNS = ("repeat", "fold", "cell", "config", "status", "reason")
LOG_TAIL_LINES = 15
NO_METRICS_REASON = "no metrics (job failed)"


def tail_lines(path: Path, n: int = LOG_TAIL_LINES) -> list[str]:
    """Last ``n`` non-empty lines of a text file ([] when it does not exist)."""
    try:
        text = Path(path).read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return []
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return lines[-n:]


def read_cell(cell_id: str, cells_dir: Path, logs_dir: Path | None = None) -> dict:
    """metrics.json of a cell as a flat dict; a missing file means the job crashed (status failed).

    For runs that are not ``ok`` the last lines of ``logs_dir/{cell_id}.log`` are kept (``log_tail``) so the
    report can show why.
    """
    path = Path(cells_dir) / cell_id / METRICS
    out: dict[str, Any] = {k: None for k in METRIC_COLUMNS}
    try:
        m = CellMetrics.read(path)
    except FileNotFoundError:
        out.update(status="failed", reason=NO_METRICS_REASON)
    except json.JSONDecodeError as exc:
        out.update(status="failed", reason=f"metrics.json unreadable ({exc.msg} at line {exc.lineno})")
    else:
        for k in METRIC_COLUMNS:
            out[k] = getattr(m, k)
        per_class = class_values(m)
        out.update(per_class)
        out["status"] = m.status
        out["reason"] = m.reason or ""
        if m.status != "ok":  # a number next to a non-ok status would be averaged by mistake
            for k in (*QUALITY_FIELDS, *per_class):
                out[k] = None
    out["log_tail"] = (
        "\n".join(tail_lines(Path(logs_dir) / f"{cell_id}.log"))
        if (logs_dir is not None and out["status"] != "ok")
        else ""
    )
    return out


def _pruned_record(info: Mapping) -> dict:
    """A run a pruner stopped: status ``pruned``, no quality number (its last monitored value is kept apart,
    in ``pruned_value``, for the tables to show greyed)."""
    rec: dict[str, Any] = {k: None for k in METRIC_COLUMNS}
    rec.update(status="pruned", reason=info["reason"], epochs_run=info.get("epochs_run"))
    rec["pruned_value"] = info.get("value")
    return rec


def cells_frame(
    study: Study, cells_dir: Path, logs_dir: Path | None = None, pruned: Mapping[str, Mapping] | None = None
) -> pd.DataFrame:
    """One row per study run: axis labels (str), repeat, fold, cell, config, status, reason, metrics.

    ``pruned`` (`pruned_cells`): runs this study's pruner stopped are status ``pruned`` here, even when the
    cell went on to finish for another study (this study never saw that result)."""
    memo: dict[str, dict] = {}
    rows = []
    pruned = pruned or {}
    for sc in study.cells:
        if sc.cell_id not in memo:
            if sc.cell_id in pruned:
                memo[sc.cell_id] = _pruned_record(pruned[sc.cell_id])
            else:
                memo[sc.cell_id] = read_cell(sc.cell_id, cells_dir, logs_dir)
        row = dict(sc.labels)
        row.update(repeat=sc.repeat, fold=sc.fold, cell=sc.cell_id, config=config_label(sc.labels))
        row.update(memo[sc.cell_id])
        rows.append(row)
    present = {k for rec in memo.values() for k in rec}
    extra = ["pruned_value"] if pruned else []
    cols = [
        *study.axes,
        *RUN_COLUMNS,
        *METRIC_COLUMNS,
        *(k for k in CLASS_COLUMNS if k in present),
        *extra,
        "log_tail",
    ]
    df = pd.DataFrame(rows, columns=cols)
    return _coerce(df, study.axes)


def _coerce(df: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    for a in axes:  # labels are names ("1e-3"), never numbers: 1e-3 and 0.001 must stay what the config said
        df[a] = df[a].astype("string")
    df["repeat"] = pd.to_numeric(df["repeat"]).astype("Int64")
    df["fold"] = pd.to_numeric(df["fold"]).astype("Int64")
    for k in (*NUMERIC_METRICS, *(c for c in CLASS_COLUMNS if c in df)):
        df[k] = pd.to_numeric(df[k], errors="coerce").astype("float64")
    for k in ("cell", "config", "status", "reason", "device", "hardware", "log_tail"):
        if k in df:
            df[k] = df[k].astype("string").fillna("")
    return df


def read_cells_csv(path: Path, axes: Sequence[str]) -> pd.DataFrame:
    """Read a cells.csv written by `aggregate_study`, keeping axis labels as strings."""
    df = pd.read_csv(
        path,
        dtype={a: str for a in axes} | {"cell": str, "config": str},
        keep_default_na=False,
        na_values={k: [""] for k in (*NUMERIC_METRICS, *CLASS_COLUMNS, "repeat", "fold")},
    )
    return _coerce(df, axes)
