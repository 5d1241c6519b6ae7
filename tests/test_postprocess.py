"""Post-processing candidates on hand-made label maps, the validation rule, ensembles, saved native predictions
and the selected configuration's final evaluation from files (segsweep.analysis.final)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from segsweep.analysis.ensemble import average_probabilities, labels_from_probabilities
from segsweep.analysis.final import chosen_postprocessing, evaluate_selected
from segsweep.analysis.postprocess import POSTPROCESSING, apply_postprocessing, choose, postprocess_patient
from segsweep.data.preprocess import Geometry
from segsweep.errors import ConfigError, DataError
from segsweep.training import native_predictions as npred
from segsweep.training.record import CellMetrics


def test_largest_component_per_slice_and_per_volume():
    # slice 0: a 2×2 blob (4 px) and a 1-px speck; slice 1: only a 1-px speck far away
    m = np.zeros((2, 5, 6), np.uint8)
    m[0, 0:2, 0:2] = 1
    m[0, 4, 5] = 1
    m[1, 4, 0] = 1
    per_slice = apply_postprocessing("largest_2d", m)
    assert per_slice[0].sum() == 4 and per_slice[0, 4, 5] == 0  # the speck beside the blob goes
    assert per_slice[1, 4, 0] == 1  # alone on its slice, the speck is that slice's largest component
    volume = apply_postprocessing("largest_3d", m)
    assert volume.sum() == 4 and volume[1].sum() == 0  # in 3-D the other slice's speck goes too
    assert apply_postprocessing("none", m) is not None and (apply_postprocessing("none", m) == m).all()
    # a single slice [H, W] works the same; diagonal neighbours are separate components (face connectivity)
    d = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], np.uint8)
    assert apply_postprocessing("largest_2d", d).tolist() == [[0, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert apply_postprocessing("largest_2d", d).dtype == np.uint8


def test_per_class_and_small_components():
    m = np.zeros((4, 6), np.uint8)
    m[0, 0:3] = 1  # class 1: 3 px
    m[3, 5] = 1  # class 1 speck
    m[2, 0:2] = 2  # class 2: 2 px
    m[3, 3] = 2  # class 2 speck
    out = apply_postprocessing("largest_2d", m)
    assert out[0, 0:3].tolist() == [1, 1, 1] and out[2, 0:2].tolist() == [2, 2]
    assert out[3, 5] == 0 and out[3, 3] == 0  # removed pixels become background
    # spacing 2 × 2 mm: 1 px = 4 mm², 2 px = 8 mm²; at 5 mm² only the 1-px components go
    small = POSTPROCESSING["small_2d"](m, (2.0, 2.0), min_area_mm2=5.0)
    assert small.tolist() == out.tolist()
    assert apply_postprocessing("small_2d", m, (2.0, 2.0)).sum() == 0  # default 20 mm²: everything is smaller
    with pytest.raises(ConfigError, match="postprocessing: unknown 'biggest'"):
        apply_postprocessing("biggest", m)


def test_patient_slices_of_different_sizes():
    a = np.zeros((3, 3), np.uint8)
    a[0, 0] = 1
    b = np.zeros((4, 2), np.uint8)
    b[2:4, 0:2] = 1
    out = postprocess_patient("largest_3d", [a, b])
    assert [x.shape for x in out] == [(3, 3), (4, 2)] and out[0].sum() == 0 and out[1].sum() == 4


def test_choose_rule():
    base = {"dice_patient": 0.80, "hd95_mm_patient": 20.0}
    c = {
        "none": base,
        "largest_2d": {"dice_patient": 0.80, "hd95_mm_patient": 5.0},  # same Dice, better HD95
        "largest_3d": {"dice_patient": 0.79, "hd95_mm_patient": 3.0},  # best HD95 but Dice drops
        "small_2d": {"dice_patient": 0.81, "hd95_mm_patient": 8.0},
    }
    assert choose(c) == ("largest_2d", {"none": False, "largest_2d": True, "largest_3d": False, "small_2d": True})
    worse = {k: {"dice_patient": 0.8, "hd95_mm_patient": 25.0} for k in c} | {"none": base}
    assert choose(worse)[0] == "none"


def test_ensemble_average_and_labels():
    p1 = np.array([[[0.9, 0.2], [0.6, 0.0]]], np.float32)
    p2 = np.array([[[0.7, 0.6], [0.3, 0.0]]], np.float32)
    avg = average_probabilities([p1, p2])
    assert avg == pytest.approx(np.array([[[0.8, 0.4], [0.45, 0.0]]]))
    assert labels_from_probabilities(avg).tolist() == [[1, 0], [0, 0]]
    soft = np.array([[[0.2]], [[0.5]], [[0.3]]])  # background, class 1, class 2
    assert labels_from_probabilities(soft).tolist() == [[1]]
    with pytest.raises(DataError, match="differ in shape"):
        average_probabilities([p1, p1[:, :1]])


def test_quantised_probabilities():
    p = np.array([[[0.5, 0.5001, 0.499, 1.0, 0.0, 1.2]]])
    q = npred.quantize(p)
    assert q.tolist() == [[[128, 128, 127, 255, 0, 255]]]  # round(255 p), 127.5 → 128 (half to even)


# --------------------------------------------------------------------------------- from files, end to end
SHAPE = (12, 10)
SPACING = (1.5, 1.5)


def _disk(cy, cx, r):
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def _patient(data: Path, pid: str, n: int = 2) -> list[np.ndarray]:
    refs = [_disk(5, 4, 3) for _ in range(n)]
    np.savez(
        data / f"{pid}.npz",
        image=np.zeros((n, 6, 5), np.float32),
        mask=np.zeros((n, 6, 5), np.uint8),
        spacing=np.full((n, 2), 3.0, np.float32),
        slice=np.arange(n, dtype=np.int32),
        native_mask=np.stack(refs),
        native_shape=np.tile(np.int32(SHAPE), (n, 1)),
        resized_shape=np.tile(np.int32((6, 5)), (n, 1)),
        native_spacing=np.tile(np.float32(SPACING), (n, 1)),
    )
    return refs


def _set(pids, labels, probs):
    """A SetResult-like object whose network grid is the native grid (identity geometry)."""
    n = len(labels)
    images = SimpleNamespace(
        patient=[p for p in pids for _ in range(2)],
        slice=[0, 1] * len(pids),
        geometry=[Geometry(SHAPE, SHAPE, SHAPE)] * n,
    )
    return SimpleNamespace(images=images, native_label=labels, net_prob=probs)


@pytest.fixture()
def study_files(tmp_path):
    """3 validation + 3 test patients (2 slices each, reference = a disk); run a predicts the disk plus a speck
    in the far corner of every slice, run b the disk alone."""
    data, cells = tmp_path / "data", tmp_path / "cells"
    data.mkdir()
    val, test = ["v0", "v1", "v2"], ["t0", "t1", "t2"]
    refs = {p: _patient(data, p) for p in val + test}
    speck = np.zeros(SHAPE, np.uint8)
    speck[11, 9] = 1
    runs = []
    for i, cell in enumerate(("aaaaaaaaaaaa", "bbbbbbbbbbbb")):
        d = cells / cell
        d.mkdir(parents=True)
        sets = {}
        for name, pids in (("val", val), ("test", test)):
            labels = [r | speck if cell.startswith("a") else r.copy() for p in pids for r in refs[p]]
            probs = [lab[None].astype(float) * 0.9 + 0.05 for lab in labels]
            sets[name] = _set(pids, labels, probs)
        npred.write(d / npred.FILE, sets)
        ev = {"nsd_tolerance_mm": 2.0, "hd95_cap_mm": None, "grid": "native"}
        CellMetrics(cell=cell, status="ok", evaluation=ev, val_dice_patient=0.9).write(d / "metrics.json")
        runs.append({"repeat": i, "fold": None, "cell": cell, "status": "ok", "value": 0.9})
    groups = [{"config": "x", "labels": {}, "runs": runs, "status": "ok", "mean": 0.9, "n": 2}]
    return data, cells, groups


def test_saved_predictions_round_trip(study_files):
    data, cells, _ = study_files
    f = npred.read(cells / "aaaaaaaaaaaa" / npred.FILE)
    assert f.classes == ("foreground",) and set(f.sets) == {"val", "test"}
    first = f.sets["val"][0]
    assert (first.patient, first.slice, first.label.shape, first.prob.shape) == ("v0", 0, SHAPE, (1, *SHAPE))
    assert first.label[11, 9] == 1 and ((first.native_prob()[0] > 0.5) == first.label.astype(bool)).all()


def test_final_evaluation_chooses_on_validation_and_scores_test(study_files, tmp_path):
    data, cells, groups = study_files
    fin = evaluate_selected("s", groups, True, cells, data, seed=0)
    cands = {c["name"]: c for c in fin["candidates"]}
    # run a: every slice has a speck (HD95 = the speck's distance), run b is perfect; a per-slice largest
    # component removes the specks: Dice 1 and HD95 0 for both runs
    assert cands["none"]["hd95_mm_patient"] > 0 and cands["largest_2d"]["hd95_mm_patient"] == 0.0
    assert cands["largest_2d"]["dice_patient"] == pytest.approx(1.0)
    assert fin["chosen"] == "largest_2d" and cands["largest_2d"]["chosen"] and cands["largest_3d"]["qualifies"]
    raw = {r["key"]: r for r in fin["test"]["none"]}
    post = {r["key"]: r for r in fin["test"]["largest_2d"]}
    assert raw["hd95_mm_patient"]["value"] > 0 and post["hd95_mm_patient"]["value"] == 0.0
    assert raw["dice_patient"]["units"] == "2 runs × 3 patients"
    # run a's specks are 1 px of 30 px predicted area per slice: Dice per slice 2·29 / (29 + 30)
    assert raw["dice_patient"]["value"] == pytest.approx((2 * 29 / 59 + 1.0) / 2)
    ens = fin["ensemble"]
    # averaged probabilities: the speck has (0.95 + 0.05) / 2 = 0.5, not above 0.5: the ensemble drops it
    assert ens["n_runs"] == 2 and ens["val"]["none"]["hd95_mm_patient"] == 0.0
    assert {r["key"]: r for r in ens["test"]["none"]}["dice_patient"]["value"] == pytest.approx(1.0)
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    (study_dir / "table.json").write_text(json.dumps({"final": fin}))
    assert chosen_postprocessing(study_dir) == "largest_2d"
    (study_dir / "table.json").write_text("{}")
    assert chosen_postprocessing(study_dir) == "none"


def test_saved_labels_reproduce_the_final_evaluation(study_files):
    """The numbers of metrics.json are recomputed from native_predictions.npz and the patient files."""
    from segsweep.training.evaluate import EvaluationConfig, evaluate_set, load_images, score_labels

    data, cells, _ = study_files
    images = load_images(data, ["v0", "v1", "v2"])
    rng = np.random.default_rng(0)
    cfg = EvaluationConfig()
    res = evaluate_set("val", images, lambda x: rng.normal(0, 2, x.shape).astype(np.float32), cfg)
    npred.write(cells / "scored.npz", {"val": res})
    saved = npred.read(cells / "scored.npz").sets["val"]
    again = score_labels("val", images, [p.label for p in saved], cfg)
    assert again.summary == res.summary
    assert again.patients == res.patients
    # the saved network-grid probabilities, mapped back, give the scored labels except where p is within
    # the quantisation step (1/510) of the threshold
    for p in saved:
        native = p.native_prob()[0]
        assert native.shape == p.label.shape
        clear = np.abs(native - 0.5) > 1 / 255
        assert ((native > 0.5) == p.label.astype(bool))[clear].all()


def test_multiclass_files_and_per_class_post_processing(tmp_path):
    """Three channels (background, cavity, myocardium): saved and read back; a speck of class 2 is removed per
    class by largest_2d, and the ensemble takes the arg-max of the averaged softmax."""
    from segsweep.training.evaluate import EvaluationConfig, load_images, score_labels

    data = tmp_path / "data"
    data.mkdir()
    ref = _disk(5, 4, 3)
    ref[_disk(5, 4, 1).astype(bool)] = 2  # class 2 inside class 1
    np.savez(
        data / "m0.npz",
        image=np.zeros((2, 6, 5), np.float32),
        mask=np.zeros((2, 6, 5), np.uint8),
        spacing=np.full((2, 2), 3.0, np.float32),
        slice=np.arange(2, dtype=np.int32),
        native_mask=np.stack([ref, ref]),
        native_shape=np.tile(np.int32(SHAPE), (2, 1)),
        resized_shape=np.tile(np.int32(SHAPE), (2, 1)),
        native_spacing=np.tile(np.float32(SPACING), (2, 1)),
    )
    pred = ref.copy()
    pred[11, 9] = 2
    probs = [np.stack([(pred == c).astype(float) * 0.8 + 0.1 for c in range(3)])] * 2
    npred.write(tmp_path / "m.npz", {"val": _set(["m0"], [pred, pred], probs)}, classes=("endo", "myo"))
    f = npred.read(tmp_path / "m.npz")
    assert f.classes == ("endo", "myo") and f.sets["val"][0].prob.shape == (3, *SHAPE)
    assert (labels_from_probabilities(f.sets["val"][0].native_prob()) == pred).all()
    images = load_images(data, ["m0"])
    cfg = EvaluationConfig()
    raw = score_labels("val", images, [p.label for p in f.sets["val"]], cfg, f.classes)
    post = postprocess_patient("largest_2d", [p.label for p in f.sets["val"]])
    assert all((p == ref).all() for p in post)
    fixed = score_labels("val", images, post, cfg, f.classes)
    assert raw.per_class["myo"][2]["hd95_mm_patient"] > 0 and fixed.per_class["myo"][2]["hd95_mm_patient"] == 0.0
    assert raw.per_class["endo"][2] == fixed.per_class["endo"][2]  # class 1 untouched
    assert fixed.summary["dice_patient"] == pytest.approx(1.0)
