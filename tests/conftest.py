"""Shared pytest fixtures. Keep each owner's fixtures grouped under its own heading."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# ---------------------------------------------------------------------------------------------------
# phantom_* / dicom_*: data generation and ingestion (segsweep.phantom, dicom, contours, layouts, ingest)
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def phantom_phi() -> dict[str, str]:
    """Distinctive fake identifying values planted in phantom headers ("{i}" = patient number);
    tests/test_phi.py scans every output for them."""
    return {
        "PatientName": "Zyxwq^Quartzfeld{i}",
        "PatientID": "QXJ-88{i}7731",
        "PatientBirthDate": "19230817",
        "StudyDate": "20210229",
        "InstitutionName": "Vexmoor Lantern Infirmary",
        "ReferringPhysicianName": "Okonkwo^Brightwater",
    }


@pytest.fixture(scope="session")
def phantom_trees(tmp_path_factory, phantom_phi) -> dict[str, Path]:
    """One small phantom per layout (3 patients × 4 slices, 64×56, seed 7, phantom_phi headers), generated
    once per session. Read-only: copy it (``phantom_copy``) before changing files."""
    from segsweep.data import layouts, phantom
    from segsweep.data.config import PhantomConfig

    base = tmp_path_factory.mktemp("phantom")
    trees = {}
    for layout in layouts.LAYOUT_NAMES:
        cfg = PhantomConfig(patients=3, slices=4, rows=64, cols=56, layout=layout, no_contour_fraction=0.25, seed=7)
        phantom.generate(cfg, base / layout, phi=phantom_phi)
        trees[layout] = base / layout
    return trees


@pytest.fixture
def phantom_copy(phantom_trees, tmp_path):
    """``phantom_copy(layout)`` → a private copy of the session phantom that a test may modify."""

    def make(layout: str = "rvsc") -> Path:
        dst = tmp_path / f"copy-{layout}"
        shutil.copytree(phantom_trees[layout], dst)
        return dst

    return make


@pytest.fixture
def phantom_make(tmp_path, phantom_phi):
    """``phantom_make(layout, phi=..., **config)`` → a freshly generated phantom (default: phantom_phi
    headers, 3 patients × 4 slices, 64×56, seed 7)."""
    n = [0]
    default_phi = phantom_phi

    def make(layout: str = "rvsc", phi="default", **kw) -> Path:
        from segsweep.data import phantom
        from segsweep.data.config import PhantomConfig

        n[0] += 1
        root = tmp_path / f"phantom{n[0]}-{layout}"
        cfg = PhantomConfig(
            **{
                "patients": 3,
                "slices": 4,
                "rows": 64,
                "cols": 56,
                "layout": layout,
                "no_contour_fraction": 0.25,
                "seed": 7,
                **kw,
            }
        )
        phantom.generate(cfg, root, phi=default_phi if phi == "default" else phi)
        return root

    return make


@pytest.fixture
def phantom_sunnybrook_sample(tmp_path) -> Path:
    """A private copy of the real Sunnybrook subset in tests/data/sunnybrook (flat layout)."""
    dst = tmp_path / "sunnybrook"
    shutil.copytree(Path(__file__).parent / "data" / "sunnybrook", dst)
    return dst


@pytest.fixture
def dicom_write(tmp_path):
    """``dicom_write(name, pixels, **header)`` → path of a small MR DICOM file written with pydicom.

    ``pixels``: 2-D (or 3-D for multi-frame) integer array; header keywords override the defaults;
    ``meta=False`` writes no preamble / file meta; ``syntax`` picks the transfer syntax UID.
    """
    import numpy as np
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    def write(name: str, pixels, meta: bool = True, syntax=ExplicitVRLittleEndian, **header) -> Path:
        arr = np.asarray(pixels)
        ds = Dataset()
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[name])
        ds.Modality = "MR"
        ds.PatientName = "Test^Person"
        ds.PatientID = "TP-0001"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = arr.shape[-2:]
        ds.BitsAllocated = arr.dtype.itemsize * 8
        ds.BitsStored = arr.dtype.itemsize * 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
        ds.PixelSpacing = ["0.8", "0.9"]
        ds.InstanceNumber = 5
        ds.SliceLocation = "-12.5"
        if arr.ndim == 3:
            ds.NumberOfFrames = arr.shape[0]
        for k, v in header.items():
            if v is None:
                if k in ds:
                    delattr(ds, k)
            else:
                setattr(ds, k, v)
        big = syntax == pydicom.uid.ExplicitVRBigEndian
        ds.PixelData = arr.astype(arr.dtype.newbyteorder(">" if big else "<")).tobytes()
        path = tmp_path / name
        if meta:
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = syntax
            ds.save_as(path, enforce_file_format=True)
        else:
            ds.save_as(path, implicit_vr=True, little_endian=True)
        return path

    return write
