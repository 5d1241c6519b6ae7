"""The report's Test set section: selection on validation only, test numbers with patient-level bootstrap
intervals, the validation-vs-test figure, and the warning when no test set was held out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from fixtures_results import aggregate, built_fixture, make_results

from segsweep.analysis.configs import config_groups
from segsweep.analysis.ranking import ranked
from segsweep.analysis.runs import read_cells_csv
from segsweep.analysis.testset import patient_bootstrap, selected_test, split_has_test
from segsweep.training.record import CellMetrics

TEST_FRACTION = 0.4  # 8 fixture patients: 3 test, 2 validation, 3 in the pool


@pytest.fixture(scope="module")
def fxt(tmp_path_factory):
    return aggregate(make_results(tmp_path_factory.mktemp("fixture_test"), test_fraction=TEST_FRACTION))


@pytest.fixture(scope="module")
def html(fxt, tmp_path_factory):
    return fxt.render(tmp_path_factory.mktemp("report_test") / "report.html")


def _section(html: str, anchor: str) -> str:
    sec = html[html.index(f'<section id="{anchor}"') :]
    return sec[: sec.index("</section>")]


def _groups(fx, name):
    study = fx.study(name)
    df = read_cells_csv(fx.results / "studies" / name / "cells.csv", study.axes)
    return study, config_groups(study, df)


def test_split_files_hold_disjoint_test_patients(fxt):
    for p in (fxt.results / "splits").glob("*.json"):
        sp = json.loads(p.read_text())
        test = set(sp["test"])
        assert len(test) == 3 and not test & (set(sp["val"]) | set(sp["pool"]))
        for f in sp["folds"]:
            assert not test & (set(f["val"]) | set(f["pool"]))
    assert split_has_test(sorted((fxt.results / "splits").glob("*.json")))


def test_section_order_and_content(html, fxt):
    # main part: studies, test set, failures; then the appendix (secondary metrics, provenance)
    order = [
        html.index(f'<section id="{s}"')
        for s in ("study-optimizer_lr", "test-set", "failures", "secondary", "provenance")
    ]
    assert order == sorted(order) and 'href="#test-set"' in html
    assert 'id="no-test-set"' not in html
    sec = _section(html, "test-set")
    for s in fxt.studies:
        assert f"<h3>{s.title}</h3>" in sec
    assert "native pixel grid" in sec and "3 test patients" in sec and "95 % percentile bootstrap" in sec
    # the figure sits in the Test set section, not in the study sections
    assert sec.count('class="fig-val_vs_test"') == len(fxt.studies)
    assert 'class="fig-val_vs_test"' not in _section(html, "study-optimizer_lr")


def test_selected_configuration_is_the_validation_best_with_its_test_numbers(fxt):
    study, groups = _groups(fxt, "optimizer_lr")
    best = ranked(groups, True)[0]
    sel = selected_test(study.name, groups, True, fxt.results / "cells", seed=0)
    assert sel["group"]["config"] == best["config"] == "optimizer=adam, lr=0.001"
    tests = [CellMetrics.read(fxt.results / "cells" / r["cell"] / "metrics.json").test for r in best["runs"]]
    row = {r["key"]: r for r in sel["rows"]}
    assert row["dice_patient"]["value"] == pytest.approx(np.mean([t["dice_patient"] for t in tests]))
    assert row["dice"]["value"] == pytest.approx(np.mean([t["dice"] for t in tests]))
    assert sel["n_runs"] == 3 and sel["n_patients"] == 3
    for key in ("dice_patient", "nsd_patient"):
        lo, hi = row[key]["ci"]
        assert 0.0 <= lo <= row[key]["value"] <= hi <= 1.0
    assert row["dice"]["ci"] is None  # per slice: a point value


def test_test_numbers_never_choose(fxt, tmp_path):
    """Make the runner-up look perfect on the test set: the selection does not move."""
    study, groups = _groups(fxt, "optimizer_lr")
    best, second = ranked(groups, True)[:2]
    saved = {}
    for r in second["runs"]:
        p = fxt.results / "cells" / r["cell"] / "metrics.json"
        if p.exists():
            saved[p] = p.read_text()
            m = json.loads(saved[p])
            if m.get("test"):
                m["test"] = {**m["test"], "dice_patient": 1.0, "dice": 1.0}
            p.write_text(json.dumps(m))
    try:
        sel = selected_test(study.name, groups, True, fxt.results / "cells", seed=0)
        assert sel["group"]["config"] == best["config"]
    finally:
        for p, text in saved.items():
            p.write_text(text)


def test_patient_bootstrap():
    assert patient_bootstrap([0.7, 0.8], seed=0) is None  # fewer than 3 patients: no interval
    assert patient_bootstrap([0.5, 0.5, 0.5], seed=0) == (0.5, 0.5)
    x = [0.2, 0.9, 0.95, 0.97]
    lo, hi = patient_bootstrap(x, seed=1)
    assert min(x) <= lo < np.mean(x) < hi <= max(x)  # a mean of observed values: inside their range
    assert patient_bootstrap(x, seed=1) == (lo, hi)  # seeded: reproducible
    y = list(np.random.default_rng(0).uniform(0.6, 0.9, 12))
    assert patient_bootstrap(y, seed=1) != patient_bootstrap(y, seed=2)


def test_figure_caption_and_axis(fxt):
    figs = json.loads((fxt.results / "studies" / "optimizer_lr" / "figures" / "figures.json").read_text())["figures"]
    f = next(f for f in figs if f["kind"] == "val_vs_test")
    assert "held-out test patients" in f["caption"] and re.search(r"for the \d best configurations", f["caption"])


def test_no_test_set_warns(tmp_path_factory):
    fx = built_fixture(tmp_path_factory)  # the default fixture holds out no test patients
    html = fx.render(tmp_path_factory.mktemp("report_no_test") / "report.html")
    assert 'id="no-test-set"' in html and "No test set was held out" in _section(html, "test-set")
    assert 'class="fig-val_vs_test"' not in html
    assert not (fx.results / "studies" / "optimizer_lr" / "figures" / "val_vs_test.svg").exists()


def test_a_table_cannot_rank_by_test_numbers():
    import yaml

    from segsweep.errors import ConfigError
    from segsweep.plan import config as sc

    cfg = yaml.safe_load((Path(__file__).parent / "e2e" / "tiny_config.yaml").read_text())
    cfg["studies"]["tiny"]["table"]["value"] = "test_dice"
    with pytest.raises(ConfigError, match="studies.tiny.table.value"):
        sc.prepare(cfg)
    cfg["studies"]["tiny"]["table"]["value"] = "val_dice_patient"  # validation, native, per patient: fine
    assert sc.prepare(cfg)["studies"]["tiny"]["table"]["value"] == "val_dice_patient"


def test_test_interval_crosses_runs_and_patients(tmp_path):
    """The hand-computed case of tests/test_stats.py (2 runs × 3 patients) read from cell files: the Test set
    interval is the validation tables' interval (runs × patients crossed), not a bootstrap of run means."""
    per_run = {"a": [0.9, 0.9, 0.9], "b": [0.0, 0.6, 0.9]}
    runs = []
    for i, (cell, values) in enumerate(per_run.items()):
        d = tmp_path / cell
        d.mkdir()
        mean = float(np.mean(values))
        test = {"dice_patient": mean, "dice": mean, "hd95_mm_patient": 1.0, "nsd_patient": mean}
        test.update(n_patients=3, n_slices=6, n_one_empty=0, n_excluded_both_empty=0)
        CellMetrics(cell=cell, status="ok", val_dice_patient=0.8, test=test).write(d / "metrics.json")
        rows = ["set,patient,n_slices,dice,iou,hd95_mm,nsd"]
        rows += [f"test,q{j},2,{v},{v},1.0,{v}" for j, v in enumerate(values)]
        (d / "per_patient.csv").write_text("\n".join(rows) + "\n")
        runs.append({"repeat": i, "fold": None, "cell": cell, "status": "ok", "value": 0.8})
    groups = [{"config": "x", "labels": {}, "runs": runs, "status": "ok", "mean": 0.8, "n": 2}]
    sel = selected_test("s", groups, True, tmp_path, seed=0)
    row = {r["key"]: r for r in sel["rows"]}
    assert row["dice_patient"]["value"] == pytest.approx(0.7)
    assert row["dice_patient"]["ci"] == pytest.approx((0.2, 0.9))
    assert row["dice_patient"]["units"] == "2 runs × 3 patients"
    assert row["hd95_mm_patient"]["ci"] == pytest.approx((1.0, 1.0))


FINAL = {
    "configuration": "optimizer=adam, lr=0.001",
    "cells": ["a", "b"],
    "n_runs": 2,
    "rule": "RULE TEXT",
    "chosen": "largest_2d",
    "chosen_description": "largest connected component per slice (each class)",
    "candidates": [
        {
            "name": "none",
            "description": "no post-processing",
            "dice_patient": 0.88,
            "hd95_mm_patient": 39.4,
            "nsd_patient": 0.64,
            "qualifies": False,
            "chosen": False,
        },
        {
            "name": "largest_2d",
            "description": "largest connected component per slice (each class)",
            "dice_patient": 0.89,
            "hd95_mm_patient": 3.0,
            "nsd_patient": 0.73,
            "qualifies": True,
            "chosen": True,
        },
    ],
    "test": {
        post: [
            {
                "key": k,
                "label": k,
                "value": v,
                "ci_low": v * 0.9,
                "ci_high": v * 1.1,
                "units": "2 runs × 3 patients",
                "note": "",
            }
            for k, v in (("dice_patient", 0.8), ("hd95_mm_patient", h), ("nsd_patient", 0.7))
        ]
        for post, h in (("none", 39.41), ("largest_2d", 2.97))
    },
    "ensemble": {
        "n_runs": 2,
        "val": {
            "none": {"dice_patient": 0.9, "hd95_mm_patient": 5.0, "nsd_patient": 0.8},
            "largest_2d": {"dice_patient": 0.9, "hd95_mm_patient": 2.0, "nsd_patient": 0.8},
        },
        "val_note": "",
        "test": None,
        "test_note": "not every run has test predictions",
    },
    "note": "",
}


def test_post_processing_and_ensemble_rows(fxt, tmp_path):
    path = fxt.results / "studies" / "optimizer_lr" / "table.json"
    saved = path.read_text()
    path.write_text(json.dumps({**json.loads(saved), "final": FINAL}))
    try:
        html = fxt.render(tmp_path / "report.html")
    finally:
        path.write_text(saved)
    # the main part names the choice; its candidates and the ensemble are in the appendix
    assert "largest connected component per slice (each class)</strong>" in _section(html, "test-set")
    sec = _section(html, "postprocessing")
    assert "Post-processing and ensemble" in sec and "RULE TEXT" in sec
    assert "largest connected component per slice (each class)</strong>" in sec
    assert "39.41 (35.47–43.35)" in sec and "2.97 (2.67–3.27)" in sec  # before and after, with intervals
    assert "ensemble of 2 runs, raw" in sec and "not every run has test predictions" in sec
    assert "(used)" in sec and "(chosen)" in sec
