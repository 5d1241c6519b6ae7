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
* **De-identified** (``predict.deidentify``): highdicom takes patient and study attributes from its source
  images and has no arguments to override them, so it is given stripped copies of the source headers: only
  geometry (`GEOMETRY`), PatientID = the patient pseudonym (PatientName the same, as a family name) (``p`` + 8 hex of the keyed hash of
  PatientID), empty birth date, sex, accession number, study ID, referring physician, study date and time;
  every UID (study, series, instances, frame of reference) replaced by its keyed hash (`remap_uid`: the same
  source UID always gives the same new UID, so a de-identified copy of the images made with the same key
  matches the references); PatientIdentityRemoved YES, DeidentificationMethod naming segsweep. The SEG's own
  dates and times (content, instance creation, contribution) are set to the dummy 19000101 000000 (PS3.15
  E.1: a dummy value), so nothing in it dates the scan.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from segsweep import __version__
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


def _with_required(ds: Dataset) -> Dataset:
    """``ds``, or a copy with the type-2 attributes highdicom reads from the first source image added
    (empty) where they are missing. The copy shares the elements: neither is changed."""
    missing = [kw for kw in _REQUIRED_EMPTY if kw not in ds]
    if not missing:
        return ds
    out = Dataset()
    for elem in ds:
        out.add(elem)
    for kw in missing:
        setattr(out, kw, "")
    return out


def deidentified_source(ds: Dataset, key: str, patient: str) -> Dataset:
    """A stripped copy of a source header (module docstring): geometry, pseudonymous patient, new UIDs."""
    out = Dataset()
    for kw in GEOMETRY:
        if kw in ds:
            out.add(ds.data_element(kw))
    for kw in UID_KEYWORDS:
        if kw in ds:
            setattr(out, kw, remap_uid(key, ds.get(kw)))
    for kw in _REQUIRED_EMPTY:
        setattr(out, kw, "")
    out.PatientID = patient
    out.PatientName = patient + "^"  # a family name only (PS3.5 6.2.1.2)
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = f"segsweep {__version__}: geometry, pseudonym, keyed-hash UIDs"[:64]
    return out


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
) -> hd.seg.Segmentation:
    """A SEG for label ``masks`` [N, rows, cols] (values of `SEGMENTS[target]`) of ``sources`` (headers in
    the same order, pixel data not needed)."""
    segments = SEGMENTS[target]
    alg = hd.AlgorithmIdentificationSequence(
        name="segsweep",
        version=__version__,
        family=codes.cid7162.ArtificialIntelligence,
        source=f"segsweep {__version__} cell {cell}",
        parameters={"cell": cell, **({"study": study} if study else {})},
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
        sources = [deidentified_source(ds, key, patient) for ds in sources]
        extra = {"content_date": DUMMY_DATE, "content_time": DUMMY_TIME}
    else:
        sources = [_with_required(sources[0]), *sources[1:]]
        extra = {}
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=keyed_uid(key, "seg-series", src_uid, cell, mode),
        series_number=9900,
        sop_instance_uid=keyed_uid(key, "seg-instance", src_uid, cell, mode),
        instance_number=1,
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
    if deidentify:
        seg.InstanceCreationDate, seg.InstanceCreationTime = DUMMY_DATE, DUMMY_TIME
        for item in seg.get("ContributingEquipmentSequence", []):
            if "ContributionDateTime" in item:
                item.ContributionDateTime = DUMMY_DATE + DUMMY_TIME
        seg.PatientIdentityRemoved = "YES"
    return seg


def write_seg(seg: hd.seg.Segmentation, path: Path) -> None:
    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
