"""Ingest: raw data root → ``{pid}.npz`` per patient, ``qc.csv`` and ``dataset.json`` (docs/architecture.md).

Patients are processed one at a time per worker (a process pool when ``workers > 1``); a worker writes its
patient's npz itself and hands back only QC rows, so peak memory does not grow with the number of patients.
Every image and contour file seen gets one QC row (docs/qc.md); nothing is skipped silently. Layouts that pair
images and contours by file content (RTSTRUCT, NIfTI) are resolved in the worker (``layouts.resolve``); their
items carry parts of files (``layouts.Part``): a volume slice is windowed like a DICOM image, an RTSTRUCT
polygon is checked and rasterised like a contour file, a label region is taken as it is.

Pseudonyms: ``"p" + hex(HMAC-SHA256(data.pseudonym_key, raw patient key))[:8]`` (RFC 2104). The raw key (a
folder or case name) and every DICOM header value other than the whitelisted geometry stay inside this
module; file paths in qc.csv have the patient's folder/case names replaced by the pseudonym.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import multiprocessing as mp
import os
import re
import sys
import zipfile
from collections import ChainMap
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segsweep.data import contours as ctr
from segsweep.data import dicom as dcm
from segsweep.data import layouts
from segsweep.data import preprocess as pre
from segsweep.data.config import N_CLASSES, TARGETS, DataConfig, PreprocessConfig
from segsweep.errors import DataError
from segsweep.io import atomic_path, write_bytes

# which contours a target needs: (inner, outer)
NEEDS = {"endo": (True, False), "epi": (False, True), "myo": (True, True), "multiclass": (True, True)}

# reason codes raised here (docs/qc.md); the full table is QC_REASONS
REASONS: dict[str, tuple[str, str]] = {
    "image_without_contour": ("info", "image with no contour file (not used)"),
    "contour_without_image": ("failure", "contour file whose image does not exist"),
    "contour_missing_for_target": ("info", "image lacks the contour the target needs (e.g. outer for myo)"),
    "contour_invalid": ("info", "image skipped because its contour failed (see the contour's row)"),
    "contour_inner_outside_outer": ("warning", "part of the inner contour lies outside the outer one"),
    "dicom_multiframe": ("failure", "multi-frame file with a contour: the contoured frame is unknown"),
    "image_blank": ("failure", "image has a single intensity: nothing to window"),
    "mask_empty": ("failure", "target mask is empty after composition/resizing"),
    "processing_error": ("failure", "unexpected error while processing the file (type in the message)"),
}
# a live view: a layout's own codes join layouts.REASONS when it registers (Layout.reasons)
QC_REASONS: Mapping[str, tuple[str, str]] = ChainMap(REASONS, layouts.REASONS, ctr.REASONS, dcm.REASONS)
QC_COLUMNS = ("patient", "file", "status", "reason", "message")
_NPZ_RE = re.compile(r"^p[0-9a-f]{8}\.npz$")
log = logging.getLogger(__name__)


def pseudonym(key: str, raw: str) -> str:
    """``p`` + first 8 hex digits of HMAC-SHA256(key, raw) (RFC 2104)."""
    return "p" + hmac.new(key.encode("utf-8"), raw.encode("utf-8"), hashlib.sha256).hexdigest()[:8]


def severity(reason: str) -> str:
    return QC_REASONS[reason][0] if reason else "ok"


@dataclass(frozen=True)
class _Task:
    record: layouts.PatientRecord
    pid: str
    root: Path
    target: str
    prep: PreprocessConfig
    out_dir: Path
    layout: str = ""  # for layouts.resolve (layouts that pair images and contours by content)
    options: tuple = ()  # DataConfig.layout_options as (key, value) pairs
    key: str = ""  # data.pseudonym_key: keys the hashes that replace DICOM UIDs in file names


# A DICOM UID (PS3.5 §9: digits and dots, the root 0/1/2, here ≥ 5 components): exporters name files after
# the SOP Instance UID (MR.1.2.840....dcm), and a UID identifies the patient's study, so it never reaches qc.csv.
_UID_RE = re.compile(r"(?<![0-9])(?<![0-9]\.)[0-2](?:\.(?:0|[1-9][0-9]*)){4,}(?![0-9])")


class _Namer:
    """Data-root-relative paths and messages with the patient's names replaced by the pseudonym, and DICOM
    UIDs by ``uid-`` + 10 hex of HMAC-SHA256(pseudonym key, UID) (the same file always gets the same name)."""

    def __init__(self, root: Path, aliases, pid: str, key: str = ""):
        self.root = root
        self.key = key
        self.prefix = str(root).rstrip(os.sep) + os.sep
        self.pid = pid
        # an alias matches only as a whole name part: not after a letter/digit, not before a digit
        # (so case "SC-HF-I-1" does not match inside "SC-HF-I-10", but "P01" matches in "P01dicom")
        pats = [re.escape(a) for a in sorted(set(aliases), key=len, reverse=True) if a]
        self.rx = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(pats) + r")(?![0-9])") if pats else None
        # a patient's files sit in a few folders: each folder is translated once. A match never spans a
        # "/" (no alias holds one) and "/" satisfies both look-arounds, so the parts translate apart.
        self.dirs: dict[str, str] | None = None if any("/" in a for a in aliases) else {}

    def text(self, s: str) -> str:
        if not s:
            return s
        s = _UID_RE.sub(self._uid, s)
        return self.rx.sub(self.pid, s) if self.rx else s

    def _uid(self, m: re.Match) -> str:
        return "uid-" + hmac.new(self.key.encode(), m.group(0).encode(), hashlib.sha256).hexdigest()[:10]

    def path(self, p: Path) -> str:
        s = str(p)
        if s.startswith(self.prefix):  # plain string slicing: Path.relative_to is slow per row
            rel = s[len(self.prefix) :].replace(os.sep, "/")
        else:
            try:
                rel = Path(p).relative_to(self.root).as_posix()
            except ValueError:
                rel = Path(p).name
        head, sep, tail = rel.rpartition("/")
        if not sep or self.dirs is None:
            return self.text(rel)
        folder = self.dirs.get(head)
        if folder is None:
            folder = self.dirs[head] = self.text(head)
        return folder + "/" + self.text(tail)


def _row(rows, namer: _Namer, path, reason: str = "", message: str = "", warnings=()):
    """One QC row; ``warnings`` ((code, msg), ...) make an ok row a warning row (first code = reason)."""
    if not reason and warnings:
        reason = warnings[0][0]
        message = "; ".join(f"{c}: {m}" for c, m in warnings)
    sev = severity(reason)
    status = "ok" if sev == "ok" else ("warning" if sev == "warning" else "skipped")
    rows.append((namer.pid, _where(namer, path), status, reason, namer.text(message)))


def _where(namer: _Namer, path) -> str:
    """The qc.csv ``file`` of a file, or ``<file>#<part>`` of a part of one (a volume slice, an RTSTRUCT contour)."""
    if isinstance(path, layouts.Part):
        return namer.path(path.path) + "#" + namer.text(path.part)
    return namer.path(path)


def _compose(target: str, inner, outer):
    # bool → uint8 0/1 as a view: the masks are not used after this, so no copy is needed
    if target == "endo":
        return inner.view(np.uint8)
    if target == "epi":
        return outer.view(np.uint8)
    if target == "myo":
        return (outer & ~inner).astype(np.uint8)
    m = np.zeros(inner.shape, np.uint8)
    m[outer] = 2
    m[inner] = 1
    return m


# Contoured images of a patient go through the stages of _process_batch this many at a time: each stage
# (pydicom, contour geometry, window, resize/CLAHE) then runs on several images in a row and finds its code
# and data still in the CPU caches (measured 10-15% less CPU per image than one image through all stages
# at a time on the benchmark phantom).
_BATCH = 16


class _Job:
    """One contoured image on its way through the stages. ``rows`` is its item's QC-row list; rows from
    ``mark`` on are the job's own (replaced by a processing_error row if a stage raises)."""

    __slots__ = ("item", "used", "rows", "mark", "im", "contours", "masks", "notes", "u8")

    def __init__(self, item, used: dict, rows: list):
        self.item, self.used, self.rows, self.mark = item, used, rows, len(rows)
        self.im = self.contours = self.masks = self.notes = self.u8 = None


def _process_patient(task: _Task) -> tuple[str, int, list]:
    """Read, validate and preprocess one patient; write its npz. Returns (pid, n_images, qc rows)."""
    rec, target, prep = _resolve(task), task.target, task.prep
    namer = _Namer(task.root, rec.aliases, task.pid, task.key)
    rows: list = []
    for note in rec.notes:
        _row(rows, namer, note.path, note.reason, note.message)
    need_i, need_o = NEEDS[target]
    out: dict[str, list] = {k: [] for k in ("image", "raw", "mask", "spacing", "slice", *NATIVE_ARRAYS)}
    slots: list[list] = []  # QC rows per item, in item order (batched jobs fill theirs later)
    batch: list[_Job] = []
    for item in rec.items:
        slots.append(slot := [])
        files = {"inner": item.inner, "outer": item.outer}
        if item.image is None:
            for path in files.values():
                if path is not None:
                    _row(slot, namer, path, "contour_without_image", f"no image number {item.number}")
            continue
        if item.inner is None and item.outer is None:
            _row(slot, namer, item.image, "image_without_contour", "")
            continue
        wanted = {"inner": need_i, "outer": need_o}
        missing = [k for k, w in wanted.items() if w and files[k] is None]
        if missing:
            _row(
                slot,
                namer,
                item.image,
                "contour_missing_for_target",
                f"target {target} needs the {' and '.join(missing)} contour",
            )
            for p in files.values():
                if p is not None:
                    _row(slot, namer, p, "contour_unused", f"the {' and '.join(missing)} contour is missing")
            continue
        for k, p in files.items():
            if p is not None and not wanted[k]:
                _row(slot, namer, p, "contour_unused", f"target {target} does not use {k} contours")
        batch.append(_Job(item, {k: p for k, p in files.items() if wanted[k]}, slot))
        if len(batch) == _BATCH:
            _process_batch(batch, target, prep, namer, out)
            batch = []
    _process_batch(batch, target, prep, namer, out)
    for slot in slots:
        rows += slot
    n = len(out["slice"])
    path = task.out_dir / f"{task.pid}.npz"
    if n:
        write_npz(
            path,
            {  # image/raw/mask: lists of equal arrays, stacked while writing (float32/uint8)
                "image": out["image"],
                "raw": out["raw"],
                "mask": out["mask"],
                "spacing": np.asarray(out["spacing"], dtype=np.float32).reshape(n, 2),
                "slice": np.asarray(out["slice"], dtype=np.int32),
                **native_arrays(out),
            },
        )
    return task.pid, n, rows


# Arrays added for the native-resolution evaluation (docs/architecture.md); older npz files lack them.
NATIVE_ARRAYS = ("native_mask", "native_shape", "resized_shape", "native_spacing")


def native_arrays(out: dict) -> dict:
    """The native-grid arrays of one patient: ``native_shape`` / ``resized_shape`` int32 [N,2] (rows, cols of
    the native image, and of the image after scaling and before the centred pad/crop: with the npz's image
    size they are the `preprocess.Geometry` of each image), ``native_spacing`` float32 [N,2] (row, col mm of
    the native pixels) and ``native_mask`` uint8 [N,Hn,Wn]: each image's mask at native resolution in the
    top-left corner of the patient's largest native size (zeros beyond its ``native_shape``)."""
    n = len(out["native_mask"])
    shapes = np.asarray(out["native_shape"], dtype=np.int32).reshape(n, 2)
    masks = out["native_mask"]
    if n and len({m.shape for m in masks}) > 1:  # images of one patient with different sizes: pad to the largest
        hmax, wmax = shapes.max(0)
        padded = []
        for m in masks:
            z = np.zeros((hmax, wmax), np.uint8)
            z[: m.shape[0], : m.shape[1]] = m
            padded.append(z)
        masks = padded
    return {
        "native_mask": masks,
        "native_shape": shapes,
        "resized_shape": np.asarray(out["resized_shape"], dtype=np.int32).reshape(n, 2),
        "native_spacing": np.asarray(out["native_spacing"], dtype=np.float32).reshape(n, 2),
    }


def _resolve(task: _Task) -> layouts.PatientRecord:
    """The patient's record with its items: layouts that pair by content open the patient's files here, in
    the worker. An unexpected error becomes one processing_error row (the other patients go on)."""
    if not task.layout:
        return task.record
    try:
        return layouts.resolve(task.layout, task.record, dict(task.options))
    except DataError:
        raise
    except Exception as exc:
        rec = task.record
        where = rec.files[0] if rec.files else task.root / rec.key
        note = layouts.Note(where, "processing_error", f"{type(exc).__name__} while reading the patient's files")
        return layouts.PatientRecord(rec.key, rec.aliases, [], [*rec.notes, note])


def _process_batch(jobs: list, target: str, prep: PreprocessConfig, namer: _Namer, out: dict) -> None:
    """Run the jobs stage by stage (each stage over all jobs still going); successes are appended to
    ``out`` in job order. Same rows and outputs as running each image through all stages in turn."""
    for stage in (_read_image, _read_contours, _window, _finish):
        if stage is _read_contours:
            _rasterise_all(jobs)
        going = []
        for job in jobs:
            try:
                keep = stage(job, target, prep, namer, out)
            except Exception as exc:  # a bug or an exotic input must not stop the other files
                keep = False
                del job.rows[job.mark :]  # still one row per file
                _row(job.rows, namer, job.item.image, "processing_error", type(exc).__name__)
                for p in job.used.values():
                    _row(job.rows, namer, p, "contour_unused", "its image could not be processed")
            if keep:
                going.append(job)
            else:  # finished, skipped or failed: drop its arrays now
                job.im = job.contours = job.masks = job.u8 = None
        jobs = going


def _skip(job: _Job, namer: _Namer, reason: str, message: str, why_unused: str) -> bool:
    _row(job.rows, namer, job.item.image, reason, message)
    for p in job.used.values():
        _row(job.rows, namer, p, "contour_unused", why_unused)
    return False


def _read_image(job: _Job, target, prep, namer: _Namer, out) -> bool:
    if isinstance(job.item.image, layouts.SliceImage):  # read by the layout already (a NIfTI slice)
        job.im = _slice_image(job.item.image)
        return True
    try:
        im = dcm.read(job.item.image, describe=False)
    except dcm.DicomError as exc:
        return _skip(job, namer, exc.reason, exc.detail, "its image could not be read")
    if im.n_frames > 1:
        return _skip(job, namer, "dicom_multiframe", f"{im.n_frames} frames", "its image is multi-frame")
    job.im = im
    return True


def _slice_image(src: layouts.SliceImage) -> dcm.DicomImage:
    """A volume slice as the image the later stages take: windowed from its stored values and rescale
    exactly as a DICOM image (``preprocess.window_dicom``)."""
    stored = np.ascontiguousarray(src.stored)[None]
    bits = stored.dtype.itemsize * 8
    return dcm.DicomImage(
        stored=stored,
        slope=float(src.slope),
        intercept=float(src.intercept),
        invert=False,
        pixel_spacing=(float(src.spacing[0]), float(src.spacing[1])),
        rows=int(stored.shape[1]),
        cols=int(stored.shape[2]),
        bits_allocated=bits,
        bits_stored=bits,
        signed=stored.dtype.kind == "i",
        photometric="MONOCHROME2",
        warnings=tuple(src.warnings),
    )


def _part_mask(src, shape):
    """(mask, notes) of a contour the layout read already: a polygon in pixel coordinates is validated and
    rasterised like a contour file, a filled region is taken as it is; raises ContourError."""
    where = f"{src.path.name}#{src.part}"  # exception text only; rows name the part through _where
    if isinstance(src, layouts.PolygonContour):
        mask, notes = ctr.to_mask(ctr.from_points(src.points, where), shape, where)
        return mask, (*src.warnings, *notes)
    mask = np.asarray(src.mask, dtype=bool)
    if mask.shape != tuple(shape):
        raise ValueError(f"label slice {mask.shape} does not match its image {tuple(shape)}")
    if not mask.any():
        raise ctr.ContourError("contour_empty_mask", "the region covers no pixel", where)
    return mask, tuple(src.warnings)


def _rasterise_all(jobs: list) -> None:
    """Parse and rasterise the used contour files of all jobs in one contours.read_masks call (its results
    are those of parse + to_mask per file, exceptions included); _read_contours reads them in order.
    Contours a layout read already (``layouts.Part``) are left to _contour_mask."""
    try:
        files = [(p, (job.im.rows, job.im.cols)) for job in jobs for p in job.used.values() if isinstance(p, Path)]
        results = iter(ctr.read_masks(files))
        for job in jobs:
            job.contours = {kind: next(results) for kind, p in job.used.items() if isinstance(p, Path)}
    except Exception:  # unexpected: _read_contours then works file by file, errors land on their image
        for job in jobs:
            job.contours = None


def _contour_mask(job: _Job, kind: str, path, shape):
    """(mask, notes) of one used contour: the batch result, or parse + to_mask now; raises what they raise."""
    if isinstance(path, layouts.Part):
        return _part_mask(path, shape)
    if job.contours is None:
        return ctr.to_mask(ctr.parse(path), shape, path)
    res = job.contours[kind]
    if isinstance(res, BaseException):
        raise res
    return res


def _read_contours(job: _Job, target, prep, namer: _Namer, out) -> bool:
    used, rows = job.used, job.rows
    shape = (job.im.rows, job.im.cols)
    masks, notes, failed = {}, {}, []
    for kind, p in used.items():
        try:
            masks[kind], notes[kind] = _contour_mask(job, kind, p, shape)
        except ctr.ContourError as exc:
            _row(rows, namer, p, exc.reason, exc.detail)
            failed.append(kind)
    if failed:
        _row(rows, namer, job.item.image, "contour_invalid", f"{' and '.join(failed)} contour failed")
        for kind in masks:
            _row(rows, namer, used[kind], "contour_unused", f"the {' and '.join(failed)} contour failed")
        return False
    if "inner" in masks and "outer" in masks:
        stray = int(np.count_nonzero(masks["inner"] & ~masks["outer"]))
        if stray:
            notes["outer"] = notes["outer"] + (
                ("contour_inner_outside_outer", f"{stray} inner-contour pixels outside the outer contour"),
            )
    job.masks, job.notes = masks, notes
    return True


def _window(job: _Job, target, prep, namer: _Namer, out) -> bool:
    u8, lo, hi = pre.window_dicom(job.im, 0, prep.window)
    if not hi > lo:
        return _skip(job, namer, "image_blank", "the window percentiles are equal", "its image is blank")
    job.u8 = u8
    return True


def _finish(job: _Job, target, prep, namer: _Namer, out) -> bool:
    masks = job.masks
    mask = _compose(target, masks.get("inner"), masks.get("outer"))
    res = pre.prepare(job.u8, mask, job.im.pixel_spacing, prep)
    if not np.count_nonzero(res.mask):
        return _skip(
            job, namer, "mask_empty", f"target {target} mask is empty at {prep.size}", "the target mask is empty"
        )
    _row(job.rows, namer, job.item.image, warnings=job.im.warnings)
    for kind, p in job.used.items():
        _row(job.rows, namer, p, warnings=job.notes[kind])
    out["image"].append(res.image)
    out["raw"].append(res.raw)
    out["mask"].append(res.mask)
    out["spacing"].append(res.spacing)
    out["slice"].append(job.item.number)
    # what the final evaluation needs to score predictions at native resolution (docs/evaluation.md)
    out["native_mask"].append(np.array(mask, dtype=np.uint8))  # a copy: mask may view a contour buffer
    out["native_shape"].append(res.geometry.in_shape)
    out["resized_shape"].append(res.geometry.resized)
    out["native_spacing"].append(tuple(float(x) for x in job.im.pixel_spacing))
    return False  # done


# ------------------------------------------------------------------------------------------ writers
def write_npz(path: Path, arrays: dict) -> None:
    """Write an uncompressed .npz with fixed member timestamps (identical bytes for identical arrays),
    atomically (temporary file + rename).

    A value may be a list of arrays of one shape and dtype: it is written exactly as ``np.stack(value)``
    would be, slice by slice, without building the stacked array (no large temporary per patient)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, arr in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                parts = _npy_parts(arr)
                with zf.open(info, "w", force_zip64=True) as fh:
                    if parts is None:
                        value = np.stack(arr) if isinstance(arr, (list, tuple)) else np.asarray(arr)
                        np.lib.format.write_array(fh, value, allow_pickle=False)
                        continue
                    header, chunks = parts
                    # what write_array writes (header 1.0, C order), without its tobytes() copy of the data;
                    # a list goes out as one buffer: one write and one CRC update instead of one per slice
                    np.lib.format.write_array_header_1_0(fh, header)
                    views = [memoryview(c).cast("B") for c in chunks]
                    fh.write(views[0] if len(views) == 1 else b"".join(views))
        # Drop an older file first (atomic_path renames after the block): on ext4 (auto_da_alloc) a rename
        # over an existing file forces a synchronous flush of the new data, ~1 ms per patient. Readers never
        # see a partial file either way, and dataset.json (removed at the start of run(), written last) marks
        # a complete ingest.
        path.unlink(missing_ok=True)


def _npy_parts(arr):
    """(npy header dict, C-contiguous chunks) for a numeric array or a list of equal ones; None: let
    np.lib.format.write_array handle it (object/str dtypes, empty arrays)."""
    # np.asarray(order="C") keeps 0-d shapes (ascontiguousarray makes them 1-d) and copies only if needed
    if isinstance(arr, (list, tuple)):
        chunks = [np.asarray(a, order="C") for a in arr]
        if not chunks:
            return None
        first = chunks[0]
        if any(c.shape != first.shape or c.dtype != first.dtype for c in chunks):
            raise ValueError("write_npz: a list value needs arrays of one shape and dtype")
        shape, dtype = (len(chunks), *first.shape), first.dtype
    else:
        chunks = [np.asarray(arr, order="C")]
        shape, dtype = chunks[0].shape, chunks[0].dtype
    if dtype.kind not in "biuf" or not all(c.size for c in chunks) or not shape:
        return None
    if not dtype.isnative:  # np.stack of a list yields native byte order; match it
        dtype = dtype.newbyteorder("=")
        chunks = [c.astype(dtype) for c in chunks] if isinstance(arr, (list, tuple)) else chunks
        if not isinstance(arr, (list, tuple)):
            return None  # a single non-native array keeps its byte order, as np.save does
    return {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}, chunks


def _qc_csv(rows) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(QC_COLUMNS)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


# ---------------------------------------------------------------------------------------------- run
def _pool(workers: int):
    # fork: workers start in milliseconds and inherit the imported modules; spawn elsewhere
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method))


def failed_qc_path(out_dir: str | Path) -> Path:
    """Where a failed ingest keeps its qc.csv: beside ``out_dir`` (``results/data`` → ``results/data.qc.csv``),
    because Snakemake removes the output folder of a failed job, qc.csv with it, and the error message must
    point at a file that is still there. Removed by the next ingest of ``out_dir``."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f"{out_dir.name}.qc.csv")


def run(data: DataConfig, prep: PreprocessConfig, out_dir: str | Path, workers: int = 1) -> dict:
    """Ingest ``data.root`` (layout ``data.layout``) into ``out_dir``; returns the dataset.json dict."""
    if data.target not in TARGETS:
        raise DataError(f"config key 'data.target': unknown target '{data.target}' (known: {', '.join(TARGETS)})")
    if prep.policy not in pre.POLICIES:
        raise DataError(f"config key 'preprocess.policy': unknown policy '{prep.policy}'")
    root = Path(data.root)
    out_dir = Path(out_dir)
    records = layouts.discover(data.layout, root)
    pids = [pseudonym(data.pseudonym_key, r.key) for r in records]
    if len(set(pids)) != len(pids):  # 32-bit prefix: a collision is unlikely but must not merge patients
        raise DataError(f"data.pseudonym_key: two patients of {root} get the same pseudonym; change the key")
    out_dir.mkdir(parents=True, exist_ok=True)
    # dataset.json marks a complete ingest: drop an earlier one first, so a failed run leaves none behind
    (out_dir / "dataset.json").unlink(missing_ok=True)
    kept_qc = failed_qc_path(out_dir)
    kept_qc.unlink(missing_ok=True)  # an earlier failure's copy: this run writes its own if it fails
    options = tuple(data.layout_options.items())
    tasks = [
        _Task(r, pid, root, data.target, prep, out_dir, data.layout, options, data.pseudonym_key)
        for r, pid in zip(records, pids)
    ]
    workers = max(1, min(int(workers), len(tasks)))
    if workers == 1:
        results = [_process_patient(t) for t in tasks]
    else:
        with _pool(workers) as ex:
            results = list(ex.map(_process_patient, tasks, chunksize=1))

    rows = sorted((r for _, _, rs in results for r in rs), key=lambda r: (r[0], r[1], r[3]))
    patients = sorted(({"id": pid, "n_images": n} for pid, n, _ in results if n), key=lambda d: d["id"])
    keep = {f"{p['id']}.npz" for p in patients}
    for entry in os.scandir(out_dir):  # stale patients of an earlier run
        if _NPZ_RE.match(entry.name) and entry.name not in keep:
            os.remove(entry.path)
    qc = _qc_csv(rows)
    write_bytes(out_dir / "qc.csv", qc)

    failures = [r for r in rows if r[3] and severity(r[3]) == "failure"]
    if data.strict and failures:
        write_bytes(kept_qc, qc)
        lines = [f"{r[0]}/{r[1]}: {r[3]}: {r[4]}" if r[4] else f"{r[0]}/{r[1]}: {r[3]}" for r in failures]
        raise DataError(
            f"data.strict: {len(failures)} QC failure(s) under data root '{root}' "
            f"(details in {kept_qc}):\n  " + "\n  ".join(lines)
        )
    n_images = sum(p["n_images"] for p in patients)
    if n_images == 0:
        write_bytes(kept_qc, qc)
        raise DataError(f"data root '{root}': no usable image/contour pair for target '{data.target}' (see {kept_qc})")
    counts: dict[str, int] = {}
    for r in rows:
        if r[3]:
            counts[r[3]] = counts.get(r[3], 0) + 1
    dataset = {
        "source": data.source,
        "layout": data.layout,
        "target": data.target,
        "n_classes": N_CLASSES[data.target],
        "size": [int(prep.size[0]), int(prep.size[1])],
        "patients": patients,
        "n_images": n_images,
        "qc_counts": dict(sorted(counts.items())),
    }
    write_bytes(out_dir / "dataset.json", (json.dumps(dataset, indent=1) + "\n").encode())
    log.info(
        "ingest: %d images of %d patients (target %s) from a %s root; QC: %s",
        n_images,
        len(patients),
        data.target,
        data.layout,
        ", ".join(f"{k} {v}" for k, v in dataset["qc_counts"].items()) or "clean",
    )
    return dataset
