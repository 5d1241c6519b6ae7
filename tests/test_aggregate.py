"""Aggregation of a study: per-run table, layout table, status markers (values checked by hand)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from fixtures_results import HAND_CHECKED, built_fixture

from segsweep.analysis.aggregate import (
    NO_METRICS_REASON,
    aggregate_study,
    config_groups,
    pivot,
    read_cell,
    read_cells_csv,
    summarize,
)
from segsweep.errors import DataError
from segsweep.study import Study, StudyCell, TableLayout

T_975_DF2 = 4.302652729911275  # Student t, 97.5th percentile, 2 degrees of freedom (tables)


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
    s = summarize([0.80, 0.82, 0.84])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(0.82)
    assert s["sd"] == pytest.approx(0.02)
    half = T_975_DF2 * 0.02 / math.sqrt(3)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((0.82 - half, 0.82 + half))
    one = summarize([0.7])
    assert one["mean"] == 0.7 and one["sd"] is None and one["ci_low"] is None
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
    half = T_975_DF2 * 0.02 / math.sqrt(3)
    assert x["ci_low"] == pytest.approx(0.82 - half) and x["ci_high"] == pytest.approx(0.82 + half)
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
        TableLayout(rows=("optimizer",), cols=("lr",)),
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
        TableLayout(rows=("lr",), cols=()),
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
