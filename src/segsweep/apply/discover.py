"""Find the MR image series under an input root, by their headers; every other file gets a QC row.

Every regular file below the root (hidden files and ``DICOMDIR`` skipped; names and folders do not matter)
is opened once, without its pixel data (`pydicom.dcmread(stop_before_pixels=True)`). A file that is no
DICOM, cannot be parsed, is cut inside its header, is no image (no Rows: a report, a structure set), is
another modality than MR, has no SeriesInstanceUID or several frames gets one row (status ``skipped``) and is
left out. The rest are grouped by SeriesInstanceUID; a series whose images differ in size, orientation or
pixel spacing is skipped whole (``predict_geometry_mixed``, a row per file). Within a series the images are
ordered by their position along the slice normal ``n = r × c`` (``s = ImagePositionPatient · n``; r, c the
row and column directions of ImageOrientationPatient), then TriggerTime, InstanceNumber and path; without
position or orientation by InstanceNumber (``predict_no_position``).

Privacy: QC rows name a file by its path relative to the root with every identifying header value of the
root's files (names, IDs, dates, institutions: `dicom.identifying_values`) replaced by ``[redacted]``; a
series by its pseudonym ``s`` + 8 hex digits of HMAC-SHA256(``data.pseudonym_key``, SeriesInstanceUID), the
keyed hash of `segsweep.data.ingest.pseudonym`; header values never appear otherwise.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from segsweep.data import dicom as dcm
from segsweep.data.ingest import QC_REASONS, pseudonym
from segsweep.errors import DataError

REASONS: dict[str, tuple[str, str]] = {
    "predict_not_mr": ("failure", "an image of another modality than MR (its series is not predicted)"),
    "predict_no_series": ("failure", "an image without SeriesInstanceUID (cannot be grouped)"),
    "predict_multiframe": ("failure", "a multi-frame image (enhanced MR): not supported"),
    "predict_duplicate": ("failure", "a second file with the SOP Instance UID of another file of the series"),
    "predict_geometry_mixed": ("failure", "a series whose images differ in size, orientation or pixel spacing"),
    "predict_no_position": ("warning", "no ImagePositionPatient/ImageOrientationPatient: ordered by InstanceNumber"),
    "predict_irregular_spacing": ("warning", "the slice gaps differ: the volume uses their median"),
    "predict_no_spacing": ("warning", "no slice spacing (one position, no SliceThickness): areas only, no volume"),
    "predict_phases_uneven": ("warning", "positions hold different numbers of images: no volume per phase"),
    "predict_empty_series": ("failure", "no image of the series could be read"),
    "predict_series_failed": ("failure", "predicting or writing the series failed; the other series go on"),
}
QC_COLUMNS = ("series", "file", "status", "reason", "message")


class SkipFile(dcm.DicomError):
    """A file predict does not use (reason from REASONS or the DICOM reader's codes)."""

    reasons = {**dcm.REASONS, **REASONS}


SKIP_NAMES = {"DICOMDIR"}


def series_pseudonym(key: str, series_uid: str) -> str:
    """``s`` + 8 hex digits of the keyed hash of `ingest.pseudonym` over the SeriesInstanceUID."""
    return "s" + pseudonym(key, str(series_uid))[1:]


@dataclass
class ImageHeader:
    """One usable MR image file: its path and header (no pixel data) and the fields that order it."""

    path: Path
    rel: str  # path relative to the root (posix), raw: scrubbed only where it is written
    ds: pydicom.Dataset
    sop_uid: str
    rows: int
    cols: int
    orientation: tuple[float, ...] | None
    position: tuple[float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    instance: int | None
    trigger: float | None

    @property
    def normal(self) -> np.ndarray | None:
        if self.orientation is None:
            return None
        r, c = np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:])
        n = np.cross(r, c)
        norm = float(np.linalg.norm(n))
        return None if norm < 1e-6 else n / norm

    def location(self) -> float | None:
        """Position along the slice normal (mm), or None."""
        n = self.normal
        return None if n is None or self.position is None else float(np.dot(self.position, n))


@dataclass
class Series:
    """The images of one SeriesInstanceUID, ordered (module docstring)."""

    uid: str
    name: str  # its pseudonym
    images: list[ImageHeader] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (reason, message) of the series

    @property
    def header(self) -> pydicom.Dataset:
        return self.images[0].ds


@dataclass
class Discovery:
    series: list[Series]
    rows: list[tuple[str, str, str, str, str]]  # QC rows (QC_COLUMNS), file paths already scrubbed
    identifying: list[str]  # identifying header values of the root (for scrubbing later rows)
    n_files: int

    def scrub(self, text: str) -> str:
        return dcm.scrub(text, self.identifying)


def _files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.upper() not in SKIP_NAMES:
                p = Path(dirpath) / name
                if p.is_file():
                    out.append(p)
    return out


def read_header(path: Path) -> pydicom.Dataset:
    """The header of a DICOM file without its pixel data; raises `dicom.DicomError` with a QC reason."""
    with dcm.quiet():
        try:
            return pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            # no DICM marker: `dicom.read` tells a stripped DICOM file (read with force) from anything else
            dcm.read(path, describe=False)
            return pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except EOFError:
            raise dcm.DicomError("dicom_truncated", "file ends inside the header", path) from None
        except OSError as exc:
            raise dcm.DicomError("dicom_unreadable", f"cannot read file ({type(exc).__name__})", path) from None
        except dcm.DicomError:
            raise
        except Exception as exc:
            raise dcm.DicomError(
                "dicom_unreadable", f"header could not be parsed ({type(exc).__name__})", path
            ) from None


def _floats(ds, kw: str, n: int) -> tuple[float, ...] | None:
    try:
        v = ds.get(kw)
        vals = tuple(float(x) for x in v) if v is not None else None
    except (TypeError, ValueError):
        return None
    if vals is None or len(vals) != n or not all(math.isfinite(x) for x in vals):
        return None
    return vals


def _number(ds, kw: str, kind=float):
    try:
        v = ds.get(kw)
        return None if v is None or v == "" else kind(v)
    except (TypeError, ValueError):
        return None


def _image_header(path: Path, rel: str, ds) -> ImageHeader:
    """An ImageHeader, or DicomError with the reason why the file is not a usable MR image."""
    rows, cols = _number(ds, "Rows", int), _number(ds, "Columns", int)
    if rows is None or cols is None:
        sop = getattr(ds.get("SOPClassUID"), "name", "") or ""
        if "Image Storage" in sop:
            raise dcm.DicomError("dicom_truncated", "file ends before the image attributes", path)
        raise dcm.DicomError("dicom_no_pixels", "not an image (no Rows/Columns)", path)
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality != "MR":
        raise SkipFile("predict_not_mr", f"modality {modality or 'missing'}", path)
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    if not uid:
        raise SkipFile("predict_no_series", "no SeriesInstanceUID", path)
    frames = _number(ds, "NumberOfFrames", int) or 1
    if frames > 1:
        raise SkipFile("predict_multiframe", f"{frames} frames", path)
    sp = _floats(ds, "PixelSpacing", 2)
    return ImageHeader(
        path=path,
        rel=rel,
        ds=ds,
        sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
        rows=rows,
        cols=cols,
        orientation=_floats(ds, "ImageOrientationPatient", 6),
        position=_floats(ds, "ImagePositionPatient", 3),
        pixel_spacing=sp if sp and all(v > 0 for v in sp) else None,
        instance=_number(ds, "InstanceNumber", int),
        trigger=_number(ds, "TriggerTime", float),
    )


def _geometry_key(h: ImageHeader) -> tuple:
    o = None if h.orientation is None else tuple(round(v, 3) for v in h.orientation)
    s = None if h.pixel_spacing is None else tuple(round(v, 4) for v in h.pixel_spacing)
    return (h.rows, h.cols, o, s)


def _describe_geometry(keys: list[tuple]) -> str:
    parts = []
    for k in sorted(set(keys), key=str):
        parts.append(f"{k[0]}x{k[1]}" + ("" if k[2] is None else " orientation " + ",".join(f"{v:g}" for v in k[2])))
    return f"{len(set(keys))} geometries: " + "; ".join(parts[:3])


def _order(images: list[ImageHeader]) -> tuple[list[ImageHeader], bool]:
    """Images in slice order (module docstring); True if ordered by position."""
    locs = [h.location() for h in images]
    by_position = all(v is not None for v in locs)

    def key(i: int):
        h = images[i]
        t = h.trigger if h.trigger is not None else math.inf
        n = h.instance if h.instance is not None else math.inf
        return ((round(locs[i], 3) if by_position else 0.0), t, n, h.rel)

    return [images[i] for i in sorted(range(len(images)), key=key)], by_position


def discover(root: str | Path, key: str) -> Discovery:
    """The MR series under ``root`` (sorted by pseudonym) and the QC rows of everything else."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"config key 'predict.input': '{root}' does not exist")
    if not root.is_dir():
        raise DataError(f"config key 'predict.input': '{root}' is not a folder")
    files = _files(root)
    if not files:
        raise DataError(f"config key 'predict.input': '{root}' holds no file")
    raw_rows: list[tuple[str, str, str, str]] = []  # (series uid or "", rel, reason, message)
    ident: set[str] = set()
    groups: dict[str, list[ImageHeader]] = {}
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            ds = read_header(path)
        except dcm.DicomError as exc:
            raw_rows.append(("", rel, exc.reason, exc.detail))
            continue
        # pydicom converts (and validates) a value when it is first read, and its warning quotes the value
        with dcm.quiet():
            ident.update(dcm.identifying_values(ds))
            try:
                h = _image_header(path, rel, ds)
            except dcm.DicomError as exc:
                uid = str(ds.get("SeriesInstanceUID", "") or "") if exc.reason == "predict_not_mr" else ""
                raw_rows.append((uid, rel, exc.reason, exc.detail))
                continue
            groups.setdefault(h.ds.SeriesInstanceUID, []).append(h)

    names = {uid: series_pseudonym(key, uid) for uid in {*groups, *(r[0] for r in raw_rows if r[0])}}
    if len(set(names.values())) != len(names):  # 32-bit prefix: a collision is unlikely but must not merge series
        raise DataError(f"data.pseudonym_key: two series under {root} get the same pseudonym; change the key")
    identifying = sorted(ident, key=len, reverse=True)
    series: list[Series] = []
    for uid, images in groups.items():
        s = Series(uid, names[uid])
        seen: dict[str, str] = {}
        unique = []
        for h in sorted(images, key=lambda h: h.rel):
            if h.sop_uid and h.sop_uid in seen:
                raw_rows.append((uid, h.rel, "predict_duplicate", "same SOP Instance UID as another file"))
                continue
            seen[h.sop_uid] = h.rel
            unique.append(h)
        geoms = [_geometry_key(h) for h in unique]
        if len(set(geoms)) > 1:
            msg = _describe_geometry(geoms)
            raw_rows += [(uid, h.rel, "predict_geometry_mixed", msg) for h in unique]
            continue
        s.images, by_position = _order(unique)
        if not by_position:
            s.warnings.append(("predict_no_position", "slices ordered by InstanceNumber"))
        series.append(s)
    series.sort(key=lambda s: s.name)
    rows = [
        row(names.get(uid, ""), dcm.scrub(rel, identifying), reason, dcm.scrub(msg, identifying))
        for uid, rel, reason, msg in raw_rows
    ]
    return Discovery(series, rows, identifying, len(files))


def severity(reason: str) -> str:
    """A reason's severity: this module's codes, else ingest's (the DICOM reader's, ``image_blank``, ...)."""
    if reason in REASONS:
        return REASONS[reason][0]
    return QC_REASONS[reason][0] if reason else "ok"


def row(series: str, file: str, reason: str = "", message: str = "") -> tuple[str, str, str, str, str]:
    """One qc.csv row: status from the reason's severity (failure → skipped, warning, info/none → ok)."""
    sev = severity(reason)
    status = {"failure": "skipped", "warning": "warning"}.get(sev, "ok")
    return (series, file, status, reason, message)
