"""RVSC (MICCAI 2012 Right Ventricle Segmentation Challenge) layout.

```
[<set>/]patientNN/PNNdicom/PNN-XXXX.dcm
[<set>/]patientNN/PNNcontours-manual/PNN-XXXX-{i,o}contour-manual.txt
[<set>/]patientNN/PNNlist.txt        lines alternate inner/outer contour paths (Windows separators)
```
XXXX is the image's index in the sorted PNNdicom listing (the contour of ``PNN-0080.dcm`` is
``PNN-0080-icontour-manual.txt``). The root may hold the patient folders or set folders (TrainingSet, ...)
that hold them. In the real challenge data the contours trace the right ventricle; the phantom's trace the LV.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from segsweep.data.layouts.base import Item, Layout, Note, PatientRecord, PhantomPaths, list_files, register

EXPECTED = "patientNN/PNNdicom/PNN-XXXX.dcm + patientNN/PNNcontours-manual/PNN-XXXX-{i,o}contour-manual.txt"

_PATIENT = re.compile(r"^patient(\d+)$", re.IGNORECASE)
_IMAGE = re.compile(r"^P(\d+)-(\d{4})\.dcm$", re.IGNORECASE)
_CONTOUR = re.compile(r"^P(\d+)-(\d{4})-([io])contour-manual\.txt$", re.IGNORECASE)


def _patient_dirs(root: Path) -> list[Path]:
    found = [Path(e.path) for e in os.scandir(root) if e.is_dir() and _PATIENT.match(e.name)]
    if not found:  # one level down: TrainingSet/, Test1Set/, ...
        for e in sorted(os.scandir(root), key=lambda e: e.name):
            if e.is_dir():
                found += [Path(s.path) for s in os.scandir(e.path) if s.is_dir() and _PATIENT.match(s.name)]
    return sorted(found)


def _detect(root: Path) -> bool:
    """patientNN folders at the root or one level below it."""
    try:
        top = [e for e in os.scandir(root) if e.is_dir()]
    except OSError:
        return False
    if any(_PATIENT.match(e.name) for e in top):
        return True
    for e in top:
        try:
            if any(s.is_dir() and _PATIENT.match(s.name) for s in os.scandir(e.path)):
                return True
        except OSError:
            continue
    return False


def discover(root: Path) -> list[PatientRecord]:
    records = []
    for pdir in _patient_dirs(root):
        nn = _PATIENT.match(pdir.name).group(1)
        tag = f"P{nn}"
        rec = PatientRecord(key=pdir.relative_to(root).as_posix(), aliases=(pdir.name, tag))
        img_dir, ctr_dir, list_file = pdir / f"{tag}dicom", pdir / f"{tag}contours-manual", pdir / f"{tag}list.txt"
        by_number: dict[int, dict] = {}
        if not img_dir.is_dir():
            rec.notes.append(Note(img_dir, "image_folder_missing", f"no {tag}dicom folder"))
        for name in list_files(img_dir):
            m = _IMAGE.match(name)
            if m and m.group(1) == nn:
                by_number.setdefault(int(m.group(2)), {})["image"] = img_dir / name
            else:
                rec.notes.append(Note(img_dir / name, "unexpected_file", f"not a {tag}-XXXX.dcm image name"))
        contour_names = set()
        for name in list_files(ctr_dir):
            m = _CONTOUR.match(name)
            if m and m.group(1) == nn:
                kind = "inner" if m.group(3).lower() == "i" else "outer"
                by_number.setdefault(int(m.group(2)), {})[kind] = ctr_dir / name
                contour_names.add(name.lower())
            else:
                rec.notes.append(Note(ctr_dir / name, "unexpected_file", "not a contour file name"))
        if list_file.is_file():
            for line in list_file.read_text(errors="replace").splitlines():
                listed = line.strip().replace("\\", "/")
                if listed and Path(listed).name.lower() not in contour_names:
                    rec.notes.append(
                        Note(ctr_dir / Path(listed).name, "listed_contour_missing", f"named in {list_file.name}")
                    )
        known = {img_dir.name, ctr_dir.name, list_file.name}
        for e in sorted(os.scandir(pdir), key=lambda e: e.name):
            if e.name not in known:
                rec.notes.append(Note(Path(e.path), "unexpected_file", "not part of the RVSC layout"))
        rec.items = [Item(n, d.get("image"), d.get("inner"), d.get("outer")) for n, d in sorted(by_number.items())]
        records.append(rec)
    return records


# ------------------------------------------------------------------------------------ phantom writer
def _pdir(root: Path, p: int) -> Path:
    return root / "TrainingSet" / f"patient{p:02d}"


def _finish(root: Path, patients: list) -> None:
    for p, numbers in patients:
        lines = []
        for n, has_i, has_o in numbers:
            for kind, has in (("i", has_i), ("o", has_o)):
                if has:  # Windows separators, as in the challenge's list files
                    tag = f"P{p:02d}"
                    lines.append(f".\\patient{p:02d}\\{tag}contours-manual\\{tag}-{n:04d}-{kind}contour-manual.txt")
        (_pdir(root, p) / f"P{p:02d}list.txt").write_text("\r\n".join(lines) + ("\r\n" if lines else ""))


PHANTOM = PhantomPaths(
    number=lambda p, k: k,
    image=lambda root, p, n: _pdir(root, p) / f"P{p:02d}dicom" / f"P{p:02d}-{n:04d}.dcm",
    contour=lambda root, p, n, kind: (
        _pdir(root, p) / f"P{p:02d}contours-manual" / f"P{p:02d}-{n:04d}-{kind}contour-manual.txt"
    ),
    finish=_finish,
    instance_offset=1,
)

REASONS = {"listed_contour_missing": ("failure", "a contour named in an RVSC PNNlist.txt does not exist")}

register(Layout("rvsc", discover, PHANTOM, EXPECTED, detect=_detect, detect_order=20, reasons=REASONS))
