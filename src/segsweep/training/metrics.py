"""Evaluation metrics on binary masks: the per-epoch monitor (Dice/IoU per image on device, HD95 in mm) and
the final evaluation at native resolution (Dice, IoU, HD95, NSD per slice and per patient, with an explicit
empty-mask policy). The design is in docs/evaluation.md.

Monitor conventions (``dice_per_image``, ``iou_per_image``, ``hd95_mm``; used on the network grid during
training and in the first columns of per_image.csv; they differ from MONAI, which returns NaN for Dice/IoU
when both masks are empty):

* Dice / IoU: both masks empty → 1.0; exactly one empty → 0.0.
* HD95: NaN when either mask is empty (a surface distance needs two surfaces).

Final-evaluation conventions (``score_slice``, ``pool_patient``, ``summarize``), following Metrics Reloaded
(Maier-Hein et al., "Metrics reloaded: recommendations for image analysis validation", Nat Methods 21,
195-212, 2024; Reinke et al., "Understanding metric-related pitfalls in image analysis validation", Nat
Methods 21, 182-194, 2024):

* both masks empty → the slice is **excluded** from every mean and counted (``n_excluded_both_empty``): a
  perfect score there would reward a model for empty slices, a zero would punish a correct answer;
* exactly one mask empty → the **worst case**: Dice 0, IoU 0, NSD 0, HD95 = the cap (``hd95_cap_mm``, by
  default the diagonal of the native image in mm, larger than any distance inside the image), counted
  (``n_one_empty``); every HD95 is also clipped to the cap, so a miss is never better than a bad contour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from segsweep.lazy import LazyModule

if TYPE_CHECKING:
    from torch import Tensor

# the monitor's functions use torch; the final-evaluation ones (score_slice, pool_patient, summarize) are numpy
# only and run where torch is not installed (the study's final evaluation, segsweep.analysis.final)
torch = LazyModule("torch")

__all__ = [
    "dice_per_image",
    "iou_per_image",
    "hd95_mm",
    "hd95_per_image",
    "surface_distances",
    "nsd",
    "diagonal_mm",
    "SliceScore",
    "score_slice",
    "pool_patient",
    "summarize",
    "class_mean",
    "class_dice_iou",
]


def _as_flat_bool(x, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.is_floating_point():
        # A probability map passed by mistake would count every non-zero pixel as foreground.
        raise TypeError(f"{name} must be a binary bool/integer tensor (threshold it first), got {x.dtype}")
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"{name} must be [B,H,W] or [B,1,H,W], got shape {tuple(x.shape)}")
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"{name} must be [B,H,W] or [B,1,H,W], got shape {tuple(x.shape)}")
    x = x.reshape(x.shape[0], -1)
    return x if x.dtype == torch.bool else x != 0


def _counts(pred, target) -> tuple[Tensor, Tensor, Tensor]:
    p, g = _as_flat_bool(pred, "pred"), _as_flat_bool(target, "target")
    if p.shape != g.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}")
    inter = (p & g).sum(1).float()
    return inter, p.sum(1).float(), g.sum(1).float()


def dice_per_image(pred: Tensor, target: Tensor) -> Tensor:
    """Dice ``2|P∩G| / (|P| + |G|)`` per image → float32 tensor [B] on the inputs' device.

    ``pred``/``target``: binary (bool or integer, non-zero = foreground) [B,H,W] or [B,1,H,W]. Both empty →
    1.0, one empty → 0.0. Pure tensor ops: no host synchronisation, so it can run inside the epoch loop.
    """
    inter, ps, gs = _counts(pred, target)
    den = ps + gs
    return torch.where(den > 0, 2.0 * inter / den.clamp_min(1.0), torch.ones_like(den))


def iou_per_image(pred: Tensor, target: Tensor) -> Tensor:
    """IoU (Jaccard) ``|P∩G| / |P∪G|`` per image → float32 tensor [B]; both empty → 1.0, one empty → 0.0."""
    inter, ps, gs = _counts(pred, target)
    union = ps + gs - inter
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))


def _edges(mask: np.ndarray) -> np.ndarray:
    # Boundary pixels: the mask minus its erosion by the 4-connected cross. scipy's border_value=0 treats
    # the outside of the image as background, so a mask touching the image border has an edge there.
    return mask & ~ndimage.binary_erosion(mask)


def hd95_mm(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm between two binary 2-D masks.

    Boundaries are the mask pixels removed by one 4-connected erosion. For each boundary pixel of one mask
    the Euclidean distance (in mm, via ``scipy.ndimage.distance_transform_edt`` with
    ``sampling = spacing``) to the nearest boundary pixel of the other is taken;
    ``HD95 = max(P95(d(pred → target)), P95(d(target → pred)))`` with linear-interpolated percentiles.

    This is the definition of ``monai.metrics.compute_hausdorff_distance(percentile=95, spacing=...)``
    (max of the two directed 95th percentiles; Huttenlocher et al., IEEE TPAMI 1993, partial Hausdorff
    distance). MedPy's ``hd95`` instead takes the percentile of the two distance sets pooled; the two agree
    for symmetric configurations and differ slightly otherwise.

    ``spacing`` = (row_mm, col_mm). Returns NaN when either mask is empty (MONAI: NaN for both empty,
    inf for one empty).
    """
    p, g, sp = _check_pair(pred, target, spacing, "hd95_mm")
    if not p.any() or not g.any():
        return float("nan")
    d_pg, d_gp = _distances(p, g, sp)
    return float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))


def _check_pair(pred, target, spacing, name: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    p = np.asarray(pred).astype(bool, copy=False)
    g = np.asarray(target).astype(bool, copy=False)
    if p.ndim != 2 or p.shape != g.shape:
        raise ValueError(f"{name} needs two 2-D masks of one shape, got {p.shape} and {g.shape}")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 2 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be two positive (row_mm, col_mm) values, got {spacing!r}")
    return p, g, sp


def _distances(p: np.ndarray, g: np.ndarray, sp) -> tuple[np.ndarray, np.ndarray]:
    # Work on the bounding box of both masks plus a one-pixel margin (clipped at the image border): the
    # edges and the nearest-edge distances are the same as on the full image, at a fraction of the cost.
    rows = np.flatnonzero((p | g).any(1))
    cols = np.flatnonzero((p | g).any(0))
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, p.shape[0])
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, p.shape[1])
    ep, eg = _edges(p[r0:r1, c0:c1]), _edges(g[r0:r1, c0:c1])
    d_pg = ndimage.distance_transform_edt(~eg, sampling=sp)[ep]
    d_gp = ndimage.distance_transform_edt(~ep, sampling=sp)[eg]
    return d_pg, d_gp


def surface_distances(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Boundary-to-boundary distances in mm: (``d(∂P → ∂G)`` for every boundary pixel of ``pred``,
    ``d(∂G → ∂P)`` for every boundary pixel of ``target``), boundaries and distances as in `hd95_mm`.

    Both masks must be non-empty (ValueError otherwise: the empty-mask policy is the caller's, see
    `score_slice`).
    """
    p, g, sp = _check_pair(pred, target, spacing, "surface_distances")
    if not p.any() or not g.any():
        raise ValueError("surface_distances needs two non-empty masks")
    return _distances(p, g, sp)


def nsd(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float], tolerance_mm: float) -> float:
    """Normalised surface Dice (NSD, "surface Dice") at tolerance ``τ`` mm between two binary 2-D masks::

        NSD = (|{p ∈ ∂P : d(p, ∂G) ≤ τ}| + |{g ∈ ∂G : d(g, ∂P) ≤ τ}|) / (|∂P| + |∂G|)

    with ∂ the boundary pixels (one 4-connected erosion, as in `hd95_mm`) and d the Euclidean distance in
    mm (Nikolov et al., "Clinically applicable segmentation of head and neck anatomy for radiotherapy",
    J Med Internet Res 23(7):e26151, 2021; Metrics Reloaded's boundary-based overlap metric). This is
    ``monai.metrics.compute_surface_dice(..., class_thresholds=[τ], spacing=...)`` without sub-voxel
    boundaries. Both empty → NaN; exactly one empty → 0.0 (as MONAI).
    """
    p, g, sp = _check_pair(pred, target, spacing, "nsd")
    if not p.any() and not g.any():
        return float("nan")
    if not p.any() or not g.any():
        return 0.0
    d_pg, d_gp = _distances(p, g, sp)
    tau = float(tolerance_mm)
    return float((np.count_nonzero(d_pg <= tau) + np.count_nonzero(d_gp <= tau)) / (d_pg.size + d_gp.size))


def diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Diagonal of an image in mm, ``sqrt((H·s_row)² + (W·s_col)²)``: the default HD95 cap (longer than any
    distance between two pixel centres of the image)."""
    return float(math.hypot(shape[0] * float(spacing[0]), shape[1] * float(spacing[1])))


# ------------------------------------------------------------------------------------ final evaluation
@dataclass(frozen=True)
class SliceScore:
    """One slice's scores under the empty-mask policy, and what pooling over a patient needs.

    ``empty``: "" (both masks non-empty), "one" (worst case) or "both" (excluded: every score NaN).
    ``d_pred`` / ``d_ref``: distances (mm, clipped to ``cap_mm``) of the prediction's / reference's boundary
    pixels to the other boundary; a boundary facing an empty mask gets ``cap_mm`` for each of its pixels.
    ``inter_mm2``, ``pred_mm2``, ``ref_mm2``: |P∩G|, |P|, |G| in mm² (pixel counts × pixel area).
    """

    dice: float
    iou: float
    hd95_mm: float
    nsd: float
    empty: str
    cap_mm: float
    inter_mm2: float
    pred_mm2: float
    ref_mm2: float
    d_pred: np.ndarray
    d_ref: np.ndarray


def _p95(d_pred: np.ndarray, d_ref: np.ndarray) -> float:
    """Symmetric HD95 from directed distance sets: max of the directed 95th percentiles (an empty set
    contributes nothing)."""
    return float(max(np.percentile(d, 95) for d in (d_pred, d_ref) if d.size))


def _nsd_of(d_pred: np.ndarray, d_ref: np.ndarray, tau: float) -> float:
    return float((np.count_nonzero(d_pred <= tau) + np.count_nonzero(d_ref <= tau)) / (d_pred.size + d_ref.size))


def score_slice(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], *, tolerance_mm: float, cap_mm: float | None = None
) -> SliceScore:
    """Dice, IoU, HD95 (mm) and NSD at ``tolerance_mm`` of one slice under the empty-mask policy.

    Dice ``2|P∩G|/(|P|+|G|)``, IoU ``|P∩G|/|P∪G|``, HD95 as `hd95_mm` and NSD as `nsd`, all on the masks'
    own (native) grid with ``spacing`` (row, col) mm. Both empty → excluded (NaN scores, ``empty="both"``);
    one empty → Dice = IoU = NSD = 0, HD95 = cap (``empty="one"``). ``cap_mm`` None → `diagonal_mm` of the
    slice; every HD95 and every boundary distance is clipped to the cap.
    """
    p, g, sp = _check_pair(pred, ref, spacing, "score_slice")
    cap = diagonal_mm(p.shape, sp) if cap_mm is None else float(cap_mm)
    area = sp[0] * sp[1]
    n_p, n_g = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    nothing = np.zeros(0)
    if n_p == 0 and n_g == 0:
        nan = float("nan")
        return SliceScore(nan, nan, nan, nan, "both", cap, 0.0, 0.0, 0.0, nothing, nothing)
    if n_p == 0 or n_g == 0:
        d_pred = np.full(int(np.count_nonzero(_edges(p))), cap)
        d_ref = np.full(int(np.count_nonzero(_edges(g))), cap)
        return SliceScore(0.0, 0.0, cap, 0.0, "one", cap, 0.0, n_p * area, n_g * area, d_pred, d_ref)
    inter = int(np.count_nonzero(p & g))
    d_pred, d_ref = (np.minimum(d, cap) for d in _distances(p, g, sp))
    return SliceScore(
        dice=2.0 * inter / (n_p + n_g),
        iou=inter / (n_p + n_g - inter),
        hd95_mm=_p95(d_pred, d_ref),
        nsd=_nsd_of(d_pred, d_ref, float(tolerance_mm)),
        empty="",
        cap_mm=cap,
        inter_mm2=inter * area,
        pred_mm2=n_p * area,
        ref_mm2=n_g * area,
        d_pred=d_pred,
        d_ref=d_ref,
    )


def pool_patient(scores: Sequence[SliceScore], *, tolerance_mm: float) -> dict[str, float | int]:
    """Per-patient scores pooling all of a patient's slices (both-empty slices contribute nothing):

    * Dice ``2 Σ|P∩G| / (Σ|P| + Σ|G|)`` and IoU ``Σ|P∩G| / (Σ|P| + Σ|G| − Σ|P∩G|)`` over the patient's
      pixels in mm² (the volume overlap of ACDC / M&Ms on the stack of contoured slices);
    * HD95 and NSD over the pooled boundary pixels of all slices, each measured to the other boundary *in
      its own slice* (the slices of these data sets are not a contiguous volume, so no 3-D surface exists);
      boundaries facing an empty mask count at the cap, so the worst-case policy carries over.

    Returns ``dice, iou, hd95_mm, nsd`` (NaN when every slice is excluded) and the counts ``n_slices``
    (slices pooled), ``n_excluded_both_empty`` and ``n_one_empty``.
    """
    used = [s for s in scores if s.empty != "both"]
    out: dict[str, float | int] = {
        "n_slices": len(used),
        "n_excluded_both_empty": len(scores) - len(used),
        "n_one_empty": sum(s.empty == "one" for s in used),
    }
    if not used:
        return {"dice": math.nan, "iou": math.nan, "hd95_mm": math.nan, "nsd": math.nan, **out}
    inter = sum(s.inter_mm2 for s in used)
    total = sum(s.pred_mm2 + s.ref_mm2 for s in used)
    d_pred = np.concatenate([s.d_pred for s in used])
    d_ref = np.concatenate([s.d_ref for s in used])
    return {
        "dice": 2.0 * inter / total,
        "iou": inter / (total - inter),
        "hd95_mm": _p95(d_pred, d_ref),
        "nsd": _nsd_of(d_pred, d_ref, float(tolerance_mm)),
        **out,
    }


SUMMARY_KEYS = (
    "dice",
    "dice_patient",
    "iou",
    "iou_patient",
    "hd95_mm",
    "hd95_mm_patient",
    "nsd",
    "nsd_patient",
    "n_slices",
    "n_patients",
    "n_excluded_both_empty",
    "n_one_empty",
)


def summarize(slices: Sequence[SliceScore], patients: Sequence[dict]) -> dict[str, float | int | None]:
    """One set's summary (the keys of metrics.json's ``test`` object and of the ``val_*`` fields):

    ``dice``, ``iou``, ``hd95_mm``, ``nsd``: means over the set's slices that are not both-empty (their number
    is ``n_slices``); ``*_patient``: means over patients of `pool_patient` (``n_patients`` patients with at
    least one such slice); ``n_excluded_both_empty`` and ``n_one_empty`` count slices. A mean over nothing is
    None.
    """
    used = [s for s in slices if s.empty != "both"]
    pats = [p for p in patients if p["n_slices"]]

    def mean(xs) -> float | None:
        xs = list(xs)
        return float(np.mean(xs)) if xs else None

    return {
        "dice": mean(s.dice for s in used),
        "dice_patient": mean(p["dice"] for p in pats),
        "iou": mean(s.iou for s in used),
        "iou_patient": mean(p["iou"] for p in pats),
        "hd95_mm": mean(s.hd95_mm for s in used),
        "hd95_mm_patient": mean(p["hd95_mm"] for p in pats),
        "nsd": mean(s.nsd for s in used),
        "nsd_patient": mean(p["nsd"] for p in pats),
        "n_slices": len(used),
        "n_patients": len(pats),
        "n_excluded_both_empty": len(slices) - len(used),
        "n_one_empty": sum(s.empty == "one" for s in used),
    }


def hd95_per_image(pred: np.ndarray, target: np.ndarray, spacing: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """``hd95_mm`` for each image of [N,H,W] masks with per-image spacing [N,2] (or one (row, col) pair).

    ``n_classes`` > 2 (label masks, background 0): the mean over the foreground classes of each class's HD95,
    over the classes where both masks are non-empty (NaN if none), as `class_mean` does for Dice.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    sp = np.broadcast_to(np.asarray(spacing, dtype=float), (len(pred), 2))
    if n_classes > 2:
        per = np.array([hd95_per_image(pred == c, target == c, sp) for c in range(1, n_classes)])
        return class_mean(per)
    return np.array([hd95_mm(p, g, s) for p, g, s in zip(pred, target, sp)], dtype=float)


def class_mean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 (the classes) of the finite values; NaN where no class has one (no warning)."""
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    n = ok.sum(0)
    return np.where(n > 0, np.where(ok, v, 0.0).sum(0) / np.maximum(n, 1), np.nan)


def class_dice_iou(pred: Tensor, target: Tensor, n_classes: int) -> tuple[Tensor, Tensor]:
    """Monitor of a multi-class prediction: per image, the mean over the foreground classes ``1..n_classes-1``
    of `dice_per_image` / `iou_per_image` of ``pred == c`` against ``target == c`` (label maps [B,H,W]; a class
    empty in both scores 1, the monitor's convention). On the inputs' device, no host sync."""
    dice = torch.stack([dice_per_image(pred == c, target == c) for c in range(1, n_classes)])
    iou = torch.stack([iou_per_image(pred == c, target == c) for c in range(1, n_classes)])
    return dice.mean(0), iou.mean(0)
