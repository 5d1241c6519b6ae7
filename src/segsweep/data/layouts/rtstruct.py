"""DICOM RTSTRUCT layout: image series plus RT structure sets whose ROIs hold the manual contours.

```
<root>/<patient>/**/<any name>     every file below a patient folder: DICOM images (MR, CT, ...) and one
                                    RTSTRUCT per contoured series; file and folder names do not matter
```
Files are told apart by their headers, so discovery only lists each patient folder's files and ``resolve``
(called by ingest, in the worker) opens them: images give their geometry (SOPInstanceUID,
ImagePositionPatient, ImageOrientationPatient, PixelSpacing), structure sets their ROIs.

- ROI names map to contours through ``data.roi_map`` (this layout's option, ``OPTIONS``; ``endo`` = inner,
  ``epi`` = outer; compared in ``roi_name`` form). Other ROIs get ``rtstruct_roi_unmapped`` rows, ROIs without
  a name ``rtstruct_roi_unnamed``; two ROIs of one structure set mapped to the same contour
  ``rtstruct_roi_ambiguous``.
- A contour (ContourSequence item, CLOSED_PLANAR) belongs to the image its ContourImageSequence names
  (ReferencedSOPInstanceUID). Without a reference, or with one to an image that is not there, it goes to the
  one image (same frame of reference) whose plane holds all its points within ``PLANE_TOLERANCE_MM``, with
  an ``rtstruct_contour_by_position`` warning; none or several such images (cine phases share positions):
  ``rtstruct_contour_unmatched``.
- Points in patient mm become pixel coordinates of that image: with origin ``o`` = ImagePositionPatient
  (centre of the first pixel), row direction ``r`` and column direction ``c`` (ImageOrientationPatient) and
  PixelSpacing ``(Δrow, Δcol)``: ``x = (p − o)·r / Δcol`` (column), ``y = (p − o)·c / Δrow`` (row), so pixel
  centres sit at integer coordinates as in contour files (DICOM PS3.3 C.7.6.2.1.1).

Images are numbered in the order (SeriesNumber, SeriesInstanceUID, InstanceNumber, path), from 0. Identifying
header values of the files read are added to the patient's aliases, so that they are replaced by the
pseudonym wherever a file name or an ROI name would carry them into qc.csv.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from segsweep.data.layouts.base import (
    Item,
    Layout,
    LayoutOption,
    Note,
    Part,
    PatientRecord,
    PhantomPaths,
    PhantomPatient,
    PolygonContour,
    _walk,
    register,
)
from segsweep.errors import ConfigError

EXPECTED = "<patient>/**/*: DICOM image series + one RTSTRUCT per series (any file names), one folder per patient"

PLANE_TOLERANCE_MM = 0.5  # a contour lies in an image's plane if every point is this close to it
REFERENCED_TOLERANCE_MM = 1.0  # the most a contour may leave the plane of the image it references
_KIND = {"endo": "inner", "epi": "outer"}
_RS_NAME = re.compile(r"^(?:RS|RTSS)[._-]|RTSTRUCT", re.IGNORECASE)
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR
_MAX_DEPTH = 6


# ------------------------------------------------------------------------------------------ discovery
def _patient_dirs(root: Path) -> list[Path]:
    return sorted(Path(e.path) for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _files(pdir: Path) -> list[Path]:
    return [
        Path(dirpath) / name
        for dirpath, _, names in _walk(pdir, _MAX_DEPTH)
        for name in names
        if name.upper() != "DICOMDIR"  # the media index (not an image or a structure set)
    ]


def _detect(root: Path) -> bool:
    """A file named like an RTSTRUCT export (RS.*, RS_*, RTSS.*, *RTSTRUCT*) up to four levels down."""
    return any(_RS_NAME.search(n) for _, _, names in _walk(root, 4) for n in names)


def discover(root: Path) -> list[PatientRecord]:
    records = []
    for pdir in _patient_dirs(root):
        files = _files(pdir)
        if files:
            records.append(PatientRecord(key=pdir.name, aliases=(pdir.name,), files=files))
    return records


# ------------------------------------------------------------------------------------------ headers
@dataclass(frozen=True)
class _Image:
    path: Path
    uid: str | None
    sort: tuple
    frame: str | None  # FrameOfReferenceUID
    origin: np.ndarray | None  # ImagePositionPatient (3,)
    axes: np.ndarray | None  # [row direction, column direction, normal] (3, 3)
    spacing: tuple[float, float] | None  # PixelSpacing (row, col) mm


def _header(path: Path):
    """(dataset, None), or (None, Note) for a file that is not a readable DICOM header."""
    import pydicom  # here and below, not at the top: planning reads this module (its name, options, codes)
    from pydicom.errors import InvalidDicomError

    from segsweep.data import dicom as dcm

    try:
        with dcm.quiet():
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except InvalidDicomError:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                if not any(e.tag.group in (0x0008, 0x0020, 0x0028, 0x3006) for e in ds):
                    return None, Note(path, "dicom_not_dicom", "not a DICOM file")
    except OSError as exc:
        return None, Note(path, "dicom_unreadable", f"cannot read file ({type(exc).__name__})")
    except Exception as exc:
        return None, Note(path, "dicom_unreadable", f"header could not be parsed ({type(exc).__name__})")
    return ds, None


def _floats(value, n: int) -> np.ndarray | None:
    try:
        v = np.array([float(x) for x in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return v if v.shape == (n,) and np.isfinite(v).all() else None


def _triplets(data) -> np.ndarray | None:
    """ContourData as finite (x, y, z) points [N, 3] (N >= 1), else None."""
    if data is None or isinstance(data, (str, bytes)) or not hasattr(data, "__len__"):
        return None
    v = _floats(data, len(data))
    return None if v is None or not v.size or v.size % 3 else v.reshape(-1, 3)


def _int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _image(path: Path, ds) -> _Image:
    origin = _floats(ds.get("ImagePositionPatient"), 3)
    iop = _floats(ds.get("ImageOrientationPatient"), 6)
    axes = None
    if iop is not None:
        r, c = iop[:3], iop[3:]
        nr, nc = np.linalg.norm(r), np.linalg.norm(c)
        if nr > 0.5 and nc > 0.5 and abs(float(r @ c)) / (nr * nc) < 1e-3:  # unit-ish and orthogonal
            r, c = r / nr, c / nc
            axes = np.stack([r, c, np.cross(r, c)])
    sp = _floats(ds.get("PixelSpacing"), 2)
    spacing = (float(sp[0]), float(sp[1])) if sp is not None and (sp > 0).all() else None
    uid = ds.get("SOPInstanceUID")
    frame = ds.get("FrameOfReferenceUID")
    series = str(ds.get("SeriesInstanceUID") or "")
    sort = (_int(ds.get("SeriesNumber")), series, _int(ds.get("InstanceNumber")), str(path))
    return _Image(path, str(uid) if uid else None, sort, str(frame) if frame else None, origin, axes, spacing)


# ------------------------------------------------------------------------------------ structure sets
@dataclass(frozen=True)
class _Contour:
    part: Part  # <rtstruct>#roi<N>-<k>
    kind: str  # "inner" | "outer"
    geometric_type: str
    data: object  # ContourData as read (checked when converted)
    refs: tuple[str, ...]  # ReferencedSOPInstanceUIDs of its ContourImageSequence


def _text(value, ident: list[str]) -> str:
    """A header text for a QC message: scrubbed of identifying values, at most 40 characters."""
    from segsweep.data import dicom as dcm

    return dcm.scrub(str(value), ident)[:40]


def _structure_set(path: Path, ds, lookup: dict[str, str], ident: list[str], notes: list) -> list[_Contour]:
    """The contours of one RTSTRUCT whose ROI maps to a contour kind; notes for the others."""
    try:
        names = {}
        for item in ds.get("StructureSetROISequence") or []:
            names[_int(item.get("ROINumber"), -1)] = str(item.get("ROIName") or "").strip()
        roi_contours = ds.ROIContourSequence
        rois = []
        for rc in roi_contours:
            number = _int(rc.get("ReferencedROINumber"), -1)
            items = []
            for item in rc.get("ContourSequence") or []:
                refs = tuple(
                    str(ref.ReferencedSOPInstanceUID)
                    for ref in item.get("ContourImageSequence") or []
                    if ref.get("ReferencedSOPInstanceUID")
                )
                items.append(
                    (str(item.get("ContourGeometricType") or "").strip().upper(), item.get("ContourData"), refs)
                )
            rois.append((number, items))
    except Exception as exc:  # no ROIContourSequence, or a malformed sequence
        notes.append(Note(path, "rtstruct_invalid", f"structure set cannot be read ({type(exc).__name__})"))
        return []
    by_kind: dict[str, list[int]] = {}
    for number, items in rois:
        name = names.get(number, "")
        kind = lookup.get(roi_name(name)) if name else None
        if items and kind:
            by_kind.setdefault(kind, []).append(number)
    out = []
    for number, items in rois:
        if not items:
            continue  # an ROI without contours holds nothing to use or to report
        name = names.get(number, "")
        where = Part(path, f"roi{number}")
        n = f"{len(items)} contour{'s' if len(items) != 1 else ''}"
        if not name:
            why = "an empty ROIName" if number in names else "no entry in StructureSetROISequence"
            notes.append(Note(where, "rtstruct_roi_unnamed", f"ROI {number} ({n}) has {why}"))
            continue
        kind = lookup.get(roi_name(name))
        if kind is None:
            notes.append(
                Note(
                    where, "rtstruct_roi_unmapped", f"ROI {number} '{_text(name, ident)}' ({n}) is not in data.roi_map"
                )
            )
            continue
        if len(by_kind[kind]) > 1:
            others = ", ".join(str(o) for o in by_kind[kind])
            key = next(k for k, v in _KIND.items() if v == kind)
            msg = f"ROIs {others} all map to data.roi_map.{key}: none is used"
            notes.append(Note(where, "rtstruct_roi_ambiguous", msg))
            continue
        for k, (gtype, data, refs) in enumerate(items, 1):
            out.append(_Contour(Part(path, f"roi{number}-{k:03d}"), kind, gtype, data, refs))
    return out


def _in_pixels(points_mm: np.ndarray, im: _Image) -> tuple[np.ndarray, float]:
    """(x = column, y = row) pixel coordinates of patient-mm points in ``im``'s plane, and the largest
    distance of a point from that plane (mm)."""
    d = points_mm - im.origin
    local = d @ im.axes.T  # along the row direction, the column direction, the normal
    x = local[:, 0] / im.spacing[1]
    y = local[:, 1] / im.spacing[0]
    return np.stack([x, y], axis=1), float(np.abs(local[:, 2]).max())


def _match(c: _Contour, points: np.ndarray, images: list[_Image], by_uid: dict[str, int], frames: set):
    """(image index, warnings) or (None, reason message) for one contour."""
    found = [by_uid[r] for r in c.refs if r in by_uid]
    if found:
        im = images[found[0]]
        if im.origin is None or im.axes is None or im.spacing is None:
            return None, "its image has no valid ImagePositionPatient / ImageOrientationPatient / PixelSpacing"
        return found[0], ()
    why = "referenced image is not among the patient's files" if c.refs else "no ContourImageSequence"
    hits = []
    for i, im in enumerate(images):
        if im.origin is None or im.axes is None or im.spacing is None:
            continue
        if frames and im.frame is not None and im.frame not in frames:
            continue
        off = np.abs((points - im.origin) @ im.axes[2]).max()
        if off <= PLANE_TOLERANCE_MM:
            hits.append(i)
    if len(hits) == 1:
        return hits[0], (("rtstruct_contour_by_position", f"{why}: matched by position"),)
    if not hits:
        return None, f"{why}, and no image lies in its plane"
    return None, f"{why}, and {len(hits)} images lie in its plane (cine phases?): which one is unknown"


def resolve(record: PatientRecord, options) -> PatientRecord:
    """Open one patient's files: images and structure sets → items (image file + polygon contours) and notes."""
    from pydicom.uid import RTStructureSetStorage

    from segsweep.data import dicom as dcm

    lookup = {name: _KIND[kind] for kind, names in options["roi_map"] for name in names}
    notes = list(record.notes)
    images: list[_Image] = []
    sets = []
    ident: set[str] = set()
    for path in record.files:
        ds, note = _header(path)
        if note is not None:
            notes.append(note)
            continue
        try:
            ident.update(dcm.identifying_values(ds))
            sop = str(ds.get("SOPClassUID") or "")
            if sop == RTStructureSetStorage or str(ds.get("Modality") or "").upper() == "RTSTRUCT":
                sets.append((path, ds))
            elif sop == _MEDIA_DIRECTORY:
                continue
            elif "Rows" in ds and "Columns" in ds:
                images.append(_image(path, ds))
            else:
                notes.append(Note(path, "dicom_no_pixels", "a DICOM object that is neither an image nor an RTSTRUCT"))
        except Exception as exc:  # a malformed element met while classifying
            notes.append(Note(path, "dicom_unreadable", f"header could not be parsed ({type(exc).__name__})"))
    ident_list = sorted(ident, key=len, reverse=True)
    images.sort(key=lambda im: im.sort)
    by_uid = {im.uid: i for i, im in enumerate(images) if im.uid}
    found: dict[tuple[int, str], list[PolygonContour]] = {}
    for path, ds in sets:
        frames = set()
        try:
            for ref in ds.get("ReferencedFrameOfReferenceSequence") or []:
                if ref.get("FrameOfReferenceUID"):
                    frames.add(str(ref.FrameOfReferenceUID))
        except Exception:
            frames = set()
        for c in _structure_set(path, ds, lookup, ident_list, notes):
            if c.geometric_type != "CLOSED_PLANAR":
                gtype = _text(c.geometric_type or "none", ident_list)
                notes.append(
                    Note(c.part, "rtstruct_contour_invalid", f"ContourGeometricType {gtype}, not CLOSED_PLANAR")
                )
                continue
            points = _triplets(c.data)
            if points is None:
                notes.append(Note(c.part, "rtstruct_contour_invalid", "ContourData is not finite x, y, z triplets"))
                continue
            i, extra = _match(c, points, images, by_uid, frames)
            if i is None:
                notes.append(Note(c.part, "rtstruct_contour_unmatched", extra))
                continue
            pixels, off = _in_pixels(points, images[i])
            if not extra and off > REFERENCED_TOLERANCE_MM:
                notes.append(
                    Note(c.part, "rtstruct_contour_invalid", f"points up to {off:.1f} mm off its image's plane")
                )
                continue
            found.setdefault((i, c.kind), []).append(PolygonContour(c.part.path, c.part.part, pixels, extra))
    items = []
    for i, im in enumerate(images):
        sides = {}
        for kind in ("inner", "outer"):
            cs = found.get((i, kind), [])
            if len(cs) > 1:
                for c in cs:
                    msg = f"{len(cs)} {kind} contours on image {im.path.name}: none is used"
                    notes.append(Note(c, "rtstruct_contour_multiple", msg))
            sides[kind] = cs[0] if len(cs) == 1 else None
        items.append(Item(i, im.path, sides["inner"], sides["outer"]))
    aliases = (*record.aliases, *(v for v in ident_list if v not in record.aliases))
    return replace(record, aliases=aliases, items=items, notes=notes)


# ------------------------------------------------------------------------------------ phantom writer
def _pdir(root: Path, p: int) -> Path:
    return root / f"case{p:02d}"


_ROIS = ((1, "LV Endo", "inner", [255, 0, 0]), (2, "LV Epi", "outer", [0, 255, 0]))
# the patient and study attributes an RTSTRUCT shares with its images (fake identifying values included)
_SHARED = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "ReferringPhysicianName",
    "InstitutionName",
    "Manufacturer",
)


def _ds(v: float) -> str:
    return f"{v:.6f}"


def _write_phantom(root: Path, patient: PhantomPatient) -> None:
    """One RTSTRUCT for the patient's series: ROIs "LV Endo" / "LV Epi", each contour referencing its image
    by SOPInstanceUID, points in patient mm (the text layouts' pixel coordinates through the images' geometry)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, RTStructureSetStorage

    h = patient.header
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = uid = patient.uid("rtstruct")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for kw in _SHARED:
        if kw in h:
            setattr(ds, kw, h.data_element(kw).value)
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = uid
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = patient.uid("rtstruct-series")
    ds.SeriesNumber = int(h.SeriesNumber) + 1000
    ds.SeriesDescription = "LV contours (phantom)"
    ds.StructureSetLabel = "LV"
    ds.StructureSetDate = h.StudyDate
    ds.StructureSetTime = h.StudyTime
    row_sp, col_sp = (float(v) for v in h.PixelSpacing)
    refs = []
    for s in patient.slices:
        ref = Dataset()
        ref.ReferencedSOPClassUID = MRImageStorage
        ref.ReferencedSOPInstanceUID = s.uid
        refs.append(ref)
    series = Dataset()
    series.SeriesInstanceUID = h.SeriesInstanceUID
    series.ContourImageSequence = Sequence(refs)
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (as exporters write)
    study.ReferencedSOPInstanceUID = h.StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = h.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    rois, roi_contours, observations = [], [], []
    for number, name, kind, colour in _ROIS:
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = h.FrameOfReferenceUID
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois.append(roi)
        contours = []
        for s in patient.slices:
            pts = getattr(s, kind)
            if pts is None:
                continue
            # ImageOrientationPatient [1, 0, 0, 0, 1, 0], ImagePositionPatient [0, 0, location]
            xyz = np.column_stack([pts[:, 0] * col_sp, pts[:, 1] * row_sp, np.full(len(pts), s.location)])
            c = Dataset()
            ref = Dataset()
            ref.ReferencedSOPClassUID = MRImageStorage
            ref.ReferencedSOPInstanceUID = s.uid
            c.ContourImageSequence = Sequence([ref])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [_ds(v) for v in xyz.ravel()]
            contours.append(c)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = colour
        rc.ContourSequence = Sequence(contours)
        roi_contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = "ORGAN"
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(roi_contours)
    ds.RTROIObservationsSequence = Sequence(observations)
    path = _pdir(root, patient.p) / "RTSTRUCT" / f"RS-{patient.p:02d}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


PHANTOM = PhantomPaths(
    number=lambda p, k: k,
    image=lambda root, p, n: _pdir(root, p) / "MR" / f"IM-{n:04d}.dcm",
    contour=None,
    finish=lambda root, patients: None,
    instance_offset=1,
    write=_write_phantom,
)

# ------------------------------------------------------------------------------------ config and QC codes
# data.roi_map: the RTSTRUCT ROI names of each contour, compared case-insensitively with runs of whitespace as one space
ROI_MAP_DEFAULT = {"endo": ("LV Endo", "LV endocardium"), "epi": ("LV Epi", "LV epicardium")}


def roi_name(name: str) -> str:
    """The form ROI names are compared in: case-folded, surrounding whitespace dropped, inner runs as one space."""
    return " ".join(str(name).split()).casefold()


def roi_map_option(value) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``data.roi_map`` checked and normalised: ((contour, (ROI names in ``roi_name`` form, sorted)), ...).
    Raises ConfigError naming the key."""
    key = "config key 'data.roi_map'"
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{key}: expected a mapping of endo and/or epi to lists of ROI names, got {value!r}")
    out, seen = [], {}
    for kind, names in value.items():
        if kind not in ROI_MAP_DEFAULT:
            raise ConfigError(f"{key}: unknown contour '{kind}' (known: {', '.join(ROI_MAP_DEFAULT)})")
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, (list, tuple)) or not names:
            raise ConfigError(f"config key 'data.roi_map.{kind}': expected a non-empty list of ROI names")
        norm = []
        for n in names:
            if not isinstance(n, str) or not roi_name(n):
                raise ConfigError(f"config key 'data.roi_map.{kind}': ROI names must be non-empty strings, got {n!r}")
            other = seen.setdefault(roi_name(n), kind)
            if other != kind:
                raise ConfigError(f"{key}: ROI name '{n}' is listed under both {other} and {kind}")
            norm.append(roi_name(n))
        out.append((kind, tuple(sorted(set(norm)))))
    return tuple(sorted(out))


_NAMES = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
OPTIONS = (
    LayoutOption(
        "roi_map",
        {
            "description": "rtstruct layout: the RTSTRUCT ROI names of each contour (endo = inner, epi = outer), "
            "compared case-insensitively with runs of whitespace as one space; ROIs named in neither list are not "
            "used (rtstruct_roi_unmapped in qc.csv). A map given here replaces the default (docs/data.md).",
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {"endo": _NAMES, "epi": _NAMES},
        },
        roi_map_option,
        default=ROI_MAP_DEFAULT,
    ),
)
REASONS = {
    "rtstruct_invalid": ("failure", "an RTSTRUCT whose structure set cannot be read (no usable ROI sequences)"),
    "rtstruct_roi_unmapped": ("info", "an ROI whose name is in no data.roi_map list (not used)"),
    "rtstruct_roi_unnamed": ("failure", "contours of an ROI without a name (not used)"),
    "rtstruct_roi_ambiguous": ("failure", "several ROIs of one structure set map to one contour (none used)"),
    "rtstruct_contour_invalid": ("failure", "an RTSTRUCT contour that is not a closed planar polygon in its image"),
    "rtstruct_contour_unmatched": ("failure", "an RTSTRUCT contour whose image is not found (UID nor position)"),
    "rtstruct_contour_multiple": ("failure", "several contours of one ROI kind on one image (none used)"),
    "rtstruct_contour_by_position": ("warning", "contour matched to its image by position, not by UID"),
}

register(
    Layout(
        "rtstruct",
        discover,
        PHANTOM,
        EXPECTED,
        detect=_detect,
        detect_order=5,
        resolve=resolve,
        options=OPTIONS,
        reasons=REASONS,
    )
)
