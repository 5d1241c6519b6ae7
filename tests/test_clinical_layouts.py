"""The clinical input formats: RTSTRUCT (DICOM structure sets) and NIfTI (ACDC-style volumes).

Both phantoms hold the same patients as the text-contour (RVSC) phantom of the same seed, so ingest must give
the same masks; bad configuration values, unknown ROIs, broken files and odd geometry become ConfigErrors
or QC rows while the rest goes on."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import re
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import yaml
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from segsweep.data import contours, ingest, layouts
from segsweep.data.config import DataConfig, PhantomConfig, PreprocessConfig, data_from_dict
from segsweep.data.layouts.nifti import LABEL_MAP_DEFAULT, label_map_option
from segsweep.data.layouts.rtstruct import ROI_MAP_DEFAULT, roi_map_option
from segsweep.errors import ConfigError, DataError
from segsweep.io import digest, identity
from segsweep.plan import config as plan_config
from segsweep.plan.cells import data_fingerprint

NATIVE = PreprocessConfig(size=(64, 56), policy="crop_pad")  # the phantom's size: no resampling
CLINICAL = ("rtstruct", "nifti")


def cfg(root, layout, target="endo", strict=False, **options) -> DataConfig:
    """The data config of ``layout``; ``options``: its own keys as in a config (roi_map=..., label_map=...)."""
    opts = layouts.parse_options(layout, options)
    return DataConfig(layout, str(root), target, strict, "test-key", PhantomConfig(layout=layout), options=opts)


def qc_rows(out: Path) -> list[dict]:
    with open(out / "qc.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def arrays(out: Path, layout: str, root: Path) -> list[dict]:
    """The npz arrays of each patient, in patient order (phantom patient 1, 2, 3)."""
    keys = [r.key for r in layouts.discover(layout, root)]
    return [dict(np.load(out / f"{ingest.pseudonym('test-key', k)}.npz")) for k in keys]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 if not a.any() and not b.any() else 2 * np.count_nonzero(a & b) / (a.sum() + b.sum())


def reasons(rows, patient=None) -> dict[str, str]:
    return {r["file"]: r["reason"] for r in rows if patient in (None, r["patient"])}


# ---------------------------------------------------------------------------------------- same masks
@pytest.mark.parametrize("layout", CLINICAL)
@pytest.mark.parametrize("target", ["endo", "epi", "myo", "multiclass"])
@pytest.mark.parametrize("prep", [NATIVE, PreprocessConfig(size=(48, 40))], ids=["native", "resized"])
def test_same_masks_as_the_text_layout(phantom_trees, tmp_path, layout, target, prep):
    ref = ingest.run(cfg(phantom_trees["rvsc"], "rvsc", target), prep, tmp_path / "rvsc")
    got = ingest.run(cfg(phantom_trees[layout], layout, target), prep, tmp_path / layout)
    assert got["n_images"] == ref["n_images"] and got["qc_counts"] == ref["qc_counts"]
    pairs = zip(
        arrays(tmp_path / "rvsc", "rvsc", phantom_trees["rvsc"]),
        arrays(tmp_path / layout, layout, phantom_trees[layout]),
    )
    for a, b in pairs:
        assert list(a["slice"]) == list(b["slice"])
        np.testing.assert_array_equal(a["raw"], b["raw"])  # windowed from the same stored values and rescale
        np.testing.assert_allclose(a["spacing"], b["spacing"], rtol=1e-6)
        for ma, mb in zip(a["mask"], b["mask"]):
            for label in range(1, 3 if target == "multiclass" else 2):
                assert dice(ma == label, mb == label) >= 0.99


@pytest.mark.parametrize("layout", CLINICAL)
def test_workers_agree_and_qc_names_parts(phantom_trees, tmp_path, layout):
    root = phantom_trees[layout]
    ingest.run(cfg(root, layout, "myo"), NATIVE, tmp_path / "one", workers=1)
    ingest.run(cfg(root, layout, "myo"), NATIVE, tmp_path / "two", workers=2)
    for name in ("qc.csv", "dataset.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    files = [r["file"] for r in qc_rows(tmp_path / "one")]
    if layout == "rtstruct":
        assert any(f.endswith(".dcm#roi1-001") for f in files) and any("#roi2-" in f for f in files)
    else:
        assert any(f.endswith(".nii.gz#z00") for f in files)
        assert any(re.search(r"_gt\.nii\.gz#z\d\d-epi$", f) for f in files)


# ------------------------------------------------------------------------------------------ config
def test_the_maps_are_schema_keys_of_their_layouts_with_the_code_defaults():
    written = yaml.safe_load(resources.files("segsweep.plan").joinpath("config.schema.yaml").read_text())
    assert not {"roi_map", "label_map"} & set(written["properties"]["data"]["properties"])  # filled in at load
    props = plan_config.schema()["properties"]["data"]["properties"]
    assert set(props["roi_map"]["properties"]) == set(ROI_MAP_DEFAULT) and "default" not in props["roi_map"]
    assert props["label_map"]["required"] == ["lv", "myo"] and "default" not in props["label_map"]
    assert props["label_map"]["description"].endswith('Default: {"rv": 1, "myo": 2, "lv": 3}.')
    filled = plan_config.validate({"data": {"source": "nifti", "root": "/d"}})["data"]
    assert not {"roi_map", "label_map"} & set(filled)  # a default is the layout's, not filled into the config


def test_maps_are_normalised_and_kept_only_for_their_layout():
    base = {"seed": 0, "data": {"root": "/d", "target": "endo", "strict": False, "pseudonym_key": "k", "phantom": {}}}

    def data(source, **kw):
        return DataConfig.from_config({**base, "data": {**base["data"], "source": source, **kw}})

    custom = {"endo": ["  Endocardium ", "LV  ENDO"], "epi": "Epicardium"}
    normal = (("endo", ("endocardium", "lv endo")), ("epi", ("epicardium",)))
    assert data("rtstruct", roi_map=custom).options == (("roi_map", normal),)
    default_spelled = {"epi": ["lv epi", "LV Epicardium"], "endo": ["LV ENDO", "lv endocardium"]}
    assert data("rtstruct", roi_map=default_spelled).options == ()  # = the default: not in the data identity
    assert data("nifti", label_map={"lv": 1, "myo": 2, "rv": 3}).options == (
        ("label_map", (("lv", 1), ("myo", 2), ("rv", 3))),
    )
    assert data("nifti", label_map=dict(LABEL_MAP_DEFAULT)).options == ()
    for source, key, value in (("rvsc", "roi_map", custom), ("sunnybrook", "label_map", {"lv": 1, "myo": 2})):
        with pytest.raises(ConfigError, match=f"config key 'data.{key}': read by the .* layout only"):
            data(source, **{key: value})  # it would be ignored: a plan-time error instead
    d = data("rtstruct", roi_map=custom)
    assert identity(d)["roi_map"] == json.loads(json.dumps(normal))  # hashed under its own key, as before
    for form in (dataclasses.asdict(d), identity(d)):  # JSON round trips (rule params: the identity)
        assert data_from_dict(json.loads(json.dumps(form))) == d
    assert d.layout_options == {"roi_map": normal}
    assert data("nifti").layout_options == {"label_map": tuple(sorted(LABEL_MAP_DEFAULT.items()))}


@pytest.mark.parametrize(
    "key, value, match",
    [
        (
            "roi_map",
            {"endo": ["LV Endo"], "epi": ["lv  endo"]},
            "data.roi_map': ROI name 'lv  endo' is listed under both",
        ),
        ("roi_map", {"lv": ["LV"]}, "data.roi_map': unknown contour 'lv'"),
        ("roi_map", {"endo": []}, "data.roi_map.endo'"),
        ("roi_map", {"endo": ["  "]}, "data.roi_map.endo'"),
        ("roi_map", {}, "data.roi_map'"),
        ("label_map", {"lv": 3, "myo": 3}, "data.label_map': lv and myo have the same label value 3"),
        ("label_map", {"lv": 0, "myo": 2}, "data.label_map.lv'"),
        ("label_map", {"lv": 2.5, "myo": 2}, "data.label_map.lv'"),
        ("label_map", {"lv": 3}, "data.label_map': myo required"),
        ("label_map", {"lv": 3, "myo": 2, "la": 4}, "data.label_map': unknown structure"),
    ],
)
def test_bad_maps_are_config_errors_naming_the_key(key, value, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        (roi_map_option if key == "roi_map" else label_map_option)(value)


@pytest.mark.parametrize(
    "data, where",
    [
        ({"roi_map": {"lv": ["x"]}}, "data.roi_map.lv"),  # an unknown structure: the key itself
        ({"roi_map": {"endo": "LV Endo"}}, "data.roi_map.endo"),
        ({"label_map": {"lv": -1, "myo": 2}}, "data.label_map.lv"),
        ({"label_map": {"lv": 1}}, "data.label_map"),
    ],
)
def test_the_schema_names_the_key_too(data, where):
    with pytest.raises(ConfigError, match=f"config key '{where}'"):
        plan_config.validate({"data": {"source": "nifti", "root": "/d", **data}})


def test_schema_enums_offer_the_new_layouts():
    schema = plan_config.schema()["properties"]["data"]["properties"]
    assert {"rtstruct", "nifti"} <= set(schema["source"]["enum"]) & set(
        schema["phantom"]["properties"]["layout"]["enum"]
    )


# ------------------------------------------------------------------------------------------ RTSTRUCT
def _rs_path(root: Path, p: int) -> Path:
    return root / f"case{p:02d}" / "RTSTRUCT" / f"RS-{p:02d}.dcm"


def _edit_rs(root: Path, p: int, fn) -> None:
    path = _rs_path(root, p)
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path, enforce_file_format=True)


def _add_roi(ds, number: int, name: str | None, contours_from: int = 1, in_structure_set: bool = True) -> None:
    """A new ROI with copies of ROI ``contours_from``'s contours."""
    if in_structure_set:
        roi = Dataset()
        roi.ROINumber = number
        roi.ROIName = name
        roi.ReferencedFrameOfReferenceUID = ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID
        ds.StructureSetROISequence.append(roi)
    src = next(rc for rc in ds.ROIContourSequence if rc.ReferencedROINumber == contours_from)
    rc = Dataset()
    rc.ReferencedROINumber = number
    rc.ContourSequence = Sequence([pydicom.dataset.Dataset(c) for c in src.ContourSequence])
    ds.ROIContourSequence.append(rc)


def test_custom_roi_names_through_roi_map(phantom_copy, tmp_path):
    root = phantom_copy("rtstruct")
    for p in (1, 2, 3):

        def rename(ds):
            ds.StructureSetROISequence[0].ROIName = "ENDOCARDIUM  lv"
            ds.StructureSetROISequence[1].ROIName = "Epicardium"

        _edit_rs(root, p, rename)
    with pytest.raises(DataError, match="no usable image/contour pair"):  # the default map knows neither name
        ingest.run(cfg(root, "rtstruct"), NATIVE, tmp_path / "default")
    assert set(reasons(qc_rows(tmp_path / "default")).values()) >= {"rtstruct_roi_unmapped", "image_without_contour"}
    roi_map = {"endo": ["endocardium lv"], "epi": ["EPICARDIUM"]}
    ds = ingest.run(cfg(root, "rtstruct", "myo", roi_map=roi_map), NATIVE, tmp_path / "custom")
    ref = ingest.run(cfg(phantom_copy("rvsc"), "rvsc", "myo"), NATIVE, tmp_path / "rvsc")
    assert ds["n_images"] == ref["n_images"]


def test_unknown_roi_and_garbage_rtstruct_become_rows_and_the_rest_goes_on(phantom_copy, tmp_path, phantom_phi):
    root = phantom_copy("rtstruct")
    _edit_rs(root, 1, lambda ds: _add_roi(ds, 3, "RV endo of Quartzfeld1"))  # unknown (and carries a name)
    _rs_path(root, 2).write_bytes(b"\x89garbage, not DICOM" * 20)  # unreadable structure set
    broken = pydicom.dcmread(_rs_path(root, 3))  # a second structure set of patient 3, without contours
    del broken.ROIContourSequence
    broken.SOPInstanceUID = broken.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.999.2"
    broken.save_as(root / "case03" / "RTSTRUCT" / "RS-broken.dcm", enforce_file_format=True)
    ds = ingest.run(cfg(root, "rtstruct"), NATIVE, tmp_path)
    rows = qc_rows(tmp_path)
    p1, p2, p3 = (ingest.pseudonym("test-key", f"case{p:02d}") for p in (1, 2, 3))
    assert reasons(rows, p1)[f"{p1}/RTSTRUCT/RS-01.dcm#roi3"] == "rtstruct_roi_unmapped"
    assert reasons(rows, p2)[f"{p2}/RTSTRUCT/RS-02.dcm"] == "dicom_not_dicom"
    assert {r["reason"] for r in rows if r["patient"] == p2} == {"dicom_not_dicom", "image_without_contour"}
    assert reasons(rows, p3)[f"{p3}/RTSTRUCT/RS-broken.dcm"] == "rtstruct_invalid"
    assert {p["id"] for p in ds["patients"]} == {p1, p3}  # patient 2 has no contours left; 1 and 3 go on
    text = (tmp_path / "qc.csv").read_text()
    assert "Quartzfeld" not in text and "Zyxwq" not in text
    unmapped = next(r for r in rows if r["reason"] == "rtstruct_roi_unmapped")
    assert unmapped["status"] == "skipped" and "not in data.roi_map" in unmapped["message"]


def test_structure_set_problems(phantom_copy, tmp_path):
    root = phantom_copy("rtstruct")

    def p1(ds):  # ROI 1 twice on its first image, an ROI without a name, a second ROI for the epi contour
        first = ds.ROIContourSequence[0].ContourSequence
        first.append(Dataset(first[0]))
        _add_roi(ds, 7, None, in_structure_set=False)
        _add_roi(ds, 8, "LV epicardium", contours_from=2)

    def p2(ds):  # no ROIContourSequence at all
        del ds.ROIContourSequence

    def p3(ds):  # an open contour and contour data that are not triplets
        cs = ds.ROIContourSequence[0].ContourSequence
        cs[0].ContourGeometricType = "OPEN_PLANAR"
        cs[1].ContourData = cs[1].ContourData[:-1]

    for p, fn in ((1, p1), (2, p2), (3, p3)):
        _edit_rs(root, p, fn)
    ingest.run(cfg(root, "rtstruct", "myo"), NATIVE, tmp_path)
    rows = qc_rows(tmp_path)
    got = reasons(rows)
    a, b, c = (ingest.pseudonym("test-key", f"case{p:02d}") for p in (1, 2, 3))
    n_first = len(pydicom.dcmread(_rs_path(root, 1)).ROIContourSequence[0].ContourSequence)
    assert got[f"{a}/RTSTRUCT/RS-01.dcm#roi1-001"] == got[f"{a}/RTSTRUCT/RS-01.dcm#roi1-{n_first:03d}"]
    assert got[f"{a}/RTSTRUCT/RS-01.dcm#roi1-001"] == "rtstruct_contour_multiple"
    assert got[f"{a}/RTSTRUCT/RS-01.dcm#roi7"] == "rtstruct_roi_unnamed"
    assert got[f"{a}/RTSTRUCT/RS-01.dcm#roi2"] == got[f"{a}/RTSTRUCT/RS-01.dcm#roi8"] == "rtstruct_roi_ambiguous"
    assert got[f"{b}/RTSTRUCT/RS-02.dcm"] == "rtstruct_invalid"
    assert got[f"{c}/RTSTRUCT/RS-03.dcm#roi1-001"] == got[f"{c}/RTSTRUCT/RS-03.dcm#roi1-002"]
    assert got[f"{c}/RTSTRUCT/RS-03.dcm#roi1-001"] == "rtstruct_contour_invalid"
    assert {r["reason"] for r in rows} <= set(ingest.QC_REASONS) | {""}


def test_contours_matched_by_position_without_uid(phantom_copy, tmp_path):
    root = phantom_copy("rtstruct")
    ref = ingest.run(cfg(root, "rtstruct", "multiclass"), NATIVE, tmp_path / "uid")

    def strip(ds):
        for rc in ds.ROIContourSequence:
            for k, c in enumerate(rc.ContourSequence):
                if k % 2:
                    del c.ContourImageSequence  # no reference
                else:
                    c.ContourImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4"  # an image that is not there

    for p in (1, 2, 3):
        _edit_rs(root, p, strip)
    ds = ingest.run(cfg(root, "rtstruct", "multiclass"), NATIVE, tmp_path / "pos")
    assert ds["n_images"] == ref["n_images"]
    rows = qc_rows(tmp_path / "pos")
    contour_rows = [r for r in rows if "#roi" in r["file"] and r["reason"] != "contour_unused"]
    assert contour_rows and all(r["reason"] == "rtstruct_contour_by_position" for r in contour_rows)
    assert all(r["status"] == "warning" for r in contour_rows)
    for a, b in zip(arrays(tmp_path / "uid", "rtstruct", root), arrays(tmp_path / "pos", "rtstruct", root)):
        np.testing.assert_array_equal(a["mask"], b["mask"])
    # a second image at the same position (another cine phase): which one was contoured is unknown
    img = root / "case01" / "MR" / "IM-0000.dcm"
    twin = pydicom.dcmread(img)
    twin.SOPInstanceUID = twin.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.999.1"
    twin.save_as(root / "case01" / "MR" / "IM-0000-phase2.dcm", enforce_file_format=True)
    ingest.run(cfg(root, "rtstruct", "multiclass"), NATIVE, tmp_path / "twin")
    p1 = ingest.pseudonym("test-key", "case01")
    unmatched = [r for r in qc_rows(tmp_path / "twin") if r["reason"] == "rtstruct_contour_unmatched"]
    assert unmatched and all(r["patient"] == p1 and "2 images lie in its plane" in r["message"] for r in unmatched)


def test_oblique_anisotropic_geometry(phantom_copy, tmp_path):
    """Rotate every image plane and make the pixels anisotropic; the contour points in mm follow the DICOM
    geometry (PS3.3 C.7.6.2.1.1), so the masks in pixel coordinates must not change."""
    root = phantom_copy("rtstruct")
    ref = ingest.run(cfg(root, "rtstruct", "multiclass"), NATIVE, tmp_path / "axial")
    a, b = np.deg2rad(30), np.deg2rad(-20)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ np.array(
        [[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]]
    )
    r_dir, c_dir, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    row_sp, col_sp = 0.8, 0.55
    for p in (1, 2, 3):
        origin, old = {}, None
        for img in sorted((root / f"case{p:02d}" / "MR").glob("*.dcm")):
            ds = pydicom.dcmread(img)
            old = float(ds.PixelSpacing[0])  # the phantom's square pixels, axial planes
            o = np.array([12.5, -40.0, 7.0]) + float(ds.ImagePositionPatient[2]) * normal
            origin[ds.SOPInstanceUID] = o
            ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*r_dir, *c_dir)]
            ds.ImagePositionPatient = [f"{v:.6f}" for v in o]
            ds.PixelSpacing = [str(row_sp), str(col_sp)]
            ds.save_as(img, enforce_file_format=True)

        def move(ds, origin=origin, old=old):
            for rc in ds.ROIContourSequence:
                for c in rc.ContourSequence:
                    pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
                    x, y = pts[:, 0] / old, pts[:, 1] / old  # pixel coordinates (x = column, y = row)
                    o = origin[c.ContourImageSequence[0].ReferencedSOPInstanceUID]
                    mm = o + np.outer(x * col_sp, r_dir) + np.outer(y * row_sp, c_dir)
                    c.ContourData = [f"{v:.6f}" for v in mm.ravel()]

        _edit_rs(root, p, move)
    ds = ingest.run(cfg(root, "rtstruct", "multiclass"), NATIVE, tmp_path / "oblique")
    assert ds["n_images"] == ref["n_images"] and "rtstruct_contour_invalid" not in ds["qc_counts"]
    for a, b in zip(arrays(tmp_path / "axial", "rtstruct", root), arrays(tmp_path / "oblique", "rtstruct", root)):
        for ma, mb in zip(a["mask"], b["mask"]):
            for label in (1, 2):
                assert dice(ma == label, mb == label) >= 0.99
        np.testing.assert_allclose(b["spacing"], [[row_sp, col_sp]] * len(b["spacing"]), rtol=1e-6)


def test_identifying_values_in_file_names_are_replaced(phantom_copy, tmp_path):
    root = phantom_copy("rtstruct")
    mr = root / "case01" / "MR"
    (mr / "IM-0000.dcm").rename(mr / "Quartzfeld1_IM-0000.dcm")
    ingest.run(cfg(root, "rtstruct"), NATIVE, tmp_path)
    text = (tmp_path / "qc.csv").read_text()
    assert "Quartzfeld" not in text and f"{ingest.pseudonym('test-key', 'case01')}_IM-0000.dcm" in text


# ------------------------------------------------------------------------------------------ NIfTI
def _gt(root: Path, p: int) -> Path:
    return root / "training" / f"patient{p:03d}" / f"patient{p:03d}_frame01_gt.nii.gz"


def _rewrite(path: Path, fn) -> None:
    """Replace a label volume's voxels by ``fn(voxels)`` (the data type follows the new array)."""
    img = nib.load(path)
    nib.save(nib.Nifti1Image(fn(np.asanyarray(img.dataobj).copy()), img.affine), path)


def test_nifti_phantom_headers(phantom_trees, phantom_phi):
    root = phantom_trees["nifti"]
    manifest = json.loads((root / "MANIFEST.json").read_text())
    for p in (1, 3):
        stem = root / "training" / f"patient{p:03d}" / f"patient{p:03d}_frame01"
        img, gt = nib.load(f"{stem}.nii.gz"), nib.load(f"{stem}_gt.nii.gz")
        assert img.shape == gt.shape == (56, 64, 4)  # x = column, y = row, slice
        sp = manifest["patients"][p - 1]["pixel_spacing_mm"]
        np.testing.assert_allclose(img.header.get_zooms(), (sp, sp, 10.0), rtol=1e-6)
        assert img.get_data_dtype() == np.uint16 and set(np.unique(np.asanyarray(gt.dataobj))) <= {0, 2, 3}
        assert phantom_phi["PatientName"].replace("{i}", str(p)).encode() in img.header["descrip"].item()
    assert (root / "training" / "patient001" / "Info.cfg").is_file()


def test_nifti_spacing_from_the_header(phantom_copy, tmp_path):
    root = phantom_copy("nifti")
    for p in (1, 2, 3):
        path = root / "training" / f"patient{p:03d}" / f"patient{p:03d}_frame01.nii.gz"
        img = nib.load(path)
        out = nib.Nifti1Image(np.asanyarray(img.dataobj.get_unscaled()), np.diag([0.6, 0.9, -8.0, 1.0]))
        out.header.set_slope_inter(img.dataobj.slope, img.dataobj.inter)  # columns 0.6 mm apart, rows 0.9 mm
        nib.save(out, path)
    ingest.run(cfg(root, "nifti"), NATIVE, tmp_path)
    for z in arrays(tmp_path, "nifti", root):
        np.testing.assert_allclose(z["spacing"], [[0.9, 0.6]] * len(z["spacing"]), rtol=1e-6)


def test_custom_label_map(phantom_copy, tmp_path):
    """M&Ms' label values (lv 1, myo 2, rv 3): right with its map, unusable with ACDC's."""
    root = phantom_copy("nifti")
    for p in (1, 2, 3):
        _rewrite(_gt(root, p), lambda a: np.where(a == 3, 1, a))
    with pytest.raises(DataError, match="no usable image/contour pair"):
        ingest.run(cfg(root, "nifti"), NATIVE, tmp_path / "acdc")
    ds = ingest.run(cfg(root, "nifti", "multiclass", label_map={"lv": 1, "myo": 2, "rv": 3}), NATIVE, tmp_path / "mnm")
    ref = ingest.run(cfg(phantom_copy("rvsc"), "rvsc", "multiclass"), NATIVE, tmp_path / "rvsc")
    assert ds["n_images"] == ref["n_images"]


def test_nifti_bad_files_become_rows_and_the_rest_goes_on(phantom_copy, tmp_path):
    root = phantom_copy("nifti")
    d1, d2, d3 = (root / "training" / f"patient{p:03d}" for p in (1, 2, 3))

    def seven(a):  # an unknown label value on the first column of every slice (outside the heart)
        a = a.astype(np.int16)
        a[0] = 7
        return a

    _rewrite(_gt(root, 1), seven)
    _rewrite(_gt(root, 2), lambda a: a.astype(np.float32) + 0.5 * (a == 2))  # non-integer labels
    (d3 / "patient003_frame01_gt.nii.gz").write_bytes(gzip.compress(b"not a NIfTI header" * 30))
    (d1 / "patient001_frame07_gt.nii.gz").write_bytes((d1 / "patient001_frame01_gt.nii.gz").read_bytes())
    (d1 / "patient001_4d.nii.gz").write_bytes((d1 / "patient001_frame01.nii.gz").read_bytes())
    (d1 / "notes.txt").write_text("x")
    ds = ingest.run(cfg(root, "nifti"), NATIVE, tmp_path)
    rows = qc_rows(tmp_path)
    a, b, c = (ingest.pseudonym("test-key", f"training/patient{p:03d}") for p in (1, 2, 3))
    got = reasons(rows)
    assert got[f"training/{a}/{a}_frame01_gt.nii.gz"] == "nifti_label_unmapped"
    assert got[f"training/{a}/{a}_frame07_gt.nii.gz"] == "contour_without_image"
    assert got[f"training/{a}/{a}_4d.nii.gz"] == "image_without_contour"
    assert got[f"training/{a}/notes.txt"] == "unexpected_file"
    assert got[f"training/{b}/{b}_frame01_gt.nii.gz"] == "nifti_label_invalid"
    assert got[f"training/{b}/{b}_frame01.nii.gz"] == "contour_invalid"
    assert got[f"training/{c}/{c}_frame01_gt.nii.gz"] == "nifti_unreadable"
    assert [p["id"] for p in ds["patients"]] == [a]  # the warning keeps patient 1's slices
    unmapped = next(r for r in rows if r["reason"] == "nifti_label_unmapped")
    assert (
        unmapped["status"] == "warning"
        and "label values 7" in unmapped["message"]
        and "data.label_map" in unmapped["message"]
    )


def test_nifti_shape_mismatch_and_4d(phantom_copy, tmp_path):
    root = phantom_copy("nifti")
    _rewrite(_gt(root, 1), lambda a: a[:, :-1])
    img_path = root / "training" / "patient002" / "patient002_frame01.nii.gz"
    img = nib.load(img_path)
    arr = np.asanyarray(img.dataobj.get_unscaled())
    nib.save(nib.Nifti1Image(np.stack([arr, arr], axis=3), img.affine), img_path)
    ingest.run(cfg(root, "nifti"), NATIVE, tmp_path)
    got = reasons(qc_rows(tmp_path))
    a, b = (ingest.pseudonym("test-key", f"training/patient{p:03d}") for p in (1, 2))
    assert got[f"training/{a}/{a}_frame01_gt.nii.gz"] == "nifti_shape_mismatch"
    assert got[f"training/{b}/{b}_frame01.nii.gz"] == "nifti_bad_shape"
    assert got[f"training/{b}/{b}_frame01_gt.nii.gz"] == "contour_unused"


def test_an_error_while_resolving_is_one_row(phantom_copy, tmp_path, monkeypatch):
    from segsweep.data.layouts import nifti

    root = phantom_copy("nifti")
    real = nifti._load

    def boom(path):
        if "patient002" in str(path):
            raise RuntimeError("unexpected")
        return real(path)

    monkeypatch.setattr(nifti, "_load", boom)
    ds = ingest.run(cfg(root, "nifti"), NATIVE, tmp_path)
    b = ingest.pseudonym("test-key", "training/patient002")
    rows = [r for r in qc_rows(tmp_path) if r["patient"] == b]
    assert [r["reason"] for r in rows] == ["processing_error"] and "RuntimeError" in rows[0]["message"]
    assert len(ds["patients"]) == 2


# ------------------------------------------------------------------------------------------ extension point
def test_polygons_are_checked_like_contour_files():
    text = "10 10\n20 10\n20 20\n10 20\n10 10\n"
    pts = np.array([[10, 10], [20, 10], [20, 20], [10, 20], [10, 10]], dtype=float)
    np.testing.assert_array_equal(contours.from_points(pts).points, contours.parse_text(text).points)
    bowtie = contours.from_points([[0, 0], [10, 10], [10, 0], [0, 10]])
    assert bowtie.self_intersecting
    for bad, reason in (
        ([[0, 0], [1, 1], [0, 0]], "contour_too_few_points"),
        ([[0, 0], [np.nan, 1], [3, 3]], "contour_nonfinite"),
        (np.zeros((0, 2)), "contour_empty"),
    ):
        with pytest.raises(contours.ContourError) as err:
            contours.from_points(bad)
        assert err.value.reason == reason


def test_text_layouts_resolve_to_their_discovered_records(phantom_trees):
    options = {}  # resolve fills in each layout's defaults
    for layout in ("rvsc", "sunnybrook", "sunnybrook_flat"):
        for rec in layouts.discover(layout, phantom_trees[layout]):
            assert layouts.resolve(layout, rec, options) is rec and rec.files == []
    for layout in CLINICAL:
        rec = layouts.discover(layout, phantom_trees[layout])[0]
        assert rec.items == [] and rec.files  # names only: the files are opened in resolve
        items = layouts.resolve(layout, rec, options).items
        kinds = {
            "file" if isinstance(x, Path) else type(x).__name__
            for it in items
            for x in (it.image, it.inner, it.outer)
            if x
        }
        assert kinds == ({"file", "PolygonContour"} if layout == "rtstruct" else {"SliceImage", "MaskContour"})


def test_a_custom_map_is_part_of_the_cells_data_fingerprint():
    """Another roi_map / label_map makes other masks from the same files: the cells trained on them must be other
    cells (before, they shared ids with the default map's cells). At the default map nothing changes."""
    base = {"seed": 0, "data": {"root": "/d", "target": "endo", "strict": False, "pseudonym_key": "k", "phantom": {}}}
    prep = PreprocessConfig.from_config(plan_config.validate({}))

    def fp(source, **kw):
        data = DataConfig.from_config({**base, "data": {**base["data"], "source": source, **kw}})
        return data_fingerprint(data, prep, content="manifest")

    swapped = {"endo": ["lv epi", "lv epicardium"], "epi": ["lv endo", "lv endocardium"]}
    assert fp("rtstruct", roi_map=swapped) != fp("rtstruct")
    assert fp("nifti", label_map={"lv": 1, "myo": 2, "rv": 3}) != fp("nifti")
    assert fp("nifti", label_map=dict(LABEL_MAP_DEFAULT)) == fp("nifti")
    # the default map's fingerprint is the one the code gave before the maps had a say (no key added)
    ident = {"source": "nifti", "target": "endo", "pseudonym_key": "k", "content": "manifest"}
    assert fp("nifti") == digest({"data": ident, "preprocess": identity(prep)})
