"""`snakemake predict`'s library (segsweep.apply) and the model card (segsweep.analysis.card), on a tiny
phantom: ingest + two cells trained in-process (CPU, one thread, seconds), then predictions on unlabelled
phantom series (data/phantom.generate_series) with the SEG read back by pydicom, volumes recomputed by hand,
a mixed root, de-identification, model selection and the card."""

import csv
import dataclasses
import hashlib
import json
import logging
import shutil
import subprocess
import warnings

import numpy as np
import pydicom
import pytest
import torch

import segsweep
from segsweep.analysis import card
from segsweep.analysis.aggregate import aggregate_study
from segsweep.apply import discover as disc
from segsweep.apply import geometry
from segsweep.apply import predict as pr
from segsweep.apply import seg as segmod
from segsweep.apply import volumes as vol
from segsweep.data import dicom as dcm
from segsweep.data import ingest, phantom
from segsweep.data import preprocess as pre
from segsweep.data.config import DataConfig, PhantomConfig, PreprocessConfig
from segsweep.data.splits import write_split
from segsweep.errors import ConfigError, DataError
from segsweep.plan.config import cell_params
from segsweep.study import Study, StudyCell, TableLayout
from segsweep.training.loop import train_cell

torch.set_num_threads(1)

KEY = "test-predict-key"
PHANTOM = PhantomConfig(patients=5, slices=4, rows=64, cols=56, no_contour_fraction=0.0)
PREP = PreprocessConfig(size=(32, 32), tile_grid=(4, 4))
CELLS = {"aaaaaaaaaaa1": 0.01, "aaaaaaaaaaa2": 0.003}  # cell id → learning rate
PHI = {
    "PatientName": "Qzxwv^Jorunn{i}",
    "PatientID": "MRN-77{i:03d}Q",
    "PatientBirthDate": "19450317",
    "StudyDate": "20230629",
    "InstitutionName": "St Qzxwv Clinic",
    "ReferringPhysicianName": "Vlimp^Doctor",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """results/ with data, a split (1 test patient), two trained cells and one aggregated study."""
    root = tmp_path_factory.mktemp("predict")
    phantom.generate(PHANTOM, root / "raw")
    results = root / "results"
    ingest.run(DataConfig("phantom", str(root / "raw"), "endo", False, KEY, PHANTOM), PREP, results / "data")
    split = results / "splits" / "seed0.json"
    write_split(results / "data" / "dataset.json", split, 0, 0.25, None, 0.2)
    study = _train_study(results, "lrs", "Learning rates", {c: (lr, 0) for c, lr in CELLS.items()}, data_dir=None)
    return results, study


def _train_study(results, name, title, cells, data_dir):
    """Train ``cells`` (cell id → (lr, training seed)) in-process on the fixture's data and split, and
    aggregate them as the grid study ``name`` over lr (runs of one lr are its repeats); ``data_dir``: the
    patient files for table.json's ``final`` (None: no final evaluation)."""
    split = results / "splits" / "seed0.json"
    for cell, (lr, seed) in cells.items():
        params = cell_params(
            {"depth": 2, "base_width": 4, "batch_size": 4, "epochs": 20, "lr": lr, "loss": "dice + bce", "seed": seed}
        )
        train_cell(params, results / "data", split, results / "cells" / cell)
    lrs = list(dict.fromkeys(f"{lr:g}" for lr, _ in cells.values()))
    repeat = {c: [c2 for c2, v in cells.items() if v[0] == cells[c][0]].index(c) for c in cells}
    study = Study(
        name=name,
        title=title,
        description="",
        mode="grid",
        axes=("lr",),
        table=TableLayout((), ("lr",)),
        cells=tuple(StudyCell(c, (("lr", f"{lr:g}"),), repeat[c], None) for c, (lr, _) in cells.items()),
        axis_values={"lr": tuple(lrs)},
    )
    aggregate_study(study, results / "cells", results / "studies" / name, seed=0, splits=[split], data_dir=data_dir)
    return study


@pytest.fixture(scope="module")
def best_cell(trained):
    results, study = trained
    return card.resolve_model("best", [study], results).cell


def _predict(results, input_root, out, model, *, prep=PREP, data_dir=None, **kw):
    cfg = {"input": str(input_root), "model": model, **kw}
    return pr.run_predict(
        cfg, studies=[], results_dir=results, prep=prep, pseudonym_key=KEY, out_dir=out, data_dir=data_dir
    )


@pytest.fixture(scope="module")
def predicted(trained, best_cell, tmp_path_factory):
    results, _ = trained
    root = tmp_path_factory.mktemp("dicom")
    manifest = phantom.generate_series(PhantomConfig(**{**PHANTOM.__dict__, "patients": 2}), root)
    out = root.parent / (root.name + "-out")
    summary = _predict(results, root, out, best_cell)
    return results, root, out, manifest, summary


def _seg_frames(path):
    """{(referenced SOP Instance UID, segment number): decoded frame} of a SEG file, read by pydicom."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    frames = {}
    shared = ds.SharedFunctionalGroupsSequence[0]
    for i, f in enumerate(ds.PerFrameFunctionalGroupsSequence):
        uid = f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ident = f if "SegmentIdentificationSequence" in f else shared  # one segment: shared by all frames
        frames[(uid, int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber))] = pixels[i]
    return ds, frames


def _header(path):
    return pydicom.dcmread(path, stop_before_pixels=True)


def _expected_masks(results, cell, files):
    """The model's prediction of each file, computed here: read, window, prepare, predict, map back."""
    model = pr.CellModel(results / "cells" / cell, 2)
    prepared = [network_input(f) for f in files]
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    return dict(zip(uids, model.predict([p.image for p in prepared], [p.geometry for p in prepared])))


def network_input(path, frame=None):
    """A file's image (an Enhanced MR file's frame number ``frame``) as the cell sees it, computed here: read,
    window, prepare (`preprocess.Prepared`: the network-grid image and the geometry to map back)."""
    im = dcm.read(path)
    u8, _, _ = pre.window_dicom(im, 0 if frame is None else frame - 1, PREP.window)
    return pre.prepare(u8, np.zeros(u8.shape, np.uint8), im.pixel_spacing, PREP)


# ------------------------------------------------------------------------------------------- the SEG
def test_seg_reads_back_references_sources_and_equals_the_prediction(predicted, best_cell):
    results, root, out, manifest, summary = predicted
    assert summary["n_series"] == 2 and summary["n_images"] == 8 and summary["model"]["cell"] == best_cell
    some_foreground = 0
    for entry in manifest["series"]:
        files = [root / f for f in entry["files"]]
        src = pydicom.dcmread(files[0], stop_before_pixels=True)
        name = disc.series_pseudonym(KEY, entry["series_uid"])
        ds, frames = _seg_frames(out / name / f"{name}_seg.dcm")
        if shutil.which("dciodvfy"):  # Debian's DICOM validator (CI installs dicom3tools): nothing to report
            proc = subprocess.run(["dciodvfy", str(out / name / f"{name}_seg.dcm")], capture_output=True, text=True)
            findings = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith(("Error", "Warning"))]
            assert findings == [], findings
        assert ds.SOPClassUID == segmod.SEG_STORAGE == "1.2.840.10008.5.1.4.1.1.66.4"
        assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
        # the same patient and study as the source (identified mode)
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "StudyDate"):
            assert str(ds.get(kw)) == str(src.get(kw)), kw
        assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
        refs = [r.ReferencedSOPInstanceUID for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
        assert sorted(refs) == sorted(entry["sop_uids"]) and len({u for u, _ in frames}) == 4
        seg_item = ds.SegmentSequence[0]
        assert seg_item.SegmentLabel == "LV cavity" and seg_item.SegmentAlgorithmType == "AUTOMATIC"
        assert seg_item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "87878005"
        assert seg_item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
        alg = seg_item.SegmentationAlgorithmIdentificationSequence[0]
        assert (
            alg.AlgorithmName == "segsweep"
            and alg.AlgorithmVersion == segsweep.__version__
            and best_cell in alg.AlgorithmSource
        )
        assert best_cell in ds.ContentDescription and ds.DeviceSerialNumber == best_cell
        expected = _expected_masks(results, best_cell, files)
        for uid, mask in expected.items():
            np.testing.assert_array_equal(frames[(uid, 1)], mask)
            some_foreground += int(mask.sum())
        # each frame's plane position is its source image's (highdicom orders the frames itself)
        ipp = {str(h.SOPInstanceUID): [float(v) for v in h.ImagePositionPatient] for h in map(_header, files)}
        for f in ds.PerFrameFunctionalGroupsSequence:
            uid = f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            assert [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] == ipp[uid]
        assert len(list((out / name / "overlays").glob("*.png"))) == 4
    assert some_foreground > 0, "the trained model predicts nothing: the comparison would be vacuous"


def test_volumes_equal_area_times_spacing_by_hand(predicted):
    _, root, out, manifest, _ = predicted
    for entry in manifest["series"]:
        name = disc.series_pseudonym(KEY, entry["series_uid"])
        _, frames = _seg_frames(out / name / f"{name}_seg.dcm")
        src = pydicom.dcmread(root / entry["files"][0], stop_before_pixels=True)
        dy, dx = (float(v) for v in src.PixelSpacing)
        by_hand = sum(int(m.sum()) * dy * dx for m in frames.values()) * 10.0 / 1000  # 10 mm between positions
        with open(out / name / "volumes.csv") as fh:
            rows = list(csv.DictReader(fh))
        slices = [r for r in rows if r["row"] == "slice"]
        (series,) = [r for r in rows if r["row"] == "series"]
        assert len(slices) == 4 and {r["spacing_source"] for r in rows} == {"image_position"}
        assert float(series["volume_ml"]) == pytest.approx(by_hand, rel=1e-5)
        assert sum(float(r["area_mm2"]) for r in slices) * 10 / 1000 == pytest.approx(by_hand, rel=1e-5)
        info = json.loads((out / name / "series.json").read_text())
        assert info["slice_spacing_mm"] == pytest.approx(10.0) and info["spacing_source"] == "image_position"
        assert info["volumes_ml"][0]["lv_cavity"] == pytest.approx(by_hand, rel=1e-6)


def test_slice_spacing_sources_and_phases():
    assert vol.slice_spacing([0.0, 8.0, 16.0]) == vol.SliceSpacing(8.0, "image_position", False, (8.0, 8.0))
    irregular = vol.slice_spacing([0.0, 8.0, 24.0, 32.0])
    assert irregular.spacing_mm == 8.0 and irregular.irregular
    assert vol.slice_spacing([None, None], between="10", thickness="8") == vol.SliceSpacing(
        10.0, "spacing_between_slices"
    )
    assert vol.slice_spacing([5.0], between=None, thickness="8") == vol.SliceSpacing(8.0, "slice_thickness")
    assert vol.slice_spacing([5.0], between="0", thickness="") == vol.SliceSpacing(None, "none")
    # cine: two phases at each of three positions (series order: by position, then time)
    locs = [0.0, 0.0, 10.0, 10.0, 20.0, 20.0]
    ph = geometry.assign_phases(locs, [None] * 6, [0, 500, 3, 503, 6, 506], [None] * 6, list("abcdef"))
    assert (ph.phase, ph.slice, ph.rule, ph.even) == ((0, 1, 0, 1, 0, 1), (0, 0, 1, 1, 2, 2), "trigger_time", True)
    uneven = geometry.assign_phases([0.0, 0.0, 10.0], [None] * 3, [None] * 3, [1, 2, 3], list("abc"))
    assert uneven.rule == "instance_number" and not uneven.even
    masks = [np.full((2, 2), k % 2, np.uint8) for k in range(6)]  # phase 1 covers all 4 pixels, phase 0 none
    v = vol.measure(masks, {"lv_cavity": 1}, [(0.5, 2.0)] * 6, ph, vol.slice_spacing(locs))
    assert v.volumes == [{"lv_cavity": 0.0}, {"lv_cavity": pytest.approx(3 * 4 * 1.0 * 10 / 1000)}]
    # ED = the larger cavity (phase 1), ES = the smaller (phase 0, empty): EF 100 %
    assert v.function["ed_phase"] == 1 and v.function["es_phase"] == 0 and v.function["ef_percent"] == 100.0
    assert vol.measure(masks, {"lv_cavity": 1}, [(0.5, 2.0)] * 6, uneven_6(), vol.slice_spacing(locs)).volumes is None


def uneven_6():
    """Six images at three positions whose phases are not all present: no volumes."""
    return geometry.assign_phases(
        [0.0] * 3 + [10.0, 20.0, 20.0], [1, 2, 3, 1, 1, 2], [None] * 6, [None] * 6, list("abcdef")
    )


def test_cine_phases_by_temporal_position_trigger_time_or_instance_number():
    locs = [10.0, 0.0, 10.0, 0.0]
    # temporal identifiers name the phase at every slice, whatever the file order
    ph = geometry.assign_phases(locs, [2, 1, 1, 2], [None] * 4, [9, 8, 7, 6], list("abcd"))
    assert ph.rule == "temporal_position" and ph.phase == (1, 0, 0, 1) and ph.slice == (1, 0, 1, 0) and ph.even
    # a slice missing a phase: identifiers keep the others right, the phases are uneven
    ph = geometry.assign_phases([0.0, 0.0, 10.0], [1, 3, 3], [None] * 3, [None] * 3, list("abc"))
    assert ph.phase == (0, 1, 1) and not ph.even
    # without identifiers: trigger time rank within the slice; without either: InstanceNumber
    ph = geometry.assign_phases(locs, [None] * 4, [400.0, 10.0, 5.0, 390.0], [1, 2, 3, 4], list("abcd"))
    assert ph.rule == "trigger_time" and ph.phase == (1, 0, 0, 1)
    ph = geometry.assign_phases(locs, [None] * 4, [None, 1.0, 2.0, 3.0], [4, 1, 2, 3], list("abcd"))
    assert ph.rule == "instance_number" and ph.phase == (1, 0, 0, 1)
    # positions within the tolerance are one slice; orientation jitter of 1e-6 is one orientation
    ph = geometry.assign_phases([0.0, 0.004, 10.0, 10.002], [None] * 4, [0, 1, 0, 1], [None] * 4, list("abcd"))
    assert ph.slice == (0, 0, 1, 1) and ph.even
    assert geometry.same_orientation([1, 0, 0, 0, 1, 0], [1 - 1e-6, 1e-6, 0, 0, 1, -1e-6])
    assert not geometry.same_orientation([1, 0, 0, 0, 1, 0], [0.999, 0.0447, 0, 0, 1, 0])
    # LV function by hand: cavity 120, 50, 80 mL → ED phase 0, ES phase 1, EF = 70/120
    f = vol.function([{"lv_cavity": 120.0}, {"lv_cavity": 50.0}, {"lv_cavity": 80.0}], ["lv_cavity"])
    assert (f["ed_phase"], f["es_phase"], f["sv_ml"]) == (0, 1, 70.0) and f["ef_percent"] == pytest.approx(
        58.3333, 1e-4
    )
    assert vol.function([{"lv_myocardium": 1.0}, {"lv_myocardium": 2.0}], ["lv_myocardium"]) is None


# -------------------------------------------------------------------------------------- mixed root
def test_mixed_root_gets_qc_rows_and_the_rest_is_predicted(trained, best_cell, tmp_path):
    results, _ = trained
    root = tmp_path / "mixed"
    manifest = phantom.generate_series(PhantomConfig(**{**PHANTOM.__dict__, "patients": 2}), root, mixed=True)
    summary = _predict(results, root, tmp_path / "out", best_cell)
    with open(tmp_path / "out" / "qc.csv") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    expect = {
        "case01/CT/CT0001.dcm": "predict_not_mr",
        "case01/MR/IM9999.dcm": "dicom_truncated",
        "case01/SR/SR0001.dcm": "dicom_no_pixels",
        "case01/notes.txt": "dicom_not_dicom",
        "case02/MIXED/IM0003.dcm": "predict_geometry_mixed",
    }
    for f, reason in expect.items():
        assert rows[f]["reason"] == reason and rows[f]["status"] == "skipped", rows[f]
    assert sum(r["reason"] == "predict_not_mr" for r in rows.values()) == 3
    assert sum(r["reason"] == "predict_geometry_mixed" for r in rows.values()) == 3
    # the two cine series are predicted in full (the cut extra slice left out)
    assert summary["n_series"] == 2 and summary["n_images"] == 8
    cine = [e for e in manifest["series"] if "sop_uids" in e]
    for e in cine:
        name = disc.series_pseudonym(KEY, e["series_uid"])
        _, frames = _seg_frames(tmp_path / "out" / name / f"{name}_seg.dcm")
        assert {u for u, _ in frames} == set(e["sop_uids"])
        assert all(rows[f]["status"] == "ok" for f in e["files"])
    assert summary["qc_counts"]["dicom_truncated"] == 1


def test_unusable_input_roots_are_clear_errors(trained, best_cell, tmp_path):
    results, _ = trained
    with pytest.raises(DataError, match="predict.input"):
        _predict(results, tmp_path / "nowhere", tmp_path / "out", best_cell)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no file"):
        _predict(results, tmp_path / "empty", tmp_path / "out", best_cell)
    with pytest.raises(ConfigError, match="predict.input"):
        pr.run_predict({}, studies=[], results_dir=results, prep=PREP, pseudonym_key=KEY, out_dir=tmp_path / "o")
    with pytest.raises(DataError, match="preprocess.size"):
        _predict(results, tmp_path, tmp_path / "o", best_cell, prep=PreprocessConfig(size=(48, 48)))
    # data_dir: the model's own data set (another `datasets:` entry), not results/data
    other = tmp_path / "datasets" / "b" / "data"
    other.mkdir(parents=True)
    meta = json.loads((results / "data" / "dataset.json").read_text())
    (other / "dataset.json").write_text(json.dumps({**meta, "target": "scar"}))
    with pytest.raises(DataError, match=r"datasets/b/data/dataset.json: unknown target 'scar'"):
        _predict(results, tmp_path, tmp_path / "o", best_cell, data_dir=other)


def test_best_never_compares_studies_on_two_data_sets(trained):
    results, study = trained
    other = dataclasses.replace(study, name="lrs_b", dataset="b")
    with pytest.raises(ConfigError, match=r"different data sets \(lrs on the default data set; lrs_b on b\)"):
        card.resolve_model("best", [study, other], results)


# ---------------------------------------------------------------------------------- de-identified
def _phi_strings(files):
    """Every identifying value and UID of the source files (the strings no de-identified output may hold)."""
    out = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for kw in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "StudyDate",
            "SeriesDate",
            "ContentDate",
            "InstitutionName",
            "ReferringPhysicianName",
        ):
            if ds.get(kw):
                out.add(str(ds.get(kw)))
        out |= {p for v in list(out) for p in str(v).split("^") if len(p) > 2}
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            out.add(str(ds.get(kw)))
    return out


def test_deidentified_seg_carries_no_source_identifier(trained, best_cell, tmp_path):
    results, _ = trained
    root = tmp_path / "dicom"
    manifest = phantom.generate_series(PhantomConfig(**{**PHANTOM.__dict__, "patients": 2}), root, phi=PHI)
    # a patient-named folder: qc.csv must not repeat it
    (root / "case01").rename(root / "Qzxwv_Jorunn1")
    files = sorted(root.rglob("*.dcm"))
    phi = _phi_strings(files)
    assert "Qzxwv^Jorunn1" in phi and "19450317" in phi
    for deidentify in (True, False):
        out = tmp_path / f"out-{deidentify}"
        _predict(results, root, out, best_cell, deidentify=deidentify)
        for f in out.rglob("*"):
            assert not any(v in f.name for v in phi), f
            if not f.is_file() or (not deidentify and f.suffix == ".dcm"):
                continue
            text = f.read_bytes().decode("latin-1")
            leaked = sorted(v for v in phi if v.lower() in text.lower())
            assert not leaked, (f, leaked)
    out = tmp_path / "out-True"
    assert "[redacted]_[redacted]/MR/IM0001.dcm" in (out / "qc.csv").read_text()
    for entry in manifest["series"]:
        name = disc.series_pseudonym(KEY, entry["series_uid"])
        ds, frames = _seg_frames(out / name / f"{name}_seg.dcm")
        assert ds.PatientIdentityRemoved == "YES" and ds.PatientID.startswith("p") and len(ds.PatientID) == 9
        assert ds.PatientBirthDate == "" and ds.StudyDate == ds.ContentDate == segmod.DUMMY_DATE
        assert "InstitutionName" not in ds
        # references use the keyed-hash form of the source UIDs
        assert {u for u, _ in frames} == {segmod.remap_uid(KEY, u) for u in entry["sop_uids"]}
        src = pydicom.dcmread(root / entry["files"][0].replace("case01/", "Qzxwv_Jorunn1/"), stop_before_pixels=True)
        assert ds.StudyInstanceUID == segmod.remap_uid(KEY, src.StudyInstanceUID)
        assert ds.FrameOfReferenceUID == segmod.remap_uid(KEY, src.FrameOfReferenceUID)
        assert ds.StudyID == segmod.study_id(KEY, src.StudyInstanceUID)
        # the de-identified images are the SEG's references: same UIDs, study and patient; same pixels
        images = sorted((out / name / "images").glob("*.dcm"))
        copies = {str(c.SOPInstanceUID): c for c in map(pydicom.dcmread, images)}
        assert set(copies) == {u for u, _ in frames}
        for c in copies.values():
            assert (c.StudyInstanceUID, c.StudyID, c.PatientID) == (ds.StudyInstanceUID, ds.StudyID, ds.PatientID)
            assert c.FrameOfReferenceUID == ds.FrameOfReferenceUID and c.PatientIdentityRemoved == "YES"
        by_uid = {segmod.remap_uid(KEY, u): f for u, f in zip(entry["sop_uids"], _files_by_uid(root, entry))}
        for uid, c in copies.items():
            assert np.array_equal(c.pixel_array, pydicom.dcmread(by_uid[uid]).pixel_array)


def _files_by_uid(root, entry):
    """The source files of a manifest entry in the order of its sop_uids."""
    found = {str(_header(f).SOPInstanceUID): f for f in root.rglob("*.dcm")}
    return [found[u] for u in entry["sop_uids"]]


# ---------------------------------------------------------------------------------- model selection
def test_model_selection_best_study_and_cell(trained):
    results, study = trained
    groups, _ = card.study_groups(study, results)
    values = {g["runs"][0]["cell"]: g["mean"] for g in groups}
    best = max(values, key=values.get)
    assert card.resolve_model("best", [study], results).cell == best
    by_study = card.resolve_model("lrs", [study], results)
    assert by_study.cell == best and by_study.study == "lrs" and by_study.value == "val_dice_patient"
    other = next(c for c in CELLS if c != best)
    assert card.resolve_model(other, [study], results).cell == other
    with pytest.raises(ConfigError, match="predict.model"):
        card.resolve_model("nonsense", [study], results)
    with pytest.raises(DataError, match="not found"):
        card.resolve_model("bbbbbbbbbbbb", [study], results)


def test_best_across_studies_takes_the_highest_value_of_the_common_key(trained, tmp_path):
    results, study = trained
    tmp = tmp_path / "results"
    shutil.copytree(results, tmp)
    # a second study holding only the worse cell, and a third ranking by another value
    best = card.resolve_model("best", [study], results).cell
    worse = next(c for c in CELLS if c != best)
    s2 = Study(
        "one",
        "One",
        "",
        "grid",
        ("lr",),
        TableLayout((), ("lr",)),
        (StudyCell(worse, (("lr", "x"),), 0, None),),
        {"lr": ("x",)},
    )
    s3 = Study(
        "hd",
        "HD",
        "",
        "grid",
        ("lr",),
        TableLayout((), ("lr",), "val_hd95_mm", False),
        (StudyCell(worse, (("lr", "x"),), 0, None),),
        {"lr": ("x",)},
    )
    for s in (s2, s3):
        aggregate_study(s, tmp / "cells", tmp / "studies" / s.name, seed=0, splits=[tmp / "splits" / "seed0.json"])
    sel = card.resolve_model("best", [s3, s2, study], tmp)
    assert sel.study == "lrs" and sel.cell == best
    assert "best of 2 studies ranking by val_dice_patient" in sel.how


# -------------------------------------------------------------------------------------- model card
def test_model_card_markdown_and_report_context(trained, best_cell, tmp_path):
    results, study = trained
    out = tmp_path / "model_card.md"
    c = card.write_model_card(study, results, out, seed=0)
    text = out.read_text()
    sha = hashlib.sha256((results / "cells" / best_cell / "best.pt").read_bytes()).hexdigest()
    assert c["ok"] and c["selection"].cell == best_cell
    assert f"`results/cells/{best_cell}/best.pt`, sha256 `{sha}`" in text
    for heading in (
        "## Model",
        "## Training data",
        "## Performance",
        "## Failure modes seen",
        "## Intended use",
        "## Limitations",
    ):
        assert heading in text
    assert "synthetic phantom" in text and f"cell `{best_cell}`" in text.lower()
    # worst validation patients: the lowest per-patient Dice of per_patient.csv
    with open(results / "cells" / best_cell / "per_patient.csv") as fh:
        val = [r for r in csv.DictReader(fh) if r["set"] == "val"]
    worst = min(val, key=lambda r: float(r["dice"]))
    assert c["worst"][0]["patient"] == worst["patient"] and worst["patient"] in text
    # validation and test rows with the cell's metrics.json numbers
    m = json.loads((results / "cells" / best_cell / "metrics.json").read_text())
    row = next(r for r in c["rows"] if r["key"] == "dice_patient")
    assert row["val"] == m["val_dice_patient"] and row["test"] == m["test"]["dice_patient"]
    assert c["table_value"]["key"] == "val_dice_patient"
    # no identifier of the phantom's headers
    for v in phantom.PHI_DEFAULTS.values():
        assert v.replace("{i}", "1").replace("{i:04d}", "0001") not in text
    ctx = card.card_context([study], results, {"seed": 0})
    assert ctx[0]["ok"] and ctx[0]["rows_text"][0]["label"] == "Dice per patient"


def test_native_labels_binary_and_multiclass():
    geom = pre.plan((6, 4), (4, 4), "resize_pad")  # 6×4 native → 4×(3 → padded to 4) network grid
    prob = np.zeros((1, 4, 4))
    prob[0, 1:3, 1:3] = 0.9
    binary = pr.native_labels(prob, geom)
    assert binary.shape == (6, 4) and binary.dtype == np.uint8 and set(np.unique(binary)) <= {0, 1}
    np.testing.assert_array_equal(binary, (pre.invert(geom, prob[0], fill=0.0) > 0.5).astype(np.uint8))
    three = np.zeros((3, 4, 4))
    three[0] = 1.0  # background everywhere but a block of class 2 and a pixel of class 1
    three[:, 1:3, 1:3] = [[[0.1]], [[0.2]], [[0.7]]]
    labels = pr.native_labels(three, geom)
    assert labels.shape == (6, 4) and set(np.unique(labels)) == {0, 2}


def test_predict_config_checks_its_keys():
    assert pr.PredictConfig.from_mapping({"input": "/x"}) == pr.PredictConfig(input="/x")
    with pytest.raises(ConfigError, match="predict.batchsize"):
        pr.PredictConfig.from_mapping({"batchsize": 4})
    with pytest.raises(ConfigError, match="predict.batch_size"):
        pr.PredictConfig.from_mapping({"batch_size": 0})


def test_a_series_that_fails_is_a_qc_row_and_the_others_are_predicted(trained, best_cell, tmp_path, monkeypatch):
    """An exception inside one series (here the SEG builder, as highdicom raises on a scanner's odd layout)
    costs only that series: a `predict_series_failed` row without identifiers, no half-written folder."""
    results, _ = trained
    root = tmp_path / "dicom"
    manifest = phantom.generate_series(PhantomConfig(**{**PHANTOM.__dict__, "patients": 2}), root)
    real, calls = pr.segmod.build_seg, []

    def flaky(sources, *args, **kw):
        calls.append(1)
        if len(calls) == 1:  # the first series; quotes a UID as library messages do
            raise ValueError(f"Plane positions must not contain duplicates ({sources[0].SOPInstanceUID})")
        return real(sources, *args, **kw)

    monkeypatch.setattr(pr.segmod, "build_seg", flaky)
    summary = _predict(results, root, tmp_path / "out", best_cell)
    n_series = len(manifest["series"])
    assert summary["n_series"] == n_series - 1 and summary["qc_counts"]["predict_series_failed"] == 1
    with open(tmp_path / "out" / "qc.csv") as fh:
        failed = [r for r in csv.DictReader(fh) if r["reason"] == "predict_series_failed"]
    assert len(failed) == 1 and failed[0]["status"] == "skipped" and failed[0]["file"] == ""
    assert failed[0]["message"].startswith("ValueError: Plane positions must not contain duplicates ([uid])")
    assert not (tmp_path / "out" / failed[0]["series"]).exists()
    done = {e["series"] for e in summary["series"]}
    assert failed[0]["series"] not in done and all((tmp_path / "out" / d / f"{d}_seg.dcm").exists() for d in done)


def _quiet_pydicom():
    from segsweep.data import dicom as dcm

    return dcm.quiet()


def test_odd_uids_never_reach_the_log(trained, best_cell, tmp_path, caplog, recwarn):
    """A scanner's non-conforming UID (a component with a leading zero) makes pydicom warn with the value when
    the SEG that references it is written: neither the log nor a warning may carry it."""
    results, _ = trained
    root = tmp_path / "dicom"
    phantom.generate_series(PhantomConfig(**{**PHANTOM.__dict__, "patients": 1}), root)
    odd = "1.2.826.0.1.3680043.8.498.0123456789"
    with warnings.catch_warnings(), _quiet_pydicom():  # the test's own edit warns too
        warnings.simplefilter("ignore")
        for i, f in enumerate(sorted(root.rglob("*.dcm"))):
            ds = pydicom.dcmread(f)
            ds.SOPInstanceUID = f"{odd}.{i}"
            ds.save_as(f)
    caplog.clear()
    recwarn.clear()
    with caplog.at_level(logging.DEBUG):
        summary = _predict(results, root, tmp_path / "out", best_cell)
    assert summary["n_series"] >= 1
    assert odd not in caplog.text
    assert not [w for w in recwarn if odd in str(w.message)]


# ------------------------------------------------------------------ ensemble and post-processing
@pytest.fixture(scope="module")
def repeats(trained):
    """A study whose one configuration has two runs (training seeds 0 and 1), aggregated with its patient
    files: table.json ``final`` holds its runs and its chosen post-processing."""
    results, _ = trained
    cells = {"bbbbbbbbbbb0": (0.01, 0), "bbbbbbbbbbb1": (0.01, 1)}
    study = _train_study(results, "seeds", "Two seeds", cells, data_dir=results / "data")
    return results, study, list(cells)


def test_ensemble_averages_the_runs_native_probabilities(repeats, predicted):
    results, study, cells = repeats
    _, root, _, manifest, _ = predicted
    models = [pr.CellModel(results / "cells" / c, 2) for c in cells]
    files = [root / f for f in manifest["series"][0]["files"]]
    prepared = [network_input(f) for f in files]
    images, geoms = [p.image for p in prepared], [p.geometry for p in prepared]
    by_hand = []
    for i in range(len(files)):  # p̄ = (p₁ + p₂) / 2 on the native grid, foreground where p̄ > 0.5
        native = [pre.invert(geoms[i], m.probabilities(np.stack(images[i : i + 1]))[0, 0], fill=0.0) for m in models]
        by_hand.append(((native[0].astype(np.float32) + native[1].astype(np.float32)) / 2 > 0.5).astype(np.uint8))
    got = pr.Predictor(models, cells).predict(images, geoms)
    for a, b in zip(got, by_hand):
        assert np.mean(a != b) < 1e-3  # float32 averaging: a pixel exactly at 0.5 may differ


def test_predict_uses_the_configurations_runs_and_its_chosen_postprocessing(repeats, tmp_path):
    results, study, cells = repeats
    table = json.loads((results / "studies" / "seeds" / "table.json").read_text())
    final = table["final"]
    assert sorted(final["cells"]) == sorted(cells) and final["chosen"] in (
        "none",
        "largest_2d",
        "largest_3d",
        "small_2d",
    )
    sel = card.resolve_model("seeds", [study], results)
    assert pr.model_runs(sel, results, ensemble=True) == (final["cells"], final["chosen"])
    assert pr.model_runs(sel, results, ensemble=False) == ([sel.cell], final["chosen"])
    assert pr.model_runs(dataclasses.replace(sel, study=None), results, ensemble=True) == ([sel.cell], "none")
    # force a post-processing choice to see it applied: one component per slice in every SEG frame
    table["final"]["chosen"] = "largest_2d"
    (results / "studies" / "seeds" / "table.json").write_text(json.dumps(table))
    root = tmp_path / "dicom"
    phantom.generate_series(PhantomConfig(**{**PHANTOM.__dict__, "patients": 1}), root)
    out = tmp_path / "out"
    summary = pr.run_predict(
        {"input": str(root), "model": "seeds"},
        studies=[study],
        results_dir=results,
        prep=PREP,
        pseudonym_key=KEY,
        out_dir=out,
    )
    assert summary["model"]["ensemble"] == final["cells"] and summary["model"]["postprocessing"] == "largest_2d"
    from scipy import ndimage

    (s,) = summary["series"]
    ds, frames = _seg_frames(out / s["series"] / f"{s['series']}_seg.dcm")
    assert all(ndimage.label(m)[1] <= 1 for m in frames.values())
    params = str(ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters)
    assert "postprocessing=largest_2d" in params and f"ensemble={'+'.join(final['cells'])}" in params


def test_a_corrupt_best_pt_is_an_error_naming_the_file(trained, tmp_path):
    results, _ = trained
    cell = tmp_path / "cell"
    shutil.copytree(results / "cells" / "aaaaaaaaaaa1", cell)
    data = (cell / "best.pt").read_bytes()
    (cell / "best.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"best\.pt"):
        pr.CellModel(cell, 2)
