"""The report's "Test set" numbers: the validation-selected configuration of a study, scored on the test patients.

Selection uses validation only: the configuration is the study table's best (`ranking.ranked` on the table
value, docs/evaluation.md); test numbers are then *read*, never compared to choose anything. For that
configuration, over its ``ok`` runs:

* per test patient, its per-patient value (per_patient.csv, ``set`` = test: Dice / HD95 / NSD of all its
  slices pooled at native resolution) averaged over the runs;
* the point value = the mean over test patients of those (for ``dice`` per slice: the mean over runs of
  metrics.json ``test.dice``);
* a 95 % percentile bootstrap interval (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13)
  from `segsweep.analysis.stats.bootstrap_interval`, the function of the validation tables: one run →
  test patients resampled with replacement; several runs (repeats, folds) → **runs × patients** crossed (R
  runs drawn with replacement, then the test patients, one draw shared by every run since they are scored
  on the same patients), so a configuration whose seeds disagree gets an interval that shows it rather than
  one around the mean of the seeds. 10 000 resamples, seeded by the config's ``seed`` and the study; each
  resample's value is a mean of observed per-patient values, so the interval lies within the metric's
  range by construction; fewer than 3 test patients → no interval (docs/statistics.md).

`val_vs_test` gives, for the top configurations by validation, the same per-patient Dice on validation
(metrics.json ``val_dice_patient``) and test (``test.dice_patient``), for the figure that shows how much the
selected configuration's validation number overstates its test number.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from segsweep.analysis.intervals import REPRODUCE_TOL, per_patient_file
from segsweep.analysis.ranking import ranked
from segsweep.analysis.stats import bootstrap_interval, interval_units
from segsweep.labels import metric_range
from segsweep.paths import METRICS, PER_PATIENT
from segsweep.training.record import CellMetrics

N_BOOT = 10_000
MIN_PATIENTS = 3
# (metrics.json `test` key, per_patient.csv column or None, label): the rows of the Test set table
TEST_ROWS = (
    ("dice_patient", "dice", "Dice per patient"),
    ("dice", None, "Dice per slice"),
    ("hd95_mm_patient", "hd95_mm", "HD95 per patient (mm)"),
    ("nsd_patient", "nsd", "NSD per patient"),
)


def split_has_test(split_files: Sequence[Path]) -> bool:
    """Whether any split file holds test patients (``test``)."""
    for p in split_files:
        try:
            if json.loads(Path(p).read_text()).get("test"):
                return True
        except (OSError, json.JSONDecodeError):
            continue
    return False


def patient_bootstrap(
    values: Sequence[float], *, seed, n_boot: int = N_BOOT, confidence: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of per-patient ``values`` (patients resampled with
    replacement), or None with fewer than `MIN_PATIENTS` finite values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size < MIN_PATIENTS:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def per_test_patient(cell_dir: Path, col: str, run_value: float | None) -> dict | None:
    """A run's per-test-patient values of per_patient.csv column ``col`` (one weight per patient), only where
    their mean reproduces the run's value (as for the validation tables), else None."""
    pv = per_patient_file(Path(cell_dir) / PER_PATIENT, col, "test")
    if pv is None or run_value is None or pv["weights"].sum() <= 0:
        return None
    pooled = float((pv["weights"] * pv["values"]).sum() / pv["weights"].sum())
    return pv if abs(pooled - run_value) <= REPRODUCE_TOL * max(1.0, abs(run_value)) else None


def interval_of_test_runs(runs: Sequence[Mapping], key: str, *, seed) -> dict:
    """The interval fields (`stats.bootstrap_interval`) of a test number from its runs (``{"value",
    "patients"}``): runs × test patients crossed with several runs, test patients with one."""
    return bootstrap_interval(runs, seed=seed, bounds=metric_range(key), patients_word="test patient")


def _metrics(cell_dir: Path) -> CellMetrics | None:
    try:
        return CellMetrics.read(cell_dir / METRICS)
    except (FileNotFoundError, json.JSONDecodeError, ValueError):
        return None


def selected_test(
    study_name: str, groups: Sequence[dict], higher_is_better: bool, cells_dir: Path, seed: int
) -> dict | None:
    """Test numbers of the validation-selected configuration (module docstring), or None when it has no
    ok run with a test evaluation. Keys: ``group`` (the configuration), ``n_runs``, ``n_patients``,
    ``n_slices``, ``n_one_empty``, ``n_excluded_both_empty`` (per run, averaged when runs differ: they share
    the test set), ``val_dice_patient`` (its validation counterpart), ``rows`` (one per `TEST_ROWS`: key,
    label, value, ci or None, note, units: what the interval resampled, "2 runs × 3 patients")."""
    order = ranked(groups, higher_is_better)
    if not order:
        return None
    g = order[0]
    tests, dirs, vals = [], [], []
    for r in g["runs"]:
        if r["status"] != "ok":
            continue
        d = Path(cells_dir) / r["cell"]
        m = _metrics(d)
        if m is None or not m.test:
            continue
        tests.append(m.test)
        dirs.append(d)
        vals.append(m.val_dice_patient)
    if not tests:
        return None
    stream = int(hashlib.sha256(f"test:{study_name}".encode()).hexdigest()[:8], 16)
    rows = []
    for k, (key, col, label) in enumerate(TEST_ROWS):
        run_values = [t.get(key) for t in tests if t.get(key) is not None]
        value = float(np.mean(run_values)) if run_values else None
        ci, note, units = None, "", ""
        if col is not None:
            runs = [
                {"value": t[key], "patients": per_test_patient(d, col, t[key])}
                for t, d in zip(tests, dirs)
                if t.get(key) is not None
            ]
            res = interval_of_test_runs(runs, key, seed=[int(seed), 2, stream, k])
            if res["ci_low"] is not None:
                ci, units = (res["ci_low"], res["ci_high"]), interval_units(res)
            note = res["ci_note"]
        else:
            note = "mean over slices; no interval (the patient is the resampling unit)"
        rows.append({"key": key, "label": label, "value": value, "ci": ci, "note": note, "units": units})

    def avg(key: str) -> float:
        return float(np.mean([t[key] for t in tests if t.get(key) is not None]))

    vals = [v for v in vals if v is not None]
    return {
        "group": g,
        "n_runs": len(tests),
        "n_patients": avg("n_patients"),
        "n_slices": avg("n_slices"),
        "n_one_empty": avg("n_one_empty"),
        "n_excluded_both_empty": avg("n_excluded_both_empty"),
        "val_dice_patient": float(np.mean(vals)) if vals else None,
        "rows": rows,
    }


def val_vs_test(groups: Sequence[dict], higher_is_better: bool, cells_dir: Path, top: int) -> list[dict]:
    """For the ``top`` configurations by validation (best first): mean over ok runs of ``val_dice_patient``
    and of ``test.dice_patient`` (``config``, ``val``, ``test``, ``n_runs``); configurations without a test
    evaluation are skipped."""
    out = []
    for g in ranked(groups, higher_is_better):
        pairs = []
        for r in g["runs"]:
            if r["status"] != "ok":
                continue
            m = _metrics(Path(cells_dir) / r["cell"])
            if m is not None and m.test and m.val_dice_patient is not None and m.test.get("dice_patient") is not None:
                pairs.append((m.val_dice_patient, m.test["dice_patient"]))
        if pairs:
            v, t = np.mean(pairs, axis=0)
            out.append(
                {"config": g["config"], "labels": g["labels"], "val": float(v), "test": float(t), "n_runs": len(pairs)}
            )
        if len(out) == top:
            break
    return out


def format_ci(ci: tuple[float, float] | None, digits: int) -> str:
    return "–" if ci is None else f"{ci[0]:.{digits}f}–{ci[1]:.{digits}f}"


def describe(sel: Mapping) -> str:
    """'4 test patients, 40 slices (0 with one empty mask; 0 both-empty excluded), 3 runs'."""

    def n(x: float) -> str:
        return f"{x:g}" if float(x).is_integer() else f"{x:.1f}"

    runs = f", mean over {sel['n_runs']} runs" if sel["n_runs"] > 1 else ""
    return (
        f"{n(sel['n_patients'])} test patients, {n(sel['n_slices'])} slices ({n(sel['n_one_empty'])} with exactly "
        f"one empty mask, scored at the worst case; {n(sel['n_excluded_both_empty'])} both-empty excluded){runs}"
    )
