"""CellMetrics: the one definition of metrics.json (fields, file format, tolerant reading, the doc table)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from segsweep.errors import DataError
from segsweep.training import record
from segsweep.training.record import STATUSES, CellMetrics

ROOT = Path(__file__).resolve().parents[1]
KEYS = (
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
    "n_train",
    "n_val",
    "params",
)
# added by the final evaluation (issue 12, docs/evaluation.md); null in older files
ADDED_KEYS = (
    "val_dice_patient",
    "val_dice",
    "val_iou_patient",
    "val_iou",
    "val_hd95_mm_patient",
    "val_hd95_mm",
    "val_nsd_patient",
    "val_nsd",
    "val_n_slices",
    "val_n_patients",
    "val_n_excluded_both_empty",
    "val_n_one_empty",
    "test",
    "evaluation",
    "execution",  # amp / channels_last / threads (issue 13)
    "val_collapse",  # the check behind status collapsed (issue 13)
    "val_per_class",  # multi-class targets (issue 12)
)


def _ok() -> CellMetrics:
    return CellMetrics(
        cell="0123456789ab",
        status="ok",
        reason=None,
        best_val_dice=0.8125,
        best_epoch=7,
        final_val_dice=0.8,
        best_val_iou=0.7,
        best_val_hd95_mm=None,
        epochs_run=12,
        wall_s=3.25,
        n_train=12,
        n_val=4,
        device="cpu",
        hardware="Some CPU (1 thread)",
        params={"lr": 0.001, "loss": [{"name": "dice", "weight": 1.0}]},
    )


def test_fields_are_todays_keys_each_documented():
    assert set(record.FIELDS) == set(KEYS + ADDED_KEYS) and STATUSES == ("ok", "collapsed", "diverged", "failed")
    assert record.OBJECT_FIELDS == ("params", "execution", "test", "evaluation", "val_collapse", "val_per_class")
    assert {k for k in ADDED_KEYS if k.startswith("val_") and k not in record.OBJECT_FIELDS} <= set(
        record.QUALITY_FIELDS
    )
    for f in dataclasses.fields(CellMetrics):
        assert f.metadata["doc"] and f.metadata["json"], f.name
    assert set(record.QUALITY_FIELDS) <= set(record.NUMERIC_FIELDS)
    assert "device" not in record.NUMERIC_FIELDS and "params" not in record.NUMERIC_FIELDS
    with pytest.raises(dataclasses.FrozenInstanceError):
        _ok().status = "failed"
    with pytest.raises(ValueError, match="status"):
        CellMetrics(cell="x", status="crashed")


def test_file_format_is_sorted_indented_json(tmp_path):
    m = _ok()
    m.write(tmp_path / "metrics.json")
    # byte for byte what train_cell wrote before the record existed (write_json of the plain dict), plus the
    # keys added since, null here
    expected = dict(zip(KEYS, (getattr(m, k) for k in KEYS))) | dict.fromkeys(ADDED_KEYS)
    expected = json.dumps(expected, indent=2, sort_keys=True) + "\n"
    assert (tmp_path / "metrics.json").read_text() == expected
    assert CellMetrics.read(tmp_path / "metrics.json") == m


def test_read_is_tolerant_of_old_files(tmp_path):
    p = tmp_path / "metrics.json"
    p.write_text(json.dumps({"cell": "c1", "status": "diverged", "reason": "nan", "extra": 1}))
    m = CellMetrics.read(p)
    assert (m.cell, m.status, m.reason) == ("c1", "diverged", "nan")
    assert all(getattr(m, k) is None for k in KEYS[3:])
    for bad in ({"cell": "c1"}, {"status": "crashed"}, ["ok"]):
        p.write_text(json.dumps(bad))
        with pytest.raises(DataError, match="'status' must be one of ok, collapsed, diverged, failed"):
            CellMetrics.read(p)
    p.write_text("{")
    with pytest.raises(json.JSONDecodeError):
        CellMetrics.read(p)


def test_architecture_doc_holds_the_generated_table():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = record.markdown_table()
    assert doc.count(record.DOC_BEGIN) == 1 and doc.count(record.DOC_END) == 1
    start = doc.rindex("\n", 0, doc.index(record.DOC_BEGIN)) + 1
    end = doc.index("\n", doc.index(record.DOC_END)) + 1
    assert doc[start:end] == table, "run: python -m segsweep.training.record docs/architecture.md"
    for k in KEYS:
        assert f"| `{k}` |" in table


def test_update_doc_rewrites_only_the_block(tmp_path):
    p = tmp_path / "a.md"
    p.write_text(f"before\n  {record.DOC_BEGIN}\n  | stale |\n  {record.DOC_END}\nafter\n")
    assert record.update_doc(p) is True
    assert p.read_text() == "before\n" + record.markdown_table() + "after\n"
    assert record.update_doc(p) is False


def test_record_module_does_not_import_torch():
    code = "import sys, segsweep.training.record, segsweep.analysis.aggregate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
