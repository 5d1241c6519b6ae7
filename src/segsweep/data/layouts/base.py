"""What every data-set layout shares: the discovery records, the ``LAYOUTS`` registry and the functions that
dispatch on it (``discover``, ``phantom_paths``, ``expected``, ``check_root``, ``detect``,
``wrong_layout_message``).

A layout is one module of this package that registers one ``Layout``; the package ``__init__`` imports every
module, so a new layout needs no edit elsewhere (the schema enums of ``data.source`` and
``data.phantom.layout`` are checked against ``LAYOUTS.names()`` by tests/test_layouts.py). The layout modules
import from here only, never from each other or from the package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from segsweep.errors import ConfigError, DataError
from segsweep.registry import Registry

# reason codes produced by discovery (docs/qc.md); severity "failure" counts for data.strict
REASONS: dict[str, tuple[str, str]] = {
    "unexpected_file": ("failure", "a file whose name does not fit the layout (not used)"),
    "image_folder_missing": ("failure", "a patient without its image folder"),
    "listed_contour_missing": ("failure", "a contour named in an RVSC PNNlist.txt does not exist"),
    "series_not_selected": ("info", "Sunnybrook image of another series than the contoured cine series"),
    "series_ambiguous": ("warning", "several series fit the contours equally well; the first was taken"),
    "contour_unused": ("info", "a contour not needed for the target (or whose partner file failed)"),
}


@dataclass(frozen=True)
class Item:
    """One image number of a patient: its image file and contour files (any may be missing)."""

    number: int
    image: Path | None = None
    inner: Path | None = None
    outer: Path | None = None


@dataclass(frozen=True)
class Note:
    """A file discovery could not use, with a QC reason (a row in qc.csv)."""

    path: Path
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


@dataclass(frozen=True)
class PhantomPaths:
    """Where the phantom generator writes each file of a layout (p: patient 1.., k: slice 0..)."""

    number: Callable[[int, int], int]  # (p, k) -> image number in file names
    image: Callable[[Path, int, int], Path]  # (root, p, number)
    contour: Callable[[Path, int, int, str], Path]  # (root, p, number, "i"|"o")
    finish: Callable[[Path, list], None]  # (root, [(p, [(number, has_i, has_o), ...]), ...]) index files
    extra_images: Callable[[Path, int], list[Path]] = lambda root, p: []  # decoy series (Sunnybrook)
    instance_offset: int = 0  # DICOM InstanceNumber = number + this (RVSC: file index + 1)


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


LAYOUTS: Registry[Layout] = Registry("data layout", "data.source")


def register(layout: Layout) -> Layout:
    """Register ``layout`` under its name (one call at the end of each layout module)."""
    return LAYOUTS.register(layout.name)(layout)


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
