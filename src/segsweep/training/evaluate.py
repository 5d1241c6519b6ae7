"""The final evaluation of a cell: the best checkpoint on the validation and test patients, at native resolution.

Called once by `segsweep.training.loop.train_cell` after training (docs/evaluation.md has the design):

1. the network's sigmoid probabilities on the network grid are mapped back to each image's native grid
   (`segsweep.data.preprocess.invert`: undo the centred pad/crop, bilinear resize) and thresholded at 0.5;
2. each slice is scored against the native-resolution reference mask with the native pixel spacing
   (`metrics.score_slice`: Dice, IoU, HD95, NSD under the empty-mask policy);
3. slices are pooled per patient (`metrics.pool_patient`) and summarised per set (`metrics.summarize`).

Validation numbers are reported; test numbers are only recorded (metrics.json ``test``, per_patient.csv,
per_image.csv rows with ``set`` = test): nothing in the pipeline chooses with them. A patient file written
before the native arrays existed is evaluated on the network grid instead (``grid`` = "network"), with a
warning; rerun ingest to get native-resolution numbers.

The validation predictions also decide whether a finite-loss run **collapsed** (`collapse_stats`,
`collapse_reason`): on the validation slices whose reference is non-empty, a predicted area below
``COLLAPSE_EMPTY_RATIO`` of the reference area (collapsed to empty) or a prediction covering at least
``COLLAPSE_FULL_COVERAGE`` of those slices' pixels (collapsed to full); docs/evaluation.md says why.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segsweep.data import preprocess as pre
from segsweep.errors import DataError
from segsweep.io import write_text
from segsweep.paths import PER_PATIENT
from segsweep.training.metrics import (
    SUMMARY_KEYS,
    SliceScore,
    class_mean,
    dice_per_image,
    hd95_mm,
    iou_per_image,
    pool_patient,
    score_slice,
    summarize,
)
from segsweep.training.record import COLLAPSE_EMPTY_RATIO, COLLAPSE_FULL_COVERAGE

PER_PATIENT_COLUMNS = ("set", "patient", "n_slices", "dice", "iou", "hd95_mm", "nsd")
# appended to per_image.csv's first columns (patient, slice, dice, iou, hd95_mm: the network grid)
NATIVE_IMAGE_COLUMNS = ("set", "native_dice", "native_iou", "native_hd95_mm", "native_nsd", "empty")
NATIVE_KEYS = ("native_mask", "native_shape", "resized_shape", "native_spacing")
SETS = ("val", "test")
# images per call of the network (`evaluate_set`'s ``logits``); `network_logits` computes them in these chunks
CHUNK = 32


@dataclass(frozen=True)
class EvaluationConfig:
    """The config's ``evaluation`` section (schema defaults)."""

    nsd_tolerance_mm: float = 2.0
    hd95_cap_mm: float | None = None

    @classmethod
    def from_mapping(cls, d: Mapping | None) -> EvaluationConfig:
        d = d or {}
        cap = d.get("hd95_cap_mm")
        return cls(float(d.get("nsd_tolerance_mm", 2.0)), None if cap is None else float(cap))

    def to_dict(self) -> dict:
        return {"nsd_tolerance_mm": self.nsd_tolerance_mm, "hd95_cap_mm": self.hd95_cap_mm}


@dataclass
class EvalImages:
    """The images of one set: network-grid inputs and, per image, its native reference and geometry."""

    patient: list[str] = field(default_factory=list)
    slice: list[int] = field(default_factory=list)
    image: list[np.ndarray] = field(default_factory=list)  # float32 [H,W] network grid
    mask: list[np.ndarray] = field(default_factory=list)  # uint8 [H,W] network grid
    spacing: list[np.ndarray] = field(default_factory=list)  # (row, col) mm network grid
    native_mask: list[np.ndarray] = field(default_factory=list)  # uint8 [h,w] native grid
    native_spacing: list[np.ndarray] = field(default_factory=list)
    geometry: list[pre.Geometry] = field(default_factory=list)
    native: bool = True  # False: some patient file lacks the native arrays → everything on the network grid

    def __len__(self) -> int:
        return len(self.slice)


def load_images(data_dir: Path, pids: Sequence[str]) -> EvalImages:
    """The images of ``pids`` (in this order, each patient's in file order) with their native arrays."""
    out = EvalImages()
    for pid in pids:
        path = Path(data_dir) / f"{pid}.npz"
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in ("image", "mask", "spacing", "slice")}
                native = all(k in z.files for k in NATIVE_KEYS)
                if native:
                    arrays.update({k: z[k] for k in NATIVE_KEYS})
        except FileNotFoundError:
            raise DataError(f"patient file not found: {path} (listed in the split, missing from the data)") from None
        except KeyError as exc:
            raise DataError(f"patient file {path} lacks the array {exc}") from None
        out.native &= native
        size = tuple(arrays["image"].shape[1:])
        for i in range(len(arrays["slice"])):
            out.patient.append(pid)
            out.slice.append(int(arrays["slice"][i]))
            out.image.append(arrays["image"][i].astype(np.float32, copy=False))
            out.mask.append(arrays["mask"][i])
            out.spacing.append(arrays["spacing"][i].astype(float))
            if native:
                h, w = (int(x) for x in arrays["native_shape"][i])
                out.native_mask.append(arrays["native_mask"][i][:h, :w])
                out.native_spacing.append(arrays["native_spacing"][i].astype(float))
                rs = tuple(int(x) for x in arrays["resized_shape"][i])
                out.geometry.append(pre.Geometry((h, w), size, rs))
    if not out.native:  # mixed old and new files: one grid for the whole set
        out.native_mask, out.native_spacing = list(out.mask), list(out.spacing)
        out.geometry = [pre.Geometry(m.shape, m.shape, m.shape) for m in out.mask]
    return out


@dataclass(frozen=True)
class ClassMean:
    """A slice's scores over the foreground classes of a multi-class target (per_image.csv's ``native_*``):
    means over the classes not both-empty on it; ``empty`` "both" if every class is both-empty, "one" if some
    class is one-empty."""

    dice: float
    iou: float
    hd95_mm: float
    nsd: float
    empty: str


@dataclass
class SetResult:
    """One set's evaluation: per image (network-grid monitor numbers and native `SliceScore`), per patient,
    and the summary (`metrics.summarize`). Multi-class targets: ``scores`` / ``patients`` / ``summary`` are the
    means over the foreground classes, ``per_class`` holds each class's own (name → scores, patients, summary)."""

    name: str
    images: EvalImages
    net: list[tuple[float, float, float]]  # (dice, iou, hd95_mm) on the network grid, monitor conventions
    scores: list[SliceScore] | list[ClassMean]
    patients: list[dict]  # {"patient", **pool_patient(...)}
    summary: dict
    collapse: dict = field(default_factory=dict)  # class name → `collapse_stats`
    per_class: dict = field(default_factory=dict)  # multi-class only: class name → (scores, patients, summary)
    # per image the scored label map on its native grid (0/1, or class ids) and the probabilities on the
    # network grid ([1,H,W] sigmoid, or [C+1,H,W] softmax; `preprocess.invert` maps them to the native grid),
    # saved by `native_predictions.write` for audits and ensembles
    native_label: list = field(default_factory=list)
    net_prob: list = field(default_factory=list)


def evaluate_set(
    name: str,
    images: EvalImages,
    logits: Callable[[np.ndarray], np.ndarray],
    cfg: EvaluationConfig,
    classes: Sequence[str] = ("foreground",),
) -> SetResult:
    """Score one set. ``logits`` maps float32 [B,H,W] network-grid images to float32 logits: [B,H,W] (one
    sigmoid channel) for a binary target, [B,C+1,H,W] (softmax over background + the C ``classes``, label
    value k+1 = ``classes[k]``) for a multi-class one."""
    if len(classes) > 1:
        return _evaluate_multiclass(name, images, logits, cfg, tuple(classes))
    net, scores, labels, probs = [], [], [], []
    for start in range(0, len(images), CHUNK):
        x = np.stack(images.image[start : start + CHUNK])
        z = logits(x)
        with np.errstate(over="ignore"):  # exp(-z) = inf for a very negative logit: the probability is then 0
            prob = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))  # sigmoid, float64: no 0.5 ties from rounding
        for k in range(len(x)):
            i = start + k
            pred = z[k] > 0  # the monitor's rule: sigmoid(z) > 0.5 ⇔ z > 0
            ref = images.mask[i] != 0
            d = float(dice_per_image(pred[None], ref[None])[0])
            j = float(iou_per_image(pred[None], ref[None])[0])
            net.append((d, j, hd95_mm(pred, ref, images.spacing[i])))
            native_prob = pre.invert(images.geometry[i], prob[k], fill=0.0)
            native_pred = native_prob > 0.5
            scores.append(_score(native_pred, images.native_mask[i] != 0, images.native_spacing[i], cfg))
            labels.append(native_pred.astype(np.uint8))
            probs.append(prob[k][None])
    patients = _pool(scores, images.patient, cfg)
    collapse = {"foreground": collapse_stats(scores, image_areas(images))}
    res = SetResult(name, images, net, scores, patients, summarize(scores, patients), collapse)
    res.native_label, res.net_prob = labels, probs
    return res


def network_logits(images: EvalImages, logits: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """``logits`` of every image, in the chunks (`CHUNK`) and order in which `evaluate_set` asks for them:
    the network's part of the evaluation, done up front so that the training device can be let go before
    the CPU-heavy scoring, which reads them back through `replay` (the same batches: the same numbers)."""
    return [logits(np.stack(images.image[s : s + CHUNK])) for s in range(0, len(images), CHUNK)]


def replay(chunks: Sequence[np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """A ``logits`` for `evaluate_set` that hands back `network_logits`' chunks, one per call, in order."""
    it = iter(chunks)

    def logits(x: np.ndarray) -> np.ndarray:
        z = next(it)
        if len(z) != len(x):  # a different chunking would pair logits with the wrong images
            raise RuntimeError(f"precomputed logits for {len(z)} images, asked for {len(x)}")
        return z

    return logits


def _score(pred: np.ndarray, ref: np.ndarray, spacing, cfg: EvaluationConfig) -> SliceScore:
    return score_slice(pred, ref, spacing, tolerance_mm=cfg.nsd_tolerance_mm, cap_mm=cfg.hd95_cap_mm)


def _pool(scores: Sequence[SliceScore], patient: Sequence[str], cfg: EvaluationConfig) -> list[dict]:
    out = []
    for pid in dict.fromkeys(patient):
        mine = [s for s, p in zip(scores, patient) if p == pid]
        out.append({"patient": pid, **pool_patient(mine, tolerance_mm=cfg.nsd_tolerance_mm)})
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _evaluate_multiclass(
    name: str, images: EvalImages, logits: Callable, cfg: EvaluationConfig, classes: tuple[str, ...]
) -> SetResult:
    """Softmax over background + classes; on the network grid the argmax (the monitor's rule), at native
    resolution the argmax of each channel's probability map mapped back (`preprocess.invert`; pixels the network
    never saw are background); every class scored on its own (``label == k``), then averaged."""
    n = len(classes) + 1
    net: list = []
    per: list[list[SliceScore]] = [[] for _ in classes]
    labels, probs = [], []
    for start in range(0, len(images), CHUNK):
        x = np.stack(images.image[start : start + CHUNK])
        z = logits(x)
        prob = _softmax(z)
        for k in range(len(x)):
            i = start + k
            lab, ref = z[k].argmax(0), images.mask[i]
            sp = images.spacing[i]
            d = [float(dice_per_image((lab == c)[None], (ref == c)[None])[0]) for c in range(1, n)]
            j = [float(iou_per_image((lab == c)[None], (ref == c)[None])[0]) for c in range(1, n)]
            h = class_mean(np.array([[hd95_mm(lab == c, ref == c, sp)] for c in range(1, n)]))[0]
            net.append((float(np.mean(d)), float(np.mean(j)), float(h)))
            geom = images.geometry[i]
            native = np.stack([pre.invert(geom, prob[k, c], fill=1.0 if c == 0 else 0.0) for c in range(n)])
            native_lab, native_ref = native.argmax(0), images.native_mask[i]
            labels.append(native_lab.astype(np.uint8))
            probs.append(prob[k])
            for c in range(1, n):
                per[c - 1].append(_score(native_lab == c, native_ref == c, images.native_spacing[i], cfg))
    return _multiclass_result(name, images, net, per, cfg, classes, labels, probs)


def _multiclass_result(name, images, net, per, cfg, classes, labels, probs) -> SetResult:
    """A multi-class `SetResult` from each class's slice scores ``per[k]``: pooled per class, then averaged."""
    areas = image_areas(images)
    per_class, collapse = {}, {}
    for c, sc in zip(classes, per):
        pats = _pool(sc, images.patient, cfg)
        per_class[c] = (sc, pats, summarize(sc, pats))
        collapse[c] = collapse_stats(sc, areas)
    scores = [_class_mean_slice([p[i] for p in per]) for i in range(len(images))]
    counts = {pid: 0 for pid in images.patient}
    for sc, pid in zip(scores, images.patient):
        counts[pid] += sc.empty != "both"
    patients = _class_mean_patients([v[1] for v in per_class.values()], counts)
    summary = _class_mean_summary([v[2] for v in per_class.values()], scores, patients)
    return SetResult(name, images, net, scores, patients, summary, collapse, per_class, labels, probs)


def score_labels(
    name: str,
    images: EvalImages,
    labels: Sequence[np.ndarray],
    cfg: EvaluationConfig,
    classes: Sequence[str] = ("foreground",),
) -> SetResult:
    """Score given native-resolution label maps (one per image of ``images``: 0/1, or class ids) exactly as
    `evaluate_set` scores a network's: for re-scoring saved predictions after post-processing or averaging
    (`segsweep.analysis.final`). The result has no network-grid numbers (``net`` empty)."""
    if len(labels) != len(images):
        raise DataError(f"{name}: {len(labels)} predictions for {len(images)} images")
    labels = list(labels)
    if len(classes) < 2:
        scores = [
            _score(lab != 0, images.native_mask[i] != 0, images.native_spacing[i], cfg) for i, lab in enumerate(labels)
        ]
        patients = _pool(scores, images.patient, cfg)
        collapse = {"foreground": collapse_stats(scores, image_areas(images))}
        return SetResult(name, images, [], scores, patients, summarize(scores, patients), collapse, {}, labels)
    per = [
        [_score(lab == c, images.native_mask[i] == c, images.native_spacing[i], cfg) for i, lab in enumerate(labels)]
        for c in range(1, len(classes) + 1)
    ]
    return _multiclass_result(name, images, [], per, cfg, tuple(classes), labels, [])


def _mean_of(values) -> float:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def _class_mean_slice(scores: Sequence[SliceScore]) -> ClassMean:
    used = [s for s in scores if s.empty != "both"]
    empty = "both" if not used else ("one" if any(s.empty == "one" for s in used) else "")
    return ClassMean(*(_mean_of(getattr(s, k) for s in used) for k in ("dice", "iou", "hd95_mm", "nsd")), empty)


def _class_mean_patients(per_class: Sequence[Sequence[dict]], n_slices: Mapping[str, int]) -> list[dict]:
    """Per patient: the mean over classes of each class's pooled scores (classes with slices) and
    ``n_slices``, the patient's slices on which some class is scored."""
    out = []
    for rows in zip(*per_class):
        used = [r for r in rows if r["n_slices"]]
        row = {"patient": rows[0]["patient"]}
        row.update({k: _mean_of(r[k] for r in used) for k in ("dice", "iou", "hd95_mm", "nsd")})
        row["n_slices"] = n_slices[row["patient"]]
        out.append(row)
    return out


def _class_mean_summary(summaries: Sequence[dict], scores: Sequence[ClassMean], patients: Sequence[dict]) -> dict:
    """The set's numbers for a multi-class target: each metric the mean over the classes of the per-class value
    (`metrics.summarize`); ``n_slices`` = slices with some class scored, ``n_patients`` = patients with such a
    slice, ``n_excluded_both_empty`` = slices where every class is both-empty, ``n_one_empty`` = slices with a
    one-empty class (each class's own counts are in its summary)."""
    out = {}
    for k in SUMMARY_KEYS:
        if k.startswith("n_"):
            continue
        v = [s[k] for s in summaries if s[k] is not None]
        out[k] = float(np.mean(v)) if v else None
    out.update(
        n_slices=sum(s.empty != "both" for s in scores),
        n_patients=sum(p["n_slices"] > 0 for p in patients),
        n_excluded_both_empty=sum(s.empty == "both" for s in scores),
        n_one_empty=sum(s.empty == "one" for s in scores),
    )
    return {k: out[k] for k in SUMMARY_KEYS}


# ------------------------------------------------------------------------------------------- collapse
def image_areas(images: EvalImages) -> list[float]:
    """Each image's area in mm² on the grid it is scored on (native, or the network grid for old files)."""
    return [float(m.shape[0] * m.shape[1] * sp[0] * sp[1]) for m, sp in zip(images.native_mask, images.native_spacing)]


def collapse_stats(scores: Sequence[SliceScore], image_mm2: Sequence[float]) -> dict:
    """How much a prediction covers, over the slices whose reference mask is non-empty (mm², scored grid):

    ``area_ratio = Σ|P| / Σ|G|`` (predicted over reference area), ``coverage = Σ|P| / Σ|image|`` (share of those
    slices' pixels predicted as foreground) and ``n_slices``; both ratios None when no slice has a reference.
    """
    used = [(s, a) for s, a in zip(scores, image_mm2) if s.ref_mm2 > 0]
    if not used:
        return {"area_ratio": None, "coverage": None, "n_slices": 0}
    pred = sum(s.pred_mm2 for s, _ in used)
    return {
        "area_ratio": pred / sum(s.ref_mm2 for s, _ in used),
        "coverage": pred / sum(a for _, a in used),
        "n_slices": len(used),
    }


def collapse_way(stats: Mapping) -> str | None:
    """ "empty" (area ratio < COLLAPSE_EMPTY_RATIO), "full" (coverage ≥ COLLAPSE_FULL_COVERAGE) or None."""
    if not stats.get("n_slices"):
        return None  # nothing to judge by
    if stats["area_ratio"] < COLLAPSE_EMPTY_RATIO:
        return "empty"
    if stats["coverage"] >= COLLAPSE_FULL_COVERAGE:
        return "full"
    return None


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def collapse_reason(collapse: Mapping[str, Mapping]) -> str | None:
    """The ``reason`` of a collapsed run, one clause per collapsed class ("collapsed to empty: ..."), or None
    when no class collapsed. A single class named "foreground" (binary targets) is not named."""
    parts = []
    for name, st in collapse.items():
        way = collapse_way(st)
        if way is None:
            continue
        what = "the structure" if name == "foreground" else name
        where = f"the {st['n_slices']} validation slices that contain {what}"
        if way == "empty":
            txt = (
                f"predicted area {_pct(st['area_ratio'])} of the reference area on {where} "
                f"(< {_pct(COLLAPSE_EMPTY_RATIO)}; the prediction covers {_pct(st['coverage'])} of their pixels)"
            )
        else:
            txt = (
                f"the prediction covers {_pct(st['coverage'])} of the pixels of {where} "
                f"(≥ {_pct(COLLAPSE_FULL_COVERAGE)}; {st['area_ratio']:.1f} × the reference area)"
            )
        parts.append(("" if name == "foreground" else f"{name} ") + f"collapsed to {way}: {txt}")
    return "; ".join(parts) or None


def metrics_fields(val: SetResult, test: SetResult | None, cfg: EvaluationConfig) -> dict:
    """The `CellMetrics` fields of the final evaluation: ``val_<key>`` for each summary key, ``test``
    (the test summary, or None without a test set), ``evaluation`` (settings and grid), ``val_collapse``
    and, for a multi-class target, ``val_per_class`` (class → its summary; ``test`` gets ``per_class``)."""
    out = {f"val_{k}": v for k, v in val.summary.items()}
    out["test"] = None if test is None else dict(test.summary)
    if val.per_class:
        out["val_per_class"] = {c: dict(v[2]) for c, v in val.per_class.items()}
        if test is not None:
            out["test"]["per_class"] = {c: dict(v[2]) for c, v in test.per_class.items()}
    grid = "native" if val.images.native and (test is None or test.images.native) else "network"
    out["evaluation"] = {**cfg.to_dict(), "grid": grid}
    out["val_collapse"] = {k: dict(v) for k, v in val.collapse.items()}
    return out


# ------------------------------------------------------------------------------------------- files
def _num(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else repr(float(v))


def class_image_columns(classes: Sequence[str]) -> tuple[str, ...]:
    """per_image.csv's columns after NATIVE_IMAGE_COLUMNS: none for a binary target, else per class
    ``native_dice_<c>, native_iou_<c>, native_hd95_mm_<c>, native_nsd_<c>, empty_<c>``."""
    if len(classes) < 2:
        return ()
    keys = ("native_dice", "native_iou", "native_hd95_mm", "native_nsd", "empty")
    return tuple(f"{k}_{c}" for c in classes for k in keys)


def class_patient_columns(classes: Sequence[str]) -> tuple[str, ...]:
    """per_patient.csv's columns after PER_PATIENT_COLUMNS: none for a binary target, else per class
    ``n_slices_<c>, dice_<c>, iou_<c>, hd95_mm_<c>, nsd_<c>``."""
    if len(classes) < 2:
        return ()
    return tuple(f"{k}_{c}" for c in classes for k in ("n_slices", "dice", "iou", "hd95_mm", "nsd"))


def _cells(s) -> list[str]:
    return [_num(s.dice), _num(s.iou), _num(s.hd95_mm), _num(s.nsd), s.empty]


def native_image_cells(res: SetResult, i: int) -> list[str]:
    """per_image.csv's native columns (NATIVE_IMAGE_COLUMNS, then `class_image_columns`) of image ``i``."""
    out = [res.name, *_cells(res.scores[i])]
    for sc, _, _ in res.per_class.values():
        out += _cells(sc[i])
    return out


def per_patient_csv(results: Sequence[SetResult], classes: Sequence[str] = ("foreground",)) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PER_PATIENT_COLUMNS + class_patient_columns(classes))
    for res in results:
        per = [pats for _, pats, _ in res.per_class.values()]
        for k, p in enumerate(res.patients):
            row = [res.name, p["patient"], p["n_slices"], *(_num(p[m]) for m in ("dice", "iou", "hd95_mm", "nsd"))]
            for pats in per:
                q = pats[k]
                row += [q["n_slices"], *(_num(q[m]) for m in ("dice", "iou", "hd95_mm", "nsd"))]
            w.writerow(row)
    return buf.getvalue()


def write_per_patient(out_dir: Path, results: Sequence[SetResult], classes: Sequence[str] = ("foreground",)) -> None:
    write_text(Path(out_dir) / PER_PATIENT, per_patient_csv(results, classes))


def log_summary(log: logging.Logger, res: SetResult) -> None:
    s = res.summary
    log.info(
        "%s (%s grid, %d patients, %d slices; %d both-empty excluded, %d one-empty at worst case): "
        "Dice per patient %s, per slice %s, HD95 %s mm, NSD %s",
        res.name,
        "native" if res.images.native else "network",
        s["n_patients"],
        s["n_slices"],
        s["n_excluded_both_empty"],
        s["n_one_empty"],
        *(f"{s[k]:.4f}" if s[k] is not None else "–" for k in ("dice_patient", "dice", "hd95_mm", "nsd")),
    )
    for c, (_, _, cs) in res.per_class.items():
        log.info(
            "%s %s: Dice per patient %s, HD95 %s mm", res.name, c, *(_fmt4(cs[k]) for k in ("dice_patient", "hd95_mm"))
        )


def _fmt4(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"
