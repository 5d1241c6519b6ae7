"""Sunnybrook Cardiac Data, original challenge layout.

```
<anywhere>/SC-HF-I-1/IM-SSSS-NNNN.dcm                                   images (all series of the case)
<anywhere>/SC-HF-I-01/contours-manual/<expert>/IM-0001-NNNN-{i,o,p1,p2}contour-manual.txt
```
Case folders of images carry the unpadded case number, contour folders the zero-padded one; both are
matched on the case id with the number read as an integer. NNNN is the image number within the cine
short-axis series; the "0001" of contour names is not a series number. A case holds several series
(SSSS); the contoured one is picked as the series that has an image for the most contour numbers (ties:
the lowest series number, with a ``series_ambiguous`` QC warning), unless ``<root>/series_map.csv``
(``case,series``, e.g. ``SC-HF-I-1,0004``) names it. Papillary-muscle contours (p1, p2) are not used.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from segsweep.data.layouts.base import Item, Layout, Note, PatientRecord, PhantomPaths, _walk, register
from segsweep.errors import DataError

EXPECTED = (
    "SC-XX-N/IM-SSSS-NNNN.dcm image folders + SC-XX-0N/contours-manual/<expert>/"
    "IM-0001-NNNN-{i,o}contour-manual.txt contour folders"
)

_CASE = re.compile(r"^(SC-[A-Z]+(?:-[A-Z]+)*)-(\d+)$")
_IMAGE = re.compile(r"^IM-(\d{4})-(\d{4})\.dcm$", re.IGNORECASE)
_CONTOUR = re.compile(r"^IM-\d{4}-(\d{4})-(i|o|p1|p2)contour-manual\.txt$", re.IGNORECASE)


def case_key(name: str) -> str | None:
    m = _CASE.match(name)
    return f"{m.group(1)}-{int(m.group(2))}" if m else None


def _series_map(root: Path) -> dict[str, str]:
    path = root / "series_map.csv"
    if not path.is_file():
        return {}
    out = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                out[case_key(row["case"].strip()) or row["case"].strip()] = f"{int(row['series']):04d}"
            except (KeyError, ValueError, TypeError, AttributeError):
                raise DataError(f"{path}: expected columns 'case,series' with a series number") from None
    return out


def _detect(root: Path) -> bool:
    """A case folder (SC-XX-N) up to four levels down. Broad (a flat tree's contourfiles/SC-HF-I-1 matches
    too), hence tried last."""
    return any(_CASE.match(d) for _, dirnames, _ in _walk(root, 4) for d in dirnames)


def discover(root: Path) -> list[PatientRecord]:
    image_dirs: dict[str, Path] = {}
    contour_dirs: dict[str, Path] = {}
    images: dict[str, list[str]] = {}
    duplicates: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in _walk(root, 6):
        name = Path(dirpath).name
        key = case_key(name)
        if key is None:
            continue
        if "contours-manual" in dirnames:
            contour_dirs[key] = Path(dirpath)
            dirnames.remove("contours-manual")  # walked below, per case
        if filenames:
            if key in image_dirs:  # the same case twice (e.g. training and validation copies)
                duplicates.setdefault(key, []).extend(Path(dirpath) / f for f in filenames)
                continue
            image_dirs[key] = Path(dirpath)
            images[key] = filenames
    chosen_series = _series_map(root)
    records = []
    for key in sorted(set(image_dirs) | set(contour_dirs)):
        idir, cdir = image_dirs.get(key), contour_dirs.get(key)
        names = {d.name for d in (idir, cdir) if d is not None} | {p.parent.name for p in duplicates.get(key, [])}
        rec = PatientRecord(key=key, aliases=tuple(sorted(names)))
        rec.notes.extend(
            Note(p, "unexpected_file", "second image folder of the same case (not used)")
            for p in duplicates.get(key, [])
        )
        contours: dict[int, dict] = {}
        if cdir is not None:
            for dirpath, _, filenames in _walk(cdir / "contours-manual", 3):
                for fname in filenames:
                    path = Path(dirpath) / fname
                    m = _CONTOUR.match(fname)
                    if not m:
                        rec.notes.append(Note(path, "unexpected_file", "not a contour file name"))
                        continue
                    kind = m.group(2).lower()
                    if kind in ("p1", "p2"):
                        rec.notes.append(Note(path, "contour_unused", "papillary-muscle contour (not used)"))
                        continue
                    slot = contours.setdefault(int(m.group(1)), {})
                    field = "inner" if kind == "i" else "outer"
                    if field in slot:  # two experts contoured the same image: keep the first (sorted)
                        rec.notes.append(Note(path, "contour_unused", "second contour of the same image"))
                    else:
                        slot[field] = path
        by_series: dict[str, dict[int, Path]] = {}
        if idir is None:
            rec.notes.append(Note(cdir, "image_folder_missing", "no image folder for this case"))
        else:
            for fname in images[key]:
                m = _IMAGE.match(fname)
                if m:
                    by_series.setdefault(m.group(1), {})[int(m.group(2))] = idir / fname
                else:
                    rec.notes.append(Note(idir / fname, "unexpected_file", "not an IM-SSSS-NNNN.dcm image name"))
        series = chosen_series.get(key)
        if series is None and by_series:
            wanted = set(contours)
            score = {s: (len(wanted & set(files)), len(files)) for s, files in by_series.items()}
            best = max(score.values())
            tied = sorted(s for s, v in score.items() if v == best)
            series = tied[0]
            if len(tied) > 1 and best[0] > 0:
                rec.notes.append(
                    Note(idir, "series_ambiguous", f"series {', '.join(tied)} fit the contours equally; took {series}")
                )
        selected = by_series.get(series, {}) if series else {}
        for s, files in sorted(by_series.items()):
            if s != series:
                rec.notes.extend(
                    Note(p, "series_not_selected", f"series {s}; contoured series is {series}")
                    for _, p in sorted(files.items())
                )
        numbers = sorted(set(selected) | set(contours))
        rec.items = [
            Item(n, selected.get(n), contours.get(n, {}).get("inner"), contours.get(n, {}).get("outer"))
            for n in numbers
        ]
        records.append(rec)
    return records


# ------------------------------------------------------------------------------------ phantom writer
_GROUPS = ("SC-HF-I", "SC-HF-NI", "SC-HYP", "SC-N")
CINE_SERIES = 4


def _case(p: int) -> tuple[str, int]:
    return _GROUPS[(p - 1) % len(_GROUPS)], p


def _image(root: Path, p: int, n: int, series: int = CINE_SERIES) -> Path:
    g, num = _case(p)
    return root / "challenge_training" / f"{g}-{num}" / f"IM-{series:04d}-{n:04d}.dcm"


def _contour(root: Path, p: int, n: int, kind: str) -> Path:
    g, num = _case(p)
    return (
        root
        / "TrainingDataContours"
        / f"{g}-{num:02d}"
        / "contours-manual"
        / "IRCCI-expert"
        / f"IM-0001-{n:04d}-{kind}contour-manual.txt"
    )


PHANTOM = PhantomPaths(
    number=lambda p, k: 20 * k + 8,  # cine: 20 phases per slice location, contours on one phase
    image=_image,
    contour=_contour,
    finish=lambda root, patients: None,
    extra_images=lambda root, p: [_image(root, p, n, series=1) for n in (1, 2)],  # a localizer series
)

REASONS = {
    "series_not_selected": ("info", "Sunnybrook image of another series than the contoured cine series"),
    "series_ambiguous": ("warning", "several series fit the contours equally well; the first was taken"),
}

register(Layout("sunnybrook", discover, PHANTOM, EXPECTED, detect=_detect, detect_order=30, reasons=REASONS))
