"""Apply a trained cell to the MR series under an input root: DICOM SEG, overlays, volumes, QC (docs/predict.md).

For each series found by `discover` (grouped by SeriesInstanceUID, or a stack of per-position series;
ordered by slice along the normal, then cardiac phase: `geometry.assign_phases`):

1. every image is read (`dicom.read`: stored values, rescale, MONOCHROME1) and given **the cell's
   preprocessing**, the functions ingest uses: the percentile window (`preprocess.window_dicom`), then resize,
   CLAHE and centred pad/crop (`preprocess.prepare`) with the ``preprocess`` settings the cell's data were
   made with (checked against results/data/dataset.json's size);
2. the cell's ``best.pt`` predicts the network-grid images in batches of ``predict.batch_size`` on
   ``predict.device`` (``auto``: the first visible GPU, else the CPU);
3. each prediction goes back to its image's **native grid** as in the final evaluation
   (docs/evaluation.md): the probability map is mapped by `preprocess.invert` (undo pad/crop, then bilinear /
   area resize; pixels a crop cut away are background) and thresholded at 0.5 (one output: sigmoid; several:
   softmax per class, then the most probable class);
4. written to ``<out>/<series pseudonym>/``: the DICOM SEGs (`seg.build_seg`): one per source series and
   cardiac phase, each holding one image per slice position (a viewer shows a SEG on one volume: a cine
   series is one volume per phase), ``<source pseudonym>_seg.dcm`` for a single phase, else
   ``<source pseudonym>_pNN_seg.dcm``; ``overlays/NNNN.png`` (`overlay`); ``volumes.csv`` and
   ``series.json`` (`volumes`: areas, volumes per phase, ED/ES/EF); with ``deidentify``, ``images/NNNN.dcm``:
   the de-identified source images the de-identified SEGs reference (`seg.deidentified_image`).

``<out>/qc.csv`` has one row per file seen (``series,file,status,reason,message``; `discover`), ``<out>/
predict.json`` the run: the model (cell, how it was selected), the settings, counts and throughput. Files
that cannot be used are rows, never errors: the run goes on, and a series that fails (reading, predicting
or writing) is a ``predict_series_failed`` row while the others are written. Only when no series at all
could be written does the run fail (a `DataError` naming qc.csv, which is kept; predict.json is not
written). A run first removes the previous run's outputs from ``<out>``. Outside the SEGs and the
de-identified images no header value is written; series and patients appear as pseudonyms.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from segsweep import __version__
from segsweep.analysis.card import Selection, resolve_model
from segsweep.analysis.ensemble import average_probabilities, labels_from_probabilities
from segsweep.analysis.final import chosen_postprocessing, final_of
from segsweep.analysis.postprocess import postprocess_patient
from segsweep.apply import geometry, overlay, volumes
from segsweep.apply import seg as segmod
from segsweep.apply.discover import QC_COLUMNS, Discovery, Series, discover, row, series_pseudonym
from segsweep.data import dicom as dcm
from segsweep.data import preprocess as pre
from segsweep.data.config import PreprocessConfig
from segsweep.data.ingest import pseudonym
from segsweep.errors import ConfigError, DataError
from segsweep.io import write_bytes, write_json, write_text
from segsweep.paths import BEST_CHECKPOINT, CELLS_SUB, STUDIES_SUB, TABLE_JSON

log = logging.getLogger("segsweep.predict")


@dataclass(frozen=True)
class PredictConfig:
    """The config's ``predict`` section (schema defaults)."""

    input: str | None = None
    model: str = "best"
    deidentify: bool = False
    batch_size: int = 16
    device: str = "auto"
    ensemble: bool = True  # a study's selected configuration: all its ok runs, probabilities averaged

    @classmethod
    def from_mapping(cls, d: Mapping | None) -> PredictConfig:
        d = dict(d or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"config key 'predict.{unknown[0]}': unknown (known: {', '.join(known)})")
        out = cls(**d)
        if int(out.batch_size) < 1:
            raise ConfigError(f"config key 'predict.batch_size': must be ≥ 1, got {out.batch_size}")
        return replace(
            out,
            model=str(out.model),
            deidentify=bool(out.deidentify),
            batch_size=int(out.batch_size),
            device=str(out.device),
            ensemble=bool(out.ensemble),
        )


# ------------------------------------------------------------------------------------------- model
class CellModel:
    """A cell's ``best.pt`` as a predictor: network-grid images → label masks on their native grids."""

    def __init__(self, cell_dir: Path, n_classes: int, device: torch.device | str = "cpu", batch_size: int = 16):
        from segsweep.training import checkpoint
        from segsweep.training.model import MODELS
        from segsweep.training.params import CellParams

        path = Path(cell_dir) / BEST_CHECKPOINT
        if not path.exists():
            raise DataError(f"{path}: the cell's weights are missing (retrain it: snakemake -R train)")
        state = checkpoint.load(path)  # verified against its sidecar: a corrupt file is a DataError naming it
        self.params = CellParams.from_dict(state["params"])
        self.n_out = 1 if n_classes <= 2 else int(n_classes)
        net = MODELS[getattr(self.params, "model", "unet")](self.params, n_classes=self.n_out)
        net.load_state_dict(state["model"])
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.batch_size = int(batch_size)
        self.epoch = state.get("epoch")

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """float64 [B, C, H, W] class probabilities of network-grid images float32 [B, H, W]: C = 1
        (sigmoid of the one output: the foreground) or the classes (softmax)."""
        out = []
        with torch.inference_mode():
            for start in range(0, len(x), self.batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(x[start : start + self.batch_size], dtype=np.float32))
                xb = xb.unsqueeze(1).to(self.device)
                if self.params.in_channels == 3:
                    xb = xb.expand(-1, 3, -1, -1)
                out.append(self.net(xb).float().cpu().numpy().astype(np.float64))
        z = np.concatenate(out) if out else np.zeros((0, self.n_out, *x.shape[1:]))
        if self.n_out == 1:
            return 1.0 / (1.0 + np.exp(-z))  # as the final evaluation: float64, no 0.5 ties from rounding
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, images: Sequence[np.ndarray], geometries: Sequence[pre.Geometry]) -> list[np.ndarray]:
        """Label masks uint8 (0 background; 1, or the class ids) on each image's native grid."""
        if not images:
            return []
        prob = self.probabilities(np.stack(images))
        return [native_labels(p, g) for p, g in zip(prob, geometries)]

    def native_probabilities(self, images: Sequence[np.ndarray], geometries: Sequence[pre.Geometry]) -> list:
        """Class probabilities [C, h, w] on each image's native grid (`native_probabilities`)."""
        if not images:
            return []
        return [native_probabilities(p, g) for p, g in zip(self.probabilities(np.stack(images)), geometries)]


def native_probabilities(prob: np.ndarray, geom: pre.Geometry) -> np.ndarray:
    """Class probabilities [C, H, W] on the network grid → on the native grid (`preprocess.invert`; pixels a
    crop cut away are background: probability 0 of the foreground, 1 of class 0)."""
    if prob.shape[0] == 1:
        return pre.invert(geom, prob[0], fill=0.0)[None]
    return np.stack([pre.invert(geom, p, fill=1.0 if c == 0 else 0.0) for c, p in enumerate(prob)])


def native_labels(prob: np.ndarray, geom: pre.Geometry) -> np.ndarray:
    """Class probabilities [C, H, W] on the network grid → labels on the native grid (module docstring)."""
    return labels_from_probabilities(native_probabilities(prob, geom))


class Predictor:
    """What predict applies (docs/predict.md): one cell, or the ensemble of the selected configuration's runs
    (their native-grid probabilities averaged, `ensemble.average_probabilities`), then the study's chosen
    post-processing (`postprocess.apply_postprocessing`: per slice, or per phase volume for ``largest_3d``)."""

    def __init__(self, models: Sequence[CellModel], cells: Sequence[str], postprocessing: str = "none"):
        self.models, self.cells, self.postprocessing = list(models), list(cells), postprocessing

    def predict(self, images: Sequence[np.ndarray], geometries: Sequence[pre.Geometry]) -> list[np.ndarray]:
        """Label masks uint8 on each image's native grid, before post-processing."""
        if len(self.models) == 1:
            return self.models[0].predict(images, geometries)
        per_model = [m.native_probabilities(images, geometries) for m in self.models]
        return [labels_from_probabilities(average_probabilities(list(ps))) for ps in zip(*per_model)]

    def method(self) -> dict[str, str]:
        """The SEG's further algorithm parameters."""
        out = {"postprocessing": self.postprocessing}
        if len(self.cells) > 1:
            out["ensemble"] = "+".join(self.cells)
        return out

    def postprocess(self, masks: list[np.ndarray], phases, spacings) -> list[np.ndarray]:
        """The chosen post-processing on one series' masks: each phase's slices are one volume."""
        if self.postprocessing == "none" or not masks:
            return masks
        out = list(masks)
        for ph in sorted(set(phases.phase)):
            idx = sorted((i for i in range(len(masks)) if phases.phase[i] == ph), key=lambda i: phases.slice[i])
            done = postprocess_patient(self.postprocessing, [masks[i] for i in idx], [spacings[i] for i in idx])
            for i, m in zip(idx, done):
                out[i] = m
        return out


# ------------------------------------------------------------------------------------------- series
@dataclass
class _Image:
    header: object  # discover.ImageHeader
    im: dcm.DicomImage
    u8: np.ndarray
    prepared: pre.Prepared
    frame: int  # index into im.stored (an Enhanced MR image's frame number − 1, else 0)
    spacing: tuple[float, float]  # pixel spacing (mm): the frame's functional groups, else the file's

    @property
    def stored(self) -> np.ndarray:
        return self.im.stored[self.frame]


@dataclass(frozen=True)
class SeriesResult:
    """What the run keeps of a written series (not its masks: memory stays flat over many series)."""

    name: str
    patient: str
    n_images: int


def _prepare(s: Series, prep: PreprocessConfig, found: Discovery, rows: list) -> list[_Image]:
    kept = []
    reads: dict[Path, dcm.DicomImage | dcm.DicomError] = {}  # an Enhanced MR file is read once for its frames
    for h in s.images:
        where = found.scrub(h.rel)
        if h.path not in reads:
            try:
                reads[h.path] = dcm.read(h.path, describe=False)
            except dcm.DicomError as exc:
                reads[h.path] = exc
                rows.append(row(s.name, where, exc.reason, found.scrub(exc.detail)))
        im = reads[h.path]
        if isinstance(im, dcm.DicomError):
            continue
        frame = 0 if h.frame is None else h.frame - 1
        if (h.frame is None and im.n_frames > 1) or frame >= im.n_frames:
            rows.append(row(s.name, where, "dicom_bad_header", f"{im.n_frames} frames, the header says otherwise"))
            continue
        if (im.rows, im.cols) != (h.rows, h.cols):
            rows.append(row(s.name, where, "dicom_bad_header", "pixel data size differs from the header's"))
            continue
        u8, lo, hi = pre.window_dicom(im, frame, prep.window)
        if not hi > lo:
            rows.append(row(s.name, where, "image_blank", "the window percentiles are equal"))
            continue
        spacing = h.pixel_spacing or im.pixel_spacing
        prepared = pre.prepare(u8, np.zeros(u8.shape, np.uint8), spacing, prep)
        kept.append(_Image(h, im, u8, prepared, frame, spacing))
    return kept


def predict_series(
    s: Series,
    model: Predictor,
    prep: PreprocessConfig,
    target: str,
    found: Discovery,
    rows: list,
    out_dir: Path,
    *,
    selection: Selection,
    key: str,
    deidentify: bool,
) -> SeriesResult | None:
    """Predict one series and write its folder; QC rows go to ``rows``. None if no image could be used."""
    kept = _prepare(s, prep, found, rows)
    if not kept:
        rows.append(row(s.name, "", "predict_empty_series", f"none of its {len(s.images)} images could be used"))
        return None
    hdr = kept[0].header.ds
    patient = pseudonym(key, str(hdr.get("PatientID", "") or "") or s.uid)
    masks = model.predict([k.prepared.image for k in kept], [k.prepared.geometry for k in kept])
    headers = [k.header for k in kept]
    locations = [h.location() for h in headers]
    phases = geometry.assign_phases(
        locations,
        [h.temporal for h in headers],
        [h.trigger for h in headers],
        [h.instance for h in headers],
        [h.order_key for h in headers],
    )  # over the images kept (a dropped image can make the phases uneven)
    masks = model.postprocess(masks, phases, [k.spacing for k in kept])
    spacing = volumes.slice_spacing(locations, hdr.get("SpacingBetweenSlices"), hdr.get("SliceThickness"))
    segments = segmod.SEGMENTS[target]
    vols = volumes.measure(masks, {x.key: x.value for x in segments}, [k.spacing for k in kept], phases, spacing)
    warnings = list(s.warnings)
    if spacing.irregular:
        warnings.append(
            ("predict_irregular_spacing", "gaps " + ", ".join(f"{g:.2f}" for g in spacing.gaps_mm[:8]) + " mm")
        )
    if spacing.spacing_mm is None:
        warnings.append(("predict_no_spacing", "no slice spacing: areas only"))
    elif not phases.even:
        warnings.append(("predict_phases_uneven", f"{phases.n_slices} positions, not every one holds every phase"))
    for reason, msg in warnings:
        rows.append(row(s.name, "", reason, msg))
    for k in kept:
        w = k.im.warnings
        rows.append(row(s.name, found.scrub(k.header.rel), w[0][0] if w else "", "; ".join(f"{c}: {m}" for c, m in w)))

    out = Path(out_dir) / s.name
    # one SEG per source series and phase (module docstring); its frames in slice order
    groups: dict[tuple[str, int], list[int]] = {}
    for i in sorted(range(len(kept)), key=lambda i: (phases.phase[i], phases.slice[i])):
        groups.setdefault((kept[i].header.series_uid, phases.phase[i]), []).append(i)
    n_phases = {uid: len({ph for u, ph in groups if u == uid}) for uid, _ in groups}
    segs = []
    # highdicom and pydicom log and warn about header values (which can be PHI): silenced, as ingest does
    with _silent():
        for (uid, ph), idx in groups.items():
            src = series_pseudonym(key, uid)
            multi = n_phases[uid] > 1
            name = f"{src}_p{ph:02d}_seg.dcm" if multi else f"{src}_seg.dcm"
            multiframe = kept[idx[0]].header.frame is not None
            seg = segmod.build_seg(
                [kept[idx[0]].header.ds] if multiframe else [kept[i].header.ds for i in idx],
                np.stack([masks[i] for i in idx]),
                target,
                cell=selection.cell,
                study=selection.study,
                key=key,
                deidentify=deidentify,
                patient=patient,
                phase=ph if multi else None,
                slice_spacing_mm=spacing.spacing_mm,
                frames=[(kept[i].header.frame, kept[i].header.position) for i in idx] if multiframe else None,
                method=model.method(),
            )
            segmod.write_seg(seg, out / name)  # writing validates the UIDs it copies: quiet too
            segs.append({"file": name, "source_series": src, "phase": ph, "images": idx})
        image_files = {}
        if deidentify:  # the images the de-identified SEGs reference, with the same UID mapping
            frame = kept[0].header.ds.get("FrameOfReferenceUID")
            for i, k in enumerate(kept):
                if k.header.path in image_files:  # another frame of an Enhanced MR file: written with it
                    continue
                image_files[k.header.path] = f"images/{i:04d}.dcm"
                stored = k.im.stored if k.header.frame is not None else k.stored
                copy = segmod.deidentified_image(k.header.ds, stored, key, patient, frame)
                segmod.write_image(copy, out / image_files[k.header.path])
    values = [x.value for x in segments]
    images = []
    for i, (k, m) in enumerate(zip(kept, masks)):
        name = f"overlays/{i:04d}.png"
        overlay.write_png(out / name, k.u8, m, values)
        images.append(
            {
                "index": i,
                "slice": None if vols.slice is None else vols.slice[i],
                "phase": None if vols.phase is None else vols.phase[i],
                "position_mm": locations[i],
                "overlay": name,
                **({"image": image_files[k.header.path]} if deidentify else {}),
                "areas_mm2": vols.areas[i],
            }
        )
    write_text(out / "volumes.csv", volumes.volumes_csv(vols, locations))
    write_json(
        out / "series.json",
        {
            "series": s.name,
            "patient": patient,
            "n_images": len(kept),
            "n_files": len(s.images),
            "n_source_series": len(s.source_uids) or 1,
            "n_slices": phases.n_slices,
            "phases_even": phases.even,
            "size": [int(hdr.Rows), int(hdr.Columns)],
            "pixel_spacing_mm": list(kept[0].spacing),
            **vols.to_json(),
            "target": target,
            "segments": [{"number": i + 1, "label": x.label, "structure": x.key} for i, x in enumerate(segments)],
            "segs": segs,
            "deidentified": deidentify,
            **({"images_dir": "images"} if deidentify else {}),
            "model": {
                "cell": selection.cell,
                "study": selection.study,
                "how": selection.how,
                "ensemble": model.cells,
                "postprocessing": model.postprocessing,
            },
            "images": images,
        },
    )
    return SeriesResult(s.name, patient, len(kept))


_UID_LIKE = re.compile(r"\d+(?:\.\d+){2,}")  # DICOM UIDs and other dotted numbers a message may quote


def _safe_message(exc: BaseException, found: Discovery) -> str:
    """``Type: message`` for qc.csv and the log, with the input's identifying header values and anything
    UID-like removed (an exception from a DICOM library may quote header values)."""
    text = _UID_LIKE.sub("[uid]", found.scrub(f"{type(exc).__name__}: {exc}"))
    return " ".join(text.split())[:300]


@contextlib.contextmanager
def _silent():
    """pydicom's warnings and log records off (`dicom.quiet`), highdicom's below ERROR (its modules log the
    UIDs and attributes they copy)."""
    hd_log = logging.getLogger("highdicom")
    level = hd_log.level
    hd_log.setLevel(logging.ERROR)
    try:
        with dcm.quiet():
            yield
    finally:
        hd_log.setLevel(level)


def _qc_csv(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(QC_COLUMNS)
    w.writerows(rows)
    return buf.getvalue()


_OUTPUT = re.compile(r"^s[0-9a-f]{8}$")


def clear_outputs(out_dir: Path) -> None:
    """Remove a previous run's outputs (series folders, qc.csv, predict.json) and nothing else: a run's
    outputs describe one input root (Snakemake no longer owns the folder: see rules/predict.smk)."""
    if not out_dir.is_dir():
        return
    for p in out_dir.iterdir():
        if p.is_dir() and _OUTPUT.match(p.name):
            shutil.rmtree(p)
        elif p.name in ("qc.csv", "predict.json"):
            p.unlink()


def model_runs(sel: Selection, results_dir: Path, ensemble: bool) -> tuple[list[str], str]:
    """The cells predict applies and the post-processing: for a model a study selected, the runs its final
    evaluation used (table.json ``final.cells``, when ``ensemble`` and ≥ 2) and its chosen post-processing
    (`final.chosen_postprocessing`); for a cell id given directly, that cell and none."""
    if sel.study is None:
        return [sel.cell], "none"
    study_dir = Path(results_dir) / STUDIES_SUB / sel.study
    post = chosen_postprocessing(study_dir)
    final = final_of(json.loads((study_dir / TABLE_JSON).read_text())) or {}
    runs = list(final.get("cells") or [])
    if ensemble and len(runs) >= 2 and sel.cell in runs:
        return runs, post
    return [sel.cell], post


def _dataset(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run ingest first: the cell's target and image size come from it)") from None


def run_predict(
    predict: Mapping,
    *,
    studies: Sequence,
    results_dir: Path,
    prep: PreprocessConfig,
    pseudonym_key: str,
    out_dir: Path,
    threads: int = 1,
    data_dir: Path | None = None,
) -> dict:
    """Predict every MR series under ``predict.input`` (module docstring); returns predict.json's dict.

    ``data_dir``: the ingested data set the model was trained on (its dataset.json gives the target and the
    image size); default ``results_dir/data``, the default data set."""
    from segsweep.training.device import resolve_device

    t0 = time.perf_counter()
    pc = PredictConfig.from_mapping(predict)
    if not pc.input:
        raise ConfigError(
            "config key 'predict.input': required for the predict target, e.g. "
            "snakemake predict --config predict='{input: /path/to/dicom, model: best}'"
        )
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    sel = resolve_model(pc.model, studies, results_dir)
    data_json = Path(data_dir if data_dir is not None else results_dir / "data") / "dataset.json"
    dataset = _dataset(data_json)
    target = dataset.get("target", "endo")
    if target not in segmod.SEGMENTS:
        raise DataError(f"{data_json}: unknown target '{target}'")
    if list(dataset.get("size") or []) != [int(x) for x in prep.size]:
        raise DataError(
            f"{data_json}: the data were made at size {dataset.get('size')}, the config's "
            f"preprocess.size is {list(prep.size)}: predict with the preprocessing the cell was trained with"
        )
    torch.set_num_threads(int(threads))
    device = resolve_device(pc.device, log)
    cells, post = model_runs(sel, results_dir, pc.ensemble)
    n_classes = int(dataset.get("n_classes", 2))
    model = Predictor(
        [CellModel(results_dir / CELLS_SUB / c, n_classes, device, pc.batch_size) for c in cells], cells, post
    )
    log.info("predict: model %s (%s) on %s", sel.cell, sel.how, device)
    if len(cells) > 1:
        log.info("predict: ensemble of the configuration's %d runs: %s", len(cells), ", ".join(cells))
    log.info("predict: post-processing %s", post)
    found = discover(pc.input, pseudonym_key)
    clear_outputs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = list(found.rows)
    t1 = time.perf_counter()
    done = []
    for s in found.series:
        try:
            res = predict_series(
                s, model, prep, target, found, rows, out_dir, selection=sel, key=pseudonym_key, deidentify=pc.deidentify
            )
        except Exception as exc:  # noqa: BLE001 - one series a scanner wrote oddly must not cost the others
            res = None
            shutil.rmtree(out_dir / s.name, ignore_errors=True)  # no half-written SEG or overlays
            msg = _safe_message(exc, found)
            rows.append(row(s.name, "", "predict_series_failed", msg))
            log.error("series %s: not predicted (%s)", s.name, msg)
        if res is not None:
            done.append(res)
            log.info("series %s: %d images", res.name, res.n_images)
    wall = time.perf_counter() - t0
    n_images = sum(r.n_images for r in done)
    if not done:
        n = len(found.series)
        rows.append(row("", "", "predict_no_series_written", f"{n} MR series found, none written"))
    rows.sort(key=lambda r: (r[0], r[1], r[3]))
    write_bytes(out_dir / "qc.csv", _qc_csv(rows).encode())
    if not done:
        raise DataError(
            f"config key 'predict.input': no series could be predicted from {len(found.series)} MR series in "
            f"{found.n_files} files; every file's reason is in {out_dir / 'qc.csv'}"
        )
    counts: dict[str, int] = {}
    for r in rows:
        if r[3]:
            counts[r[3]] = counts.get(r[3], 0) + 1
    summary = {
        "segsweep": __version__,
        "model": {
            "cell": sel.cell,
            "study": sel.study,
            "config": sel.config,
            "how": sel.how,
            "spec": pc.model,
            "ensemble": model.cells,
            "postprocessing": model.postprocessing,
        },
        "target": target,
        "deidentify": pc.deidentify,
        "device": device.type,
        "batch_size": pc.batch_size,
        "n_files": found.n_files,
        "n_series": len(done),
        "n_images": n_images,
        "series": [{"series": r.name, "patient": r.patient, "n_images": r.n_images} for r in done],
        "qc_counts": dict(sorted(counts.items())),
        "wall_s": round(wall, 3),
        "images_per_s": round(n_images / (time.perf_counter() - t1), 2) if n_images else None,
    }
    write_json(out_dir / "predict.json", summary)
    log.info(
        "predict: %d images in %d series (%d files) in %.1f s; QC: %s",
        n_images,
        len(done),
        found.n_files,
        wall,
        ", ".join(f"{k} {v}" for k, v in summary["qc_counts"].items()) or "clean",
    )
    return summary
