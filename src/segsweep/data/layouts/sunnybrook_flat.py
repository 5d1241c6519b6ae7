"""Sunnybrook Cardiac Data, the flat redistribution (as in tests/data/sunnybrook).

```
link.csv                                                        patient_id,original_id
dicoms/<patient_id>/<N>.dcm                                     N = DICOM InstanceNumber
contourfiles/<original_id>/i-contours/IM-0001-NNNN-icontour-manual.txt     NNNN = N zero-padded
contourfiles/<original_id>/o-contours/IM-0001-NNNN-ocontour-manual.txt
```
The contour of ``dicoms/SCD0000101/48.dcm`` is ``contourfiles/SC-HF-I-1/i-contours/IM-0001-0048-...``.
Image folders or contour folders that link.csv does not pair become patients of their own (their images
have no contours, or their contours no images: QC rows, not silence).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from segsweep.data.layouts.base import (
    Item,
    Layout,
    Note,
    PatientRecord,
    PhantomPaths,
    list_files,
    register,
    wrong_layout_message,
)
from segsweep.errors import DataError

EXPECTED = (
    "link.csv + dicoms/<patient_id>/<N>.dcm + "
    "contourfiles/<original_id>/{i,o}-contours/IM-0001-NNNN-{i,o}contour-manual.txt"
)

_IMAGE = re.compile(r"^(\d+)\.dcm$", re.IGNORECASE)
_CONTOUR = re.compile(r"^IM-\d{4}-(\d{4})-([io])contour-manual\.txt$", re.IGNORECASE)


def read_links(path: Path) -> list[tuple[str, str]]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__})") from None
    out = []
    for i, row in enumerate(rows, 2):
        pid, orig = (row.get("patient_id") or "").strip(), (row.get("original_id") or "").strip()
        if not pid or not orig:
            raise DataError(f"{path} line {i}: expected columns 'patient_id,original_id' with values")
        out.append((pid, orig))
    return out


def _subdirs(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _detect(root: Path) -> bool:
    return (root / "link.csv").is_file() or ((root / "dicoms").is_dir() and (root / "contourfiles").is_dir())


def discover(root: Path) -> list[PatientRecord]:
    link, dicoms, ctrs = root / "link.csv", root / "dicoms", root / "contourfiles"
    if not link.is_file() or not dicoms.is_dir() or not ctrs.is_dir():
        missing = [p.name for p in (link, dicoms, ctrs) if not p.exists()]
        raise DataError(wrong_layout_message(root, "sunnybrook_flat", f"missing {', '.join(missing) or 'entries'}"))
    links = read_links(link)
    image_ids, contour_ids = set(_subdirs(dicoms)), set(_subdirs(ctrs))
    pairs = list(links)
    linked_images = {p for p, _ in links}
    linked_contours = {o for _, o in links}
    pairs += [(p, None) for p in sorted(image_ids - linked_images)]
    pairs += [(None, o) for o in sorted(contour_ids - linked_contours)]
    records = []
    for pid, orig in pairs:
        key = pid if pid is not None else f"contours:{orig}"
        rec = PatientRecord(key=key, aliases=tuple(a for a in (pid, orig) if a))
        by_number: dict[int, dict] = {}
        if pid is not None:
            idir = dicoms / pid
            if not idir.is_dir():
                rec.notes.append(Note(idir, "image_folder_missing", "named in link.csv, not found"))
            for name in list_files(idir):
                m = _IMAGE.match(name)
                if m:
                    by_number.setdefault(int(m.group(1)), {})["image"] = idir / name
                else:
                    rec.notes.append(Note(idir / name, "unexpected_file", "not an <N>.dcm image name"))
        if orig is not None:
            cdir = ctrs / orig
            for sub in _subdirs(cdir):
                kind = {"i-contours": "inner", "o-contours": "outer"}.get(sub)
                for name in list_files(cdir / sub):
                    m = _CONTOUR.match(name)
                    if kind is None or not m or ("inner" if m.group(2).lower() == "i" else "outer") != kind:
                        rec.notes.append(Note(cdir / sub / name, "unexpected_file", "not a contour file name"))
                        continue
                    by_number.setdefault(int(m.group(1)), {})[kind] = cdir / sub / name
            for name in list_files(cdir):
                rec.notes.append(Note(cdir / name, "unexpected_file", "not inside i-contours/ or o-contours/"))
        rec.items = [Item(n, d.get("image"), d.get("inner"), d.get("outer")) for n, d in sorted(by_number.items())]
        records.append(rec)
    return records


# ------------------------------------------------------------------------------------ phantom writer
def _pid(p: int) -> str:
    return f"SCD{p:05d}01"


def _orig(p: int) -> str:
    return f"SC-HF-I-{p}"


def _finish(root: Path, patients: list) -> None:
    lines = ["patient_id,original_id"] + [f"{_pid(p)},{_orig(p)}" for p, _ in patients]
    (root / "link.csv").write_text("\n".join(lines) + "\n")
    (root / "contourfiles").mkdir(parents=True, exist_ok=True)
    (root / "dicoms").mkdir(parents=True, exist_ok=True)


PHANTOM = PhantomPaths(
    number=lambda p, k: 20 * k + 8,
    image=lambda root, p, n: root / "dicoms" / _pid(p) / f"{n}.dcm",
    contour=lambda root, p, n, kind: (
        root / "contourfiles" / _orig(p) / f"{kind}-contours" / f"IM-0001-{n:04d}-{kind}contour-manual.txt"
    ),
    finish=_finish,
)

register(Layout("sunnybrook_flat", discover, PHANTOM, EXPECTED, detect=_detect, detect_order=10))
