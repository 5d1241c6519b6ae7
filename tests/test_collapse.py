"""Status `collapsed` (issue 13): a finite-loss run whose chosen model predicts (almost) nothing or (almost)
everything on the validation slices that contain the structure. The rule on hand-made arrays, then what
aggregation and the report make of such a run (docs/evaluation.md, "Collapsed runs")."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_results import render

from segsweep.analysis.aggregate import aggregate_study
from segsweep.analysis.configs import config_groups
from segsweep.data import preprocess as pre
from segsweep.study import Study, StudyCell, TableLayout
from segsweep.training.evaluate import (
    EvalImages,
    EvaluationConfig,
    collapse_reason,
    collapse_stats,
    collapse_way,
    evaluate_set,
)
from segsweep.training.metrics import score_slice
from segsweep.training.record import COLLAPSE_EMPTY_RATIO, COLLAPSE_FULL_COVERAGE, STATUSES

H, W = 20, 16


def _images(masks: list[np.ndarray], spacing=(1.5, 1.5)) -> EvalImages:
    """Network grid = native grid (no resampling), one patient."""
    out = EvalImages()
    for i, m in enumerate(masks):
        out.patient.append("p00000001")
        out.slice.append(i)
        out.image.append(m.astype(np.float32))
        out.mask.append(m.astype(np.uint8))
        out.spacing.append(np.asarray(spacing, float))
        out.native_mask.append(m.astype(np.uint8))
        out.native_spacing.append(np.asarray(spacing, float))
        out.geometry.append(pre.Geometry(m.shape, m.shape, m.shape))
    return out


def _masks() -> list[np.ndarray]:
    """Three slices with a 4×5 and a 6×4 rectangle (20 + 24 reference pixels) and one empty slice."""
    a, b = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
    a[5:9, 4:9] = 1
    b[10:16, 6:10] = 1
    return [a, b, np.zeros((H, W), np.uint8)]


def _constant(value: float):
    return lambda x: np.full(x.shape, value, np.float32)


def test_constant_predictors_are_detected_by_hand():
    images, cfg = _images(_masks()), EvaluationConfig()
    # all zero: nothing predicted on the two slices with a reference
    empty = evaluate_set("val", images, _constant(-10.0), cfg).collapse["foreground"]
    assert empty == {"area_ratio": 0.0, "coverage": 0.0, "n_slices": 2}
    assert collapse_way(empty) == "empty"
    # all one: 2 × 320 predicted pixels over 44 reference pixels, every pixel of those two slices
    full = evaluate_set("val", images, _constant(10.0), cfg).collapse["foreground"]
    assert full["area_ratio"] == pytest.approx(640 / 44) and full["coverage"] == 1.0 and full["n_slices"] == 2
    assert collapse_way(full) == "full"
    # the reference itself: neither
    exact = evaluate_set("val", images, lambda x: np.where(x > 0.5, 10.0, -10.0).astype(np.float32), cfg)
    assert exact.collapse["foreground"] == {"area_ratio": 1.0, "coverage": pytest.approx(44 / 640), "n_slices": 2}
    assert collapse_way(exact.collapse["foreground"]) is None and collapse_reason(exact.collapse) is None

    r = collapse_reason({"foreground": empty})
    assert r.startswith("collapsed to empty: predicted area 0.0 % of the reference area")
    assert "2 validation slices that contain the structure" in r
    r = collapse_reason({"foreground": full})
    assert r.startswith("collapsed to full: the prediction covers 100.0 % of the pixels") and "14.5 ×" in r


def test_thresholds_at_their_edges():
    spacing = (2.0, 1.0)  # areas in mm²: the rule compares areas, not pixel counts
    ref = np.zeros((10, 10), bool)
    ref[:, :4] = True  # 40 pixels
    area = [10 * 10 * 2.0]

    def stats(n_pred: int) -> dict:
        pred = np.zeros(100, bool)
        pred[:n_pred] = True
        return collapse_stats([score_slice(pred.reshape(10, 10), ref, spacing, tolerance_mm=2.0)], area)

    assert COLLAPSE_EMPTY_RATIO == 0.05 and COLLAPSE_FULL_COVERAGE == 0.95
    assert collapse_way(stats(1)) == "empty"  # 1/40 = 2.5 % of the reference area
    assert collapse_way(stats(2)) is None  # exactly 5 %: not below
    assert collapse_way(stats(94)) is None
    assert collapse_way(stats(95)) == "full"  # exactly 95 % of the pixels
    # a set without any reference pixel cannot be judged
    none = collapse_stats([score_slice(np.zeros((4, 4)), np.zeros((4, 4)), (1, 1), tolerance_mm=2.0)], [16.0])
    assert none == {"area_ratio": None, "coverage": None, "n_slices": 0} and collapse_way(none) is None


def test_multiclass_reason_names_the_class():
    ok = {"area_ratio": 1.1, "coverage": 0.03, "n_slices": 8}
    gone = {"area_ratio": 0.01, "coverage": 0.0005, "n_slices": 8}
    r = collapse_reason({"lv": ok, "myo": gone})
    assert r.startswith("myo collapsed to empty: predicted area 1.0 %") and "contain myo" in r and "lv" not in r


# ------------------------------------------------------------------------------- aggregation, report
def _write(cells_dir, cid, status, value, reason=""):
    d = cells_dir / cid
    d.mkdir(parents=True)
    m = {"cell": cid, "status": status, "reason": reason, "val_dice_patient": value, "epochs_run": 3}
    (d / "metrics.json").write_text(json.dumps(m))


REASON = "collapsed to full: the prediction covers 98.9 % of the pixels of the 8 validation slices"


def _study(tmp_path):
    cells = tmp_path / "results" / "cells"
    runs = [  # lr 1: both seeds collapsed (their Dice is kept but never shown); lr 0.1: one of two
        ("c1", "1", 0, "collapsed", 0.05),
        ("c2", "1", 1, "collapsed", 0.04),
        ("c3", "0.1", 0, "collapsed", 0.06),
        ("c4", "0.1", 1, "ok", 0.70),
        ("c5", "0.01", 0, "ok", 0.80),
        ("c6", "0.01", 1, "diverged", None),
    ]
    for cid, _, _, status, v in runs:
        _write(cells, cid, status, v, REASON if status == "collapsed" else "")
    study = Study(
        "s",
        "Collapse study",
        "",
        "grid",
        ("lr",),
        TableLayout(rows=(), cols=("lr",), value="val_dice_patient"),
        tuple(StudyCell(cid, (("lr", lr),), r, None) for cid, lr, r, _, _ in runs),
        {"lr": ("0.01", "0.1", "1")},
    )
    return study, cells


def test_aggregation_shows_the_word_and_counts(tmp_path):
    study, cells = _study(tmp_path)
    assert "collapsed" in STATUSES
    out = tmp_path / "results" / "studies" / "s"
    df = aggregate_study(study, cells, out)
    assert df["val_dice_patient"].isna().sum() == 4  # collapsed and diverged runs carry no number here
    g = {x["labels"]["lr"]: x for x in config_groups(study, df)}
    assert (g["1"]["status"], g["1"]["text"], g["1"]["note"], g["1"]["mean"]) == (
        "collapsed",
        "collapsed",
        "all 2 collapsed",
        None,
    )
    assert g["0.1"]["status"] == "partial" and g["0.1"]["note"] == "1 of 2 collapsed" and g["0.1"]["mean"] == 0.7
    assert g["0.01"]["note"] == "1 of 2 diverged"
    t = json.loads((out / "table.json").read_text())
    assert (t["n_ok"], t["n_collapsed"], t["n_diverged"], t["n_failed"]) == (2, 3, 1, 0)
    assert t["best"]["config"] == "lr=0.01"  # a collapsed run's 0.05 never ranks
    csv = (out / "table.csv").read_text().splitlines()
    assert csv[1].split(",")[-1] == "collapsed" and "1 of 2 collapsed" in csv[1]
    from segsweep.analysis.configs import _status

    assert _status(3, 0, 1, 0, 2) == ("collapsed/diverged", "2 collapsed, 1 diverged")


def test_report_lists_collapsed_runs_under_failures(tmp_path):
    study, cells = _study(tmp_path)
    res = tmp_path / "results"
    aggregate_study(study, cells, res / "studies" / "s")
    html = render(tmp_path / "r.html", {"title": "T"}, [study], res, tmp_path)
    failures = html[html.index('<section id="failures">') :]
    failures = failures[: failures.index("</section>")]
    assert failures.count('<span class="status">collapsed</span>') == 3 and REASON in failures
    assert "3 of 6 runs collapsed" in html  # the study's failure sentence
    assert "2 finished, 3 collapsed" in html
    assert "The best configuration is lr=0.01" in html
