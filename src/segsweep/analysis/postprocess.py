"""Post-processing of predicted label maps: the candidates, and the rule that picks one per study on validation.

A network trained per slice can predict specks far from the heart; one speck sets HD95 to its distance. The
usual remedy keeps only the largest connected component, per slice or per 3-D volume (nnU-Net, Isensee et
al., Nat Methods 18, 203-211, 2021, decides this per data set on validation). It also removes true structure
where a weak model splits it, so it is a choice, made on validation patients and recorded (docs/evaluation.md):

* candidates (`POSTPROCESSING`, in this order): ``none``; ``largest_2d`` (per slice, keep each class's largest
  connected component); ``largest_3d`` (per patient volume, the same in 3-D: slices stacked in file order);
  ``small_2d`` (per slice, remove each class's components smaller than ``min_area_mm2``). Multi-class label
  maps are processed one class at a time; removed pixels become background (0). Components are
  face-connected (4-neighbourhood in 2-D, 6 in 3-D: `scipy.ndimage.label`'s default, as nnU-Net);
  a tie for the largest keeps the first in scan order.
* rule (`choose`): on the validation patients of the study's selected configuration (mean over its runs of
  the per-patient means), a candidate qualifies if its Dice per patient does not drop,
  ``Dice(c) ≥ Dice(none) − DICE_TOLERANCE``, and its HD95 per patient improves, ``HD95(c) < HD95(none)``;
  of those the lowest HD95 wins (ties: the earlier candidate), else ``none``.

`apply_postprocessing(name, mask, spacing)` is the one entry point, for the study's final evaluation and
for `predict`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from segsweep.errors import ConfigError
from segsweep.registry import Registry

POSTPROCESSING: Registry = Registry("post-processing", "postprocessing")
DICE_TOLERANCE = 1e-9  # "does not drop": equal up to float rounding of a mean
RULE = (
    "chosen on the validation patients of the selected configuration: a candidate qualifies if its mean Dice "
    "per patient does not drop and its mean HD95 per patient improves against no post-processing; of those the "
    "lowest HD95 wins, else none"
)


def _largest(binary: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(binary)
    if n <= 1:
        return binary
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (int(np.argmax(sizes)) + 1)


def _per_class(mask: np.ndarray, fn) -> np.ndarray:
    out = np.zeros_like(mask)
    for c in np.unique(mask):
        if c == 0:
            continue
        out[fn(mask == c)] = c
    return out


def _slices(mask: np.ndarray) -> np.ndarray:
    """[H, W] → [1, H, W]; [N, H, W] as is."""
    if mask.ndim == 2:
        return mask[None]
    if mask.ndim != 3:
        raise ValueError(f"a label map must be [H, W] or [N, H, W], got shape {mask.shape}")
    return mask


def _spacings(vol: np.ndarray, spacing) -> np.ndarray:
    """(row, col) mm of each slice of ``vol`` [N, H, W]: ``spacing`` as (row, col) or [N, 2]; None: 1 mm."""
    return np.ones((len(vol), 2)) if spacing is None else np.broadcast_to(np.asarray(spacing, float), (len(vol), 2))


@POSTPROCESSING.register("none", description="no post-processing")
def none(mask: np.ndarray, spacing=None) -> np.ndarray:
    return mask


@POSTPROCESSING.register("largest_2d", description="largest connected component per slice (each class)")
def largest_2d(mask: np.ndarray, spacing=None) -> np.ndarray:
    vol = _slices(mask)
    out = np.stack([_per_class(s, _largest) for s in vol])
    return out.reshape(mask.shape)


@POSTPROCESSING.register("largest_3d", description="largest connected component per 3-D patient volume (each class)")
def largest_3d(mask: np.ndarray, spacing=None) -> np.ndarray:
    return _per_class(_slices(mask), _largest).reshape(mask.shape)


@POSTPROCESSING.register("small_2d", description="components below min_area_mm2 removed per slice (each class)")
def small_2d(mask: np.ndarray, spacing=None, *, min_area_mm2: float = 20.0) -> np.ndarray:
    vol = _slices(mask)
    sp = _spacings(vol, spacing)

    def keep(k):
        def fn(binary):
            lab, n = ndimage.label(binary)
            if n == 0:
                return binary
            area = np.bincount(lab.ravel())[1:] * sp[k, 0] * sp[k, 1]
            return np.isin(lab, np.flatnonzero(area >= min_area_mm2) + 1)

        return fn

    return np.stack([_per_class(s, keep(k)) for k, s in enumerate(vol)]).reshape(mask.shape)


def apply_postprocessing(name: str, mask: np.ndarray, spacing=None) -> np.ndarray:
    """Post-process a label map (0 = background, 1.. = classes) with the candidate ``name``.

    ``mask``: one slice [H, W] or a patient's slices [N, H, W] (all of one size, in slice order; ``largest_3d``
    needs the stack, the 2-D candidates treat each slice alone). ``spacing``: (row, col) mm, or [N, 2] per
    slice; only ``small_2d`` reads it (None: 1 mm). Returns an array of the same shape and dtype.
    """
    if name not in POSTPROCESSING:
        raise ConfigError(f"postprocessing: unknown '{name}' (known: {', '.join(POSTPROCESSING.names())})")
    mask = np.asarray(mask)
    return POSTPROCESSING[name](mask, spacing).astype(mask.dtype, copy=False)


def postprocess_patient(name: str, labels: Sequence[np.ndarray], spacings: Sequence | None = None) -> list[np.ndarray]:
    """`apply_postprocessing` on one patient's slices of possibly different sizes: stacked top-left in the
    largest size (zeros beyond each slice), processed, cropped back."""
    if name == "none" or not labels:
        return list(labels)
    h = max(a.shape[0] for a in labels)
    w = max(a.shape[1] for a in labels)
    stack = np.zeros((len(labels), h, w), dtype=np.uint8)
    for k, a in enumerate(labels):
        stack[k, : a.shape[0], : a.shape[1]] = a
    out = apply_postprocessing(name, stack, None if spacings is None else np.asarray(spacings, float))
    return [out[k, : a.shape[0], : a.shape[1]] for k, a in enumerate(labels)]


def choose(candidates: Mapping[str, Mapping]) -> tuple[str, dict[str, bool]]:
    """The rule of the module docstring. ``candidates``: name → ``{"dice_patient", "hd95_mm_patient"}`` (validation
    means; None where unknown), ``none`` among them. Returns (chosen name, name → qualifies)."""
    base = candidates.get("none") or {}
    d0, h0 = base.get("dice_patient"), base.get("hd95_mm_patient")
    ok: dict[str, bool] = {}
    for name, c in candidates.items():
        d, h = c.get("dice_patient"), c.get("hd95_mm_patient")
        ok[name] = name != "none" and None not in (d, h, d0, h0) and d >= d0 - DICE_TOLERANCE and h < h0
    winners = [n for n in POSTPROCESSING.names() if ok.get(n)]
    if not winners:
        return "none", ok
    return min(winners, key=lambda n: (candidates[n]["hd95_mm_patient"], POSTPROCESSING.names().index(n))), ok


def describe(name: str) -> str:
    """The candidate's description with its parameters ("components below min_area_mm2 removed per slice (each
    class); min_area_mm2 = 20")."""
    text = POSTPROCESSING.entry(name).meta.get("description", name)
    params = POSTPROCESSING.params(name)
    return text + "".join(f"; {k} = {v:g}" for k, v in params.items())
