"""Data-set layouts: find each patient's image files and the manual contours that belong to them.

Each layout module (``rvsc``, ``sunnybrook``, ``sunnybrook_flat``) offers ``discover(root) -> list[PatientRecord]``
and, for the phantom generator, ``PHANTOM`` (where a generated file goes). Discovery only looks at names; it
opens no DICOM file (ingest reads what it needs). Files it cannot place become ``Note`` s (QC rows), never
silently dropped. A missing, empty or differently organised root raises ``DataError`` naming the root and the
expected layout.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from segsweep.errors import DataError

LAYOUT_NAMES = ("rvsc", "sunnybrook", "sunnybrook_flat")

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


def _module(name: str):
    if name == "rvsc":
        from segsweep.data.layouts import rvsc as mod
    elif name == "sunnybrook":
        from segsweep.data.layouts import sunnybrook as mod
    elif name == "sunnybrook_flat":
        from segsweep.data.layouts import sunnybrook_flat as mod
    else:
        raise DataError(f"unknown data layout '{name}' (known: {', '.join(LAYOUT_NAMES)})")
    return mod


def discover(layout: str, root: str | Path) -> list[PatientRecord]:
    """Patients of ``root`` in ``layout``; sorted by key."""
    mod = _module(layout)
    root = Path(root)
    check_root(root, layout)
    records = mod.discover(root)
    if not records:
        raise DataError(wrong_layout_message(root, layout, f"no {layout} patient found"))
    return sorted(records, key=lambda r: r.key)


def phantom_paths(layout: str) -> PhantomPaths:
    return _module(layout).PHANTOM


def expected(layout: str) -> str:
    return _module(layout).EXPECTED


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


_PATIENT_RE = re.compile(r"^patient\d+$", re.IGNORECASE)
_CASE_RE = re.compile(r"^SC-[A-Z]+(?:-[A-Z]+)*-\d+$")


def detect(root: Path) -> str | None:
    """Best guess of a root's layout from names alone (None if nothing fits)."""
    root = Path(root)
    try:
        manifest = json.loads((root / "MANIFEST.json").read_text())
        if manifest.get("layout") in LAYOUT_NAMES:
            return manifest["layout"]
    except (OSError, ValueError, AttributeError):
        pass
    if (root / "link.csv").is_file() or ((root / "dicoms").is_dir() and (root / "contourfiles").is_dir()):
        return "sunnybrook_flat"
    try:
        top = [e for e in os.scandir(root) if e.is_dir()]
    except OSError:
        return None
    if any(_PATIENT_RE.match(e.name) for e in top):
        return "rvsc"
    for e in top:
        try:
            if any(s.is_dir() and _PATIENT_RE.match(s.name) for s in os.scandir(e.path)):
                return "rvsc"
        except OSError:
            continue
    for dirpath, dirnames, _ in _walk(root, 4):
        if any(_CASE_RE.match(d) for d in dirnames):
            return "sunnybrook"
    return None


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
