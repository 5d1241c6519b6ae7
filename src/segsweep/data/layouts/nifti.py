"""NIfTI layout (ACDC style): per patient, 3-D image volumes and label volumes of the same grid.

```
[<set>/]patientXXX/patientXXX_frameYY.nii.gz        image volume (any name: <stem>.nii or <stem>.nii.gz)
[<set>/]patientXXX/patientXXX_frameYY_gt.nii.gz     its label volume: <stem>_gt.nii[.gz]
[<set>/]patientXXX/patientXXX_4d.nii.gz, Info.cfg   a volume without labels (one image_without_contour row); ignored
```
The root holds the patient folders (any folder with NIfTI files) or set folders (training/, testing/) that
hold them. Bernard et al., "Deep Learning Techniques for Automatic MRI Cardiac Multi-Structures Segmentation
and Diagnosis: Is the Problem Solved?", IEEE TMI 2018 (ACDC).

Slices: a volume's voxel array ``v[i, j, k]`` (nibabel's order, the file's) gives slice ``k`` as the 2-D image
``v[:, :, k].T``: rows = second voxel axis, columns = first; no reorientation by the affine (the usual
reading of ACDC). Pixel spacing (row, col) = (pixdim[2], pixdim[1]); stored values and ``scl_slope`` /
``scl_inter`` are kept apart, so windowing works on them exactly as on DICOM's rescale. Labels map through
``data.label_map`` (this layout's option, ``OPTIONS``): the inner contour is the ``lv`` region, the outer one
``lv`` ∪ ``myo`` (so ``endo`` = LV cavity, ``epi`` = cavity + myocardium, ``myo`` = myocardium). A slice
without the lv label has no inner contour, one without myo no outer one; a slice with neither is an image
without contour. Images are numbered across the patient's labelled volumes in name order (volume 1's slices
0..n-1, then volume 2's).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from segsweep.data import contours as ctr
from segsweep.data.config import LABELS
from segsweep.data.layouts.base import (
    Item,
    Layout,
    LayoutOption,
    MaskContour,
    Note,
    PatientRecord,
    PhantomPaths,
    PhantomPatient,
    SliceImage,
    list_files,
    register,
)
from segsweep.errors import ConfigError

EXPECTED = "patientXXX/patientXXX_frameYY.nii.gz + patientXXX/patientXXX_frameYY_gt.nii.gz (image + label volumes)"

_NIFTI = re.compile(r"^(?P<stem>.+?)(?P<gt>_gt)?\.nii(?:\.gz)?$", re.IGNORECASE)
_KNOWN = {"info.cfg"}  # ACDC's per-patient metadata (ED/ES frame numbers, group, height, weight): not read


# ------------------------------------------------------------------------------------------ discovery
def _has_nifti(folder: str) -> bool:
    return any(_NIFTI.match(n) for n in list_files(Path(folder)))


def _patient_dirs(root: Path) -> list[Path]:
    found = [Path(e.path) for e in os.scandir(root) if e.is_dir() and _has_nifti(e.path)]
    if not found:  # one level down: training/, testing/
        for e in sorted(os.scandir(root), key=lambda e: e.name):
            if e.is_dir():
                found += [Path(s.path) for s in os.scandir(e.path) if s.is_dir() and _has_nifti(s.path)]
    return sorted(found)


def _detect(root: Path) -> bool:
    """A folder with NIfTI files at the root or one level below it."""
    try:
        return bool(_patient_dirs(root))
    except OSError:
        return False


def _volumes(files) -> tuple[dict[str, Path], dict[str, Path]]:
    """{stem: image volume}, {stem: label volume} of NIfTI file paths."""
    images, labels = {}, {}
    for path in files:
        m = _NIFTI.match(path.name)
        if m:
            (labels if m.group("gt") else images)[m.group("stem")] = path
    return images, labels


def discover(root: Path) -> list[PatientRecord]:
    records = []
    for pdir in _patient_dirs(root):
        rec = PatientRecord(key=pdir.relative_to(root).as_posix(), aliases=(pdir.name,))
        names = list_files(pdir)
        images, labels = _volumes(pdir / n for n in names)
        for stem, path in sorted(labels.items()):
            if stem not in images:
                rec.notes.append(Note(path, "contour_without_image", f"no image volume {stem}.nii[.gz]"))
        for e in sorted(os.scandir(pdir), key=lambda e: e.name):
            if not _NIFTI.match(e.name) and e.name.lower() not in _KNOWN:
                rec.notes.append(Note(Path(e.path), "unexpected_file", "not part of the NIfTI layout"))
        rec.files = sorted(images.values()) + sorted(p for s, p in labels.items() if s in images)
        records.append(rec)
    return records


# ------------------------------------------------------------------------------------------ reading
def _load(path: Path):
    """(nibabel image, voxel array as stored, slope, intercept) or a Note (nifti_unreadable / _bad_shape)."""
    import nibabel as nib  # only here: ~0.4 s to import, needed only for this layout

    from segsweep.data import dicom as dcm  # pydicom: not at the top, planning reads this module

    try:
        with dcm.quiet("nibabel"):  # its warnings and log records may quote header fields
            img = nib.load(path)
            proxy = img.dataobj
            if hasattr(proxy, "get_unscaled"):
                arr = np.asanyarray(proxy.get_unscaled())
                slope, inter = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
            else:
                arr, slope, inter = np.asanyarray(proxy), 1.0, 0.0
    except Exception as exc:  # not NIfTI, truncated gzip, bad header, ...
        return Note(path, "nifti_unreadable", f"cannot be read as NIfTI ({type(exc).__name__})")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3 or not arr.size:
        return Note(path, "nifti_bad_shape", f"voxel grid {list(arr.shape)}: not a 2-D or 3-D volume")
    if arr.dtype.kind not in "biuf":
        return Note(path, "nifti_unreadable", f"voxel type {arr.dtype} is not numeric")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return Note(path, "nifti_nonfinite", "NaN or infinite voxel values")
    slope = slope if np.isfinite(slope) and slope != 0 else 1.0
    inter = inter if np.isfinite(inter) else 0.0
    return img, arr, slope, inter


def _spacing(img) -> tuple[tuple[float, float], tuple]:
    """(row, col) mm from pixdim, and warnings."""
    try:
        zooms = [float(z) for z in img.header.get_zooms()[:2]]
    except Exception:
        zooms = []
    if len(zooms) == 2 and all(np.isfinite(z) and z > 0 for z in zooms):
        return (zooms[1], zooms[0]), ()
    return (1.0, 1.0), (("nifti_no_spacing", "no valid pixdim; 1.0 mm assumed"),)


def _label_volume(path: Path, shape) -> np.ndarray | Note:
    got = _load(path)
    if isinstance(got, Note):
        return got
    _, arr, slope, inter = got
    lab = arr if (slope, inter) == (1.0, 0.0) else arr * slope + inter
    if lab.shape != tuple(shape):
        return Note(
            path, "nifti_shape_mismatch", f"label grid {list(lab.shape)} differs from the image's {list(shape)}"
        )
    if lab.dtype.kind == "f":
        if not np.isfinite(lab).all():
            return Note(path, "nifti_nonfinite", "NaN or infinite label values")
        if (lab != np.round(lab)).any():
            return Note(path, "nifti_label_invalid", "non-integer label values")
    if lab.dtype.kind != "u" and (lab < 0).any():
        return Note(path, "nifti_label_invalid", "negative label values")
    return lab.astype(np.int64, copy=False)


def resolve(record: PatientRecord, options) -> PatientRecord:
    """Open one patient's volumes: every slice of a labelled volume becomes an item (slice image + label regions)."""
    label_map = dict(options["label_map"])
    lv, myo = label_map["lv"], label_map["myo"]
    mapped = {0, *label_map.values()}
    images, labels = _volumes(record.files)
    notes, items, number = list(record.notes), [], 0
    for stem, path in sorted(images.items()):
        gt = labels.get(stem)
        if gt is None:
            notes.append(Note(path, "image_without_contour", f"no label volume {stem}_gt.nii[.gz]"))
            continue
        got = _load(path)
        if isinstance(got, Note):
            notes += [got, Note(gt, "contour_unused", "its image volume could not be read")]
            continue
        img, arr, slope, inter = got
        lab = _label_volume(gt, arr.shape)
        if isinstance(lab, Note):
            notes += [lab, Note(path, "contour_invalid", "its label volume failed (see its row)")]
            continue
        found = np.unique(lab)
        unknown = sorted(int(v) for v in found if int(v) not in mapped)
        if unknown:
            shown = ", ".join(map(str, unknown[:10])) + (", ..." if len(unknown) > 10 else "")
            msg = f"label values {shown} are not in data.label_map (read as background)"
            notes.append(Note(gt, "nifti_label_unmapped", msg))
        spacing, warn = _spacing(img)
        width = max(2, len(str(arr.shape[2] - 1)))
        for k in range(arr.shape[2]):
            part = f"z{k:0{width}d}"
            sl = lab[:, :, k].T
            inner = sl == lv
            has_lv, myo_px = bool(inner.any()), sl == myo
            has_myo = bool(myo_px.any())
            items.append(
                Item(
                    number + k,
                    SliceImage(path, part, arr[:, :, k].T, slope, inter, spacing, warn),
                    MaskContour(gt, f"{part}-endo", inner) if has_lv else None,
                    MaskContour(gt, f"{part}-epi", inner | myo_px) if has_myo else None,
                )
            )
        number += arr.shape[2]
    return replace(record, items=items, notes=notes)


# ------------------------------------------------------------------------------------ phantom writer
def _pdir(root: Path, p: int) -> Path:
    return root / "training" / f"patient{p:03d}"


def _write_phantom(root: Path, patient: PhantomPatient) -> None:
    """ACDC-style volumes of the patient: image (stored values + the series' rescale as scl_slope/scl_inter)
    and labels (LV cavity = the inner contour, myocardium = outer minus inner, rasterised as ingest does),
    ACDC's label values. The header's descrip carries the fake patient name (as some converters write it)."""
    import nibabel as nib

    h = patient.header
    rows, cols = patient.slices[0].stored.shape
    row_sp, col_sp = (float(v) for v in h.PixelSpacing)
    data = np.stack([s.stored.T for s in patient.slices], axis=2)  # [x = column, y = row, slice]
    labels = np.zeros(data.shape, dtype=np.uint8)
    for k, s in enumerate(patient.slices):
        lab = np.zeros((rows, cols), dtype=np.uint8)
        if s.outer is not None:
            lab[ctr.rasterize(s.outer, (rows, cols))] = LABEL_MAP_DEFAULT["myo"]
        if s.inner is not None:
            lab[ctr.rasterize(s.inner, (rows, cols))] = LABEL_MAP_DEFAULT["lv"]
        labels[:, :, k] = lab.T
    # slice k at z = location (the DICOM series' ImagePositionPatient): -10 k mm
    affine = np.diag([col_sp, row_sp, -float(h.SpacingBetweenSlices), 1.0])
    folder = _pdir(root, patient.p)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{folder.name}_frame01"
    for arr, path, rescale in ((data, f"{stem}.nii.gz", True), (labels, f"{stem}_gt.nii.gz", False)):
        img = nib.Nifti1Image(arr, affine)
        if rescale:
            img.header.set_slope_inter(float(h.RescaleSlope), float(h.RescaleIntercept))
            img.header["descrip"] = str(h.PatientName).encode("latin-1", "replace")[:79]
        nib.save(img, path)
    (folder / "Info.cfg").write_text("ED: 1\nES: 1\nGroup: NOR\nNbFrame: 1\n")


PHANTOM = PhantomPaths(
    number=lambda p, k: k,
    image=None,
    contour=None,
    finish=lambda root, patients: None,
    write=_write_phantom,
)

# ------------------------------------------------------------------------------------ config and QC codes
LABEL_MAP_DEFAULT = {"rv": 1, "myo": 2, "lv": 3}  # data.label_map: ACDC's label values


def label_map_option(value) -> tuple[tuple[str, int], ...]:
    """``data.label_map`` checked and normalised: ((structure, value), ...) sorted. lv and myo are required,
    values are distinct integers 1..65535 (0 is the background). Raises ConfigError naming the key."""
    key = "config key 'data.label_map'"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping of lv, myo (and rv) to label values, got {value!r}")
    unknown = sorted(set(value) - set(LABELS))
    if unknown:
        raise ConfigError(f"{key}: unknown structure(s) {unknown} (known: {', '.join(LABELS)})")
    missing = [k for k in ("lv", "myo") if k not in value]
    if missing:
        raise ConfigError(f"{key}: {' and '.join(missing)} required (the targets are built from lv and myo)")
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
            raise ConfigError(
                f"config key 'data.label_map.{k}': expected a label value 1..65535 (0 is background), got {v!r}"
            )
    by_value: dict[int, list[str]] = {}
    for k, v in value.items():
        by_value.setdefault(v, []).append(k)
    shared = {v: ks for v, ks in by_value.items() if len(ks) > 1}
    if shared:
        v, ks = next(iter(shared.items()))
        raise ConfigError(f"{key}: {' and '.join(ks)} have the same label value {v}")
    return tuple(sorted((k, int(v)) for k, v in value.items()))


_LABEL = {"type": "integer", "minimum": 1, "maximum": 65535}
OPTIONS = (
    LayoutOption(
        "label_map",
        {
            "description": "nifti layout: the label value of each structure in the label volumes (ACDC: rv 1, "
            "myo 2, lv 3; M&Ms: lv 1, myo 2, rv 3). endo = lv, epi = lv + myo, myo = myo; rv is not used by any "
            "target yet. A map given here replaces the default (docs/data.md).",
            "type": "object",
            "additionalProperties": False,
            "required": ["lv", "myo"],
            "properties": {name: _LABEL for name in LABELS},
        },
        label_map_option,
        default=LABEL_MAP_DEFAULT,
    ),
)
REASONS = {
    "nifti_unreadable": ("failure", "a NIfTI file that cannot be read"),
    "nifti_bad_shape": ("failure", "a NIfTI image that is not a 2-D or 3-D volume"),
    "nifti_shape_mismatch": ("failure", "a label volume whose grid differs from its image's"),
    "nifti_nonfinite": ("failure", "NaN or infinite voxel values"),
    "nifti_label_invalid": ("failure", "a label volume with non-integer or negative values"),
    "nifti_label_unmapped": ("warning", "label values not in data.label_map (read as background)"),
    "nifti_no_spacing": ("warning", "no valid voxel size in the header: 1.0 mm assumed"),
}

register(
    Layout(
        "nifti",
        discover,
        PHANTOM,
        EXPECTED,
        detect=_detect,
        detect_order=6,
        resolve=resolve,
        options=OPTIONS,
        reasons=REASONS,
    )
)
