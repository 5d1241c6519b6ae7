"""A finished cell's predictions at native resolution (``native_predictions.npz``): written by the final
evaluation, read by the study's post-processing choice and ensembles (`segsweep.analysis.final`) and by anyone
who wants to recompute a reported number from files.

Per set ``s`` (``val``, ``test``) and image ``i`` (in per_image.csv's order), with shape ``(h_i, w_i)`` and C
probability channels (1 for a binary target: the sigmoid of the foreground; ``n_classes`` for a multi-class
one: the softmax over background and the classes):

* ``{s}_patient`` [N] (pseudonyms, as in per_image.csv), ``{s}_slice`` int32 [N], ``{s}_shape`` int32 [N, 2];
* ``{s}_label`` uint8, the images' label maps (the prediction that was scored: 0/1, or class ids) flattened
  and concatenated: exact, so every Dice / HD95 / NSD of per_image.csv is recomputed from it and the
  reference ``native_mask`` of the patient file;
* ``{s}_prob`` uint8, each image's [C, h, w] probabilities quantised to ``q = round(255 p)``, flattened and
  concatenated (``p̂ = q / 255``, error ≤ 1/510). For a binary target q is kept on the label's side of the
  threshold (``q ≥ 128`` ⇔ label 1), so thresholding ``p̂ > 0.5`` gives back the label exactly.

``np.savez_compressed`` (deflate): saturated probabilities and label maps are mostly runs of one value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segsweep.io import atomic_path

FILE = "native_predictions.npz"
FORMAT = 1


@dataclass(frozen=True)
class NativePrediction:
    """One image's saved prediction: ``label`` uint8 [h, w], ``prob`` float32 [C, h, w] (dequantised)."""

    patient: str
    slice: int
    label: np.ndarray
    prob: np.ndarray


def quantize(prob: np.ndarray, label: np.ndarray | None = None) -> np.ndarray:
    """``round(255 p)`` as uint8; with a binary ``label`` ([h, w], prob [1, h, w]) the value is moved to the
    label's side of 127.5 so that ``q / 255 > 0.5`` reproduces the label."""
    q = np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)
    if label is not None and q.shape[0] == 1:
        on = label.astype(bool)[None]
        q = np.where(on, np.maximum(q, 128), np.minimum(q, 127)).astype(np.uint8)
    return q


def write(path: Path, sets: Mapping[str, object], classes: Sequence[str] = ("foreground",)) -> None:
    """Write ``sets`` (set name → an object with ``images.patient``, ``images.slice``, ``native_label``,
    ``native_prob``: `segsweep.training.evaluate.SetResult`) atomically to ``path``."""
    arrays: dict[str, np.ndarray] = {"format": np.int32(FORMAT), "classes": np.asarray(list(classes))}
    for name, res in sets.items():
        labels, probs = res.native_label, res.native_prob
        binary = len(classes) < 2
        arrays[f"{name}_patient"] = np.asarray([str(p) for p in res.images.patient])
        arrays[f"{name}_slice"] = np.asarray(res.images.slice, dtype=np.int32).reshape(-1)
        arrays[f"{name}_shape"] = np.asarray([lab.shape for lab in labels], dtype=np.int32).reshape(-1, 2)
        arrays[f"{name}_label"] = (
            np.concatenate([lab.ravel() for lab in labels]).astype(np.uint8) if labels else np.zeros(0, np.uint8)
        )
        arrays[f"{name}_prob"] = (
            np.concatenate([quantize(p, lab if binary else None).ravel() for p, lab in zip(probs, labels)])
            if probs
            else np.zeros(0, np.uint8)
        )
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


@dataclass(frozen=True)
class NativeFile:
    """A read ``native_predictions.npz``: the target's foreground ``classes`` and, per set, its images."""

    classes: tuple[str, ...]
    sets: dict[str, list[NativePrediction]]


def read(path: Path) -> NativeFile:
    """The file's classes and, per set, its images' `NativePrediction` in file order. FileNotFoundError
    propagates."""
    out: dict[str, list[NativePrediction]] = {}
    with np.load(Path(path), allow_pickle=False) as z:
        classes = tuple(str(c) for c in z["classes"])
        channels = 1 if len(classes) < 2 else len(classes) + 1
        for name in sorted({k.rsplit("_", 1)[0] for k in z.files if k.endswith("_label")}):
            shapes, label, prob = z[f"{name}_shape"], z[f"{name}_label"], z[f"{name}_prob"]
            preds, at = [], 0
            for patient, slc, (h, w) in zip(z[f"{name}_patient"], z[f"{name}_slice"], shapes):
                n = int(h) * int(w)
                lab = label[at : at + n].reshape(h, w)
                p = prob[at * channels : (at + n) * channels].reshape(channels, h, w).astype(np.float32) / 255.0
                preds.append(NativePrediction(str(patient), int(slc), lab, p))
                at += n
            out[name] = preds
    return NativeFile(classes, out)
