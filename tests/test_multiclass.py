"""Multi-class targets (issue 12 point 5; docs/evaluation.md, "Multi-class targets"): per-class metrics on a
hand-made case, a small softmax training run, per-class table values, and the plan-time refusal of
sigmoid-only losses. CPU, one thread, seconds."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml

from segsweep.analysis.aggregate import aggregate_study
from segsweep.analysis.configs import config_groups
from segsweep.analysis.intervals import patient_values
from segsweep.data import preprocess as pre
from segsweep.data.config import class_names
from segsweep.errors import ConfigError
from segsweep.plan.cells import build_plan
from segsweep.plan.config import cell_params, prepare
from segsweep.report.style import label_for
from segsweep.study import Study, StudyCell, TableLayout
from segsweep.training.evaluate import (
    EvalImages,
    EvaluationConfig,
    class_image_columns,
    evaluate_set,
    metrics_fields,
    per_patient_csv,
)
from segsweep.training.loop import train_cell
from segsweep.training.metrics import class_dice_iou, hd95_per_image
from segsweep.training.record import class_metric

torch.set_num_threads(1)
CLASSES = ("lv", "myo")


def _reference() -> np.ndarray:
    """12×12: LV cavity rows/cols 4–7 (16 px) inside the myocardium, the rest of rows/cols 2–9 (48 px)."""
    m = np.zeros((12, 12), np.uint8)
    m[2:10, 2:10] = 2
    m[4:8, 4:8] = 1
    return m


def _case() -> tuple[EvalImages, list[np.ndarray]]:
    """One patient, two slices of the same reference. Slice 0 predicts the cavity one column too wide (20 px,
    16 right) and the myocardium as the rest of the box (44 px, all right); slice 1 predicts the cavity
    exactly and no myocardium at all (a one-empty slice for myo)."""
    ref = _reference()
    p0 = ref.copy()
    p0[4:8, 8] = 1
    p1 = np.where(ref == 1, 1, 0).astype(np.uint8)
    out = EvalImages()
    for i, pred in enumerate((p0, p1)):
        out.patient.append("p00000001")
        out.slice.append(i)
        out.image.append(pred.astype(np.float32))  # the "image" carries the label map the fake model predicts
        out.mask.append(ref)
        out.spacing.append(np.array([1.0, 1.0]))
        out.native_mask.append(ref)
        out.native_spacing.append(np.array([1.0, 1.0]))
        out.geometry.append(pre.Geometry(ref.shape, ref.shape, ref.shape))
    return out, [p0, p1]


def _one_hot_logits(x: np.ndarray) -> np.ndarray:
    lab = np.rint(x).astype(int)
    return (10.0 * np.eye(3)[lab]).transpose(0, 3, 1, 2).astype(np.float32)  # [B,3,H,W]


def test_per_class_metrics_by_hand():
    images, _ = _case()
    res = evaluate_set("val", images, _one_hot_logits, EvaluationConfig(), CLASSES)
    lv, myo = (res.per_class[c][2] for c in CLASSES)
    # per slice: lv 2·16/(20+16) and 1; myo 2·44/(44+48) and 0 (nothing predicted: worst case, counted)
    assert lv["dice"] == pytest.approx((32 / 36 + 1.0) / 2)
    assert myo["dice"] == pytest.approx((88 / 92 + 0.0) / 2)
    assert myo["iou"] == pytest.approx((44 / 48 + 0.0) / 2) and lv["iou"] == pytest.approx((16 / 20 + 1.0) / 2)
    assert (lv["n_one_empty"], myo["n_one_empty"], myo["n_slices"]) == (0, 1, 2)
    # per patient, both slices pooled: lv 2·32/(36+32), myo 2·44/(44+96)
    assert lv["dice_patient"] == pytest.approx(64 / 68) and myo["dice_patient"] == pytest.approx(88 / 140)
    # the set's numbers are the means over the two classes
    s = res.summary
    assert s["dice_patient"] == pytest.approx((64 / 68 + 88 / 140) / 2)
    assert s["dice"] == pytest.approx((lv["dice"] + myo["dice"]) / 2)
    assert s["hd95_mm"] == pytest.approx((lv["hd95_mm"] + myo["hd95_mm"]) / 2)
    assert (s["n_slices"], s["n_patients"], s["n_one_empty"], s["n_excluded_both_empty"]) == (2, 1, 1, 0)
    # per slice rows: the mean over the classes scored on the slice, then each class
    assert res.scores[1].dice == pytest.approx(0.5) and res.scores[1].empty == "one"
    assert res.net[0][0] == pytest.approx((32 / 36 + 88 / 92) / 2)  # network grid = native grid here
    # metrics.json: the mean in val_*, the classes in val_per_class; collapse per class
    f = metrics_fields(res, None, EvaluationConfig())
    assert f["val_dice_patient"] == s["dice_patient"] and set(f["val_per_class"]) == set(CLASSES)
    assert f["val_per_class"]["myo"]["dice_patient"] == pytest.approx(88 / 140)
    assert f["val_collapse"]["myo"]["area_ratio"] == pytest.approx(44 / 96)
    # per_patient.csv: mean columns, then per class
    rows = list(csv.DictReader(per_patient_csv([res], CLASSES).splitlines()))
    assert float(rows[0]["dice"]) == pytest.approx(s["dice_patient"])
    assert float(rows[0]["dice_myo"]) == pytest.approx(88 / 140) and rows[0]["n_slices_lv"] == "2"
    assert class_image_columns(CLASSES)[:5] == (
        "native_dice_lv",
        "native_iou_lv",
        "native_hd95_mm_lv",
        "native_nsd_lv",
        "empty_lv",
    )
    assert class_image_columns(("foreground",)) == ()


def test_monitor_and_hd95_are_means_over_classes():
    _, preds = _case()
    ref = torch.from_numpy(np.stack([_reference()] * 2)).long()
    d, j = class_dice_iou(torch.from_numpy(np.stack(preds)).long(), ref, 3)
    assert d.tolist() == pytest.approx([(32 / 36 + 88 / 92) / 2, 0.5])
    assert j.tolist() == pytest.approx([(16 / 20 + 44 / 48) / 2, 0.5])
    hd = hd95_per_image(np.stack(preds), np.stack([_reference()] * 2), (1.0, 1.0), n_classes=3)
    lv0 = hd95_per_image(preds[0][None] == 1, _reference()[None] == 1, (1.0, 1.0))[0]
    myo0 = hd95_per_image(preds[0][None] == 2, _reference()[None] == 2, (1.0, 1.0))[0]
    assert hd[0] == pytest.approx((lv0 + myo0) / 2) and hd[1] == 0.0  # slice 1: lv exact, myo has no HD95
    assert class_names("multiclass", 3) == CLASSES and class_names("endo", 2) == ("foreground",)


# ----------------------------------------------------------------------------------------- training
P = ["p0000000a", "p0000000b", "p0000000c", "p0000000d"]


def _discs(root):
    """4 patients × 4 images 32×32: an LV disc (label 1) inside a myocardial ring (label 2) on noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    root.mkdir(parents=True)
    for pid in P:
        ims, ms = [], []
        for _ in range(4):
            cy, cx = rng.uniform(11, 21, 2)
            r = rng.uniform(4, 6)
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            m = np.zeros((32, 32), np.uint8)
            m[d2 <= (r + 3) ** 2] = 2
            m[d2 <= r * r] = 1
            ims.append(np.clip(0.2 + 0.6 * (m == 1) + 0.3 * (m == 2) + rng.normal(0, 0.05, m.shape), 0, 1))
            ms.append(m)
        image = np.stack(ims).astype(np.float32)
        np.savez(
            root / f"{pid}.npz",
            image=image,
            raw=(image * 255).astype(np.uint8),
            mask=np.stack(ms),
            spacing=np.full((4, 2), 1.25, np.float32),
            slice=np.arange(4, dtype=np.int32),
        )
    manifest = {
        "target": "multiclass",
        "n_classes": 3,
        "size": [32, 32],
        "patients": [{"id": p, "n_images": 4} for p in P],
    }
    (root / "dataset.json").write_text(json.dumps(manifest))
    (root / "split.json").write_text(json.dumps({"seed": 0, "val": [P[3]], "pool": P[:3], "folds": []}))
    return root, root / "split.json"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data_dir, split = _discs(tmp_path_factory.mktemp("mc") / "data")
    params = cell_params({"depth": 2, "base_width": 8, "batch_size": 4, "epochs": 15, "lr": 0.01, "loss": "dice + bce"})
    out = data_dir.parent / "cells" / "c1"
    return train_cell(params, data_dir, split, out), out


def test_softmax_training_learns_every_class(trained):
    m, out = trained
    assert m.status == "ok" and set(m.val_per_class) == set(CLASSES)
    assert all(m.val_per_class[c]["dice_patient"] > 0.6 for c in CLASSES)
    assert m.val_dice_patient == pytest.approx(np.mean([m.val_per_class[c]["dice_patient"] for c in CLASSES]))
    assert set(m.val_collapse) == set(CLASSES)
    with np.load(out / "predictions.npz") as z:
        assert list(z["classes"]) == list(CLASSES) and set(np.unique(z["pred"])) <= {0, 1, 2}
        assert set(np.unique(z["mask"])) == {0, 1, 2}
    rows = list(csv.DictReader((out / "per_image.csv").read_text().splitlines()))
    assert np.mean([float(r["dice"]) for r in rows]) == pytest.approx(m.best_val_dice, abs=1e-6)
    assert {"native_dice_lv", "empty_myo"} <= set(rows[0])


def test_per_class_table_values(trained):
    m, out = trained
    assert class_metric("val_dice_patient_myo") == ("dice_patient", "myo") and class_metric("val_dice") is None
    assert class_metric("val_hd95_mm_lv") == ("hd95_mm", "lv")
    assert label_for("val_dice_patient_myo") == "validation Dice per patient (native resolution), myocardium"
    # intervals of a class's value come from that class's columns and reproduce the run's number
    for value, expected in (
        ("val_dice_patient_myo", m.val_per_class["myo"]["dice_patient"]),
        ("val_dice_lv", m.val_per_class["lv"]["dice"]),
    ):
        pv = patient_values(out, value, expected)
        assert pv is not None and pv["ids"] == [P[3]]
    study = Study(
        "mc",
        "Multiclass",
        "",
        "grid",
        ("lr",),
        TableLayout(rows=("lr",), cols=(), value="val_dice_patient_myo"),
        (StudyCell("c1", (("lr", "0.01"),), 0, None),),
        {"lr": ("0.01",)},
    )
    df = aggregate_study(study, out.parent, out.parent.parent / "study")
    assert df["val_dice_patient_myo"].iloc[0] == pytest.approx(m.val_per_class["myo"]["dice_patient"])
    g = config_groups(study, df)[0]
    assert g["mean"] == pytest.approx(m.val_per_class["myo"]["dice_patient"]) and g["status"] == "ok"


# --------------------------------------------------------------------------------------------- plan
def test_plan_accepts_multiclass_and_refuses_sigmoid_only_losses():
    from pathlib import Path

    cfg = yaml.safe_load((Path(__file__).parent / "e2e" / "tiny_config.yaml").read_text())
    cfg["data"]["target"] = "multiclass"
    assert len(build_plan(prepare(cfg)).cells) == 4
    for loss in ("focal", "0.5*wce + dice", "combo"):
        cfg["train"]["loss"] = loss
        with pytest.raises(ConfigError, match=r"config key 'loss': '(focal|wce|combo)' is a binary"):
            build_plan(prepare(cfg))
    cfg["train"]["loss"] = "focal"
    cfg["data"]["target"] = "endo"
    assert build_plan(prepare(cfg)).cells  # binary targets keep every loss
