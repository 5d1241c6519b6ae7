"""What every data-set layout shares: the discovery records, the ``LAYOUTS`` registry and the functions that
dispatch on it (``discover``, ``resolve``, ``phantom_paths``, ``expected``, ``check_root``, ``detect``,
``wrong_layout_message``).

A layout is one module of this package that registers one ``Layout``; the package ``__init__`` imports every
module, so a new layout needs no edit elsewhere: the schema's ``data.source`` and ``data.phantom.layout`` enums
and the keys of the layouts' own options (``LayoutOption``, e.g. ``data.roi_map``) are filled in from
``LAYOUTS`` when the schema loads, and ``register`` adds the layout's QC reason codes to ``REASONS``. Of this
package the layout modules import from here only, never from each other or from the package (readers
elsewhere in ``segsweep.data``, such as ``dicom``, they may use).

Two kinds of layout: text-contour layouts (RVSC, Sunnybrook) pair an image file with contour files by their
names, so ``discover`` gives the items. Layouts whose pairing needs file contents (``rtstruct``: contours
refer to images by UID; ``nifti``: one file holds many slices) list the patient's ``files`` in ``discover``
and give the items in ``resolve``, as ``Part`` s that carry what was read: ``SliceImage`` (pixels),
``PolygonContour`` (a polygon in pixel coordinates), ``MaskContour`` (a filled region).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segsweep.errors import ConfigError, DataError
from segsweep.registry import Registry

# reason codes of discovery (docs/qc.md): code -> (severity, meaning); severity "failure" counts for data.strict.
# A layout's own codes (``Layout.reasons``) are added by ``register``.
REASONS: dict[str, tuple[str, str]] = {
    "unexpected_file": ("failure", "a file whose name does not fit the layout (not used)"),
    "image_folder_missing": ("failure", "a patient without its image folder"),
    "contour_unused": ("info", "a contour not needed for the target (or whose partner file failed)"),
}


SEVERITIES = ("failure", "warning", "info")


@dataclass(frozen=True)
class LayoutOption:
    """A config key of a layout's own: ``data.<name>`` (and ``datasets.<set>.<name>``), read by that layout's
    ``resolve`` only. ``schema`` is the key's JSON schema (type, range, description; no ``default``: the
    schema's key under ``data`` is made from it at load); ``parse(value)`` checks a config value and returns
    it normalised, built of tuples, strings and numbers (hashable; JSON gives it back with lists for tuples),
    raising ``ConfigError`` that names ``config key 'data.<name>'``; ``default`` is the config value taken
    when the key is absent. A value whose normalised form is the default's is not part of the data identity."""

    name: str
    schema: Mapping[str, Any]
    parse: Callable[[Any], Any]
    default: Any


@dataclass(frozen=True, eq=False)
class Part:
    """One image or contour inside a file that holds many (a slice of a NIfTI volume, one contour of an
    RTSTRUCT), already read by the layout's ``resolve``. QC rows name it ``<file>#<part>``."""

    path: Path
    part: str


@dataclass(frozen=True, eq=False)
class SliceImage(Part):
    """A 2-D image cut from a volume: ``stored`` values [rows, cols], ``value = stored * slope + intercept``
    (like DICOM's rescale), pixel ``spacing`` (row, col) in mm; ``warnings``: (code, message) pairs."""

    stored: np.ndarray
    slope: float = 1.0
    intercept: float = 0.0
    spacing: tuple[float, float] = (1.0, 1.0)
    warnings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, eq=False)
class PolygonContour(Part):
    """A contour as a polygon in its image's pixel coordinates (x = column, y = row, float [N, 2]; e.g. an
    RTSTRUCT contour converted from patient mm): validated and rasterised exactly like a contour file."""

    points: np.ndarray
    warnings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, eq=False)
class MaskContour(Part):
    """A contour given as the region it encloses (bool [rows, cols]; e.g. labels of a NIfTI volume)."""

    mask: np.ndarray
    warnings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Item:
    """One image number of a patient: its image and contours (any may be missing). Text-contour layouts
    give files (a DICOM image, contour text files); layouts that ``resolve`` give ``Part`` s where the
    content sits inside a bigger file (``SliceImage``, ``PolygonContour``, ``MaskContour``)."""

    number: int
    image: Path | SliceImage | None = None
    inner: Path | PolygonContour | MaskContour | None = None
    outer: Path | PolygonContour | MaskContour | None = None


@dataclass(frozen=True)
class Note:
    """A file (or a ``Part`` of one) discovery could not use, with a QC reason (a row in qc.csv)."""

    path: Path | Part
    reason: str
    message: str


@dataclass
class PatientRecord:
    """One patient. ``key`` is the raw identifier (folder / case name): hashed into the pseudonym, never
    written out. ``aliases`` are the strings that name the patient inside file paths (replaced by the
    pseudonym in qc.csv)."""

    key: str
    aliases: tuple[str, ...]
    items: list[Item] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # what the layout's ``resolve`` opens (else unused)


@dataclass(frozen=True)
class PhantomPaths:
    """Where the phantom generator writes each file of a layout (p: patient 1.., k: slice 0..)."""

    number: Callable[[int, int], int]  # (p, k) -> image number in file names
    image: Callable[[Path, int, int], Path] | None  # (root, p, number)
    contour: Callable[[Path, int, int, str], Path] | None  # (root, p, number, "i"|"o")
    finish: Callable[[Path, list], None]  # (root, [(p, [(number, has_i, has_o), ...]), ...]) index files
    extra_images: Callable[[Path, int], list[Path]] = lambda root, p: []  # decoy series (Sunnybrook)
    instance_offset: int = 0  # DICOM InstanceNumber = number + this (RVSC: file index + 1)
    # Layouts whose files are not one DICOM file per image plus one text file per contour: ``write(root,
    # patient)`` writes a patient's files from what the generator drew (a ``PhantomPatient``). ``image``
    # or ``contour`` may then be None: the generator writes no DICOM image / contour text files itself.
    write: Callable[[Path, PhantomPatient], None] | None = None


@dataclass(frozen=True)
class PhantomSlice:
    """One generated slice: number, the DICOM file written for it (None if the generator wrote none),
    stored uint16 pixels [rows, cols], position (mm along the slice normal: ImagePositionPatient z), its
    SOPInstanceUID, and the contour polygons (x, y; None where the slice has none) with the values the
    text layouts write (2 decimals)."""

    number: int
    image: Path | None
    stored: np.ndarray
    location: float
    uid: str
    inner: np.ndarray | None
    outer: np.ndarray | None


@dataclass(frozen=True)
class PhantomPatient:
    """What ``PhantomPaths.write`` gets for patient ``p``: the DICOM header the images were written from
    (a pydicom Dataset: geometry, UIDs and the fake identifying values), the slices, and ``uid(*parts)``
    for deterministic UIDs of further objects."""

    p: int
    header: Any
    slices: list[PhantomSlice]
    uid: Callable[..., str]


@dataclass(frozen=True)
class Layout:
    """One on-disk layout.

    ``discover(root)`` lists the patients of an existing, non-empty root (names only, no DICOM opened);
    ``phantom`` says where the phantom generator puts each file; ``expected`` is the one-line description
    that error messages quote; ``detect(root)`` says from names alone whether a root looks like this layout
    (None: never guessed). Guesses are tried in ascending ``detect_order``: a layout whose rule also matches
    another layout's trees (Sunnybrook's "any SC-* folder") must come after it.
    """

    name: str
    discover: Callable[[Path], list[PatientRecord]]
    phantom: PhantomPaths
    expected: str
    detect: Callable[[Path], bool] | None = None
    detect_order: int = 100
    # Layouts that pair images and contours by file content (RTSTRUCT references, NIfTI volumes):
    # ``resolve(record, options)`` opens one patient's ``files`` and returns the record with its items and
    # notes. Ingest calls it in the worker that processes the patient, so discovery stays names-only.
    # ``options``: the layout settings of the data config (``DataConfig.layout_options``).
    resolve: Callable[[PatientRecord, Mapping[str, Any]], PatientRecord] | None = None
    # config keys of its own (``options[name]`` in ``resolve``, normalised, the default filled in) and QC reason
    # codes of its own: code -> (severity, meaning), severity one of SEVERITIES; docs/qc.md lists each code
    options: tuple[LayoutOption, ...] = ()
    reasons: Mapping[str, tuple[str, str]] = field(default_factory=dict)


LAYOUTS: Registry[Layout] = Registry("data layout", "data.source")


def register(layout: Layout) -> Layout:
    """Register ``layout`` under its name (one call at the end of each layout module); its QC reason codes join
    ``REASONS``. An option name or a reason code that another layout (or discovery) has already stops the
    import, naming it."""
    taken = {o.name: e.name for e in LAYOUTS for o in e.obj.options}
    for opt in layout.options:
        if opt.name in taken:
            raise ValueError(f"data layout '{layout.name}': option '{opt.name}' is declared by '{taken[opt.name]}' too")
        if "default" in opt.schema:
            raise ValueError(
                f"data layout '{layout.name}': option '{opt.name}' has its default in LayoutOption.default"
            )
    for code, (sev, _) in layout.reasons.items():
        if code in REASONS:
            raise ValueError(f"data layout '{layout.name}': QC reason '{code}' exists already")
        if sev not in SEVERITIES:
            raise ValueError(f"data layout '{layout.name}': QC reason '{code}' has severity {sev!r} ({SEVERITIES})")
    LAYOUTS.register(layout.name)(layout)
    REASONS.update(layout.reasons)
    return layout


def options() -> dict[str, tuple[str, LayoutOption]]:
    """Every layout's own config keys: name -> (the layout that reads it, its ``LayoutOption``)."""
    return {o.name: (e.name, o) for e in LAYOUTS for o in e.obj.options}


def parse_options(layout: str, block: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The options of a ``data`` block (or ``datasets`` entry) that ``layout`` reads, checked and normalised,
    as sorted (name, value) pairs without those equal to their default. An option of another layout raises
    ``ConfigError`` naming ``data.<name>`` (it would be ignored: better to say so)."""
    out = []
    for name, (owner, opt) in sorted(options().items()):
        if name not in block:
            continue
        if owner != layout:
            raise ConfigError(
                f"config key 'data.{name}': read by the {owner} layout only, and this data set's layout is "
                f"{layout}: remove the key"
            )
        value = opt.parse(block[name])
        if value != opt.parse(opt.default):
            out.append((name, value))
    return tuple(out)


def option_values(layout: str, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``layout``'s ``resolve`` reads: each of its options, from ``given`` (normalised) or its default."""
    given = given or {}
    return {o.name: given[o.name] if o.name in given else o.parse(o.default) for o in get(layout).options}


def get(name: str) -> Layout:
    try:
        return LAYOUTS.entry(name).obj
    except ConfigError:
        raise DataError(f"unknown data layout '{name}' (known: {', '.join(LAYOUTS.names())})") from None


# ------------------------------------------------------------------------------------ dispatch
def discover(layout: str, root: str | Path) -> list[PatientRecord]:
    """Patients of ``root`` in ``layout``; sorted by key."""
    lay = get(layout)
    root = Path(root)
    check_root(root, layout)
    records = lay.discover(root)
    if not records:
        raise DataError(wrong_layout_message(root, layout, f"no {layout} patient found"))
    return sorted(records, key=lambda r: r.key)


def resolve(layout: str, record: PatientRecord, options: Mapping[str, Any]) -> PatientRecord:
    """``record`` with its items: opened now for layouts that pair by content (``Layout.resolve``, with
    ``options`` and the defaults of the options not given); the record itself for the others (their discovery
    found the items already)."""
    fn = get(layout).resolve
    return record if fn is None else fn(record, option_values(layout, options))


def phantom_paths(layout: str) -> PhantomPaths:
    return get(layout).phantom


def expected(layout: str) -> str:
    return get(layout).expected


def check_root(root: Path, layout: str) -> None:
    if not root.exists():
        raise DataError(f"data root '{root}' does not exist (expected a {layout} tree: {expected(layout)})")
    if not root.is_dir():
        raise DataError(f"data root '{root}' is not a folder (expected a {layout} tree: {expected(layout)})")
    if not any(root.iterdir()):
        raise DataError(f"data root '{root}' is empty (expected a {layout} tree: {expected(layout)})")


def wrong_layout_message(root: Path, layout: str, what: str) -> str:
    msg = f"data root '{root}': {what} (expected a {layout} tree: {expected(layout)})"
    guess = detect(root)
    if guess and guess != layout:
        msg += f"; it looks like a '{guess}' tree: set data.source (or data.phantom.layout) to '{guess}'"
    return msg


def detect(root: Path) -> str | None:
    """Best guess of a root's layout from names alone (None if nothing fits): the layout a phantom's
    MANIFEST.json names, else the first layout (by ``detect_order``) whose ``detect`` rule matches."""
    root = Path(root)
    try:
        manifest = json.loads((root / "MANIFEST.json").read_text())
        if manifest.get("layout") in LAYOUTS:
            return manifest["layout"]
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    for lay in sorted((e.obj for e in LAYOUTS if e.obj.detect is not None), key=lambda lay: lay.detect_order):
        if lay.detect(root):
            return lay.name
    return None


# ------------------------------------------------------------------------------------ helpers for layouts
def _walk(root: Path, max_depth: int):
    """os.walk limited to ``max_depth`` levels below root, in sorted order (deterministic)."""
    base = len(Path(root).parts)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        filenames.sort()
        depth = len(Path(dirpath).parts) - base
        if depth >= max_depth:
            dirnames[:] = []
        yield dirpath, dirnames, filenames


def list_files(folder: Path) -> list[str]:
    """Sorted names of the regular files in ``folder`` ([] if it does not exist)."""
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return []
