"""A finished cell's predictions (``native_predictions.npz``): written by the final evaluation, read by the
study's post-processing choice and ensembles (`segsweep.analysis.final`) and by anyone who wants to recompute a
reported number from files.

Per set ``s`` (``val``, ``test``) and image ``i`` (in per_image.csv's order), native shape ``(h_i, w_i)``:

* ``{s}_patient`` [N] (pseudonyms, as in per_image.csv), ``{s}_slice`` int32 [N], ``{s}_shape`` int32 [N, 2]
  (native rows, cols), ``{s}_resized`` int32 [N, 2] (size after scaling, before the centred pad/crop: with
  the network grid, the image's `preprocess.Geometry`);
* ``{s}_label`` uint8: the native-resolution label maps that were scored (0/1, or class ids), flattened and
  concatenated: exact, so every Dice / HD95 / NSD of per_image.csv is recomputed from it and the patient
  file's reference ``native_mask``;
* ``{s}_prob`` uint8 [N, C, H, W]: the probabilities on the network grid (C = 1, the sigmoid of a binary
  target; C = n_classes, the softmax over background and classes), quantised to ``q = round(255 p)``.
  `read` maps them to the native grid as the evaluation did (`preprocess.invert`, bilinear; it is linear, so
  averaging runs before or after it is the same), to within 1/510 of the evaluated probabilities. Kept on
  the network grid because it has ~7× fewer pixels than the native one (256 × 216 vs 96 × 80 in the demo),
  and a poor model's noisy probabilities hardly compress.

``np.savez_compressed`` (deflate): label maps are mostly runs of one value.
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
    """One image's saved prediction: ``label`` uint8 [h, w] (native grid), ``prob`` [C, H, W] float32 (network
    grid, dequantised), ``geometry`` (network grid ↔ native grid); `native_prob` maps ``prob`` to [C, h, w]."""

    patient: str
    slice: int
    label: np.ndarray
    prob: np.ndarray
    geometry: object  # segsweep.data.preprocess.Geometry

    def native_prob(self) -> np.ndarray:
        """The probabilities on the native grid, as the final evaluation computed them (`preprocess.invert`;
        pixels the network never saw: background)."""
        from segsweep.data import preprocess as pre

        c = self.prob.shape[0]
        fill = [1.0 if (k == 0 and c > 1) else 0.0 for k in range(c)]
        return np.stack([pre.invert(self.geometry, self.prob[k], fill=fill[k]) for k in range(c)])


def quantize(prob: np.ndarray) -> np.ndarray:
    """``round(255 p)`` as uint8 (p clipped to [0, 1])."""
    return np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)


def write(path: Path, sets: Mapping[str, object], classes: Sequence[str] = ("foreground",)) -> None:
    """Write ``sets`` (set name → an object with ``images.patient``, ``images.slice``, ``images.geometry``,
    ``native_label``, ``net_prob``: `segsweep.training.evaluate.SetResult`) atomically to ``path``."""
    arrays: dict[str, np.ndarray] = {"format": np.int32(FORMAT), "classes": np.asarray(list(classes))}
    for name, res in sets.items():
        labels, probs, geoms = res.native_label, res.net_prob, res.images.geometry
        arrays[f"{name}_patient"] = np.asarray([str(p) for p in res.images.patient])
        arrays[f"{name}_slice"] = np.asarray(res.images.slice, dtype=np.int32).reshape(-1)
        arrays[f"{name}_shape"] = np.asarray([lab.shape for lab in labels], dtype=np.int32).reshape(-1, 2)
        arrays[f"{name}_resized"] = np.asarray([g.resized for g in geoms], dtype=np.int32).reshape(-1, 2)
        arrays[f"{name}_label"] = (
            np.concatenate([lab.ravel() for lab in labels]).astype(np.uint8) if labels else np.zeros(0, np.uint8)
        )
        arrays[f"{name}_prob"] = quantize(np.stack(probs)) if probs else np.zeros((0, 1, 1, 1), np.uint8)
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
    from segsweep.data.preprocess import Geometry

    out: dict[str, list[NativePrediction]] = {}
    with np.load(Path(path), allow_pickle=False) as z:
        classes = tuple(str(c) for c in z["classes"])
        for name in sorted({k.rsplit("_", 1)[0] for k in z.files if k.endswith("_label")}):
            label, prob = z[f"{name}_label"], z[f"{name}_prob"]
            net = tuple(int(x) for x in prob.shape[2:])
            preds, at = [], 0
            rows = zip(z[f"{name}_patient"], z[f"{name}_slice"], z[f"{name}_shape"], z[f"{name}_resized"])
            for i, (patient, slc, (h, w), resized) in enumerate(rows):
                n = int(h) * int(w)
                geom = Geometry((int(h), int(w)), net, (int(resized[0]), int(resized[1])))
                p = prob[i].astype(np.float32) / 255.0
                preds.append(NativePrediction(str(patient), int(slc), label[at : at + n].reshape(h, w), p, geom))
                at += n
            out[name] = preds
    return NativeFile(classes, out)
