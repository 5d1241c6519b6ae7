"""`predict` on DICOM as scanners write it (docs/predict.md): cine series in one series and one series per
position, an Enhanced MR file, the header quirks that broke it on real data (invalid dates, leading-zero
UIDs, a frame of reference per image, orientation jitter, no slice thickness, MONOCHROME1, rescale,
JPEG-LS), the real Sunnybrook sample and pydicom's own MR test files. SEGs are read back with pydicom and
checked with Debian's `dciodvfy` (dicom3tools) when it is installed (CI installs it)."""

import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import test_predict as tp
from pydicom.data import get_testdata_file

from segsweep.apply import discover as disc
from segsweep.apply import predict as pr
from segsweep.apply import seg as segmod
from segsweep.data import dicom as dcm
from segsweep.data.config import PhantomConfig
from segsweep.data.phantom import generate_series
from segsweep.data.phantom_scanner import QUIRK_PHI, generate_scanner_series
from segsweep.errors import DataError

KEY, PREP, _predict = tp.KEY, tp.PREP, tp._predict
trained, best_cell = tp.trained, tp.best_cell  # test_predict's module fixtures: the same two tiny cells
SUNNYBROOK = Path(__file__).parent / "data" / "sunnybrook" / "dicoms"
SCANNER = PhantomConfig(patients=1, slices=3, rows=64, cols=56, no_contour_fraction=0.0)
PHASES = 4
DCIODVFY = shutil.which("dciodvfy")
# dciodvfy findings that come from the source's own values (an identified SEG must copy and reference
# them as they are): the quirks case's leading-zero UIDs, and its study date, invalid at the source and
# therefore left empty; Sunnybrook's empty Study ID and its PatientName without "^"
INHERITED = (
    "Leading zeroes in embedded numeric component",
    "DICOMDIR - Study Date",
    "DICOMDIR - Study ID",
    "Patient's Name  PN [1] = <SCD",
)
INVALID_VALUES = "Dicom dataset contains invalid data values for Value Representations"  # sums those up


@pytest.fixture(scope="module")
def scanner_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("scanner")
    with dcm.quiet():  # the quirks are invalid values: pydicom warns while writing them
        manifest = generate_scanner_series(SCANNER, root, phases=PHASES)
        generate_series(PhantomConfig(patients=1, slices=3, rows=64, cols=56), root / "other", mixed=True)
    return root, manifest


@pytest.fixture(scope="module")
def scanner_predicted(trained, best_cell, scanner_root, tmp_path_factory):
    results, _ = trained
    root, manifest = scanner_root
    out = tmp_path_factory.mktemp("scanner-out")
    summary = _predict(results, root, out, best_cell)
    return results, root, manifest, out, summary


def _source_headers(root):
    with dcm.quiet():
        return {str(h.SOPInstanceUID): (f, h) for f in root.rglob("*.dcm") for h in [_hdr(f)] if "SOPInstanceUID" in h}


def _hdr(f):
    with dcm.quiet():
        return pydicom.dcmread(f, stop_before_pixels=True, force=True)


def _frames(path):
    """[((referenced SOP Instance UID, referenced frame number or None), decoded frame)] of a one-segment
    SEG, in frame order; every frame must reference exactly one source image (or frame)."""
    with dcm.quiet():
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
        refs = []
        for f in ds.PerFrameFunctionalGroupsSequence:
            (src,) = f.DerivationImageSequence[0].SourceImageSequence
            n = src.get("ReferencedFrameNumber")
            refs.append((str(src.ReferencedSOPInstanceUID), None if n is None else int(n)))
    return ds, list(zip(refs, pixels))


def _expected(results, cell, path, frame=None):
    """The model's prediction of an image (or an Enhanced MR frame), computed here from the file."""
    p = tp.network_input(path, frame)
    return pr.CellModel(results / "cells" / cell, 2).predict([p.image], [p.geometry])[0]


def _series_dirs(out):
    return {d.name: json.loads((d / "series.json").read_text()) for d in out.iterdir() if d.is_dir()}


def dciodvfy_findings(path) -> list[str]:
    """dciodvfy's Error and Warning lines for a file, those inherited from the source removed."""
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith(("Error", "Warning"))]
    inherited = [ln for ln in lines if any(k in ln for k in INHERITED)]
    own = [ln for ln in lines if ln not in inherited]
    if any("Leading zeroes" in ln for ln in inherited):
        own = [ln for ln in own if INVALID_VALUES not in ln]
    return own


# ------------------------------------------------------------------------------------- the layouts
def test_cine_layouts_write_a_seg_per_phase_with_existing_references(scanner_predicted, best_cell):
    results, root, manifest, out, summary = scanner_predicted
    headers = _source_headers(root)
    infos = _series_dirs(out)
    by_case = {}
    for name, info in infos.items():
        refs = set()
        for seg in info["segs"]:
            ds, frames = _frames(out / name / seg["file"])
            assert ds.SOPClassUID == segmod.SEG_STORAGE
            positions = [
                tuple(f.PlanePositionSequence[0].ImagePositionPatient) for f in ds.PerFrameFunctionalGroupsSequence
            ]
            assert len(set(positions)) == len(positions)  # one image per position: a volume a viewer opens
            for (uid, frame), mask in frames:
                assert uid in headers, "a frame references an image that does not exist"
                refs.add((uid, frame))
                expected = _expected(results, best_cell, headers[uid][0], frame)
                np.testing.assert_array_equal(mask, expected, err_msg=f"{uid} frame {frame}")
        cases = [c for c, e in manifest["cases"].items() if refs <= _image_keys(e)]
        if cases:  # else the plain phantom stack (generate_series)
            by_case[cases[0]] = (name, info, refs)
    for case in ("cine", "per_position", "quirks", "multiframe"):
        name, info, refs = by_case[case]
        entry = manifest["cases"][case]
        assert refs == _image_keys(entry), case  # every image (frame) written, once
        n_segs = PHASES * (3 if case == "per_position" else 1)  # per source series and phase
        assert len(info["segs"]) == n_segs and info["n_slices"] == 3 and info["phases_even"], case
        # phase and slice of every image as the phantom drew them
        truth = {(i["sop_uid"], i.get("frame")): (i["slice"], i["phase"]) for i in entry["images"]}
        for seg in info["segs"]:
            for ref, _ in _frames(out / name / seg["file"])[1]:
                assert truth[ref][1] == seg["phase"], (case, ref)
        f = info["function"]
        assert f is not None and 0 < f["ef_percent"] < 100 and f["edv_ml"] > f["esv_ml"] > 0, case
        # the phantom's cavity is largest at phase 0 and contracts to mid-cycle (the tiny model sees the
        # contraction; which of the two smallest phases it finds smallest is not its strength)
        cavity = [v["lv_cavity"] for v in info["volumes_ml"]]
        assert f["ed_phase"] == 0 and cavity[0] > cavity[1] > cavity[2] and f["es_phase"] == int(np.argmin(cavity))
        vol = pd.read_csv(out / name / "volumes.csv", keep_default_na=False)
        (ef,) = vol.loc[vol["row"] == "ejection_fraction", "ef_percent"]
        assert float(ef) == pytest.approx(f["ef_percent"], rel=1e-5)
    assert summary["n_series"] == 5  # the four cine cases and the plain phantom series


def _image_keys(entry) -> set:
    return {(i["sop_uid"], i.get("frame")) for i in entry.get("images", [])}


def _secrets(headers) -> set[str]:
    """Every source UID and patient ID of a root, and the quirks' date values."""
    out = set(headers) | set(QUIRK_PHI.values())
    with dcm.quiet():  # the quirks' UIDs warn when read
        for _, h in headers.values():
            for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName"):
                out.add(str(h.get(kw, "") or ""))
    return out - {""}


def test_identified_run_keeps_identifiers_and_uids_in_the_segs_only(scanner_predicted):
    _, root, _, out, _ = scanner_predicted
    secrets = _secrets(_source_headers(root))
    for f in out.rglob("*"):
        if f.is_file() and not f.name.endswith("_seg.dcm"):
            text = f.read_bytes().decode("latin-1")
            assert not [s for s in secrets if s in text], f


def test_scanner_root_qc_rows_name_each_quirk(scanner_predicted):
    _, _, _, out, _ = scanner_predicted
    qc = pd.read_csv(out / "qc.csv", keep_default_na=False)
    reasons = set(qc["reason"])
    assert {"predict_frame_of_reference_mixed", "predict_not_mr", "dicom_truncated"} <= reasons
    assert "predict_series_failed" not in reasons, qc[qc["reason"] == "predict_series_failed"].to_string()


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) not installed")
def test_every_seg_passes_dciodvfy(scanner_predicted):
    _, _, _, out, _ = scanner_predicted
    segs = sorted(out.rglob("*_seg.dcm"))
    assert len(segs) == 4 + 12 + 4 + 4 + 1
    for path in segs:
        assert dciodvfy_findings(path) == [], path


def test_deidentified_run_leaves_no_identifier_or_source_uid_anywhere(
    trained,
    best_cell,
    scanner_root,
    tmp_path,
    caplog,
    recwarn,
):
    results, _ = trained
    root, manifest = scanner_root
    headers = _source_headers(root)
    secrets = _secrets(headers)
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # reading the sources here warned about their UIDs: only predict's own records count
    recwarn.clear()
    _predict(results, root, out, best_cell, deidentify=True)
    said = caplog.text + "\n".join(str(w.message) for w in recwarn)
    assert not [s for s in secrets if s in said]  # the log and warnings too
    for f in out.rglob("*"):
        if f.is_file():
            text = f.read_bytes().decode("latin-1")
            assert not [s for s in secrets if s in text], f
    for name, info in _series_dirs(out).items():
        images = {str(_hdr(p).SOPInstanceUID) for p in (out / name / "images").glob("*.dcm")}
        for seg in info["segs"]:
            ds, frames = _frames(out / name / seg["file"])
            assert {u for (u, _), _ in frames} <= images  # the SEG opens with the images written beside it
            if DCIODVFY:
                assert dciodvfy_findings(out / name / seg["file"]) == [], seg["file"]
        if DCIODVFY:  # a copy has no finding its source image has not (the phantom's images lack some MR
            # attributes, and a copy keeps only what the source had)
            source_of = {segmod.remap_uid(KEY, u): f for u, (f, _) in headers.items()}
            for p in sorted((out / name / "images").glob("*.dcm"))[:2]:
                src = source_of[str(_hdr(p).SOPInstanceUID)]
                new = set(dciodvfy_findings(p)) - set(dciodvfy_findings(src))
                assert not new, (p, sorted(new))


# ------------------------------------------------------------------------------- material not ours
def test_sunnybrook_sample_runs_end_to_end(trained, best_cell, tmp_path):
    """The real CC0 sample: one cine series per patient, PatientBirthDate 00000000, StudyDate 20120000,
    leading-zero UIDs, a FrameOfReferenceUID per image, two phases at one position and one at another."""
    results, _ = trained
    for deidentify in (False, True):
        out = tmp_path / f"out-{deidentify}"
        summary = _predict(results, SUNNYBROOK, out, best_cell, deidentify=deidentify)
        assert summary["n_series"] == 2 and summary["n_images"] == 6
        qc = pd.read_csv(out / "qc.csv", keep_default_na=False)
        assert "predict_series_failed" not in set(qc["reason"]) and "predict_phases_uneven" in set(qc["reason"])
        for name, info in _series_dirs(out).items():
            assert info["n_slices"] == 2 and len(info["segs"]) == 2 and info["volumes_ml"] is None
            for seg in info["segs"]:
                _frames(out / name / seg["file"])
                if DCIODVFY:
                    assert dciodvfy_findings(out / name / seg["file"]) == [], seg["file"]
        for f in out.rglob("*"):
            if f.is_file() and (deidentify or not f.name.endswith("_seg.dcm")):
                text = f.read_bytes().decode("latin-1")
                assert "SCD0000" not in text and "20120000" not in text, f


def test_pydicom_mr_test_files_decode_to_the_same_prediction(trained, best_cell, tmp_path):
    """pydicom's MR_small in six encodings (explicit / implicit / big endian, RLE, JPEG 2000 and JPEG-LS
    lossless): one SEG each, all with the same mask; its truncated copy is a row and no series."""
    results, _ = trained
    masks = {}
    for name in (
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ):
        root = tmp_path / name
        root.mkdir()
        shutil.copy(get_testdata_file(name), root / name)
        out = tmp_path / f"out-{name}"
        summary = _predict(results, root, out, best_cell)
        (series,) = summary["series"]
        info = json.loads((out / series["series"] / "series.json").read_text())
        (seg,) = info["segs"]
        masks[name] = _frames(out / series["series"] / seg["file"])[1][0][1]
    ref = masks["MR_small.dcm"]
    for name, m in masks.items():
        np.testing.assert_array_equal(m, ref, err_msg=name)
    root = tmp_path / "truncated"
    root.mkdir()
    shutil.copy(get_testdata_file("MR_truncated.dcm"), root / "MR_truncated.dcm")
    with pytest.raises(DataError, match="no series could be predicted.*qc.csv"):
        _predict(results, root, tmp_path / "out-truncated", best_cell)
    qc = pd.read_csv(tmp_path / "out-truncated" / "qc.csv", keep_default_na=False)
    assert set(qc["reason"]) == {"dicom_truncated", "predict_empty_series", "predict_no_series_written"}


def test_a_rerun_replaces_the_last_runs_outputs_only(trained, best_cell, tmp_path):
    results, _ = trained
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("not ours")
    _predict(results, SUNNYBROOK, out, best_cell)
    first = {p.name for p in out.iterdir()}
    root = tmp_path / "one"
    shutil.copytree(SUNNYBROOK / "SCD0000101", root / "SCD0000101")
    _predict(results, root, out, best_cell)
    assert first == {"keep.txt", "qc.csv", "predict.json", *(disc.series_pseudonym(KEY, u) for u in _uids(SUNNYBROOK))}
    second = {p.name for p in out.iterdir()}
    assert second == {"keep.txt", "qc.csv", "predict.json", *(disc.series_pseudonym(KEY, u) for u in _uids(root))}


def _uids(root):
    with dcm.quiet():  # Sunnybrook's leading-zero UIDs warn when read
        return {str(_hdr(f).SeriesInstanceUID) for f in root.rglob("*.dcm")}
