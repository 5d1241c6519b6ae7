"""Aggregation of a study: per-run table, layout table, status markers (values checked by hand)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from fixtures_results import HAND_CHECKED, built_fixture

from segsweep.analysis.aggregate import aggregate_study
from segsweep.analysis.configs import config_groups
from segsweep.analysis.intervals import patient_values, summarize
from segsweep.analysis.pivot import pivot
from segsweep.analysis.runs import NO_METRICS_REASON, read_cell, read_cells_csv
from segsweep.data.splits import n_train
from segsweep.errors import DataError
from segsweep.labels import fraction_label, metric_range
from segsweep.study import Study, StudyCell, TableLayout


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return built_fixture(tmp_path_factory)


def _table(fx, name):
    return json.loads((fx.results / "studies" / name / "table.json").read_text())


def _cell(table, row_label: dict, col_label: dict):
    i = next(k for k, r in enumerate(table["rows"]) if r["labels"] == row_label)
    j = next(k for k, c in enumerate(table["cols"]) if c["labels"] == col_label)
    return table["cells"][i][j]


def test_summarize_by_hand():
    s = summarize([0.80, 0.82, 0.84], value="best_val_dice")
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(0.82)
    assert s["sd"] == pytest.approx(0.02)
    # bootstrap over 3 runs: all three draws are the smallest run with probability 1/27 = 3.7 % > 2.5 % (and
    # likewise the largest), so the percentile interval is [min, max] — where the t-interval was 0.770–0.870
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((0.80, 0.84))
    assert s["ci_unit"] == "runs" and s["ci_runs"] == 3
    one = summarize([0.7])
    assert one["mean"] == 0.7 and one["sd"] is None and one["ci_low"] is None
    assert one["ci_note"] == "no interval: 1 run and no per-patient values, needs ≥ 3 runs"
    # n = 2 gave the t-interval 0.432–1.448 (outside [0, 1]); two runs are too few to resample
    two = summarize([0.90, 0.98], value="best_val_dice")
    assert two["ci_low"] is None and two["ci_note"].startswith("no interval: 2 runs")
    flat = summarize([0.7, 0.7, 0.7, 0.7])
    assert (flat["ci_low"], flat["ci_high"]) == (0.7, 0.7)  # a constant sample: the interval is the value
    assert summarize([])["n"] == 0


def test_cells_csv_one_row_per_run_with_string_labels(fx):
    study = fx.study("optimizer_lr")
    path = fx.results / "studies" / "optimizer_lr" / "cells.csv"
    raw = path.read_text()
    assert ",0.0001," in raw  # the label as the config names it, not 1e-04
    df = read_cells_csv(path, study.axes)
    assert len(df) == len(study.cells) == 18
    assert list(df.columns[:4]) == ["optimizer", "lr", "repeat", "fold"]
    for col in (
        "cell",
        "status",
        "reason",
        "best_val_dice",
        "best_epoch",
        "final_val_dice",
        "best_val_iou",
        "best_val_hd95_mm",
        "epochs_run",
        "wall_s",
        "device",
        "hardware",
    ):
        assert col in df.columns
    assert set(df["lr"]) == {"0.0001", "0.001", "0.01"}
    assert df["status"].value_counts().to_dict() == {"ok": 13, "diverged": 4, "failed": 1}


def test_hand_checked_mean_sd_n_ci(fx):
    t = _table(fx, HAND_CHECKED["study"])
    x = _cell(t, {"optimizer": "adam"}, {"lr": "0.001"})
    assert x["status"] == "ok" and x["n"] == 3 and x["n_total"] == 3
    assert x["mean"] == pytest.approx(0.82)
    assert x["sd"] == pytest.approx(0.02)
    # 3 runs, but the holdout validates on 2 patients: too few units for an interval
    assert x["ci_low"] is None and x["ci_high"] is None and x["ci_unit"] is None
    assert x["ci_note"] == "no interval: 2 validation patients, needs ≥ 3"
    assert x["text"] == "0.820 ± 0.020 (3)"
    df = read_cells_csv(fx.results / "studies" / "optimizer_lr" / "cells.csv", ("optimizer", "lr"))
    runs = df[(df["optimizer"] == "adam") & (df["lr"] == "0.001")].sort_values("repeat")
    assert runs["best_val_dice"].tolist() == pytest.approx(HAND_CHECKED["values"])


def test_all_diverged_is_a_word_never_a_number(fx):
    t = _table(fx, "optimizer_lr")
    x = _cell(t, {"optimizer": "sgd"}, {"lr": "0.01"})
    assert x["status"] == "diverged" and x["text"] == "diverged"
    assert x["mean"] is None and x["n"] == 0 and x["n_diverged"] == 3
    csv = pd.read_csv(fx.results / "studies" / "optimizer_lr" / "table.csv", dtype=str)
    row = csv[csv["optimizer"] == "sgd"].iloc[0]
    assert row["lr=0.01"] == "diverged"


def test_partial_mean_over_ok_runs_with_note(fx):
    t = _table(fx, "optimizer_lr")
    x = _cell(t, {"optimizer": "adam"}, {"lr": "0.01"})  # seed 1 diverged; seeds 0 and 2 give 0.75, 0.79
    assert x["status"] == "partial" and x["n"] == 2 and x["n_total"] == 3
    assert x["mean"] == pytest.approx(0.77)
    assert x["sd"] == pytest.approx(math.sqrt(((0.75 - 0.77) ** 2 + (0.79 - 0.77) ** 2) / 1))
    assert x["note"] == "1 of 3 diverged"
    csv = pd.read_csv(fx.results / "studies" / "optimizer_lr" / "table.csv", dtype=str)
    assert csv[csv["optimizer"] == "adam"].iloc[0]["lr=0.01"] == "0.770 ± 0.028 (2); 1 of 3 diverged"


def test_missing_metrics_is_failed_with_log_tail(fx):
    df = read_cells_csv(fx.results / "studies" / "optimizer_lr" / "cells.csv", fx.study("optimizer_lr").axes)
    crashed = df[(df["optimizer"] == "sgd") & (df["lr"] == "0.0001") & (df["repeat"] == 2)].iloc[0]
    assert crashed["status"] == "failed" and crashed["reason"] == NO_METRICS_REASON
    assert "RuntimeError" in crashed["log_tail"]
    assert not (fx.results / "cells" / crashed["cell"] / "metrics.json").exists()
    x = _cell(_table(fx, "optimizer_lr"), {"optimizer": "sgd"}, {"lr": "0.0001"})
    assert x["status"] == "partial" and x["note"] == "1 of 3 failed" and x["n"] == 2


def test_best_flags(fx):
    t = _table(fx, "optimizer_lr")
    best = [
        (r["labels"], c["labels"])
        for r, line in zip(t["rows"], t["cells"])
        for c, x in zip(t["cols"], line)
        if x["best_overall"]
    ]
    assert best == [({"optimizer": "adam"}, {"lr": "0.001"})]
    assert _cell(t, {"optimizer": "sgd"}, {"lr": "0.001"})["best_in_row"]
    assert not _cell(t, {"optimizer": "sgd"}, {"lr": "0.0001"})["best_in_row"]
    assert _cell(t, {"optimizer": "adam"}, {"lr": "0.0001"})["best_in_col"]
    assert t["best"]["config"] == "optimizer=adam, lr=0.001"
    assert (t["n_runs"], t["n_ok"], t["n_diverged"], t["n_failed"]) == (18, 13, 4, 1)


def test_folds_and_failed_with_metrics(fx):
    study = fx.study("schedules")
    df = read_cells_csv(fx.results / "studies" / "schedules" / "cells.csv", study.axes)
    assert sorted(df["fold"].unique().tolist()) == [0, 1, 2]
    t = _table(fx, "schedules")
    assert t["col_axes"] == [] and [c["label"] for c in t["cols"]] == ["best_val_dice"]
    x = _cell(t, {"schedule": "cosine"}, {})
    assert x["status"] == "partial" and x["note"] == "1 of 3 failed"
    failed = df[df["status"] == "failed"].iloc[0]
    assert failed["reason"] == "out of memory (RuntimeError)"
    # no best-in-row marks in a one-column table: every cell would be "best in its row"
    assert not any(x["best_in_row"] for line in t["cells"] for x in line)


def test_empty_layout_puts_axes_on_rows_sorted(fx):
    t = _table(fx, "random_search")
    assert t["row_axes"] == ["lr", "weight_decay"] and len(t["cols"]) == 1
    lrs = [float(r["labels"]["lr"]) for r in t["rows"]]
    assert lrs == sorted(lrs) and len(t["rows"]) == 40
    assert sum(x["status"] == "diverged" for line in t["cells"] for x in line) == 6


def test_shared_cells_read_identically(fx):
    a = read_cells_csv(fx.results / "studies" / "optimizer_lr" / "cells.csv", ("optimizer", "lr"))
    b = read_cells_csv(fx.results / "studies" / "fraction_loss" / "cells.csv", ("loss", "fraction"))
    shared = set(a["cell"]) & set(b["cell"])
    assert len(shared) == 2  # (dice, 1.0) repeats 0 and 1 are (adam, 0.001) repeats 0 and 1
    for c in shared:
        assert a[a["cell"] == c]["best_val_dice"].iloc[0] == b[b["cell"] == c]["best_val_dice"].iloc[0]


def _write_metrics(cells_dir, cid, status, dice):
    d = cells_dir / cid
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(
        json.dumps({"cell": cid, "status": status, "reason": "", "best_val_dice": dice, "epochs_run": 3})
    )


def test_oneway_layout_marks_missing_combinations(tmp_path):
    cells = tmp_path / "cells"
    rows = []
    for cid, opt, lr, dice in (("c1", "adam", "0.001", 0.8), ("c2", "adam", "0.01", 0.7), ("c3", "sgd", "0.001", 0.6)):
        _write_metrics(cells, cid, "ok", dice)
        rows.append(StudyCell(cid, (("optimizer", opt), ("lr", lr)), 0, None))
    study = Study(
        "ow",
        "One way",
        "",
        "oneway",
        ("optimizer", "lr"),
        TableLayout(rows=("optimizer",), cols=("lr",), value="best_val_dice"),
        tuple(rows),
        {"optimizer": ("adam", "sgd"), "lr": ("0.001", "0.01")},
    )
    aggregate_study(study, cells, tmp_path / "out")
    t = json.loads((tmp_path / "out" / "table.json").read_text())
    x = _cell(t, {"optimizer": "sgd"}, {"lr": "0.01"})
    assert x["status"] == "missing" and x["text"] == "–" and x["mean"] is None
    assert _cell(t, {"optimizer": "adam"}, {"lr": "0.001"})["best_overall"]


def test_lower_is_better_value(tmp_path):
    cells = tmp_path / "cells"
    rows = []
    for cid, opt, hd in (("c1", "adam", 3.0), ("c2", "sgd", 5.0)):
        d = cells / cid
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(
            json.dumps({"cell": cid, "status": "ok", "best_val_dice": 0.5, "best_val_hd95_mm": hd})
        )
        rows.append(StudyCell(cid, (("optimizer", opt),), 0, None))
    study = Study(
        "hd",
        "HD",
        "",
        "grid",
        ("optimizer",),
        TableLayout(rows=(), cols=("optimizer",), value="best_val_hd95_mm", higher_is_better=False),
        tuple(rows),
        {"optimizer": ("adam", "sgd")},
    )
    aggregate_study(study, cells, tmp_path / "out")
    t = json.loads((tmp_path / "out" / "table.json").read_text())
    assert _cell(t, {}, {"optimizer": "adam"})["best_overall"]
    assert _cell(t, {}, {"optimizer": "adam"})["text"] == "3.00 (1)"


def test_unknown_table_value_names_the_key(tmp_path):
    _write_metrics(tmp_path / "cells", "c1", "ok", 0.8)
    study = Study(
        "s",
        "S",
        "",
        "grid",
        ("lr",),
        TableLayout(rows=("lr",), cols=(), value="best_val_dcie"),
        (StudyCell("c1", (("lr", "0.1"),), 0, None),),
        {"lr": ("0.1",)},
    )
    with pytest.raises(DataError, match=r"studies\.s\.table\.value"):
        aggregate_study(study, tmp_path / "cells", tmp_path / "out")


def test_invalid_status_names_the_file(tmp_path):
    _write_metrics(tmp_path, "c1", "exploded", None)
    with pytest.raises(DataError, match="c1/metrics.json"):
        read_cell("c1", tmp_path)


def test_non_ok_values_are_never_averaged(tmp_path):
    _write_metrics(tmp_path / "cells", "c1", "diverged", 0.9)  # a stray number next to a bad status
    _write_metrics(tmp_path / "cells", "c2", "ok", 0.5)
    study = Study(
        "s",
        "S",
        "",
        "grid",
        ("lr",),
        TableLayout(rows=("lr",), cols=(), value="best_val_dice"),
        (StudyCell("c1", (("lr", "0.1"),), 0, None), StudyCell("c2", (("lr", "0.1"),), 1, None)),
        {"lr": ("0.1",)},
    )
    df = aggregate_study(study, tmp_path / "cells", tmp_path / "out")
    g = config_groups(study, df)[0]
    assert g["mean"] == 0.5 and g["note"] == "1 of 2 diverged"
    assert pivot(study, [g])["cells"][0][0]["status"] == "partial"


def test_analysis_imports_are_top_level_and_acyclic():
    """Every segsweep import in analysis/ is at module level, and analysis modules form no import cycle."""
    import ast
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1] / "src" / "segsweep" / "analysis"
    graph: dict[str, set[str]] = {}
    for path in sorted(pkg.glob("*.py")):
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        deps = graph.setdefault(path.stem, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segsweep"):
                assert id(node) in top or node.module == "segsweep.study", f"{path.name}:{node.lineno}"
                assert not node.module.startswith(("segsweep.report", "segsweep.plan")), f"{path.name}:{node.lineno}"
                if node.module.startswith("segsweep.analysis."):
                    deps.add(node.module.rsplit(".", 1)[1])
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("segsweep") for a in node.names) or id(node) in top

    def visit(mod: str, stack: tuple[str, ...]) -> None:
        assert mod not in stack, f"import cycle: {' -> '.join(stack + (mod,))}"
        for dep in graph.get(mod, ()):
            visit(dep, stack + (mod,))

    for mod in graph:
        visit(mod, ())


# ------------------------------------------------------------------ fraction sizes and per-patient values
def test_fraction_labels_by_hand():
    assert n_train(12, 0.2) == 2 and n_train(12, 0.4) == 5  # round(2.4), round(4.8)
    assert fraction_label([(2, 12)]) == "17 % (2 of 12 patients)"  # the real share, not the requested 20 %
    assert fraction_label([(5, 12)]) == "42 % (5 of 12 patients)"
    assert fraction_label([(12, 12)]) == "100 % (12 of 12 patients)"
    assert fraction_label([(2, 5), (2, 6)]) == "33–40 % (2 of 5–6 patients)"  # folds with different pools
    assert metric_range("best_val_dice") == (0.0, 1.0) and metric_range("val_nsd") == (0.0, 1.0)
    assert metric_range("best_val_hd95_mm") == (0.0, math.inf)


def test_fixture_fraction_axis_shows_real_sizes(fx):
    # 8 patients, val_fraction 0.25: pool of 6; fractions 0.25, 0.5, 1 → 2 (round(1.5)), 3, 6 patients
    csv = pd.read_csv(fx.results / "studies" / "fraction_loss" / "table.csv", dtype=str)
    assert list(csv.columns) == [
        "loss",
        "fraction=33 % (2 of 6 patients)",
        "fraction=50 % (3 of 6 patients)",
        "fraction=100 % (6 of 6 patients)",
    ]
    t = _table(fx, "fraction_loss")
    assert [c["labels"] for c in t["cols"]] == [{"fraction": "0.25"}, {"fraction": "0.5"}, {"fraction": "1"}]
    raw = (fx.results / "studies" / "fraction_loss" / "cells.csv").read_text()
    assert ",0.25," in raw and "of 6 patients" not in raw  # cells.csv keeps the config's labels


def _per_image(d, rows, native=False):
    cols = ["patient", "slice", "dice", "iou", "hd95_mm"] + (["set", "native_dice", "empty"] if native else [])
    pd.DataFrame(rows, columns=cols).to_csv(d / "per_image.csv", index=False)


def test_patient_values_pick_the_rows_that_make_the_value(tmp_path):
    d = tmp_path / "c1"
    d.mkdir()
    rows = [  # val: patient a 0.8, 0.6 (mean 0.7), b 0.9; a test row and a both-empty slice must not count
        ["a", 0, 0.8, 0.7, 2.0, "val", 0.75, ""],
        ["a", 1, 0.6, 0.5, "", "val", 0.65, "one"],
        ["b", 0, 0.9, 0.8, 1.0, "val", 0.95, ""],
        ["b", 1, 1.0, 1.0, "", "val", 1.0, "both"],
        ["t", 0, 0.1, 0.1, 9.0, "test", 0.1, ""],
    ]
    _per_image(d, rows, native=True)
    pv = patient_values(d, "best_val_dice", (0.8 + 0.6 + 0.9 + 1.0) / 4)
    assert pv["ids"] == ["a", "b"] and list(pv["values"]) == pytest.approx([0.7, 0.95])
    assert list(pv["weights"]) == [2, 2]
    hd = patient_values(d, "best_val_hd95_mm", 1.5)  # finite HD95 only: a 2.0 (1 slice), b 1.0 (1 slice)
    assert list(hd["values"]) == pytest.approx([2.0, 1.0]) and list(hd["weights"]) == [1, 1]
    native = patient_values(d, "val_dice", (0.75 + 0.65 + 0.95) / 3)  # both-empty slice left out
    assert list(native["values"]) == pytest.approx([0.7, 0.95]) and list(native["weights"]) == [2, 1]
    assert patient_values(d, "best_val_dice", 0.5) is None  # values that do not make the run's value: unused
    assert patient_values(d, "final_val_dice", 0.8) is None
    pd.DataFrame(
        [["val", "a", 2, 0.71, 0.6, 1.5, 0.9], ["val", "b", 1, 0.95, 0.9, 1.0, 1.0], ["test", "t", 1, 0.1, 0, 9, 0]],
        columns=["set", "patient", "n_slices", "dice", "iou", "hd95_mm", "nsd"],
    ).to_csv(d / "per_patient.csv", index=False)
    pp = patient_values(d, "val_dice_patient", (0.71 + 0.95) / 2)  # a mean over patients: equal weights
    assert pp["ids"] == ["a", "b"] and list(pp["weights"]) == [1, 1]


def test_aggregate_intervals_from_per_patient_values(tmp_path):
    """One run per configuration, 4 validation patients: a patient bootstrap, inside [0, 1] and the data."""
    cells = tmp_path / "cells"
    rows = []
    for cid, lr, dice in (("c1", "0.1", [0.99, 1.0, 0.97, 1.0]), ("c2", "1", [0.2, 0.4, 0.6, 1.0])):
        d = cells / cid
        d.mkdir(parents=True)
        _per_image(d, [[f"p{i}", 0, x, x, 1.0] for i, x in enumerate(dice)])
        (d / "metrics.json").write_text(json.dumps({"cell": cid, "status": "ok", "best_val_dice": sum(dice) / 4}))
        rows.append(StudyCell(cid, (("lr", lr),), 0, None))
    study = Study(
        "s",
        "S",
        "",
        "grid",
        ("lr",),
        TableLayout(rows=("lr",), cols=(), value="best_val_dice"),
        tuple(rows),
        {"lr": ("0.1", "1")},
    )
    aggregate_study(study, cells, tmp_path / "out", seed=3)
    t = json.loads((tmp_path / "out" / "table.json").read_text())
    near_one, spread = (line[0] for line in t["cells"])
    assert near_one["ci_unit"] == "patients" and near_one["ci_patients"] == 4
    assert 0.97 <= near_one["ci_low"] <= near_one["mean"] <= near_one["ci_high"] <= 1.0
    # the enumeration of tests/test_stats.py: 4 patients 0.2, 0.4, 0.6, 1.0 → [0.30, 0.85]
    assert (spread["ci_low"], spread["ci_high"]) == pytest.approx((0.30, 0.85))
    assert near_one["text"] == "0.990 (1)"  # the table's mean (n) is unchanged
