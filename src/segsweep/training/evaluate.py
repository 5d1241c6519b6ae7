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
from segsweep.training.metrics import (
    SliceScore,
    dice_per_image,
    hd95_mm,
    iou_per_image,
    pool_patient,
    score_slice,
    summarize,
)

PER_PATIENT_COLUMNS = ("set", "patient", "n_slices", "dice", "iou", "hd95_mm", "nsd")
# appended to per_image.csv's first columns (patient, slice, dice, iou, hd95_mm: the network grid)
NATIVE_IMAGE_COLUMNS = ("set", "native_dice", "native_iou", "native_hd95_mm", "native_nsd", "empty")
NATIVE_KEYS = ("native_mask", "native_shape", "resized_shape", "native_spacing")
SETS = ("val", "test")


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


@dataclass
class SetResult:
    """One set's evaluation: per image (network-grid monitor numbers and native `SliceScore`), per patient,
    and the summary (`metrics.summarize`)."""

    name: str
    images: EvalImages
    net: list[tuple[float, float, float]]  # (dice, iou, hd95_mm) on the network grid, monitor conventions
    scores: list[SliceScore]
    patients: list[dict]  # {"patient", **pool_patient(...)}
    summary: dict


def evaluate_set(
    name: str, images: EvalImages, logits: Callable[[np.ndarray], np.ndarray], cfg: EvaluationConfig
) -> SetResult:
    """Score one set. ``logits`` maps float32 [B,H,W] network-grid images to float32 [B,H,W] logits."""
    net, scores = [], []
    bs = 32
    for start in range(0, len(images), bs):
        x = np.stack(images.image[start : start + bs])
        z = logits(x)
        prob = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))  # sigmoid, float64: no 0.5 ties from rounding
        for k in range(len(x)):
            i = start + k
            pred = z[k] > 0  # the monitor's rule: sigmoid(z) > 0.5 ⇔ z > 0
            ref = images.mask[i] != 0
            d = float(dice_per_image(pred[None], ref[None])[0])
            j = float(iou_per_image(pred[None], ref[None])[0])
            net.append((d, j, hd95_mm(pred, ref, images.spacing[i])))
            native_pred = pre.invert(images.geometry[i], prob[k], fill=0.0) > 0.5
            scores.append(
                score_slice(
                    native_pred,
                    images.native_mask[i] != 0,
                    images.native_spacing[i],
                    tolerance_mm=cfg.nsd_tolerance_mm,
                    cap_mm=cfg.hd95_cap_mm,
                )
            )
    patients = []
    for pid in dict.fromkeys(images.patient):
        mine = [s for s, p in zip(scores, images.patient) if p == pid]
        patients.append({"patient": pid, **pool_patient(mine, tolerance_mm=cfg.nsd_tolerance_mm)})
    return SetResult(name, images, net, scores, patients, summarize(scores, patients))


def metrics_fields(val: SetResult, test: SetResult | None, cfg: EvaluationConfig) -> dict:
    """The `CellMetrics` fields of the final evaluation: ``val_<key>`` for each summary key, ``test``
    (the test summary, or None without a test set) and ``evaluation`` (settings and grid)."""
    out = {f"val_{k}": v for k, v in val.summary.items()}
    out["test"] = None if test is None else dict(test.summary)
    grid = "native" if val.images.native and (test is None or test.images.native) else "network"
    out["evaluation"] = {**cfg.to_dict(), "grid": grid}
    return out


# ------------------------------------------------------------------------------------------- files
def _num(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else repr(float(v))


def native_image_cells(res: SetResult, i: int) -> list[str]:
    """per_image.csv's native columns (NATIVE_IMAGE_COLUMNS) of image ``i`` of a set."""
    s = res.scores[i]
    return [res.name, _num(s.dice), _num(s.iou), _num(s.hd95_mm), _num(s.nsd), s.empty]


def per_patient_csv(results: Sequence[SetResult]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PER_PATIENT_COLUMNS)
    for res in results:
        for p in res.patients:
            w.writerow(
                [
                    res.name,
                    p["patient"],
                    p["n_slices"],
                    _num(p["dice"]),
                    _num(p["iou"]),
                    _num(p["hd95_mm"]),
                    _num(p["nsd"]),
                ]
            )
    return buf.getvalue()


def write_per_patient(out_dir: Path, results: Sequence[SetResult]) -> None:
    write_text(Path(out_dir) / "per_patient.csv", per_patient_csv(results))


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
