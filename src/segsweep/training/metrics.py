"""Evaluation metrics on binary masks: Dice and IoU per image (on device), HD95 in millimetres (NumPy).

Empty-mask conventions (these differ from MONAI, which returns NaN for Dice/IoU when both masks are empty):

* Dice / IoU: both masks empty → 1.0 (the prediction is exactly right: there is nothing to segment, e.g. a
  slice above the apex); exactly one empty → 0.0.
* HD95: NaN when either mask is empty (a surface distance needs two surfaces); aggregate with ``nanmean``
  and report the count of NaNs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

__all__ = ["dice_per_image", "iou_per_image", "hd95_mm", "hd95_per_image"]


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
    p = np.asarray(pred).astype(bool, copy=False)
    g = np.asarray(target).astype(bool, copy=False)
    if p.ndim != 2 or p.shape != g.shape:
        raise ValueError(f"hd95_mm needs two 2-D masks of one shape, got {p.shape} and {g.shape}")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 2 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be two positive (row_mm, col_mm) values, got {spacing!r}")
    if not p.any() or not g.any():
        return float("nan")
    # Work on the bounding box of both masks plus a one-pixel margin (clipped at the image border): the
    # edges and the nearest-edge distances are the same as on the full image, at a fraction of the cost.
    rows = np.flatnonzero((p | g).any(1))
    cols = np.flatnonzero((p | g).any(0))
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, p.shape[0])
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, p.shape[1])
    ep, eg = _edges(p[r0:r1, c0:c1]), _edges(g[r0:r1, c0:c1])
    d_pg = ndimage.distance_transform_edt(~eg, sampling=sp)[ep]
    d_gp = ndimage.distance_transform_edt(~ep, sampling=sp)[eg]
    return float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))


def hd95_per_image(pred: np.ndarray, target: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """``hd95_mm`` for each image of [N,H,W] masks with per-image spacing [N,2] (or one (row, col) pair)."""
    pred, target = np.asarray(pred), np.asarray(target)
    sp = np.broadcast_to(np.asarray(spacing, dtype=float), (len(pred), 2))
    return np.array([hd95_mm(p, g, s) for p, g, s in zip(pred, target, sp)], dtype=float)
