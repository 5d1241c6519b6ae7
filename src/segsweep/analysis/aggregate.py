"""Aggregate the cells of one study: a tidy per-run table, the study's pivot layout, paired statistics.

A *run* is one row of a study (a cell: one configuration × training seed × fold). A *configuration* is a
distinct combination of the study's axis labels; tables and figures aggregate runs over repeats and folds
per configuration.

Per configuration, over the runs whose status is ``ok`` (n of them):

* mean, sample standard deviation ``sd = sqrt(Σ(x − mean)² / (n − 1))``,
* a 95 % percentile-bootstrap interval of the mean (`segsweep.analysis.stats.bootstrap_interval`, seeded by
  the config's ``seed``) that never leaves the metric's range: it resamples validation patients (each run's
  per-patient values, `patient_sources`: ``per_image.csv`` pooled per patient, or the ``val`` rows of
  ``per_patient.csv`` for per-patient means; used only where they reproduce the run's value) and, with
  several runs, runs × patients; without per-patient values it resamples runs. Fewer than 3 patients (or
  runs): "no interval" (docs/statistics.md),
* a status: ``ok`` (all runs ok), ``partial`` (some collapsed/diverged/failed: the mean is over the ok runs
  and the table says "k of n collapsed", "k of n diverged"), ``collapsed`` / ``diverged`` / ``failed`` (every
  run ended that way) or a combination such as ``collapsed/diverged`` (no ok run: the table shows the word,
  never a number), ``missing`` (the layout has no run for this combination, e.g. one-factor studies). A
  ``collapsed`` run keeps its numbers in metrics.json; here, as every non-ok run, it has none, so it never
  enters a mean, an interval, a comparison or the best configuration.

A ``fraction`` axis is labelled with its real size from the split files, "17 % (2 of 12 patients)"
(`segsweep.labels.fraction_label`): ``table.json`` keeps the config's labels under ``labels`` and adds the
shown ones (``display``, ``axis_labels``, ``fractions``); ``table.csv`` shows the real sizes.

Outputs (written atomically) in the study folder: ``cells.csv``, ``table.csv``, ``table.json``,
``stats.json`` (see `segsweep.analysis.stats`). Each cell's ``metrics.json`` is a
`segsweep.training.record.CellMetrics`; the best configuration is `segsweep.analysis.ranking.best_group`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from segsweep.analysis.final import evaluate_selected
from segsweep.analysis.ranking import best_group, rank_key
from segsweep.analysis.stats import INTERVAL_KEYS, bootstrap_interval, compare_study, no_interval
from segsweep.data.config import LABELS
from segsweep.data.splits import n_train
from segsweep.errors import DataError
from segsweep.io import atomic_path, write_json
from segsweep.labels import ConfigNames, fmt, fraction_label, label_number, label_sort_key, metric_range
from segsweep.study import pruned_cells  # the decision files' reader (shared: optuna rounds read them too)
from segsweep.training.record import (
    CLASS_COLUMNS,
    FIELDS,
    NUMERIC_FIELDS,
    OBJECT_FIELDS,
    QUALITY_FIELDS,
    CellMetrics,
    class_metric,
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


def config_label(labels: Iterable[tuple[str, str]]) -> str:
    """'optimizer=adam, lr=1e-3' — a configuration's key in cells.csv, named as `ConfigNames` names it
    (the report shows it through `ConfigNames.of_table`, with a fraction's real size)."""
    return ConfigNames().name(labels)


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


# --------------------------------------------------------------------------------------- summaries
def _moments(values: Sequence[float]) -> dict:
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) if n > 1 else None, "n": n}


def summarize(
    values: Sequence[float], confidence: float = 0.95, *, seed: int | Sequence[int] = 0, value: str = ""
) -> dict:
    """mean, sd (n−1), n and a percentile-bootstrap interval of the mean over the values taken as runs
    without per-patient values (`stats.bootstrap_interval`: "no interval" below 3 runs; within the range of
    the metric named ``value``, see `segsweep.labels.metric_range`)."""
    m = _moments(values)
    runs = [{"value": v, "patients": None} for v in values if v is not None and not math.isnan(v)]
    ci = bootstrap_interval(runs, seed=seed, confidence=confidence, bounds=metric_range(value))
    return {**m, **ci}


# ------------------------------------------------------------------------------ per-patient values
PER_PATIENT, PER_IMAGE = "per_patient.csv", "per_image.csv"
REPRODUCE_TOL = 1e-4  # per-patient values that pool to the run's value within this (relative) tolerance


def patient_sources(value: str) -> list[tuple[str, str, str]]:
    """Where a table value's per-patient values are: ``(file, column, weighting)`` pairs, tried in order.

    * ``best_val_X`` (network grid, every validation image): per_image.csv column ``X``, pooled per patient
      as the mean of its slices, weighted by slices (the run's value is the mean over images);
    * ``val_X_patient`` (mean over patients): per_patient.csv ``val`` rows, column ``X``, one weight per patient;
    * ``val_X`` (native grid, mean over slices that are not both-empty): per_image.csv column ``native_X``;
    * a class of a multi-class target (``val_X_<class>``, ``val_X_patient_<class>``): the same files' columns
      of that class (``native_X_<class>``, ``X_<class>``);
    * anything else (e.g. final_val_dice, not measured at the best checkpoint): none.

    per_patient.csv's ``dice`` is a patient's pooled (volume) Dice, not the mean of its slices, so it does not
    describe ``best_val_dice``; `patient_values` checks that the values reproduce the run's value anyway.
    """
    if value.startswith("best_val_"):
        return [(PER_IMAGE, value.removeprefix("best_val_"), "slices")]
    if (per_class := class_metric(value)) is not None:  # val_<X>[_patient]_<class>: that class's columns
        key, c = per_class
        if key.endswith("_patient"):
            return [(PER_PATIENT, f"{key.removesuffix('_patient')}_{c}", "patients")]
        return [(PER_IMAGE, f"native_{key}_{c}", "slices")]
    if value.startswith("val_") and value.endswith("_patient"):
        return [(PER_PATIENT, value.removeprefix("val_").removesuffix("_patient"), "patients")]
    if value.startswith("val_") and not value.startswith("val_n_"):
        return [(PER_IMAGE, "native_" + value.removeprefix("val_"), "slices")]
    return []


def per_patient_file(path: Path, col: str, set_name: str = "val") -> dict | None:
    """The ``set_name`` rows of per_patient.csv (``set,patient,n_slices,...``): one weight per patient that has
    slices and a value (the validation tables read ``val``, the Test set section ``test``)."""
    try:
        df = pd.read_csv(path, dtype={"patient": str, "set": str})
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    if "set" in df:
        df = df[df["set"] == set_name]
    elif set_name != "val":  # an older file without the column holds validation rows only
        return None
    if df.empty or not {"patient", "n_slices", col} <= set(df.columns):
        return None
    v = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
    n = pd.to_numeric(df["n_slices"], errors="coerce").fillna(0).to_numpy(float)
    w = ((n > 0) & np.isfinite(v)).astype(float)
    return {"ids": df["patient"].tolist(), "values": np.nan_to_num(v), "weights": w}


def _per_image_file(path: Path, col: str) -> dict | None:
    """per_image.csv pooled per patient: mean over the patient's slices with a value, weight = those slices
    (native columns: both-empty slices excluded, as in ``val_*``)."""
    try:
        df = pd.read_csv(path, dtype={"patient": str, "set": str, "empty": str}, keep_default_na=False)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    if "set" in df:  # test rows (docs/evaluation.md) never enter a validation number
        df = df[df["set"] == "val"]
    per_class = next((c for c in LABELS if col.startswith("native_") and col.endswith(f"_{c}")), None)
    empty = "empty" if per_class is None else f"empty_{per_class}"  # a class's slices: its own empty column
    if col.startswith("native_") and empty in df:
        df = df[df[empty] != "both"]
    if df.empty or not {"patient", col} <= set(df.columns):
        return None
    x = pd.to_numeric(df[col], errors="coerce")
    g = x.groupby(df["patient"], sort=True)
    return {
        "ids": [str(i) for i in g.mean().index],
        "values": g.mean().fillna(0.0).to_numpy(float),
        "weights": g.count().to_numpy(float),
    }


def patient_values(cell_dir: Path, value: str, run_value: float | None) -> dict | None:
    """A run's per-patient values of ``value`` (`patient_sources`) — only where their weighted mean
    reproduces the run's own value, so the interval describes the number in the table."""
    if run_value is None:
        return None
    for name, col, _weighting in patient_sources(value):
        read = per_patient_file if name == PER_PATIENT else _per_image_file
        pv = read(Path(cell_dir) / name, col)
        if pv is None or pv["weights"].sum() <= 0:
            continue
        pooled = float((pv["weights"] * pv["values"]).sum() / pv["weights"].sum())
        if abs(pooled - run_value) <= REPRODUCE_TOL * max(1.0, abs(run_value)):
            return pv
    return None


def config_interval(g: Mapping, cells_dir: Path, value: str, seed: int, memo: dict | None = None) -> dict:
    """The bootstrap interval of one configuration's mean (see `stats.bootstrap_interval`), its stream
    seeded by (seed, the configuration's name), so adding a configuration leaves the others unchanged."""
    memo = {} if memo is None else memo
    runs = []
    for r in g["runs"]:
        if r["value"] is None:
            continue
        if r["cell"] not in memo:
            memo[r["cell"]] = patient_values(Path(cells_dir) / r["cell"], value, r["value"])
        runs.append({"value": r["value"], "patients": memo[r["cell"]]})
    stream = int(hashlib.sha256(str(g["config"]).encode()).hexdigest()[:8], 16)
    return bootstrap_interval(runs, seed=[int(seed), 1, stream], bounds=metric_range(value))


def table_intervals(table: Mapping) -> dict[str, dict]:
    """configuration name → its interval fields, from a table.json (older files without them: none)."""
    out = {}
    for line in table.get("cells", []):
        for x in line:
            if x.get("config") is not None and "ci_unit" in x:
                out[x["config"]] = {k: x.get(k) for k in INTERVAL_KEYS}
    return out


def _status(n_total: int, n_ok: int, n_div: int, n_fail: int, n_col: int = 0, n_pruned: int = 0) -> tuple[str, str]:
    """(status, note) of a configuration from its run counts (ok, diverged, failed, collapsed, pruned)."""
    if n_total == 0:
        return "missing", ""
    if n_pruned:  # never a finished result, whatever its other runs did
        done = n_total - n_pruned
        return "pruned", f"{done} of {n_total} runs before pruning" if done else ""
    if n_ok == n_total:
        return "ok", ""
    bad = [(w, n) for w, n in (("collapsed", n_col), ("diverged", n_div), ("failed", n_fail)) if n]
    if n_ok == 0:
        if len(bad) == 1:
            w, _ = bad[0]
            return w, f"all {n_total} {w}" if n_total > 1 else ""
        return "/".join(w for w, _ in bad), ", ".join(f"{n} {w}" for w, n in bad)
    return "partial", ", ".join(f"{n} of {n_total} {w}" for w, n in bad)


def config_groups(
    study: Study, df: pd.DataFrame, value: str | None = None, *, intervals: Mapping[str, Mapping] | None = None
) -> list[dict]:
    """One dict per configuration (in the config's declared label order), aggregated over repeats/folds.

    Keys: labels (dict), config, runs (list of {repeat, fold, cell, status, value}), n_total, n_ok,
    n_diverged, n_failed, n_collapsed, status, note, mean, sd, n, text and the interval fields (`stats.INTERVAL_KEYS`):
    from ``intervals`` (configuration name → fields, e.g. `table_intervals` of the study's table.json),
    else none (`aggregate_study` computes them: they need the cells' per-patient files).
    """
    value = value or study.table.value
    if value not in df.columns or (value not in NUMERIC_METRICS and class_metric(value) is None):
        raise DataError(
            f"study '{study.name}': table value '{value}' is not a metric of its runs "
            f"(config key 'studies.{study.name}.table.value'; known: {', '.join(NUMERIC_METRICS)}; for a multiclass "
            "target also val_<metric>_<class>, e.g. val_dice_patient_myo)"
        )
    order = {a: {v: i for i, v in enumerate(study.axis_values.get(a, ()))} for a in study.axes}
    groups: dict[tuple, dict] = {}
    df_by_cell: dict[tuple, list[dict]] = {}
    for rec in df.to_dict("records"):
        key = tuple(str(rec[a]) for a in study.axes)
        df_by_cell.setdefault(key, []).append(rec)
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
        n_col = sum(r["status"] == "collapsed" for r in runs)
        n_pruned = sum(r["status"] == "pruned" for r in runs)
        n_fail = len(runs) - n_ok - n_div - n_col - n_pruned
        status, note = _status(len(runs), n_ok, n_div, n_fail, n_col, n_pruned)
        pruned_info = {}
        if n_pruned:  # shown greyed, ranked and compared never: its runs' values leave the statistics
            recs = [r for r in df_by_cell.get(key, []) if r["status"] == "pruned"]
            # (read back from cells.csv the column may be text, and empty cells NaN)
            vals = [float(v) for r in recs if (v := r.get("pruned_value")) not in (None, "") and not pd.isna(v)]
            done = [r["value"] for r in runs if r["value"] is not None]
            pruned_info = {
                "pruned_value": (sum(done) / len(done)) if done else (sum(vals) / len(vals) if vals else None),
                "pruned_at": min((int(r["epochs_run"]) for r in recs if r.get("epochs_run")), default=None),
                "pruned_reason": recs[0]["reason"] if recs else "",
                "pruned_folds_done": len(
                    {r["fold"] for r in runs if r["status"] != "pruned" and r["fold"] is not None}
                ),
            }
            for r in runs:
                r["value"] = None
        s = _moments([r["value"] for r in runs if r["value"] is not None])
        ci = dict((intervals or {}).get(g["config"]) or no_interval(runs=s["n"]))
        g.update(
            n_total=len(runs),
            n_ok=n_ok,
            n_diverged=n_div,
            n_failed=n_fail,
            n_collapsed=n_col,
            n_pruned=n_pruned,
            status=status,
            note=note,
            **s,
            **ci,
            **pruned_info,
        )
        g["text"] = cell_text(g, value)
        if not study.ordered:  # sampled values: numeric order reads better than sampling order
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
    if g["status"] == "pruned":  # the last value it reached, as a note in the status word: never a result
        v = g.get("pruned_value")
        k = g.get("pruned_folds_done", 0)
        where = f"at epoch {g['pruned_at']}" if g.get("pruned_at") else f"after {k} fold{'' if k == 1 else 's'}"
        return f"pruned {where}" + (f" ({fmt(v, value)})" if v is not None and not pd.isna(v) else "")
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
        if not study.ordered:  # sampling order means nothing to a reader; numbers read best sorted
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
            "n_collapsed",
            "n_pruned",
            *INTERVAL_KEYS,
        )
        if k in g
    }


def pivot(study: Study, groups: Sequence[dict], axis_labels: Mapping[str, Mapping[str, str]] | None = None) -> dict:
    """The study's table: rows × cols of configuration summaries, best per row/column/overall flagged.

    ``axis_labels`` (axis → label → shown label, e.g. `fraction_labels`) name rows and columns in ``label``
    and ``display``; ``labels`` keep the config's labels.
    """
    t = study.table
    shown = {a: dict(m) for a, m in (axis_labels or {}).items()}

    def display(axes: Sequence[str], combo: Sequence[str]) -> dict:
        return {a: shown.get(a, {}).get(v, v) for a, v in zip(axes, combo)}

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
            {
                "labels": dict(zip(row_axes, r)),
                "display": display(row_axes, r),
                "label": config_label(display(row_axes, r).items()) if r else "",
            }
            for r in rows
        ],
        "cols": [
            {
                "labels": dict(zip(col_axes, c)),
                "display": display(col_axes, c),
                "label": config_label(display(col_axes, c).items()) if c else t.value,
            }
            for c in cols
        ],
        "axis_labels": shown,
        "cells": grid,
        "best": None if best is None else {"config": best["config"], "labels": best["labels"], **_public(best)},
        "n_configs": len(groups),
        "n_runs": int(sum(g["n_total"] for g in groups)),
        "n_ok": int(sum(g["n_ok"] for g in groups)),
        "n_diverged": int(sum(g["n_diverged"] for g in groups)),
        "n_failed": int(sum(g["n_failed"] for g in groups)),
        "n_collapsed": int(sum(g["n_collapsed"] for g in groups)),
        "n_pruned": int(sum(g.get("n_pruned", 0) for g in groups)),
    }


def table_frame(table: dict) -> pd.DataFrame:
    """The layout as a flat table (row axis columns + one column per column combination), text cells.

    Partial configurations carry their note after a semicolon ("0.80 ± 0.01 (2); 1 of 3 diverged").
    """
    records = []
    for row, line in zip(table["rows"], table["cells"]):
        rec = dict(row.get("display") or row["labels"])
        for col, x in zip(table["cols"], line):
            rec[col["label"]] = x["text"] + (f"; {x['note']}" if x["note"] and x["n"] else "")
        records.append(rec)
    return pd.DataFrame(records, columns=[*table["row_axes"], *[c["label"] for c in table["cols"]]])


# ------------------------------------------------------------------------------------------ fractions
def fraction_sizes(study: Study, cells_dir: Path, splits: Sequence[Path]) -> dict[str, dict]:
    """Per label of the study's ``fraction`` axis: the (training patients, pool patients) pairs its runs
    train on (`segsweep.data.splits.n_train` on the pool of the run's split and fold), the shown label and
    the real share. The split seed of a run comes from its metrics.json (a run without one: every split
    file of its kind)."""
    if "fraction" not in study.axes or not splits:
        return {}
    parts: dict[tuple[int, bool], list[dict]] = {}  # (split seed, with folds) → split files
    for p in sorted(Path(x) for x in splits):
        sp = json.loads(p.read_text())
        parts.setdefault((int(sp["seed"]), bool(sp.get("folds"))), []).append(sp)
    sizes: dict[str, set[tuple[int, int]]] = {}
    seeds: dict[str, int | None] = {}
    for sc in study.cells:
        label = sc.label("fraction")
        f = label_number(label)
        if f is None:
            continue
        if sc.cell_id not in seeds:
            try:
                seeds[sc.cell_id] = int(
                    CellMetrics.read(Path(cells_dir) / sc.cell_id / "metrics.json").params["split_seed"]
                )
            except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError, DataError):
                seeds[sc.cell_id] = None
        cv = sc.fold is not None
        # a holdout run trains on the holdout pool, the same in every file of its split seed (make_split)
        files = [
            sp
            for (split_seed, with_folds), found in parts.items()
            if (with_folds or not cv) and seeds[sc.cell_id] in (None, split_seed)
            for sp in found
        ]
        for sp in files:
            if cv and sc.fold >= len(sp["folds"]):
                continue
            pool = len((sp["folds"][sc.fold] if cv else sp)["pool"])
            sizes.setdefault(label, set()).add((n_train(pool, f), pool))
    return {
        lab: {
            "label": fraction_label(pairs),
            "share": float(np.mean([n / p for n, p in sorted(pairs)])),
            "n_train": sorted({n for n, _ in pairs}),
            "pool": sorted({p for _, p in pairs}),
        }
        for lab, pairs in sizes.items()
    }


def axis_display(table: Mapping) -> dict[str, dict[str, str]]:
    """axis → config label → shown label, from a table.json ({} for an older file)."""
    return {a: dict(m) for a, m in (table.get("axis_labels") or {}).items()}


# ---------------------------------------------------------------------------------------------- entry
def aggregate_study(
    study: Study,
    cells_dir: Path,
    out_dir: Path,
    logs_dir: Path | None = None,
    *,
    seed: int = 0,
    splits: Sequence[Path] = (),
    decisions: Sequence[Mapping] = (),
    data_dir: Path | None = None,
) -> pd.DataFrame:
    """Write ``cells.csv``, ``table.csv``, ``table.json`` and ``stats.json`` of one study into ``out_dir``.

    ``cells_dir`` holds ``{cell}/metrics.json`` (and per_patient.csv / per_image.csv, for the intervals);
    ``logs_dir`` holds the training logs ``{cell}.log`` (their last lines are kept for runs that did not
    finish ok). ``seed`` seeds the bootstraps (intervals and `segsweep.analysis.stats`). ``splits`` are the
    split files of the study's cells (results/splits/*.json), for the real size of each training fraction.
    ``decisions`` are a pruned study's decision files (read as JSON; `pruned_cells`): the runs its pruner
    stopped are ``pruned``, and a configuration with any pruned run is never ranked or compared.
    ``data_dir`` (the study's patient files): with it, table.json gets ``final``, the selected configuration's
    post-processing choice, test numbers and ensemble (`segsweep.analysis.final.evaluate_selected`).
    Returns the per-run frame (the content of cells.csv).
    """
    out_dir = Path(out_dir)
    df = cells_frame(study, Path(cells_dir), None if logs_dir is None else Path(logs_dir), pruned_cells(decisions))
    groups = config_groups(study, df)
    memo: dict[str, dict | None] = {}
    for g in groups:
        g.update(config_interval(g, Path(cells_dir), study.table.value, seed, memo))
    fractions = fraction_sizes(study, Path(cells_dir), splits)
    table = pivot(study, groups, {"fraction": {k: v["label"] for k, v in fractions.items()}} if fractions else None)
    table["fractions"] = fractions
    if data_dir is not None:
        table["final"] = evaluate_selected(
            study.name, groups, study.table.higher_is_better, Path(cells_dir), Path(data_dir), seed
        )
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
