"""Bootstrap intervals of a configuration's mean, from its runs' per-patient values.

Per configuration, over the runs whose status is ``ok``: a 95 % percentile-bootstrap interval of the mean
(`segsweep.analysis.stats.bootstrap_interval`, seeded by the config's ``seed`` and the configuration's name)
that never leaves the metric's range. It resamples validation patients (each run's per-patient values,
`patient_sources`: ``per_image.csv`` pooled per patient, or the ``val`` rows of ``per_patient.csv`` for
per-patient means; used only where they reproduce the run's value) and, with several runs, runs × patients;
without per-patient values it resamples runs. Fewer than 3 patients (or runs): "no interval"
(docs/statistics.md).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from segsweep.analysis.configs import moments
from segsweep.analysis.stats import INTERVAL_KEYS, bootstrap_interval
from segsweep.data.config import LABELS
from segsweep.labels import metric_range
from segsweep.paths import PER_IMAGE, PER_PATIENT
from segsweep.training.record import class_metric


def summarize(
    values: Sequence[float], confidence: float = 0.95, *, seed: int | Sequence[int] = 0, value: str = ""
) -> dict:
    """mean, sd (n−1), n and a percentile-bootstrap interval of the mean over the values taken as runs
    without per-patient values (`stats.bootstrap_interval`: "no interval" below 3 runs; within the range of
    the metric named ``value``, see `segsweep.labels.metric_range`)."""
    m = moments(values)
    runs = [{"value": v, "patients": None} for v in values if v is not None and not math.isnan(v)]
    ci = bootstrap_interval(runs, seed=seed, confidence=confidence, bounds=metric_range(value))
    return {**m, **ci}


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
