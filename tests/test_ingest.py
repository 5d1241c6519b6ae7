"""Ingest end to end: every layout and target, bad inputs as QC rows, strict mode, idempotence."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from segsweep.data import contours, ingest, layouts
from segsweep.data import preprocess as pre
from segsweep.data.config import DataConfig, PhantomConfig, PreprocessConfig
from segsweep.errors import DataError

PREP = PreprocessConfig(size=(48, 40))


def cfg(root, layout="rvsc", target="endo", strict=False, key="test-key") -> DataConfig:
    return DataConfig(layout, str(root), target, strict, key, PhantomConfig(layout=layout))


def qc_rows(out: Path) -> list[dict]:
    with open(out / "qc.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def pid(raw_key: str) -> str:
    return ingest.pseudonym("test-key", raw_key)


def row_kind(file: str) -> str:
    """The kind of a qc.csv file, "contour": a contour file, an RTSTRUCT contour (``RS.dcm#roi1-003``) or a
    label-volume region (``x_gt.nii.gz#z03-endo``), else "image" (a file, or a volume slice ``x.nii.gz#z03``)."""
    return "contour" if file.endswith(".txt") or re.search(r"#(roi\d+-\d+|z\d+-(endo|epi))$", file) else "image"


def row_for(rows, suffix: str, patient: str | None = None) -> dict:
    hits = [r for r in rows if r["file"].endswith(suffix) and patient in (None, r["patient"])]
    assert len(hits) == 1, (suffix, hits)
    return hits[0]


@pytest.mark.parametrize("layout", layouts.LAYOUT_NAMES)
@pytest.mark.parametrize("target", ingest.TARGETS)
def test_every_layout_and_target(phantom_trees, tmp_path, layout, target):
    root = phantom_trees[layout]
    ds = ingest.run(cfg(root, layout, target), PREP, tmp_path)
    manifest = json.loads((root / "MANIFEST.json").read_text())
    assert ds == json.loads((tmp_path / "dataset.json").read_text())
    assert set(ds) == {"source", "layout", "target", "n_classes", "size", "patients", "n_images", "qc_counts"}
    assert ds["layout"] == layout and ds["target"] == target and ds["size"] == [48, 40]
    assert ds["n_classes"] == (3 if target == "multiclass" else 2)
    both = sum(p["contoured"] - p["inner_only"] for p in manifest["patients"])
    inner = sum(p["contoured"] for p in manifest["patients"])
    assert ds["n_images"] == {"endo": inner, "epi": both, "myo": both, "multiclass": both}[target]
    assert len(ds["patients"]) == 3
    for p in ds["patients"]:
        assert re.fullmatch(r"p[0-9a-f]{8}", p["id"])
        z = np.load(tmp_path / f"{p['id']}.npz")
        n = p["n_images"]
        assert z["image"].shape == z["raw"].shape == z["mask"].shape == (n, 48, 40)
        assert z["image"].dtype == np.float32 and z["raw"].dtype == np.uint8 and z["mask"].dtype == np.uint8
        assert z["spacing"].shape == (n, 2) and z["spacing"].dtype == np.float32
        assert z["slice"].dtype == np.int32 and list(z["slice"]) == sorted(z["slice"])
        assert z["image"].min() >= 0 and z["image"].max() <= 1
        assert set(np.unique(z["mask"])) == ({0, 1, 2} if target == "multiclass" else {0, 1})
        _check_native_arrays(z, PREP)
    rows = qc_rows(tmp_path)
    assert sum(r["status"] == "ok" and row_kind(r["file"]) == "image" for r in rows) == ds["n_images"]
    n_images = manifest["n_images"] + sum(p["extra_images"] for p in manifest["patients"])
    assert sum(row_kind(r["file"]) == "image" for r in rows) == n_images  # one row per image file / slice
    assert sum(row_kind(r["file"]) == "contour" for r in rows) == manifest["n_contours"]
    assert {r["reason"] for r in rows} <= set(ingest.QC_REASONS) | {""}
    assert ds["qc_counts"]["image_without_contour"] == sum(p["images"] - p["contoured"] for p in manifest["patients"])


def _check_native_arrays(z, prep: PreprocessConfig) -> None:
    """The native-grid arrays describe each image's geometry: mapping the native mask forward gives the
    stored mask exactly (the same plan and nearest-neighbour resampling)."""
    n = len(z["slice"])
    assert z["native_shape"].shape == z["resized_shape"].shape == z["native_spacing"].shape == (n, 2)
    assert z["native_shape"].dtype == z["resized_shape"].dtype == np.int32
    assert z["native_spacing"].dtype == np.float32 and z["native_mask"].dtype == np.uint8
    assert z["native_mask"].shape[1:] == tuple(z["native_shape"].max(0))
    for i in range(n):
        h, w = z["native_shape"][i]
        g = pre.plan((h, w), prep.size, prep.policy)
        assert g.resized == tuple(z["resized_shape"][i])
        np.testing.assert_allclose(z["spacing"][i], z["native_spacing"][i] * np.array(g.factor), rtol=1e-6)
        np.testing.assert_array_equal(pre.apply(g, z["native_mask"][i][:h, :w], is_mask=True), z["mask"][i])
        assert not z["native_mask"][i][h:].any() and not z["native_mask"][i][:, w:].any()


def test_masks_are_the_rasterised_contours(phantom_trees, tmp_path):
    # crop_pad to the native size: no resampling, so the mask must equal the rasterised files exactly
    root = phantom_trees["sunnybrook_flat"]
    ingest.run(cfg(root, "sunnybrook_flat", "multiclass"), PreprocessConfig(size=(64, 56), policy="crop_pad"), tmp_path)
    rec = layouts.discover("sunnybrook_flat", root)[0]
    z = np.load(tmp_path / f"{ingest.pseudonym('test-key', rec.key)}.npz")
    for i, number in enumerate(z["slice"]):
        it = next(it for it in rec.items if it.number == number)
        inner = contours.rasterize(contours.parse(it.inner).points, (64, 56))
        outer = contours.rasterize(contours.parse(it.outer).points, (64, 56))
        np.testing.assert_array_equal(z["mask"][i] == 1, inner)
        np.testing.assert_array_equal(z["mask"][i] == 2, outer & ~inner)
        np.testing.assert_array_equal(z["native_mask"][i], z["mask"][i])  # native size = network size here
        # the phantom paints a bright cavity inside a dark myocardium ring
        assert z["raw"][i][inner].mean() > z["raw"][i][outer & ~inner].mean() + 40


def test_real_sunnybrook_sample(phantom_sunnybrook_sample, tmp_path):
    ds = ingest.run(cfg(phantom_sunnybrook_sample, "sunnybrook_flat", "endo"), PreprocessConfig(), tmp_path)
    assert ds["n_images"] == 6 and [p["n_images"] for p in ds["patients"]] == [3, 3]
    rows = qc_rows(tmp_path)
    assert {r["reason"] for r in rows} == {"", "contour_unused"}
    for p in ds["patients"]:
        z = np.load(tmp_path / f"{p['id']}.npz")
        np.testing.assert_allclose(z["spacing"], 1.367188 * 256 / 112, rtol=1e-5)  # 256² → 112² (+pad)
        np.testing.assert_allclose(z["native_spacing"], 1.367188, rtol=1e-5)
        assert (z["native_shape"] == 256).all() and z["native_mask"].shape[1:] == (256, 256)
        _check_native_arrays(z, PreprocessConfig())
        area_mm2 = z["mask"].sum(axis=(1, 2)) * z["spacing"].prod(axis=1)
        assert ((area_mm2 > 500) & (area_mm2 < 5000)).all()  # LV cavity, plausible in mm²
        for img, m in zip(z["raw"], z["mask"]):  # blood pool brighter than its surroundings
            assert img[m == 1].mean() > img[m == 0].mean()
    ds = ingest.run(cfg(phantom_sunnybrook_sample, "sunnybrook_flat", "myo"), PreprocessConfig(), tmp_path)
    assert ds["n_images"] == 4 and ds["qc_counts"]["contour_missing_for_target"] == 2


def test_pseudonym_is_hmac_sha256():
    assert ingest.pseudonym("k", "patient01") == "p" + hmac.new(b"k", b"patient01", hashlib.sha256).hexdigest()[:8]
    assert ingest.pseudonym("k", "a") != ingest.pseudonym("k2", "a")


def test_idempotent_bytes_stale_files_removed_and_workers_agree(phantom_copy, tmp_path):
    root = phantom_copy("rvsc")
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    ingest.run(cfg(root), PREP, out1)
    first = {f.name: f.read_bytes() for f in out1.iterdir()}
    stale = out1 / "pdeadbeef.npz"
    stale.write_bytes(b"old")
    (out1 / "keep.txt").write_text("not ours")
    ingest.run(cfg(root), PREP, out1)
    assert not stale.exists() and (out1 / "keep.txt").exists()
    assert {f.name: f.read_bytes() for f in out1.iterdir() if f.name != "keep.txt"} == first
    ingest.run(cfg(root), PREP, out2, workers=2)
    assert {f.name: f.read_bytes() for f in out2.iterdir()} == first
    # a patient removed from the data: its npz goes
    shutil.rmtree(root / "TrainingSet" / "patient03")
    ds = ingest.run(cfg(root), PREP, out1)
    assert len(ds["patients"]) == 2 and len(list(out1.glob("p*.npz"))) == 2


def corrupt(root: Path) -> dict[tuple[str, str], str]:
    """Break files of patients 01 and 02 in one way each; return {(pseudonym, file suffix): reason}."""
    p1 = root / "TrainingSet" / "patient01"
    p2 = root / "TrainingSet" / "patient02"
    contoured = {}
    for pdir, tag in ((p1, "P01"), (p2, "P02")):
        contoured[tag] = sorted(f.name[4:8] for f in (pdir / f"{tag}contours-manual").glob("*-icontour-*"))
    a, b, c = contoured["P01"][:3]
    expect = {}
    P1, P2 = pid("TrainingSet/patient01"), pid("TrainingSet/patient02")
    # patient01: a text file named like an image, a truncated image, a NaN contour
    (p1 / "P01dicom" / f"P01-{a}.dcm").write_text("not a dicom\n")
    expect[(P1, f"-{a}.dcm")] = "dicom_not_dicom"
    data = (p1 / "P01dicom" / f"P01-{b}.dcm").read_bytes()
    (p1 / "P01dicom" / f"P01-{b}.dcm").write_bytes(data[: len(data) - 500])
    expect[(P1, f"-{b}.dcm")] = "dicom_truncated"
    (p1 / "P01contours-manual" / f"P01-{c}-icontour-manual.txt").write_text("1 2\nnan 3\n4 5\n")
    expect[(P1, f"-{c}-icontour-manual.txt")] = "contour_nonfinite"
    expect[(P1, f"-{c}.dcm")] = "contour_invalid"
    # patient02: garbage, odd values, too few points, empty; a contour without image; points outside
    d, e, f = (contoured["P02"] + ["x"] * 3)[:3]
    ctr = p2 / "P02contours-manual"
    (ctr / f"P02-{d}-icontour-manual.txt").write_text("12.0 13.0\nabc def\n14 15\n")
    expect[(P2, f"-{d}-icontour-manual.txt")] = "contour_not_numeric"
    (ctr / f"P02-{e}-icontour-manual.txt").write_text("1 2\n3 4\n5 6\n7\n")
    expect[(P2, f"-{e}-icontour-manual.txt")] = "contour_odd_values"
    if f != "x":
        (ctr / f"P02-{f}-icontour-manual.txt").write_text("1 2\n3 4\n")
        expect[(P2, f"-{f}-icontour-manual.txt")] = "contour_too_few_points"
    (ctr / "P02-0042-icontour-manual.txt").write_text("10 10\n20 10\n20 20\n")
    expect[(P2, "-0042-icontour-manual.txt")] = "contour_without_image"
    (ctr / "P02-0043-icontour-manual.txt").write_text("")
    expect[(P2, "-0043-icontour-manual.txt")] = "contour_without_image"
    (p2 / "P02dicom" / "readme.txt").write_text("hello")
    expect[(P2, "dicom/readme.txt")] = "unexpected_file"
    return expect


def test_bad_inputs_become_qc_rows_and_other_patients_still_come_out(phantom_make, tmp_path):
    root = phantom_make("rvsc", slices=8)  # 6 contoured slices per patient: some stay good
    expect = corrupt(root)
    ds = ingest.run(cfg(root), PREP, tmp_path)
    rows = qc_rows(tmp_path)
    for (patient, suffix), reason in expect.items():
        row = row_for(rows, suffix, patient)
        assert row["reason"] == reason, (suffix, row)
        assert row["status"] == "skipped"
    p3 = pid("TrainingSet/patient03")
    assert p3 in {p["id"] for p in ds["patients"]}
    assert len(ds["patients"]) == 3  # patients 01 and 02 keep their good images
    n = {p["id"]: p["n_images"] for p in ds["patients"]}
    assert n[pid("TrainingSet/patient01")] == 3 and n[pid("TrainingSet/patient02")] == 3 and n[p3] == 6
    assert ds["qc_counts"]["contour_without_image"] == 2


def test_empty_inner_contour_of_an_existing_image(phantom_copy, tmp_path):
    root = phantom_copy("rvsc")
    ctr = sorted((root / "TrainingSet" / "patient01" / "P01contours-manual").glob("*-icontour-*"))[0]
    ctr.write_text("\n \n")
    ingest.run(cfg(root), PREP, tmp_path)
    assert row_for(qc_rows(tmp_path), ctr.name[3:], pid("TrainingSet/patient01"))["reason"] == "contour_empty"


def test_warnings_keep_the_image(phantom_copy, tmp_path):
    root = phantom_copy("sunnybrook_flat")
    files = sorted((root / "contourfiles" / "SC-HF-I-1" / "i-contours").glob("*.txt"))
    pts = np.loadtxt(files[0])
    np.savetxt(files[0], pts - [pts[:, 0].min() + 3, 0], fmt="%.2f")  # pushed past the left border
    bow = pts.copy()
    bow[[0, len(bow) // 2]] = bow[[len(bow) // 2, 0]]  # swap two points: the outline crosses itself
    np.savetxt(files[1], bow, fmt="%.2f")
    ds = ingest.run(cfg(root, "sunnybrook_flat"), PREP, tmp_path)
    rows = qc_rows(tmp_path)
    p = pid("SCD0000101")
    r0, r1 = row_for(rows, files[0].name, p), row_for(rows, files[1].name, p)
    assert (r0["status"], r0["reason"]) == ("warning", "contour_outside_image")
    assert (r1["status"], r1["reason"]) == ("warning", "contour_self_intersecting")
    for name in (files[0].name, files[1].name):
        image_row = row_for(rows, f"/{int(name[8:12])}.dcm", p)
        assert image_row["status"] == "ok"
    assert ds["qc_counts"]["contour_outside_image"] == 1


def test_strict_lists_every_failure(phantom_copy, tmp_path):
    root = phantom_copy("rvsc")
    expect = corrupt(root)
    ingest.run(cfg(root), PREP, tmp_path)  # not strict: goes through, writes dataset.json
    with pytest.raises(DataError) as err:
        ingest.run(cfg(root, strict=True), PREP, tmp_path)
    msg = str(err.value)
    failures = [s for (_, s), r in expect.items() if ingest.severity(r) == "failure"]
    assert f"{len(failures)} QC failure(s)" in msg
    for suffix in failures:
        assert suffix in msg
    assert "patient01" not in msg and "P01" not in msg  # pseudonymised there too
    assert not (tmp_path / "dataset.json").exists() and (tmp_path / "qc.csv").exists()
    kept = ingest.failed_qc_path(tmp_path)
    assert f"details in {kept}" in msg and kept.read_bytes() == (tmp_path / "qc.csv").read_bytes()
    kept.unlink()
    ds = ingest.run(cfg(phantom_copy("sunnybrook_flat"), "sunnybrook_flat", strict=True), PREP, tmp_path / "ok")
    assert ds["n_images"] > 0  # info rows (image_without_contour, contour_unused) do not fail strict


def test_no_usable_pair_is_a_data_error(phantom_copy, tmp_path):
    root = phantom_copy("rvsc")
    for f in root.rglob("*contour-manual.txt"):
        f.unlink()
    out = tmp_path / "data"
    with pytest.raises(DataError, match="no usable image/contour pair") as err:
        ingest.run(cfg(root), PREP, out)
    assert (out / "qc.csv").exists()
    # Snakemake removes a failed job's output folder: the message points at a copy beside it
    kept = tmp_path / "data.qc.csv"
    assert ingest.failed_qc_path(out) == kept and f"(see {kept})" in str(err.value)
    assert kept.read_bytes() == (out / "qc.csv").read_bytes()
    assert "image_without_contour" in kept.read_text()
    ingest.run(cfg(phantom_copy("sunnybrook_flat"), "sunnybrook_flat"), PREP, out)
    assert not kept.exists()  # a successful ingest of the folder removes the failure's copy


def test_missing_root_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ingest.run(cfg(tmp_path / "absent"), PREP, tmp_path / "out")


def test_multiframe_image_with_contour(phantom_copy, tmp_path, dicom_write):
    root = phantom_copy("sunnybrook_flat")
    img = sorted((root / "dicoms" / "SCD0000101").glob("*.dcm"))[0]
    ctr = root / "contourfiles" / "SC-HF-I-1" / "i-contours" / f"IM-0001-{int(img.stem):04d}-icontour-manual.txt"
    ctr.write_text("10 10\n30 10\n30 30\n")
    shutil.copy(dicom_write("mf.dcm", np.ones((3, 64, 56), np.uint16)), img)
    ingest.run(cfg(root, "sunnybrook_flat"), PREP, tmp_path)
    assert row_for(qc_rows(tmp_path), f"/{img.name}", pid("SCD0000101"))["reason"] == "dicom_multiframe"


def test_every_reason_is_documented():
    doc = (Path(__file__).parents[1] / "docs" / "qc.md").read_text()
    for code in ingest.QC_REASONS:
        assert f"`{code}`" in doc, code


def test_blank_image_empty_mask_and_unexpected_errors(phantom_copy, tmp_path, dicom_write, monkeypatch):
    root = phantom_copy("sunnybrook_flat")
    ctr_dir = root / "contourfiles" / "SC-HF-I-1"
    both = sorted(int(f.name[8:12]) for f in (ctr_dir / "o-contours").glob("*.txt"))
    assert len(both) >= 2
    blank, same = both[0], both[1]
    shutil.copy(
        dicom_write("flat.dcm", np.full((64, 56), 300, np.uint16)), root / "dicoms" / "SCD0000101" / f"{blank}.dcm"
    )
    # outer contour = inner contour: the myocardium is empty
    inner = ctr_dir / "i-contours" / f"IM-0001-{same:04d}-icontour-manual.txt"
    shutil.copy(inner, ctr_dir / "o-contours" / f"IM-0001-{same:04d}-ocontour-manual.txt")
    ingest.run(cfg(root, "sunnybrook_flat", "myo"), PREP, tmp_path)
    rows = qc_rows(tmp_path)
    p = pid("SCD0000101")
    assert row_for(rows, f"/{blank}.dcm", p)["reason"] == "image_blank"
    assert row_for(rows, f"/{same}.dcm", p)["reason"] == "mask_empty"
    assert row_for(rows, f"-{same:04d}-icontour-manual.txt", p)["reason"] == "contour_unused"

    # an unexpected exception in one image becomes one row per file; the rest goes on
    real = ingest.pre.prepare
    calls = []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(ingest.pre, "prepare", flaky)
    ds = ingest.run(cfg(root, "sunnybrook_flat", "endo"), PREP, tmp_path / "e")
    rows = qc_rows(tmp_path / "e")
    errs = [r for r in rows if r["reason"] == "processing_error"]
    assert len(errs) == 1 and errs[0]["message"] == "RuntimeError"
    assert len({r["file"] for r in rows}) == len(rows)
    assert ds["n_images"] == len(calls) - 1


def test_native_arrays_pad_images_of_different_sizes():
    a, b = np.ones((3, 4), np.uint8), np.full((5, 2), 1, np.uint8)
    out = {"native_mask": [a, b], "native_shape": [(3, 4), (5, 2)], "resized_shape": [(6, 8), (10, 4)]}
    out["native_spacing"] = [(1.5, 1.5), (1.0, 2.0)]
    z = ingest.native_arrays(out)
    m = np.stack(z["native_mask"])
    assert m.shape == (2, 5, 4) and m[0, :3, :4].all() and not m[0, 3:].any()
    assert m[1, :5, :2].all() and not m[1, :, 2:].any()
    assert z["native_shape"].tolist() == [[3, 4], [5, 2]] and z["native_spacing"].dtype == np.float32
