"""The final evaluation of a study's selected configuration: post-processing chosen on validation, its runs and
their ensemble on validation and test — from files (each run's ``native_predictions.npz`` and the patient files'
native reference masks), with no network.

For the configuration ranked first on validation (`ranking.ranked`: test numbers never choose anything):

1. **Post-processing** (`segsweep.analysis.postprocess`): every candidate is applied to each run's saved
   validation label maps, which are re-scored exactly as the final evaluation scores them
   (`segsweep.training.evaluate.score_labels`: Dice, HD95, NSD per slice, pooled per patient); the means over
   runs of the per-patient means decide (`postprocess.choose`, rule in ``RULE``).
2. **Test**: the runs' test label maps raw (``none``) and with the chosen post-processing, with 95 %
   percentile-bootstrap intervals over runs × test patients (`stats.bootstrap_interval`, as every interval).
3. **Ensemble** (≥ 2 runs): per image the runs' saved probabilities averaged (`ensemble.average_probabilities`,
   quantised to 1/255 in the files; on the network grid, then mapped to the native grid), thresholded /
   arg-max, raw and post-processed, on validation (repeats
   only: folds validate on different patients) and test; intervals over test patients (one model).

The result is ``table.json``'s ``final`` object (keys in `evaluate_selected`); the report's Test set section,
the model card and `predict` (`chosen_postprocessing`) read it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from segsweep.analysis import postprocess as pp
from segsweep.analysis.ensemble import average_probabilities, labels_from_probabilities
from segsweep.analysis.ranking import ranked
from segsweep.analysis.stats import bootstrap_interval, interval_units
from segsweep.errors import DataError
from segsweep.labels import metric_range
from segsweep.paths import METRICS, TABLE_JSON
from segsweep.training import native_predictions as npred
from segsweep.training.evaluate import EvaluationConfig, load_images, score_labels
from segsweep.training.record import CellMetrics

# (summary key, per-patient key, label): the numbers of each variant
KEYS = (
    ("dice_patient", "dice", "Dice per patient"),
    ("hd95_mm_patient", "hd95_mm", "HD95 per patient (mm)"),
    ("nsd_patient", "nsd", "NSD per patient"),
)


def _images(data_dir: Path, preds: Sequence[npred.NativePrediction], memo: dict):
    """The reference images of the saved predictions (same patients, same order), memoised per patient list."""
    pids = tuple(dict.fromkeys(p.patient for p in preds))
    if pids not in memo:
        memo[pids] = load_images(data_dir, list(pids))
    images = memo[pids]
    if images.patient != [p.patient for p in preds] or images.slice != [p.slice for p in preds]:
        raise DataError(f"{data_dir}: the saved predictions do not match the patient files' images; rerun the cells")
    return images


def _score(name: str, images, labels: Sequence[np.ndarray], post: str, cfg, classes):
    """Post-process per patient, then score (`evaluate.score_labels`)."""
    out: list[np.ndarray] = list(labels)
    if post != "none":
        by_patient: dict[str, list[int]] = {}
        for i, pid in enumerate(images.patient):
            by_patient.setdefault(pid, []).append(i)
        for idx in by_patient.values():
            done = pp.postprocess_patient(post, [labels[i] for i in idx], [images.native_spacing[i] for i in idx])
            for i, lab in zip(idx, done):
                out[i] = lab
    return score_labels(name, images, out, cfg, classes)


def _patients(res) -> dict:
    """A SetResult's per-patient values per key, for `stats.bootstrap_interval` (one weight per patient)."""
    out = {}
    for _, col, _ in KEYS:
        v = np.array([float(p[col]) if p[col] is not None else math.nan for p in res.patients], float)
        n = np.array([float(p["n_slices"]) for p in res.patients])
        w = ((n > 0) & np.isfinite(v)).astype(float)
        out[col] = {"ids": [p["patient"] for p in res.patients], "values": np.nan_to_num(v), "weights": w}
    return out


def _mean(values) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def _rows(results: Sequence, seed: Sequence[int]) -> list[dict]:
    """One row per KEYS entry: the mean over ``results`` (one per run) and its interval (runs × patients)."""
    rows = []
    for k, (key, col, label) in enumerate(KEYS):
        runs = [{"value": r.summary[key], "patients": _patients(r)[col]} for r in results if r.summary[key] is not None]
        ci = bootstrap_interval(runs, seed=[*seed, k], bounds=metric_range(key), patients_word="patient")
        rows.append(
            {
                "key": key,
                "label": label,
                "value": _mean(r.summary[key] for r in results),
                "ci_low": ci["ci_low"],
                "ci_high": ci["ci_high"],
                "units": interval_units(ci),
                "note": ci["ci_note"],
            }
        )
    return rows


def _summary(results: Sequence) -> dict:
    return {key: _mean(r.summary[key] for r in results) for key, _, _ in KEYS}


def _ensemble(
    runs: Sequence[npred.NativeFile], set_name: str, data_dir: Path, memo: dict, cfg, classes, posts: Sequence[str]
) -> tuple[dict | None, str]:
    """({post: SetResult} of the runs' averaged probabilities on ``set_name``, note)."""
    sets = [r.sets.get(set_name) for r in runs]
    if any(not s for s in sets):
        return None, f"not every run has {set_name} predictions"
    keys = [[(p.patient, p.slice) for p in s] for s in sets]
    if any(k != keys[0] for k in keys[1:]):
        return None, "the runs were scored on different patients (folds): no common images to average"
    images = _images(data_dir, sets[0], memo)
    # invert (network grid → native) is linear: average on the network grid, map back once
    labels = []
    for i in range(len(keys[0])):
        avg = average_probabilities([s[i].prob for s in sets])
        labels.append(labels_from_probabilities(replace(sets[0][i], prob=avg).native_prob()))
    return {post: _score(set_name, images, labels, post, cfg, classes) for post in posts}, ""


def evaluate_selected(
    study_name: str, groups: Sequence[dict], higher_is_better: bool, cells_dir: Path, data_dir: Path, seed: int
) -> dict | None:
    """The ``final`` object of table.json (module docstring), or None when the study has no ranked
    configuration. Keys: ``configuration``, ``cells`` (runs used), ``n_runs``, ``rule``, ``chosen`` (the
    post-processing), ``chosen_description``, ``candidates`` (name, description, validation dice_patient /
    hd95_mm_patient / nsd_patient: means over runs, qualifies, chosen), ``test`` (post-processing name →
    rows: key, label, value, ci_low, ci_high, units, note; ``none`` and the chosen one), ``ensemble`` (None
    with < 2 runs, else n_runs, val: name → summary or None, val_note, test: name → rows or None,
    test_note), ``note`` (why something is missing)."""
    order = ranked(groups, higher_is_better)
    if not order:
        return None
    g = order[0]
    cells, files, metrics = [], [], []
    for r in g["runs"]:
        if r["status"] != "ok":
            continue
        path = Path(cells_dir) / r["cell"] / npred.FILE
        try:
            m = CellMetrics.read(Path(cells_dir) / r["cell"] / METRICS)
            f = npred.read(path)
        except (FileNotFoundError, json.JSONDecodeError, ValueError):
            continue
        if not f.sets.get("val"):
            continue
        cells.append(r["cell"])
        files.append(f)
        metrics.append(m)
    base = {"configuration": g["config"], "cells": cells, "n_runs": len(cells), "rule": pp.RULE}
    if not files:
        return {
            **base,
            "chosen": "none",
            "chosen_description": pp.describe("none"),
            "candidates": [],
            "test": {},
            "ensemble": None,
            "note": f"no run of the selected configuration has {npred.FILE} (trained by an older segsweep): "
            "no post-processing was evaluated",
        }
    cfg = EvaluationConfig.from_mapping(metrics[0].evaluation)
    classes = files[0].classes
    memo: dict = {}
    stream = int(hashlib.sha256(f"final:{study_name}".encode()).hexdigest()[:8], 16)

    val_images = [_images(data_dir, f.sets["val"], memo) for f in files]
    val_labels = [[p.label for p in f.sets["val"]] for f in files]
    cands = {}
    for name in pp.POSTPROCESSING.names():
        res = [_score("val", im, lab, name, cfg, classes) for im, lab in zip(val_images, val_labels)]
        cands[name] = _summary(res)
    chosen, qualifies = pp.choose(cands)
    posts = list(dict.fromkeys(["none", chosen]))
    candidates = [
        {"name": n, "description": pp.describe(n), **cands[n], "qualifies": qualifies[n], "chosen": n == chosen}
        for n in pp.POSTPROCESSING.names()
    ]

    test: dict[str, list[dict]] = {}
    with_test = [f for f in files if f.sets.get("test")]
    for k, post in enumerate(posts):
        if with_test:
            res = [
                _score(
                    "test",
                    _images(data_dir, f.sets["test"], memo),
                    [p.label for p in f.sets["test"]],
                    post,
                    cfg,
                    classes,
                )
                for f in with_test
            ]
            test[post] = _rows(res, [int(seed), 3, stream, k])

    ensemble = None
    if len(files) >= 2:
        ev_val, val_note = _ensemble(files, "val", data_dir, memo, cfg, classes, posts)
        ev_test, test_note = _ensemble(files, "test", data_dir, memo, cfg, classes, posts) if with_test else (None, "")
        ensemble = {
            "n_runs": len(files),
            "val": None if ev_val is None else {p: _summary([r]) for p, r in ev_val.items()},
            "val_note": val_note,
            "test": None
            if ev_test is None
            else {p: _rows([r], [int(seed), 4, stream, k]) for k, (p, r) in enumerate(ev_test.items())},
            "test_note": test_note,
        }
    return {
        **base,
        "chosen": chosen,
        "chosen_description": pp.describe(chosen),
        "candidates": candidates,
        "test": test,
        "ensemble": ensemble,
        "note": "",
    }


def chosen_postprocessing(study_dir: Path) -> str:
    """The post-processing chosen for a study's selected model: ``final.chosen`` of
    ``<study_dir>/table.json`` ("none" for a table.json written before post-processing was chosen).
    `predict` passes it to `postprocess.apply_postprocessing`."""
    path = Path(study_dir) / TABLE_JSON
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} not found: run the study's aggregation first") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    name = (table.get("final") or {}).get("chosen") or "none"
    if name not in pp.POSTPROCESSING:
        raise DataError(f"{path}: final.chosen '{name}' is no post-processing of this segsweep")
    return name


def final_of(table: Mapping) -> dict | None:
    """table.json's ``final`` object (None for older files)."""
    return table.get("final")
