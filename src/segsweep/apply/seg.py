"""The prediction of a series as a DICOM Segmentation (highdicom.seg.Segmentation, SEG IOD, PS3.3 A.51).

* **Type** BINARY, one segment per structure of the cell's target (`SEGMENTS`), every source image a frame
  per segment (empty frames kept, so every image says what was found on it); frames reference their source
  images (SOP Instance UIDs, in Derivation Image / Source Image sequences) and carry their plane positions.
* **Codes** (SNOMED CT, via pydicom's code dictionary): category Anatomical Structure (91723000); type Left
  ventricle (87878005) for the cavity and for the region inside the epicardium (told apart by the segment
  label), Left ventricle myocardium (49848007).
* **Algorithm**: type AUTOMATIC, identification name ``segsweep``, version the package version, family
  Artificial Intelligence, source and parameters naming the cell (and the study that selected it);
  Manufacturer ``segsweep``, DeviceSerialNumber the cell id, ContentDescription ``segsweep <version> cell
  <id>``.
* **Identity**: the SEG belongs to the source's patient and study, so highdicom copies their patient and
  study attributes (the one place segsweep writes them). Its own Series/SOP Instance UIDs are keyed hashes
  (``2.25.`` + 128 bits of HMAC-SHA256 under ``data.pseudonym_key``) of the source series, the cell and the
  mode: a rerun writes the same UIDs, so archives replace rather than duplicate it.
* **Headers as scanners write them** (`source_copies`): highdicom is given copies of the source headers in
  which a date or time that is no valid DA/TM/DT value (``00000000``, ``20120000``) is empty, the
  orientation of every image is the first image's when they agree within `geometry.ORIENTATION_TOL` (one
  plane orientation per SEG, PS3.3 C.7.6.16.2.4), the FrameOfReferenceUID is the first image's (some
  anonymisers give each image its own), and a missing SliceThickness is the series' slice spacing. The
  source files are not changed; frames keep their own positions.
* **De-identified** (``predict.deidentify``): highdicom takes patient and study attributes from its source
  images and has no arguments to override them, so it is given stripped copies of the source headers: only
  geometry (`GEOMETRY`), PatientID = the patient pseudonym (PatientName the same, as a family name) (``p`` +
  8 hex of the keyed hash of PatientID), StudyID ``S`` + 8 hex of the keyed hash of the StudyInstanceUID,
  study date and time the dummy 19000101 000000 (PS3.15 E.1), empty birth date, sex, accession number and
  referring physician; every UID (study, series, instances, frame of reference) replaced by its keyed hash
  (`remap_uid`: the same source UID always gives the same new UID); PatientIdentityRemoved YES,
  DeidentificationMethod naming segsweep. `deidentified_image` writes the matching copies of the source
  images (the same identity, UIDs and geometry, the pixel data, the MR technical attributes of
  `IMAGE_KEEP`), so the SEG and its images open together. The SEG's own dates and times (content, instance
  creation, contribution) are the same dummy, so nothing in it dates the scan.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from segsweep import __version__
from segsweep.apply import geometry
from segsweep.io import atomic_path

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
DUMMY_DATE, DUMMY_TIME = "19000101", "000000"


@dataclass(frozen=True)
class Segment:
    key: str  # volumes.csv structure name
    label: str  # SegmentLabel
    code: object  # SegmentedPropertyType (pydicom Code)
    value: int  # label value in the predicted mask


# the segments of each target (label value in the predicted mask → segment number value)
SEGMENTS: dict[str, tuple[Segment, ...]] = {
    "endo": (Segment("lv_cavity", "LV cavity", codes.SCT.LeftVentricle, 1),),
    "epi": (Segment("lv_epicardial", "LV inside epicardium", codes.SCT.LeftVentricle, 1),),
    "myo": (Segment("lv_myocardium", "LV myocardium", codes.SCT.LeftVentricleMyocardium, 1),),
    "multiclass": (
        Segment("lv_cavity", "LV cavity", codes.SCT.LeftVentricle, 1),
        Segment("lv_myocardium", "LV myocardium", codes.SCT.LeftVentricleMyocardium, 2),
    ),
}
# what de-identified source headers keep (besides the replaced identifiers and UIDs)
GEOMETRY = (
    "SOPClassUID",
    "Modality",
    "Rows",
    "Columns",
    "PixelSpacing",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SliceThickness",
    "SpacingBetweenSlices",
    "SliceLocation",
    "InstanceNumber",
    "SeriesNumber",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "SpecificCharacterSet",
)
UID_KEYWORDS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID")
# what de-identified image copies keep besides GEOMETRY: pixel description and MR acquisition technique
# (no name, date, institution, device serial or free text; PS3.15 E.1-1 keeps these in the Basic Profile)
IMAGE_KEEP = (
    "ImageType",
    "HighBit",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "ScanningSequence",
    "SequenceVariant",
    "ScanOptions",
    "MRAcquisitionType",
    "RepetitionTime",
    "EchoTime",
    "EchoTrainLength",
    "InversionTime",
    "TriggerTime",
    "NominalInterval",
    "CardiacNumberOfImages",
    "TemporalPositionIdentifier",
    "NumberOfTemporalPositions",
    "NumberOfAverages",
    "ImagingFrequency",
    "ImagedNucleus",
    "EchoNumbers",
    "MagneticFieldStrength",
    "FlipAngle",
    "PixelBandwidth",
    "AcquisitionMatrix",
    "InPlanePhaseEncodingDirection",
    "PositionReferenceIndicator",
    "Manufacturer",
    "ManufacturerModelName",
)
# patient/study attributes highdicom reads from the first source image (type 2: present, may be empty)
_REQUIRED_EMPTY = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def keyed_uid(key: str, *parts: str) -> str:
    """``2.25.`` + a 128-bit integer from HMAC-SHA256(key, parts) (the UUID-derived UID form, PS3.5 B.2)."""
    digest = hmac.new(key.encode(), "|".join(map(str, parts)).encode(), hashlib.sha256).hexdigest()
    return "2.25." + str(int(digest[:32], 16))


def remap_uid(key: str, uid: str) -> str:
    """The de-identified form of a source UID (stable under one key)."""
    return keyed_uid(key, "deidentify", str(uid))


_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^([01]\d|2[0-3])([0-5]\d([0-5]\d(\.\d{1,6})?)?)?$")


def valid_date_time(vr: str, value) -> bool:
    """Whether a DA / TM / DT value is empty or valid (PS3.5 6.2): a real calendar date, 00–23 h, ..."""
    text = str(value or "").strip()
    if not text:
        return True
    if vr == "DA":
        if not _DA.match(text):
            return False
        try:
            datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError:
            return False
        return True
    if vr == "TM":
        return bool(_TM.match(text))
    if vr == "DT":
        base = re.split(r"[+-]", text, maxsplit=1)[0]
        return len(base) >= 4 and (len(base) < 8 or valid_date_time("DA", base[:8]))
    return True


def _set(ds: Dataset, kw: str, value) -> None:
    """Set ``kw`` in ``ds`` as a new element (copies share elements with their source: never mutate one)."""
    if kw in ds:
        del ds[kw]
    setattr(ds, kw, value)


def _copy(ds: Dataset) -> Dataset:
    """A shallow copy: the same elements (left unchanged: `_set` replaces, never mutates)."""
    out = Dataset()
    for elem in ds:
        out.add(elem)
    return out


def _series_geometry(c: Dataset, orientation, slice_spacing_mm: float | None) -> None:
    """In a source copy ``c``: the series' ``orientation`` (the first image's; any other within
    `geometry.ORIENTATION_TOL`), and SliceThickness = the slice spacing where it has none."""
    if (
        orientation is not None
        and "ImageOrientationPatient" in c
        and list(c.ImageOrientationPatient) != list(orientation)
    ):
        if not geometry.same_orientation(c.ImageOrientationPatient, orientation):
            raise ValueError("source images differ in orientation beyond the tolerance")
        _set(c, "ImageOrientationPatient", orientation)
    if not str(c.get("SliceThickness", "") or "").strip() and slice_spacing_mm:
        _set(c, "SliceThickness", f"{slice_spacing_mm:.6g}")


def source_copies(sources: Sequence[Dataset], slice_spacing_mm: float | None = None) -> list[Dataset]:
    """The headers highdicom gets for an identified SEG (module docstring): invalid dates and times empty,
    the first image's orientation and frame of reference, SliceThickness where missing, the type-2
    patient/study attributes it reads present."""
    ref = sources[0]
    orientation = ref.get("ImageOrientationPatient")
    frame = ref.get("FrameOfReferenceUID")
    out = []
    for i, ds in enumerate(sources):
        c = _copy(ds)
        for elem in ds:
            if elem.VR in ("DA", "TM", "DT") and not valid_date_time(elem.VR, elem.value):
                c[elem.tag] = DataElement(elem.tag, elem.VR, "")
        _series_geometry(c, orientation, slice_spacing_mm)
        if frame is not None and ds.get("FrameOfReferenceUID") != frame:
            _set(c, "FrameOfReferenceUID", frame)
        if i == 0:
            for kw in _REQUIRED_EMPTY:
                if kw not in c:
                    setattr(c, kw, "")
        out.append(c)
    return out


def study_id(key: str, study_uid: str) -> str:
    """The de-identified StudyID: ``S`` + 8 hex digits of the keyed hash (non-empty: DICOMDIR needs one)."""
    return "S" + hmac.new(key.encode(), f"study-id|{study_uid}".encode(), hashlib.sha256).hexdigest()[:8]


def _deidentified_identity(out: Dataset, ds: Dataset, key: str, patient: str, frame_uid: str | None) -> None:
    """Patient, study and UIDs of a de-identified copy (module docstring), written into ``out``."""
    for kw in UID_KEYWORDS:
        if kw in ds:
            _set(out, kw, remap_uid(key, ds.get(kw)))
    if frame_uid:  # the series' one frame of reference (the SEG's)
        _set(out, "FrameOfReferenceUID", remap_uid(key, frame_uid))
    for kw in _REQUIRED_EMPTY:
        _set(out, kw, "")
    _set(out, "PatientID", patient)
    _set(out, "PatientName", patient + "^")  # a family name only (PS3.5 6.2.1.2)
    _set(out, "StudyID", study_id(key, str(ds.get("StudyInstanceUID", ""))))
    _set(out, "StudyDate", DUMMY_DATE)
    _set(out, "StudyTime", DUMMY_TIME)
    _set(out, "PatientIdentityRemoved", "YES")
    _set(out, "DeidentificationMethod", f"segsweep {__version__}: geometry, pseudonym, keyed-hash UIDs"[:64])


def deidentified_source(
    ds: Dataset,
    key: str,
    patient: str,
    *,
    frame_uid: str | None = None,
    orientation=None,
    slice_spacing_mm: float | None = None,
) -> Dataset:
    """A stripped copy of a source header for the SEG (module docstring): geometry, pseudonymous patient and
    study, new UIDs; ``orientation`` and ``frame_uid``: the series' (`source_copies`)."""
    out = Dataset()
    for kw in GEOMETRY:
        if kw in ds:
            out.add(ds.data_element(kw))
    _deidentified_frame_groups(out, ds)
    _deidentified_identity(out, ds, key, patient, frame_uid)
    _series_geometry(out, orientation, slice_spacing_mm)
    return out


def deidentified_image(ds: Dataset, stored: np.ndarray, key: str, patient: str, frame_uid: str | None) -> Dataset:
    """The de-identified copy of a source image (module docstring) with its stored values ``stored``
    ([rows, cols], or [frames, rows, cols] for an Enhanced MR image) as uncompressed pixel data (Explicit VR
    Little Endian; lossless: the same values)."""
    out = Dataset()
    for kw in GEOMETRY + IMAGE_KEEP:
        if kw in ds:
            out.add(ds.data_element(kw))
    _deidentified_frame_groups(out, ds)
    _deidentified_identity(out, ds, key, patient, frame_uid)
    for kw in ("SeriesDate", "SeriesTime", "ContentDate", "ContentTime", "AcquisitionDate", "AcquisitionTime"):
        if kw in ds:  # those the source has (its IOD may not have all), as the dummy
            _set(out, kw, DUMMY_DATE if kw.endswith("Date") else DUMMY_TIME)
    arr = np.ascontiguousarray(stored)
    bits = 8 if arr.dtype.itemsize == 1 else 16
    _set(out, "BitsAllocated", bits)
    _set(out, "BitsStored", min(int(ds.get("BitsStored", bits) or bits), bits))
    _set(out, "HighBit", int(out.BitsStored) - 1)
    _set(out, "PixelRepresentation", 1 if arr.dtype.kind == "i" else 0)
    _set(out, "SamplesPerPixel", 1)
    out.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.file_meta = meta
    return out


def write_image(ds: Dataset, path: Path) -> None:
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def build_seg(
    sources: Sequence[Dataset],
    masks: np.ndarray,
    target: str,
    *,
    cell: str,
    study: str | None,
    key: str,
    deidentify: bool,
    patient: str,
    phase: int | None = None,
    slice_spacing_mm: float | None = None,
    frames: Sequence[tuple[int, Sequence[float]]] | None = None,
    method: dict[str, str] | None = None,
) -> hd.seg.Segmentation:
    """A SEG for label ``masks`` [N, rows, cols] (values of `SEGMENTS[target]`) of ``sources`` (headers in
    the same order, pixel data not needed; one image per slice position). ``phase``: the cardiac phase of a
    cine series (one SEG per phase, all in one SEG series: InstanceNumber = phase + 1). ``frames``: for an
    Enhanced MR source (``sources`` its one header), the (frame number, ImagePositionPatient) of each mask:
    highdicom matches planes to source frames by position, which at one position of a cine file names every
    phase's frame; each SEG frame then keeps only the reference to its own frame (`_own_frames`)."""
    segments = SEGMENTS[target]
    alg = hd.AlgorithmIdentificationSequence(
        name="segsweep",
        version=__version__,
        family=codes.cid7162.ArtificialIntelligence,
        source=f"segsweep {__version__} cell {cell}",
        parameters={"cell": cell, **({"study": study} if study else {}), **(method or {})},
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=s.label,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=s.code,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=alg,
        )
        for i, s in enumerate(segments)
    ]
    pixels = np.zeros(masks.shape, np.uint8)  # label values → segment numbers 1..K
    for i, s in enumerate(segments):
        pixels[masks == s.value] = i + 1
    src_uid = str(sources[0].get("SeriesInstanceUID", ""))
    mode = "deidentified" if deidentify else "identified"
    if deidentify:
        frame, orientation = sources[0].get("FrameOfReferenceUID"), sources[0].get("ImageOrientationPatient")
        sources = [
            deidentified_source(
                ds, key, patient, frame_uid=frame, orientation=orientation, slice_spacing_mm=slice_spacing_mm
            )
            for ds in sources
        ]
        extra = {"content_date": DUMMY_DATE, "content_time": DUMMY_TIME}
    else:
        sources = source_copies(sources, slice_spacing_mm)
        extra = {}
    instance = ("seg-instance", src_uid, cell, mode) if phase is None else ("seg-instance", src_uid, cell, mode, phase)
    positions = None
    if frames is not None:
        positions = [hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, list(pos)) for _, pos in frames]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        plane_positions=positions,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=keyed_uid(key, "seg-series", src_uid, cell, mode),
        series_number=9900,
        sop_instance_uid=keyed_uid(key, *instance),
        instance_number=1 if phase is None else phase + 1,
        manufacturer="segsweep",
        manufacturer_model_name="segsweep U-Net",
        software_versions=__version__,
        device_serial_number=cell,
        content_description=f"segsweep {__version__} cell {cell}",
        content_label="SEGSWEEP",
        series_description=f"segsweep {target} (cell {cell})",
        omit_empty_frames=False,
        **extra,
    )
    if frames is not None:
        _own_frames(seg, frames)
    if deidentify:
        seg.InstanceCreationDate, seg.InstanceCreationTime = DUMMY_DATE, DUMMY_TIME
        for item in seg.get("ContributingEquipmentSequence", []):
            if "ContributionDateTime" in item:
                item.ContributionDateTime = DUMMY_DATE + DUMMY_TIME
        seg.PatientIdentityRemoved = "YES"
    return seg


def _own_frames(seg: Dataset, frames: Sequence[tuple[int, Sequence[float]]]) -> None:
    """Each SEG frame's source references reduced to the source frame at its position (``frames``: the
    frame number and position of every mask of this SEG; within one SEG the positions are distinct)."""
    for item in seg.PerFrameFunctionalGroupsSequence:
        pos = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        own = next(n for n, p in frames if np.allclose(np.asarray(p, float), pos, atol=1e-3))
        for derivation in item.get("DerivationImageSequence", []):
            refs = [r for r in derivation.SourceImageSequence if int(r.get("ReferencedFrameNumber", 0)) == own]
            if refs:
                derivation.SourceImageSequence = refs


def _deidentified_frame_groups(out: Dataset, ds: Dataset) -> None:
    """An Enhanced MR copy's functional groups with geometry and timing only (per frame: position, temporal
    index, stack, trigger delay; shared and per frame: orientation and pixel measures); FrameContent's
    acquisition date-times and everything else dropped."""
    keep = {
        "PlanePositionSequence": ("ImagePositionPatient",),
        "PlaneOrientationSequence": ("ImageOrientationPatient",),
        "PixelMeasuresSequence": ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices"),
        "FrameContentSequence": ("TemporalPositionIndex", "StackID", "InStackPositionNumber"),
        "CardiacSynchronizationSequence": ("NominalCardiacTriggerDelayTime",),
    }
    for kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if kw not in ds:
            continue
        groups = []
        for g in ds[kw].value:
            new = Dataset()
            for seq, fields in keep.items():
                if seq in g and len(g[seq].value):
                    item = Dataset()
                    for f in fields:
                        if f in g[seq].value[0]:
                            item.add(g[seq].value[0].data_element(f))
                    setattr(new, seq, [item])
            groups.append(new)
        setattr(out, kw, groups)
    if "NumberOfFrames" in ds:
        out.NumberOfFrames = ds.NumberOfFrames


def write_seg(seg: hd.seg.Segmentation, path: Path) -> None:
    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
