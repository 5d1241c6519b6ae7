"""Read one DICOM file into float32 pixels plus a whitelist of non-identifying header fields.

Only the fields of :class:`DicomImage` leave this module; every other header value (names, IDs, dates,
institution, ...) stays inside :func:`read`. Failures raise :class:`DicomError`, whose ``reason`` is a
stable QC code (docs/qc.md); its message never contains header values.

Pixel values: ``value = stored * RescaleSlope + RescaleIntercept`` (DICOM PS3.3 C.11.1, modality LUT);
MONOCHROME1 images are inverted after rescaling (``value' = min + max - value``) so that bright always
means high signal, as in MONOCHROME2.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from segsweep.errors import QCError
from segsweep.io import read_file

# reason code -> (severity, one-line meaning); severities: "failure" (the file is unusable),
# "warning" (used, with a caveat). docs/qc.md lists the same codes.
REASONS: dict[str, tuple[str, str]] = {
    "dicom_not_dicom": ("failure", "not a DICOM file (no DICOM marker and no readable DICOM elements)"),
    "dicom_unreadable": ("failure", "DICOM header could not be parsed"),
    "dicom_truncated": ("failure", "file cut short: pixel data missing or shorter than the image size"),
    "dicom_no_pixels": ("failure", "DICOM object without pixel data (report, plan, waveform, ...)"),
    "dicom_bad_header": ("failure", "missing or invalid image attribute (Rows, Columns, Bits, frames)"),
    "dicom_color": ("failure", "colour image (RGB/YBR/palette); cine MRI is greyscale"),
    "dicom_unsupported": ("failure", "pixel format not usable as an image (e.g. 1-bit segmentation)"),
    "dicom_decode_failed": ("failure", "compressed pixel data that no installed decoder could decode"),
    "dicom_no_spacing": ("warning", "no valid PixelSpacing: 1.0 mm assumed"),
    "dicom_no_file_meta": ("warning", "no preamble/file meta: read with force, encoding inferred"),
}

# Header keywords whose values identify a patient, a study date or a place/person. They are read only to
# decide whether a free-text field (SeriesDescription) can be passed on; none of them is ever returned.
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "MedicalRecordLocator",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "PhysiciansOfRecord",
    "DeviceSerialNumber",
)

_LE_SYNTAXES = {ImplicitVRLittleEndian, ExplicitVRLittleEndian}
_INT_DTYPES = {(8, 0): "u1", (8, 1): "i1", (16, 0): "<u2", (16, 1): "<i2", (32, 0): "<u4", (32, 1): "<i4"}


class DicomError(QCError):
    """A DICOM file that cannot be used; ``reason`` is a stable QC code (see REASONS)."""

    reasons = REASONS


@dataclass(frozen=True)
class DicomImage:
    """Pixels plus whitelisted, non-identifying header fields of one DICOM file.

    ``stored`` keeps the stored integer (or float) values [F, H, W] so that intensity statistics can be
    computed exactly on them (see ``preprocess.window_dicom``); ``pixels`` is the rescaled float32 image.
    """

    stored: np.ndarray
    slope: float
    intercept: float
    invert: bool
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) in mm
    rows: int
    cols: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    slice_location: float | None = None
    instance_number: int | None = None
    series_description: str | None = None
    warnings: tuple[tuple[str, str], ...] = field(default=())

    @property
    def n_frames(self) -> int:
        return int(self.stored.shape[0])

    def to_float(self, values: np.ndarray) -> np.ndarray:
        """The rescale (+ MONOCHROME1 inversion) applied to stored values: float32."""
        out = values.astype(np.float32)
        if self.slope != 1.0:
            out *= np.float32(self.slope)
        if self.intercept != 0.0:
            out += np.float32(self.intercept)
        if self.invert:
            out = self._invert_offset() - out
        return out

    def _invert_offset(self) -> np.float32:
        # min + max of the rescaled image, over all frames: keeps the value range unchanged
        lo = float(self.stored.min()) * self.slope + self.intercept
        hi = float(self.stored.max()) * self.slope + self.intercept
        return np.float32(lo + hi)

    def frame(self, i: int = 0) -> np.ndarray:
        """Frame ``i`` as float32 [H, W] after rescale slope/intercept and MONOCHROME1 inversion."""
        return self.to_float(self.stored[i])

    @property
    def pixels(self) -> np.ndarray:
        """All frames, float32 [F, H, W]."""
        return self.to_float(self.stored)


@contextlib.contextmanager
def _quiet(logger: str = "pydicom"):
    """Silence pydicom's (or ``logger``'s) warnings and log records while reading: they can quote header
    values (PHI)."""
    log = logging.getLogger(logger)
    was = log.disabled
    log.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.disabled = was


quiet = _quiet  # for the other readers of headers (the rtstruct layout; the nifti layout with "nibabel")


def identifying_values(ds) -> list[str]:
    """Non-trivial strings of the identifying header values and of their parts (name components,
    multiple values), longest first. Raw values are decoded as Latin-1 (a byte-exact view: the same
    decoding is used for the text they are compared with); non-ASCII values are added decoded too."""
    out: set[str] = set()
    for kw, tag in _IDENT_TAGS:
        try:
            elem = ds.get_item(tag)
        except Exception:
            continue
        if elem is None:
            continue
        texts = []
        if getattr(elem, "is_raw", False):
            raw = elem.value
            if not raw:
                continue
            texts.append(raw.decode("latin-1") if isinstance(raw, (bytes, bytearray)) else str(raw))
            if isinstance(raw, (bytes, bytearray)) and not raw.isascii():
                with contextlib.suppress(Exception):  # an undecodable value has no text to check
                    texts.append(_text(ds.get(kw)))
        else:
            texts.append(_text(elem.value))
        for text in texts:
            for part in [text, *_SPLIT.split(text)]:
                part = part.strip(" \x00")
                if len(part) >= 2:
                    out.add(part)
    return sorted(out, key=len, reverse=True)


def _text(value) -> str:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


_SPLIT = re.compile(r"[\\^=]")
_IDENT_TAGS = [(kw, pydicom.datadict.tag_for_keyword(kw)) for kw in IDENTIFYING_KEYWORDS]


def _series_description(ds) -> str | None:
    """SeriesDescription, only if no identifying header value occurs in it (raw and decoded forms)."""
    try:
        elem = ds.get_item(0x0008103E)
    except Exception:
        return None
    if elem is None or not elem.value:
        return None
    raw = elem.value
    forms = [raw.decode("latin-1") if isinstance(raw, (bytes, bytearray)) else _text(raw)]
    try:
        decoded = _text(ds.get("SeriesDescription")).strip()
    except Exception:
        return None
    forms.append(decoded)
    ident = identifying_values(ds)
    if not decoded or any(scrub(f, ident) != f for f in forms):
        return None
    return decoded


def scrub(text: str, values: list[str]) -> str:
    """Replace every identifying value in ``text`` (case-insensitive) by '[redacted]'."""
    low = text.lower()
    for v in values:
        vl = v.lower()
        start = low.find(vl)
        while start >= 0:
            text = text[:start] + "[redacted]" + text[start + len(v) :]
            low = text.lower()
            start = low.find(vl, start + len("[redacted]"))
    return text


def _has_dicom_marker(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _looks_like_dicom(ds) -> bool:
    # A non-DICOM file read with force=True yields a few elements with random tags; real data sets have
    # identification (0008,xxxx), image (0028,xxxx) or pixel data elements.
    # Tags only: converting a garbage element's value can raise anything (b"no DICOM here" → VR 'IC').
    return any(tag.group in (0x0008, 0x0028) or tag == 0x7FE00010 for tag in ds.keys())  # noqa: SIM118 - a Dataset iterates elements


_TAGS = {
    kw: BaseTag(pydicom.datadict.tag_for_keyword(kw))
    for kw in (
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
        "SamplesPerPixel",
        "NumberOfFrames",
        "PhotometricInterpretation",
        "RescaleSlope",
        "RescaleIntercept",
        "InstanceNumber",
        "SliceLocation",
        "PixelSpacing",
    )
}
_US_FMT = {True: "<H", False: ">H"}
# membership by tag: ``"PixelData" in ds`` looks the keyword up first (~4 µs per test, several per file)
_PIXEL_TAGS = (BaseTag(0x7FE00010), BaseTag(0x7FE00008), BaseTag(0x7FE00009))  # PixelData, Float.., DoubleFloat..
_TS_TAG = BaseTag(0x00020010)  # TransferSyntaxUID


def _get(ds, kw: str):
    """Value of a simple image attribute; decodes the raw bytes of US/IS/DS/CS elements directly
    (pydicom's generic conversion costs ~20 µs per element, a third of reading a small file)."""
    tag = _TAGS.get(kw)
    if tag is None:
        return ds.get(kw)
    try:
        elem = ds.get_item(tag)
    except KeyError:
        return None
    if elem is None:
        return None
    if not getattr(elem, "is_raw", False):
        return elem.value
    vr, raw = elem.VR, elem.value
    if vr is None:  # implicit VR: let pydicom look it up
        return ds.get(kw)
    if raw is None or len(raw) == 0:
        return None
    if vr == "US" and len(raw) == 2:
        return struct.unpack(_US_FMT[bool(elem.is_little_endian)], raw)[0]
    if vr in ("IS", "DS", "CS"):
        parts = [p.strip() for p in raw.decode("ascii", "replace").strip("\x00 ").split("\\")]
        return parts[0] if len(parts) == 1 else parts
    return ds.get(kw)


def _cut_short(ds) -> bool:
    """pydicom stops silently at the end of a cut file: nothing after the file meta, or an element whose
    value is shorter than its declared length, shows the cut."""
    if len(ds) == 0:
        return True
    for holder in (getattr(ds, "file_meta", None), ds):
        if holder is None:
            continue
        for tag in list(holder.keys()):
            elem = holder.get_item(tag)
            length = getattr(elem, "length", None)
            value = getattr(elem, "value", None)
            if (
                getattr(elem, "is_raw", False)
                and isinstance(value, bytes)
                and length is not None
                and length != 0xFFFFFFFF
                and len(value) < length
            ):
                return True
    return False


def _num(ds, kw: str, default=None):
    try:
        v = _get(ds, kw)
    except Exception:
        return default
    if v is None or v == "":
        return default
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _spacing(ds) -> tuple[float, float] | None:
    cand = None
    try:
        cand = _get(ds, "PixelSpacing")
        if isinstance(cand, str):  # a single value: VM must be 2
            cand = [cand]
        if cand is None and "SharedFunctionalGroupsSequence" in ds:
            # enhanced multi-frame MR keeps PixelSpacing in the shared functional groups
            measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
            cand = measures.get("PixelSpacing")
    except Exception:
        cand = None
    try:
        sp = tuple(float(v) for v in cand)
    except (TypeError, ValueError):
        return None
    if len(sp) != 2 or not all(math.isfinite(v) and v > 0 for v in sp):
        return None
    return sp


def _int_attr(ds, kw: str, path, required=True, default=None) -> int:
    try:
        v = _get(ds, kw)
        if v is None or v == "":
            if required:
                raise DicomError("dicom_bad_header", f"missing {kw}", path)
            return default
        return int(v)
    except DicomError:
        raise
    except Exception:
        raise DicomError("dicom_bad_header", f"invalid {kw}", path) from None


def _native_pixels(ds, rows, cols, frames, bits, signed, path, ts=None) -> np.ndarray | None:
    """Uncompressed little-endian pixel data straight from the buffer (3x faster than pixel_array).

    ``ts``: the transfer syntax UID if the caller has it already (else read from ``ds.file_meta``)."""
    if ts is None:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    dtype = _INT_DTYPES.get((bits, int(signed)))
    if ts not in _LE_SYNTAXES or dtype is None or _PIXEL_TAGS[0] not in ds:
        return None
    # the stored bytes as read (native little-endian OB/OW needs no conversion): going through
    # ds.PixelData would first turn the raw element into a DataElement (~20 µs)
    buf = ds.get_item(_PIXEL_TAGS[0]).value
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        buf = ds.PixelData
    need = rows * cols * frames * (bits // 8)
    if len(buf) < need:
        raise DicomError("dicom_truncated", f"pixel data has {len(buf)} bytes, {need} expected", path)
    return np.frombuffer(buf, dtype=dtype, count=rows * cols * frames).reshape(frames, rows, cols)


def _mask_bits(arr: np.ndarray, bits_stored: int, bits_allocated: int, signed: bool) -> np.ndarray:
    """Keep only the BitsStored low bits (the rest may hold overlays), sign-extending if signed."""
    if bits_stored >= bits_allocated or arr.dtype.kind not in "iu":
        return arr
    if arr.dtype.kind == "u" and not signed and arr.size and int(arr.max()) < (1 << bits_stored):
        return arr  # no overlay/garbage bits set: masking would copy the image for nothing
    width = arr.dtype.itemsize * 8
    if signed:
        a = arr.view(np.dtype(f"i{arr.dtype.itemsize}")) if arr.dtype.kind == "u" else arr
        shift = width - bits_stored
        return (a << shift) >> shift  # arithmetic shift right sign-extends bit (bits_stored - 1)
    a = arr.view(np.dtype(f"u{arr.dtype.itemsize}")) if arr.dtype.kind == "i" else arr
    return np.bitwise_and(a, np.array((1 << bits_stored) - 1, dtype=a.dtype))


def read(path: str | Path, describe: bool = True) -> DicomImage:
    """Read one file. Raises DicomError (with a QC reason) for anything that is not a usable image.

    ``describe=False`` leaves ``series_description`` None (saves the identifying-value check when the
    caller does not need the text).
    """
    path = path if isinstance(path, Path) else Path(path)  # (re-parsing a Path costs µs per file)
    with _quiet():
        return _read(path, describe)


def _read(path: Path, describe: bool = True) -> DicomImage:
    notes: list[tuple[str, str]] = []
    # the whole file in one read, parsed from memory: pydicom issues ~60 small reads per file, which on a
    # file object cost more than the copy (pixel data is read into memory by dcmread either way)
    try:
        data, size = read_file(path)
    except OSError as exc:
        # the same reason and message as a stat followed by a read would give
        try:
            size = path.stat().st_size
        except OSError as stat_exc:
            raise DicomError("dicom_unreadable", f"cannot open file ({type(stat_exc).__name__})", path) from None
        if size != 0:
            raise DicomError("dicom_unreadable", f"cannot read file ({type(exc).__name__})", path) from None
    if size == 0:
        raise DicomError("dicom_not_dicom", "empty file", path)
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        # no preamble / file meta: old ACR-NEMA style or a stripped file; let pydicom guess the encoding
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
        except Exception:
            raise DicomError("dicom_not_dicom", "not a DICOM file", path) from None
        if not _looks_like_dicom(ds):
            raise DicomError("dicom_not_dicom", "not a DICOM file", path) from None
        notes.append(("dicom_no_file_meta", "no DICOM preamble/file meta; read with force"))
    except EOFError:
        raise DicomError("dicom_truncated", "file ends inside the header", path) from None
    except OSError as exc:
        raise DicomError("dicom_unreadable", f"cannot read file ({type(exc).__name__})", path) from None
    except Exception as exc:
        raise DicomError("dicom_unreadable", f"header could not be parsed ({type(exc).__name__})", path) from None

    try:
        return _from_dataset(ds, path, notes, describe)
    except DicomError:
        raise
    except Exception as exc:  # anything unexpected in a malformed header: a QC row, not a crash
        msg = scrub(str(exc).splitlines()[0][:200] if str(exc) else "", identifying_values(ds))
        raise DicomError("dicom_unreadable", f"{type(exc).__name__}: {msg}", path) from None


def _from_dataset(ds, path: Path, notes: list[tuple[str, str]], describe: bool = True) -> DicomImage:
    meta = getattr(ds, "file_meta", None)
    if meta is None or _TS_TAG not in meta:
        # infer the transfer syntax from how the data set was actually parsed
        implicit, little = getattr(ds, "original_encoding", (None, None))
        if little is False:
            ts = pydicom.uid.ExplicitVRBigEndian
        else:
            ts = ImplicitVRLittleEndian if implicit in (True, None) else ExplicitVRLittleEndian
        if meta is None:
            ds.file_meta = meta = pydicom.dataset.FileMetaDataset()
        meta.TransferSyntaxUID = ts
        if not any(code == "dicom_no_file_meta" for code, _ in notes):
            notes.append(("dicom_no_file_meta", "no transfer syntax in file meta; inferred from the encoding"))

    ts = meta.TransferSyntaxUID
    has_pixels = _PIXEL_TAGS[0] in ds or _PIXEL_TAGS[1] in ds or _PIXEL_TAGS[2] in ds
    if not has_pixels:
        # pydicom returns what it parsed of a cut file: an image object without pixels was truncated
        uid = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
        sop = getattr(uid, "name", "") or ""
        if "Rows" in ds or "Image Storage" in sop or _cut_short(ds):
            raise DicomError("dicom_truncated", "file ends before the pixel data", path)
        raise DicomError("dicom_no_pixels", "no pixel data element", path)
    rows = _int_attr(ds, "Rows", path)
    cols = _int_attr(ds, "Columns", path)
    if rows <= 0 or cols <= 0:
        raise DicomError("dicom_bad_header", f"image size {rows}x{cols}", path)
    frames = _int_attr(ds, "NumberOfFrames", path, required=False, default=1)
    if frames < 1:
        raise DicomError("dicom_bad_header", f"NumberOfFrames {frames}", path)
    spp = _int_attr(ds, "SamplesPerPixel", path, required=False, default=1)
    photometric = str(_get(ds, "PhotometricInterpretation") or "MONOCHROME2").strip().upper()
    if spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError("dicom_color", f"{photometric} with {spp} samples per pixel", path)
    bits = _int_attr(ds, "BitsAllocated", path)
    bits_stored = _int_attr(ds, "BitsStored", path, required=False, default=bits)
    signed = bool(_int_attr(ds, "PixelRepresentation", path, required=False, default=0))
    if bits not in (8, 16, 32, 64) or not (1 <= bits_stored <= bits):
        raise DicomError(
            "dicom_unsupported", f"BitsAllocated {bits} / BitsStored {bits_stored} is not a greyscale image", path
        )

    arr = _native_pixels(ds, rows, cols, frames, bits, signed, path, ts)
    if arr is None:
        try:
            arr = ds.pixel_array
        except ValueError as exc:
            if "less than expected" in str(exc) or "truncat" in str(exc).lower():
                raise DicomError("dicom_truncated", "pixel data shorter than the image size", path) from None
            raise DicomError(
                "dicom_decode_failed", f"pixel data could not be decoded ({type(exc).__name__})", path
            ) from None
        except Exception as exc:
            raise DicomError(
                "dicom_decode_failed", f"pixel data could not be decoded ({type(exc).__name__})", path
            ) from None
        arr = np.asarray(arr)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[1:] != (rows, cols):
            raise DicomError("dicom_bad_header", f"decoded pixel array has shape {arr.shape}", path)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = _mask_bits(arr, bits_stored, bits, signed)

    slope = _num(ds, "RescaleSlope", 1.0)
    intercept = _num(ds, "RescaleIntercept", 0.0)
    if not math.isfinite(slope) or slope == 0:
        slope = 1.0
    if not math.isfinite(intercept):
        intercept = 0.0

    spacing = _spacing(ds)
    if spacing is None:
        notes.append(("dicom_no_spacing", "no valid PixelSpacing; 1.0 mm assumed"))
        spacing = (1.0, 1.0)

    inst = _num(ds, "InstanceNumber")
    loc = _num(ds, "SliceLocation")
    desc = _series_description(ds) if describe else None
    return DicomImage(
        stored=arr,
        slope=float(slope),
        intercept=float(intercept),
        invert=photometric == "MONOCHROME1",
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        rows=rows,
        cols=cols,
        bits_allocated=bits,
        bits_stored=bits_stored,
        signed=signed,
        photometric=photometric,
        slice_location=None if loc is None or not math.isfinite(loc) else float(loc),
        instance_number=None if inst is None or not math.isfinite(inst) else int(inst),
        series_description=desc,
        warnings=tuple(notes),
    )
