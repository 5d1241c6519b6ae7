"""The synthetic short-axis cine data set: files, headers, determinism, anatomy."""

from __future__ import annotations

import json
import time

import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage

from segsweep.data import contours, dicom, layouts, phantom
from segsweep.data.config import PhantomConfig
from segsweep.errors import DataError


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(phantom_make):
    a, b = phantom_make("sunnybrook", seed=3), phantom_make("sunnybrook", seed=3)
    ta, tb = tree(a), tree(b)
    assert ta.keys() == tb.keys() and ta == tb
    assert not list(a.parent.glob(".*tmp*"))  # built in a temporary folder, renamed into place


def test_other_seed_gives_other_images(phantom_make):
    a, b = phantom_make("rvsc", seed=3), phantom_make("rvsc", seed=4)
    f = "TrainingSet/patient01/P01dicom/P01-0000.dcm"
    pa, pb = dicom.read(a / f).frame(0), dicom.read(b / f).frame(0)
    assert pa.shape == pb.shape and not np.array_equal(pa, pb)
    assert json.loads((a / "MANIFEST.json").read_text()) != json.loads((b / "MANIFEST.json").read_text())


def test_adding_patients_does_not_change_earlier_ones(phantom_make):
    small, big = tree(phantom_make("rvsc", patients=2)), tree(phantom_make("rvsc", patients=3))
    for name, data in small.items():
        if name.startswith("TrainingSet/patient0"):
            assert big[name] == data, name


@pytest.mark.parametrize("layout", [n for n in layouts.LAYOUT_NAMES if layouts.phantom_paths(n).image is not None])
def test_headers_are_real_mr_with_the_fake_phi(phantom_trees, phantom_phi, layout):
    """Layouts with DICOM image files (the NIfTI phantom: tests/test_clinical_layouts.py)."""
    root = phantom_trees[layout]
    paths = layouts.phantom_paths(layout)
    for p in (1, 3):
        for k in (0, 3):
            n = paths.number(p, k)
            ds = pydicom.dcmread(paths.image(root, p, n))
            assert ds.file_meta.MediaStorageSOPClassUID == MRImageStorage == ds.SOPClassUID
            assert ds.Modality == "MR" and ds.PhotometricInterpretation == "MONOCHROME2"
            assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored) == (64, 56, 16, 12)
            assert ds.pixel_array.dtype == np.uint16 and ds.pixel_array.max() < 4096
            assert float(ds.PixelSpacing[0]) > 0 and "RescaleSlope" in ds and "RescaleIntercept" in ds
            assert ds.InstanceNumber == n + paths.instance_offset
            assert ds.SliceLocation == -10.0 * k
            assert str(ds.PatientName) == phantom_phi["PatientName"].replace("{i}", str(p))
            assert ds.PatientID == phantom_phi["PatientID"].replace("{i}", str(p))
            for kw in ("PatientBirthDate", "StudyDate", "InstitutionName"):
                assert str(ds[kw].value) == phantom_phi[kw]
            assert str(ds.ReferringPhysicianName) == phantom_phi["ReferringPhysicianName"]
    if layout == "rvsc":
        listing = (root / "TrainingSet" / "patient01" / "P01list.txt").read_bytes().decode()
        assert listing.startswith(".\\patient01\\P01contours-manual\\P01-") and "\r\n" in listing


def test_default_phi_and_manifest_without_phi(phantom_make, phantom_phi):
    root = phantom_make("sunnybrook_flat", phi=None)
    ds = pydicom.dcmread(next((root / "dicoms").rglob("*.dcm")))
    assert str(ds.PatientName).startswith("Phantom^Patient")
    manifest = (phantom_make("sunnybrook_flat") / "MANIFEST.json").read_text()
    for value in phantom_phi.values():
        for part in value.replace("{i}", "").split("^"):
            assert part not in manifest
    m = json.loads(manifest)
    assert m["layout"] == "sunnybrook_flat" and m["n_images"] == 12 and m["config"]["seed"] == 7


def test_contour_files_and_no_contour_fraction(phantom_make):
    root = phantom_make("rvsc", patients=2, slices=10, no_contour_fraction=0.3)
    manifest = json.loads((root / "MANIFEST.json").read_text())
    for info in manifest["patients"]:
        assert info["contoured"] == 10 - 3 and info["contoured"] - info["inner_only"] >= 1
    assert any(info["inner_only"] for info in manifest["patients"])
    f = next(root.rglob("*-icontour-manual.txt"))
    lines = f.read_text().splitlines()
    assert len(lines) >= 24 and all(len(line.split()) == 2 for line in lines)
    assert all(len(v.split(".")[1]) == 2 for v in lines[0].split())


def test_images_look_like_short_axis_cine(phantom_make):
    root = phantom_make("rvsc", patients=3, slices=6, rows=128, cols=108, no_contour_fraction=0.0)
    areas = []
    for p in (1, 2, 3):
        pdir = root / "TrainingSet" / f"patient{p:02d}"
        per_patient = []
        for k in range(6):
            img = dicom.read(pdir / f"P{p:02d}dicom" / f"P{p:02d}-{k:04d}.dcm").frame(0)
            inner = contours.rasterize(
                contours.parse(pdir / f"P{p:02d}contours-manual" / f"P{p:02d}-{k:04d}-icontour-manual.txt").points,
                img.shape,
            )
            per_patient.append(inner.sum())
            outer_file = pdir / f"P{p:02d}contours-manual" / f"P{p:02d}-{k:04d}-ocontour-manual.txt"
            if not outer_file.exists():
                continue
            outer = contours.rasterize(contours.parse(outer_file).points, img.shape)
            myo = outer & ~inner
            assert inner.sum() > 30 and myo.sum() > 30
            # bright blood pool, darker myocardium ring
            assert np.median(img[inner]) > 1.8 * np.median(img[myo])
            # noise: the air outside the body is not zero (Rician floor) and varies
            corner = img[:6, :6]
            assert corner.std() > 0 and corner.mean() > 0
        areas.append(per_patient)
    areas = np.array(areas, float)
    assert (areas[:, 0] > 1.5 * areas[:, -1]).all()  # the LV shrinks from base to apex
    assert len({tuple(a) for a in areas}) == 3  # shape and size differ between patients


def test_demo_size_is_fast(tmp_path):
    t0 = time.perf_counter()
    phantom.generate(PhantomConfig(patients=12, slices=10, rows=256, cols=216), tmp_path / "demo")
    assert time.perf_counter() - t0 < 15  # ~1 s on one free core; generous for a shared machine


def test_refuses_to_replace_foreign_folders_and_replaces_its_own(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="refusing"):
        phantom.generate(PhantomConfig(patients=2, slices=2, rows=32, cols=32), foreign)
    assert (foreign / "thesis.tex").exists()
    root = tmp_path / "ph"
    phantom.generate(PhantomConfig(patients=3, slices=2, rows=32, cols=32), root)
    (root / "MANIFEST.json").unlink()  # Snakemake deletes a job's declared outputs before rerunning it
    phantom.generate(PhantomConfig(patients=2, slices=2, rows=32, cols=32), root)
    assert not (root / "TrainingSet" / "patient03").exists()
    assert (root / "MANIFEST.json").is_file()
    with pytest.raises(ValueError, match="unknown keys"):
        phantom.generate(PhantomConfig(patients=2, slices=2, rows=32, cols=32), root, phi={"Name": "x"})
