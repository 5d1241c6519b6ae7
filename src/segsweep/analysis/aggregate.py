"""Aggregate the cells of one study: a tidy per-run table, the study's pivot layout, paired statistics.

A *run* is one row of a study (a cell: one configuration × training seed × fold). A *configuration* is a
distinct combination of the study's axis labels; tables and figures aggregate runs over repeats and folds
per configuration.

Per configuration, over the runs whose status is ``ok`` (n of them):

* mean, sample standard deviation ``sd = sqrt(Σ(x − mean)² / (n − 1))``,
* a two-sided 95 % confidence interval of the mean from Student's t distribution,
  ``mean ± t_{0.975, n−1} · sd / sqrt(n)`` (Student 1908; undefined for n = 1),
* a status: ``ok`` (all runs ok), ``partial`` (some diverged/failed: the mean is over the ok runs and the
  table says "k of n diverged"), ``diverged`` / ``failed`` / ``diverged/failed`` (no ok run: the table shows
  the word, never a number), ``missing`` (the layout has no run for this combination, e.g. one-factor studies).

Outputs (written atomically) in the study folder: ``cells.csv``, ``table.csv``, ``table.json``,
``stats.json`` (see `segsweep.analysis.stats`). Each cell's ``metrics.json`` is a
`segsweep.training.record.CellMetrics`; the best configuration is `segsweep.analysis.ranking.best_group`.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from segsweep.analysis.ranking import best_group, rank_key
from segsweep.analysis.stats import compare_study
from segsweep.errors import DataError
from segsweep.io import atomic_path, write_json
from segsweep.labels import fmt, label_sort_key
from segsweep.training.record import FIELDS, NUMERIC_FIELDS, QUALITY_FIELDS, CellMetrics

if TYPE_CHECKING:  # only for annotations: aggregation works on any object with the Study fields
    from segsweep.study import Study

# cells.csv metric columns: every CellMetrics field but the run's identity, status/reason and parameters
METRIC_COLUMNS = tuple(k for k in FIELDS if k not in ("cell", "status", "reason", "params"))
NUMERIC_METRICS = tuple(k for k in METRIC_COLUMNS if k in NUMERIC_FIELDS)
RUN_COLUMNS = ("repeat", "fold", "cell", "config", "status", "reason")
LOG_TAIL_LINES = 15
NO_METRICS_REASON = "no metrics (job failed)"


# ------------------------------------------------------------------------------------------ per run
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
    path = Path(cells_dir) / cell_id / "metrics.json"
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
        out["status"] = m.status
        out["reason"] = m.reason or ""
        if m.status != "ok":  # a number next to a non-ok status would be averaged by mistake
            for k in QUALITY_FIELDS:
                out[k] = None
    out["log_tail"] = (
        "\n".join(tail_lines(Path(logs_dir) / f"{cell_id}.log"))
        if (logs_dir is not None and out["status"] != "ok")
        else ""
    )
    return out


def config_label(labels: Iterable[tuple[str, str]]) -> str:
    """'optimizer=adam, lr=1e-3' — the configuration name used in every table and figure."""
    parts = [f"{a}={v}" for a, v in labels]
    return ", ".join(parts) if parts else "base"


def cells_frame(study: Study, cells_dir: Path, logs_dir: Path | None = None) -> pd.DataFrame:
    """One row per study run: axis labels (str), repeat, fold, cell, config, status, reason, metrics."""
    memo: dict[str, dict] = {}
    rows = []
    for sc in study.cells:
        if sc.cell_id not in memo:
            memo[sc.cell_id] = read_cell(sc.cell_id, cells_dir, logs_dir)
        row = dict(sc.labels)
        row.update(repeat=sc.repeat, fold=sc.fold, cell=sc.cell_id, config=config_label(sc.labels))
        row.update(memo[sc.cell_id])
        rows.append(row)
    cols = [*study.axes, *RUN_COLUMNS, *METRIC_COLUMNS, "log_tail"]
    df = pd.DataFrame(rows, columns=cols)
    return _coerce(df, study.axes)


def _coerce(df: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    for a in axes:  # labels are names ("1e-3"), never numbers: 1e-3 and 0.001 must stay what the config said
        df[a] = df[a].astype("string")
    df["repeat"] = pd.to_numeric(df["repeat"]).astype("Int64")
    df["fold"] = pd.to_numeric(df["fold"]).astype("Int64")
    for k in NUMERIC_METRICS:
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
        na_values={k: [""] for k in (*NUMERIC_METRICS, "repeat", "fold")},
    )
    return _coerce(df, axes)


# --------------------------------------------------------------------------------------- summaries
def summarize(values: Sequence[float], confidence: float = 0.95) -> dict:
    """mean, sd (n−1), n and the t-based confidence interval of the mean (None where undefined)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0, "ci_low": None, "ci_high": None}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "sd": None, "n": 1, "ci_low": None, "ci_high": None}
    sd = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def _status(n_total: int, n_ok: int, n_div: int, n_fail: int) -> tuple[str, str]:
    """(status, note) of a configuration from its run counts."""
    if n_total == 0:
        return "missing", ""
    if n_ok == n_total:
        return "ok", ""
    if n_ok == 0:
        if n_fail == 0:
            return "diverged", f"all {n_total} diverged" if n_total > 1 else ""
        if n_div == 0:
            return "failed", f"all {n_total} failed" if n_total > 1 else ""
        return "diverged/failed", f"{n_div} diverged, {n_fail} failed"
    parts = []
    if n_div:
        parts.append(f"{n_div} of {n_total} diverged")
    if n_fail:
        parts.append(f"{n_fail} of {n_total} failed")
    return "partial", ", ".join(parts)


def config_groups(study: Study, df: pd.DataFrame, value: str | None = None) -> list[dict]:
    """One dict per configuration (in the config's declared label order), aggregated over repeats/folds.

    Keys: labels (dict), config, runs (list of {repeat, fold, cell, status, value}), n_total, n_ok,
    n_diverged, n_failed, status, note, mean, sd, n, ci_low, ci_high, text.
    """
    value = value or study.table.value
    if value not in df.columns or value not in NUMERIC_METRICS:
        raise DataError(
            f"study '{study.name}': table value '{value}' is not a metric "
            f"(config key 'studies.{study.name}.table.value'; known: {', '.join(NUMERIC_METRICS)})"
        )
    order = {a: {v: i for i, v in enumerate(study.axis_values.get(a, ()))} for a in study.axes}
    groups: dict[tuple, dict] = {}
    for rec in df.to_dict("records"):
        key = tuple(str(rec[a]) for a in study.axes)
        g = groups.setdefault(key, {"labels": dict(zip(study.axes, key)), "config": rec["config"], "runs": []})
        ok = rec["status"] == "ok" and not pd.isna(rec[value])
        g["runs"].append(
            {
                "repeat": None if pd.isna(rec["repeat"]) else int(rec["repeat"]),
                "fold": None if pd.isna(rec["fold"]) else int(rec["fold"]),
                "cell": rec["cell"],
                "status": rec["status"],
                # an ok run can still lack this value (e.g. HD95 of an empty prediction): it is left out
                "value": float(rec[value]) if ok else None,
            }
        )
    out = []
    for key, g in groups.items():
        runs = g["runs"]
        n_ok = sum(r["status"] == "ok" for r in runs)
        n_div = sum(r["status"] == "diverged" for r in runs)
        n_fail = len(runs) - n_ok - n_div
        status, note = _status(len(runs), n_ok, n_div, n_fail)
        s = summarize([r["value"] for r in runs if r["value"] is not None])
        g.update(n_total=len(runs), n_ok=n_ok, n_diverged=n_div, n_failed=n_fail, status=status, note=note, **s)
        g["text"] = cell_text(g, value)
        if study.mode == "random":  # sampled values: numeric order reads better than sampling order
            g["_order"] = tuple(label_sort_key(v) for v in key)
        else:
            g["_order"] = tuple(order[a].get(v, len(order[a])) for a, v in zip(study.axes, key))
        out.append(g)
    out.sort(key=lambda g: g["_order"])
    for g in out:
        del g["_order"]
    return out


def cell_text(g: dict, value: str) -> str:
    """'0.812 ± 0.010 (3)', '0.812 (1)', or the status word — never a number for a run-less config."""
    if g["status"] == "missing":
        return "–"
    if g["n"] == 0:
        return "n/a" if g["status"] in ("ok", "partial") else g["status"]
    txt = fmt(g["mean"], value)
    if g["sd"] is not None:
        txt += f" ± {fmt(g['sd'], value)}"
    return f"{txt} ({g['n']})"


# --------------------------------------------------------------------------------------------- layout
def layout_axes(study: Study) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(row axes, col axes). Axes the layout does not name are added to the rows, so a table cell never
    pools different configurations."""
    rows = tuple(study.table.rows)
    cols = tuple(study.table.cols)
    extra = tuple(a for a in study.axes if a not in rows and a not in cols)
    return rows + extra, cols


def _combos(axes: Sequence[str], study: Study, groups: Sequence[dict]) -> list[tuple[str, ...]]:
    """Label combinations of ``axes`` in declared order, keeping only those some configuration has."""
    present = {tuple(g["labels"][a] for a in axes) for g in groups}
    values = []
    for a in axes:
        declared = list(study.axis_values.get(a, ()))
        seen = [g["labels"][a] for g in groups if g["labels"][a] not in declared]
        vals = declared + list(dict.fromkeys(seen))
        if study.mode == "random":  # sampling order means nothing to a reader; numbers read best sorted
            vals = sorted(vals, key=label_sort_key)
        values.append(vals)
    return [c for c in itertools.product(*values) if c in present]


def _public(g: dict | None) -> dict:
    if g is None:
        return {
            "status": "missing",
            "text": "–",
            "mean": None,
            "sd": None,
            "n": 0,
            "n_total": 0,
            "ci_low": None,
            "ci_high": None,
            "note": "",
            "config": None,
        }
    return {
        k: g[k]
        for k in (
            "config",
            "status",
            "note",
            "text",
            "mean",
            "sd",
            "n",
            "n_total",
            "n_ok",
            "n_diverged",
            "n_failed",
            "ci_low",
            "ci_high",
        )
    }


def pivot(study: Study, groups: Sequence[dict]) -> dict:
    """The study's table: rows × cols of configuration summaries, best per row/column/overall flagged."""
    t = study.table
    row_axes, col_axes = layout_axes(study)
    by_key = {tuple(g["labels"][a] for a in study.axes): g for g in groups}
    rows = _combos(row_axes, study, groups)
    cols = _combos(col_axes, study, groups)
    grid: list[list[dict]] = []
    for r in rows:
        line = []
        for c in cols:
            labels = dict(zip(row_axes, r)) | dict(zip(col_axes, c))
            line.append(_public(by_key.get(tuple(labels[a] for a in study.axes))))
        grid.append(line)

    def flag(cells: list[dict], name: str) -> None:
        scored = [x for x in cells if x["mean"] is not None]
        if not scored:
            return
        top = max(rank_key(x, t.higher_is_better) for x in scored)
        for x in scored:
            x[name] = rank_key(x, t.higher_is_better) == top

    for line in grid:
        for x in line:
            x.update(best_in_row=False, best_in_col=False, best_overall=False)
    if len(cols) > 1:  # "best in its row" says nothing in a one-column table
        for line in grid:
            flag(line, "best_in_row")
    if len(rows) > 1:
        for j in range(len(cols)):
            flag([line[j] for line in grid], "best_in_col")
    flag([x for line in grid for x in line], "best_overall")
    best = best_group(groups, t.higher_is_better)
    return {
        "study": study.name,
        "title": study.title,
        "value": t.value,
        "higher_is_better": t.higher_is_better,
        "row_axes": list(row_axes),
        "col_axes": list(col_axes),
        "rows": [
            {"labels": dict(zip(row_axes, r)), "label": config_label(zip(row_axes, r)) if r else ""} for r in rows
        ],
        "cols": [
            {"labels": dict(zip(col_axes, c)), "label": config_label(zip(col_axes, c)) if c else t.value} for c in cols
        ],
        "cells": grid,
        "best": None if best is None else {"config": best["config"], "labels": best["labels"], **_public(best)},
        "n_configs": len(groups),
        "n_runs": int(sum(g["n_total"] for g in groups)),
        "n_ok": int(sum(g["n_ok"] for g in groups)),
        "n_diverged": int(sum(g["n_diverged"] for g in groups)),
        "n_failed": int(sum(g["n_failed"] for g in groups)),
    }


def table_frame(table: dict) -> pd.DataFrame:
    """The layout as a flat table (row axis columns + one column per column combination), text cells.

    Partial configurations carry their note after a semicolon ("0.80 ± 0.01 (2); 1 of 3 diverged").
    """
    records = []
    for row, line in zip(table["rows"], table["cells"]):
        rec = dict(row["labels"])
        for col, x in zip(table["cols"], line):
            rec[col["label"]] = x["text"] + (f"; {x['note']}" if x["note"] and x["n"] else "")
        records.append(rec)
    return pd.DataFrame(records, columns=[*table["row_axes"], *[c["label"] for c in table["cols"]]])


# ---------------------------------------------------------------------------------------------- entry
def aggregate_study(
    study: Study, cells_dir: Path, out_dir: Path, logs_dir: Path | None = None, *, seed: int = 0
) -> pd.DataFrame:
    """Write ``cells.csv``, ``table.csv``, ``table.json`` and ``stats.json`` of one study into ``out_dir``.

    ``cells_dir`` holds ``{cell}/metrics.json``; ``logs_dir`` holds the training logs ``{cell}.log`` (their
    last lines are kept for runs that did not finish ok). ``seed`` seeds the bootstrap of
    `segsweep.analysis.stats`. Returns the per-run frame (the content of cells.csv).
    """
    out_dir = Path(out_dir)
    df = cells_frame(study, Path(cells_dir), None if logs_dir is None else Path(logs_dir))
    groups = config_groups(study, df)
    table = pivot(study, groups)
    comparisons = compare_study(
        groups, higher_is_better=study.table.higher_is_better, value=study.table.value, seed=seed
    )
    with atomic_path(out_dir / "cells.csv") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out_dir / "table.csv") as tmp:
        table_frame(table).to_csv(tmp, index=False)
    write_json(out_dir / "table.json", _nan_to_none(table))
    write_json(out_dir / "stats.json", _nan_to_none(comparisons))
    return df


def _nan_to_none(obj: Any) -> Any:
    """JSON has no NaN: write null so browsers and strict parsers read the file."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
