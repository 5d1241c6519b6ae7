"""Find the MR image series under an input root, by their headers; every other file gets a QC row.

Every regular file below the root (hidden files and ``DICOMDIR`` skipped; names and folders do not matter)
is opened once, without its pixel data (`pydicom.dcmread(stop_before_pixels=True)`). A file that is no
DICOM, cannot be parsed, is cut inside its header, is no image (no Rows: a report, a structure set), is
another modality than MR or has no SeriesInstanceUID gets one row (status ``skipped``) and is left out. An
Enhanced MR image (several frames) gives one image per frame, its geometry and timing read from its
functional groups (``predict_multiframe`` when it has no functional group per frame). The rest are grouped by SeriesInstanceUID; a series whose images differ in size or pixel spacing,
or in orientation by more than `geometry.ORIENTATION_TOL`, is skipped whole (``predict_geometry_mixed``, a
row per file). Within a series, slices and cardiac phases follow `geometry.assign_phases` (the position
along the slice normal, then TemporalPositionIdentifier / TriggerTime / InstanceNumber); the images are
ordered by slice, then phase; without position or orientation by InstanceNumber (``predict_no_position``).

**One series per slice position** (a vendor's cine layout): series of one study with the same size,
spacing and orientation, each holding images at a single position, the positions all different, are one
*stack* (`Series` with several ``source_uids``): slices, phases and volumes are computed over the stack,
and a SEG is written per source series and phase.

Header quirks that are accepted, each noted in a warning row: a FrameOfReferenceUID per image
(``predict_frame_of_reference_mixed``: the SEG uses the first image's).

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

from segsweep.apply import geometry
from segsweep.data import dicom as dcm
from segsweep.data.ingest import QC_REASONS, pseudonym
from segsweep.errors import DataError

REASONS: dict[str, tuple[str, str]] = {
    "predict_not_mr": ("failure", "an image of another modality than MR (its series is not predicted)"),
    "predict_no_series": ("failure", "an image without SeriesInstanceUID (cannot be grouped)"),
    "predict_multiframe": ("failure", "a multi-frame image without a functional group per frame"),
    "predict_duplicate": ("failure", "a second file with the SOP Instance UID of another file of the series"),
    "predict_geometry_mixed": ("failure", "a series whose images differ in size, orientation or pixel spacing"),
    "predict_no_position": ("warning", "no ImagePositionPatient/ImageOrientationPatient: ordered by InstanceNumber"),
    "predict_irregular_spacing": ("warning", "the slice gaps differ: the volume uses their median"),
    "predict_no_spacing": ("warning", "no slice spacing (one position, no SliceThickness): areas only, no volume"),
    "predict_phases_uneven": ("warning", "positions hold different phases: no volume per phase"),
    "predict_frame_of_reference_mixed": (
        "warning",
        "the images carry several FrameOfReferenceUIDs: the SEG uses the first image's",
    ),
    "predict_no_series_written": ("failure", "no series of the input could be predicted (see the other rows)"),
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
    temporal: int | None = None  # TemporalPositionIdentifier
    series_uid: str = ""
    study_uid: str = ""
    frame_uid: str = ""  # FrameOfReferenceUID
    frame: int | None = None  # the frame number (1-based) of an Enhanced MR image, else None

    @property
    def order_key(self) -> str:
        """The last tie-break of the slice/phase order: path, then frame number."""
        return f"{self.rel}#{self.frame or 0:06d}"

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
    """The images of one SeriesInstanceUID (or of a stack of per-position series), ordered by slice and
    phase (module docstring)."""

    uid: str  # the (first) source SeriesInstanceUID
    name: str  # its pseudonym (a stack: of all its source UIDs)
    images: list[ImageHeader] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (reason, message) of the series
    source_uids: tuple[str, ...] = ()
    phases: geometry.Phases | None = None  # per image of ``images``

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
        return _float_values(ds.get(kw), n)
    except (TypeError, ValueError):
        return None


def _float_values(v, n: int) -> tuple[float, ...] | None:
    try:
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


def _functional(groups, seq: str, kw: str):
    """``kw`` of the first item of ``seq`` in the first of ``groups`` (per-frame, then shared) that has it."""
    for g in groups:
        if g is not None and seq in g and len(g[seq].value) and kw in g[seq].value[0]:
            return g[seq].value[0].get(kw)
    return None


def _file_fields(path: Path, rel: str, ds, uid: str, rows: int, cols: int) -> dict:
    """The ImageHeader fields a file's frames share."""
    return {
        "path": path,
        "rel": rel,
        "ds": ds,
        "series_uid": uid,
        "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
        "frame_uid": str(ds.get("FrameOfReferenceUID", "") or ""),
        "sop_uid": str(ds.get("SOPInstanceUID", "") or ""),
        "rows": rows,
        "cols": cols,
    }


def _frame_headers(path: Path, rel: str, ds, uid: str, rows: int, cols: int, frames: int) -> list[ImageHeader]:
    """One ImageHeader per frame of an Enhanced MR image (PS3.3 C.7.6.16): position, orientation, spacing,
    TemporalPositionIndex and NominalCardiacTriggerDelayTime from its per-frame, else shared, functional
    groups; InstanceNumber = the frame number."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is None or len(per) != frames:
        raise SkipFile("predict_multiframe", f"{frames} frames without a functional group per frame", path)
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None
    out = []
    for i in range(frames):
        groups = (per[i], shared)
        sp = _float_values(_functional(groups, "PixelMeasuresSequence", "PixelSpacing"), 2)
        temporal = _functional(groups, "FrameContentSequence", "TemporalPositionIndex")
        trigger = _functional(groups, "CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime")
        out.append(
            ImageHeader(
                **_file_fields(path, rel, ds, uid, rows, cols),
                temporal=None if temporal in (None, "") else int(temporal),
                orientation=_float_values(
                    _functional(groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
                ),
                position=_float_values(_functional(groups, "PlanePositionSequence", "ImagePositionPatient"), 3),
                pixel_spacing=sp if sp and all(v > 0 for v in sp) else None,
                instance=i + 1,
                trigger=None if trigger in (None, "") else float(trigger),
                frame=i + 1,
            )
        )
    return out


def _image_header(path: Path, rel: str, ds) -> list[ImageHeader]:
    """The ImageHeaders of a file (one; an Enhanced MR image: one per frame), or DicomError with the reason
    why the file is not a usable MR image."""
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
        return _frame_headers(path, rel, ds, uid, rows, cols, frames)
    sp = _floats(ds, "PixelSpacing", 2)
    return [
        ImageHeader(
            **_file_fields(path, rel, ds, uid, rows, cols),
            temporal=_number(ds, "TemporalPositionIdentifier", int),
            orientation=_floats(ds, "ImageOrientationPatient", 6),
            position=_floats(ds, "ImagePositionPatient", 3),
            pixel_spacing=sp if sp and all(v > 0 for v in sp) else None,
            instance=_number(ds, "InstanceNumber", int),
            trigger=_number(ds, "TriggerTime", float),
        )
    ]


def _geometry_key(h: ImageHeader, orientations: list[tuple[float, ...]]) -> tuple:
    """(rows, cols, orientation cluster, spacing): orientations within `geometry.ORIENTATION_TOL` of one
    already seen (``orientations``, extended here) are one cluster."""
    o = None
    if h.orientation is not None:
        o = next((i for i, ref in enumerate(orientations) if geometry.same_orientation(h.orientation, ref)), None)
        if o is None:
            orientations.append(h.orientation)
            o = len(orientations) - 1
    s = None if h.pixel_spacing is None else tuple(round(v, 4) for v in h.pixel_spacing)
    return (h.rows, h.cols, o, s)


def _describe_geometry(keys: list[tuple], orientations: list[tuple[float, ...]]) -> str:
    parts = []
    for k in sorted(set(keys), key=str):
        o = "" if k[2] is None else " orientation " + ",".join(f"{v:.3g}" for v in orientations[k[2]])
        parts.append(f"{k[0]}x{k[1]}{o}")
    return f"{len(set(keys))} geometries: " + "; ".join(parts[:3])


def _order(images: list[ImageHeader]) -> tuple[list[ImageHeader], geometry.Phases]:
    """Images in slice, then phase order, and their slices and phases (`geometry.assign_phases`)."""
    ph = geometry.assign_phases(
        [h.location() for h in images],
        [h.temporal for h in images],
        [h.trigger for h in images],
        [h.instance for h in images],
        [h.order_key for h in images],
    )
    order = ph.order()
    ordered = geometry.Phases(tuple(ph.slice[i] for i in order), tuple(ph.phase[i] for i in order), ph.rule, ph.even)
    return [images[i] for i in order], ordered


def _stacks(series: list[Series], key: str) -> list[Series]:
    """Per-position series merged into stacks (module docstring); other series unchanged."""
    candidates: dict[tuple, list[Series]] = {}
    out = []
    for s in series:
        if s.phases.rule != "none" and s.phases.n_slices == 1:
            h = s.images[0]
            spacing = None if h.pixel_spacing is None else tuple(round(v, 4) for v in h.pixel_spacing)
            candidates.setdefault((h.study_uid, h.rows, h.cols, spacing), []).append(s)
        else:
            out.append(s)
    for group in candidates.values():
        ref = group[0].images[0].orientation
        same = [g for g in group if geometry.same_orientation(g.images[0].orientation, ref)]
        rest = [g for g in group if g not in same]
        out.extend(rest)
        locs = [g.images[0].location() for g in same]
        if len(same) < 2 or len(geometry.distinct_positions(locs)) != len(same):
            out.extend(same)
            continue
        uids = tuple(sorted(g.uid for g in same))
        stack = Series(uids[0], "s" + pseudonym(key, "|".join(uids))[1:], source_uids=uids)
        stack.images, stack.phases = _order([h for g in same for h in g.images])
        stack.warnings = sorted({w for g in same for w in g.warnings})
        out.append(stack)
    return out


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
            try:
                ident.update(dcm.identifying_values(ds))
            except Exception as exc:  # noqa: BLE001 - as below
                raw_rows.append(("", rel, "dicom_unreadable", f"header could not be parsed ({type(exc).__name__})"))
                continue
            try:
                found = _image_header(path, rel, ds)
            except dcm.DicomError as exc:
                uid = str(ds.get("SeriesInstanceUID", "") or "") if exc.reason == "predict_not_mr" else ""
                raw_rows.append((uid, rel, exc.reason, exc.detail))
                continue
            except Exception as exc:  # noqa: BLE001 - pydicom parses values lazily: garbage read with force
                # (a text file) fails only here, and must be a row like any other unusable file
                raw_rows.append(("", rel, "dicom_unreadable", f"header could not be parsed ({type(exc).__name__})"))
                continue
            groups.setdefault(found[0].series_uid, []).extend(found)

    names = {uid: series_pseudonym(key, uid) for uid in {*groups, *(r[0] for r in raw_rows if r[0])}}
    if len(set(names.values())) != len(names):  # 32-bit prefix: a collision is unlikely but must not merge series
        raise DataError(f"data.pseudonym_key: two series under {root} get the same pseudonym; change the key")
    identifying = sorted(ident, key=len, reverse=True)
    series: list[Series] = []
    for uid, images in groups.items():
        s = Series(uid, names[uid])
        seen: dict[tuple[str, int | None], str] = {}
        unique = []
        for h in sorted(images, key=lambda h: (h.rel, h.frame or 0)):
            if h.sop_uid and (h.sop_uid, h.frame) in seen:
                raw_rows.append((uid, h.rel, "predict_duplicate", "same SOP Instance UID as another file"))
                continue
            seen[(h.sop_uid, h.frame)] = h.rel
            unique.append(h)
        orientations: list[tuple[float, ...]] = []
        geoms = [_geometry_key(h, orientations) for h in unique]
        if len(set(geoms)) > 1:
            msg = _describe_geometry(geoms, orientations)
            raw_rows += [(uid, h.rel, "predict_geometry_mixed", msg) for h in unique]
            continue
        s.images, s.phases = _order(unique)
        s.source_uids = (uid,)
        if s.phases.rule == "none":
            s.warnings.append(("predict_no_position", "slices ordered by InstanceNumber"))
        frames = {h.frame_uid for h in unique}
        if len(frames) > 1:
            s.warnings.append(
                ("predict_frame_of_reference_mixed", f"{len(frames)} FrameOfReferenceUIDs: the first image's is used")
            )
        series.append(s)
    series = _stacks(series, key)
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
