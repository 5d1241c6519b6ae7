"""Metrics: Dice/IoU on hand-made masks (incl. empty-mask conventions), HD95 in mm vs hand values and MONAI."""

import math

import numpy as np
import pytest
import torch

from segsweep.training.metrics import (
    diagonal_mm,
    dice_per_image,
    hd95_mm,
    hd95_per_image,
    iou_per_image,
    nsd,
    pool_patient,
    score_slice,
    summarize,
    surface_distances,
)

torch.set_num_threads(1)


def _masks():
    """Three 4x4 images: partial overlap, both empty, prediction empty."""
    pred = torch.zeros(3, 4, 4, dtype=torch.uint8)
    target = torch.zeros(3, 4, 4, dtype=torch.uint8)
    pred[0, 0:2, 0:3] = 1  # 6 pixels: rows 0-1, cols 0-2
    target[0, 1:3, 1:3] = 1  # 4 pixels: rows 1-2, cols 1-2; overlap = row 1, cols 1-2 → 2 pixels
    target[2, 3, 3] = 1  # image 2: target has one pixel, prediction empty
    return pred, target


def test_dice_and_iou_by_hand():
    pred, target = _masks()
    # image 0: Dice = 2·2/(6+4) = 0.4; IoU = 2/(6+4-2) = 0.25. Image 1: both empty → 1. Image 2: one empty → 0.
    assert dice_per_image(pred, target).tolist() == pytest.approx([0.4, 1.0, 0.0])
    assert iou_per_image(pred, target).tolist() == pytest.approx([0.25, 1.0, 0.0])


def test_shapes_and_dtypes():
    pred, target = _masks()
    d = dice_per_image(pred[:, None].bool(), target[:, None].bool())  # [B,1,H,W] bool
    assert d.dtype == torch.float32 and d.shape == (3,) and d.device == pred.device
    assert d.tolist() == pytest.approx([0.4, 1.0, 0.0])
    assert dice_per_image(pred.numpy(), target.numpy()).tolist() == pytest.approx([0.4, 1.0, 0.0])
    with pytest.raises(TypeError, match="threshold"):
        dice_per_image(pred.float(), target)
    with pytest.raises(ValueError):
        iou_per_image(pred, target[:2])
    with pytest.raises(ValueError):
        dice_per_image(torch.zeros(2, 3, 4, 4, dtype=torch.bool), torch.zeros(2, 3, 4, 4, dtype=torch.bool))


def test_dice_iou_relation_on_random_masks():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(8, 16, 16, generator=g) > 0.5
    target = torch.rand(8, 16, 16, generator=g) > 0.5
    d, j = dice_per_image(pred, target), iou_per_image(pred, target)
    assert torch.allclose(d, 2 * j / (1 + j))  # Dice = 2J/(1+J) for any pair of sets


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_on_cuda():
    pred, target = (m.cuda() for m in _masks())
    torch.cuda.set_sync_debug_mode("error")
    try:
        d, j = dice_per_image(pred, target), iou_per_image(pred, target)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert d.is_cuda and d.cpu().tolist() == pytest.approx([0.4, 1.0, 0.0]) and j.is_cuda


# ------------------------------------------------------------------------------------------------ HD95
def _square(r0, c0, n=10, shape=(40, 40)):
    m = np.zeros(shape, bool)
    m[r0 : r0 + n, c0 : c0 + n] = True
    return m


def test_hd95_offset_squares_anisotropic_by_hand():
    a, b = _square(10, 10), _square(13, 10)  # b = a shifted 3 rows down
    # Rows 2 mm, cols 0.5 mm. a's 36 edge pixels → nearest edge of b:
    #   top row (10 px): 3 rows away = 6 mm; left/right columns rows 11, 12: 4 mm, 2 mm; rows 13-18: 0;
    #   bottom row 19 lies inside b, whose nearest edge there is b's side column: 0, .5, 1, 1.5, 2, 2, 1.5, 1, .5, 0.
    # Sorted, the top 10 values are 6 mm and the 95th percentile (index 0.95·35 = 33.25) is 6 mm; b → a by
    # symmetry. HD95 = 3 rows × 2 mm.
    assert hd95_mm(a, b, (2.0, 0.5)) == pytest.approx(6.0)
    # With rows 0.5 mm and cols 2 mm the 3-row offset is 1.5 mm, and every interior pixel of row 19 is
    # now closer to b's bottom edge (3 rows = 1.5 mm) than to its sides (≥ 2 mm): HD95 = 1.5 mm.
    assert hd95_mm(a, b, (0.5, 2.0)) == pytest.approx(1.5)
    assert hd95_mm(a, a, (1.0, 1.0)) == 0.0


def test_hd95_empty_is_nan():
    a = _square(5, 5)
    empty = np.zeros_like(a)
    assert math.isnan(hd95_mm(a, empty, (1.0, 1.0)))
    assert math.isnan(hd95_mm(empty, a, (1.0, 1.0)))
    assert math.isnan(hd95_mm(empty, empty, (1.0, 1.0)))
    with pytest.raises(ValueError):
        hd95_mm(a, a, (1.0, 0.0))


def _blob(rng, shape):
    """A random blob: a thresholded smoothed noise field, often touching the image border."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.standard_normal(shape), 3)
    return field > np.quantile(field, rng.uniform(0.5, 0.9))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecation notice inside get_mask_edges
def test_hd95_matches_monai():
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(0)
    for i in range(12):
        shape = (37, 29) if i % 2 else (24, 40)
        p, g = _blob(rng, shape), _blob(rng, shape)
        if i == 0:
            p, g = _square(10, 10), _square(13, 12)
        spacing = (float(rng.uniform(0.5, 3)), float(rng.uniform(0.5, 3)))
        ref = monai_metrics.compute_hausdorff_distance(
            torch.from_numpy(p)[None, None],
            torch.from_numpy(g)[None, None],
            include_background=True,
            percentile=95,
            spacing=spacing,
        ).item()
        assert hd95_mm(p, g, spacing) == pytest.approx(ref, rel=1e-5), (i, spacing)


def test_hd95_per_image_batches():
    a, b = _square(10, 10), _square(13, 10)
    out = hd95_per_image(np.stack([a, a, b]), np.stack([b, np.zeros_like(a), b]), np.array([[2.0, 0.5]] * 3))
    assert out[0] == pytest.approx(6.0) and math.isnan(out[1]) and out[2] == 0.0


# ----------------------------------------------------------------------------- NSD and final evaluation
def test_nsd_offset_squares_by_hand():
    a, b = _square(10, 10), _square(13, 10)  # b = a shifted 3 rows down, 1 mm pixels
    # a's 36 boundary pixels → nearest boundary pixel of b:
    #   top row (10 px): 3 mm;  side columns rows 11, 12 (4 px): 2, 1 mm;  rows 13-18 (12 px): 0 (on b's sides);
    #   bottom row 19 (10 px, inside b): min(distance to b's side columns, 3 rows to b's bottom) =
    #   0, 1, 2, 3, 3, 3, 3, 2, 1, 0 mm.
    # τ = 2: 0 + 4 + 12 + 6 = 22 of 36 within; b → a the same by symmetry → NSD = 44 / 72.
    assert nsd(a, b, (1.0, 1.0), 2.0) == pytest.approx(44 / 72)
    # τ = 1.5: rows 11/12 give 1 of 2 per side (2), the bottom row 0, 1, 1, 0 (4): 0 + 2 + 12 + 4 = 18 of 36
    assert nsd(a, b, (1.0, 1.0), 1.5) == pytest.approx(0.5)
    assert nsd(a, b, (1.0, 1.0), 3.0) == 1.0  # everything within 3 mm
    assert nsd(a, b, (1.0, 1.0), 2.999) == pytest.approx((36 - 10 - 4) * 2 / 72)  # the 3 mm pixels drop out
    empty = np.zeros_like(a)
    assert nsd(a, empty, (1.0, 1.0), 2.0) == 0.0 and math.isnan(nsd(empty, empty, (1.0, 1.0), 2.0))


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")  # MONAI warns about empty masks in the one-empty case
def test_nsd_matches_monai():
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(1)
    for i in range(12):
        shape = (37, 29) if i % 2 else (24, 40)
        p, g = _blob(rng, shape), _blob(rng, shape)
        if i == 0:
            p, g = _square(10, 10), _square(13, 12)
        if i == 1:
            p = np.zeros(shape, bool)  # one empty: MONAI gives 0 as well
        spacing = (float(rng.uniform(0.5, 3)), float(rng.uniform(0.5, 3)))
        tau = float(rng.uniform(0.5, 4))

        def onehot(m):
            m = torch.from_numpy(m)
            return torch.stack([~m, m])[None].float()

        ref = monai_metrics.compute_surface_dice(
            onehot(p), onehot(g), class_thresholds=[tau, tau], include_background=True, spacing=spacing
        )[0, 1].item()
        assert nsd(p, g, spacing, tau) == pytest.approx(ref, rel=1e-6), (i, spacing, tau)
        if p.any():
            s = score_slice(p, g, spacing, tolerance_mm=tau)
            assert s.nsd == pytest.approx(ref, rel=1e-6) and s.hd95_mm == pytest.approx(hd95_mm(p, g, spacing))


def test_worst_case_policy_and_counts():
    a, b = _square(10, 10), _square(13, 10)
    empty = np.zeros_like(a)
    sp = (1.0, 0.5)
    diag = math.hypot(40 * 1.0, 40 * 0.5)
    ok = score_slice(a, b, sp, tolerance_mm=2.0)
    missed = score_slice(empty, a, sp, tolerance_mm=2.0)  # the model misses the structure
    phantom = score_slice(a, empty, sp, tolerance_mm=2.0, cap_mm=30.0)  # predicts one where there is none
    nothing = score_slice(empty, empty, sp, tolerance_mm=2.0)
    assert ok.empty == "" and ok.dice == pytest.approx(2 * 70 / 200) and ok.iou == pytest.approx(70 / 130)
    assert (missed.dice, missed.iou, missed.nsd, missed.hd95_mm, missed.empty) == (0.0, 0.0, 0.0, diag, "one")
    assert (phantom.hd95_mm, phantom.cap_mm, phantom.empty) == (30.0, 30.0, "one")
    assert nothing.empty == "both" and all(math.isnan(x) for x in (nothing.dice, nothing.hd95_mm, nothing.nsd))
    # HD95 is clipped to the cap: a miss is never better than a bad contour
    far = score_slice(_square(0, 0, 5), _square(35, 35, 5), (1.0, 1.0), tolerance_mm=2.0, cap_mm=10.0)
    assert far.hd95_mm == 10.0 and far.dice == 0.0

    slices = [ok, missed, nothing, phantom]
    pat = pool_patient(slices, tolerance_mm=2.0)
    assert (pat["n_slices"], pat["n_excluded_both_empty"], pat["n_one_empty"]) == (3, 1, 2)
    # pooled over the three used slices: |P∩G| = 70 px, |P| + |G| = 200 + 100 + 100 px (0.5 mm² each)
    assert pat["dice"] == pytest.approx(2 * 70 / 400) and pat["iou"] == pytest.approx(70 / 330)
    # boundary pixels: ok 36 + 36 (44 within 2 mm, see the NSD test: here rows are 1 mm, cols 0.5 mm), the
    # missed slice's 36 reference pixels and the phantom's 36 predicted ones at the cap: more than 5 % of each
    # direction is at a cap, so the pooled HD95 is the larger cap
    assert pat["nsd"] == pytest.approx(ok.nsd * 72 / 144)
    assert pat["hd95_mm"] == pytest.approx(diag)

    summ = summarize(slices, [pat, pool_patient([nothing], tolerance_mm=2.0)])
    assert summ["n_slices"] == 3 and summ["n_excluded_both_empty"] == 1 and summ["n_one_empty"] == 2
    assert summ["n_patients"] == 1  # the all-empty patient is excluded
    assert summ["dice"] == pytest.approx(ok.dice / 3) and summ["nsd"] == pytest.approx(ok.nsd / 3)
    assert summ["hd95_mm"] == pytest.approx((ok.hd95_mm + diag + 30.0) / 3)
    assert summ["dice_patient"] == pytest.approx(pat["dice"])
    assert summarize([nothing], [])["dice"] is None


def test_per_patient_dice_pools_pixels_unlike_the_slice_mean():
    big = _square(5, 5, n=10)  # 100 px, predicted exactly: Dice 1
    small_ref, small_pred = _square(30, 30, n=2), _square(30, 34, n=2)  # 4 px each, disjoint: Dice 0
    sp = (1.5, 1.5)
    s1 = score_slice(big, big, sp, tolerance_mm=2.0)
    s2 = score_slice(small_pred, small_ref, sp, tolerance_mm=2.0)
    p = pool_patient([s1, s2], tolerance_mm=2.0)
    assert (s1.dice, s2.dice) == (1.0, 0.0)
    assert p["dice"] == pytest.approx(2 * 100 / (104 + 104))  # 0.962, not the slice mean 0.5
    summ = summarize([s1, s2], [p])
    assert summ["dice"] == pytest.approx(0.5) and summ["dice_patient"] == pytest.approx(200 / 208)
    # two patients: the per-patient mean weights patients equally, whatever their slice counts
    q = pool_patient([score_slice(big, _square(5, 5, n=5), sp, tolerance_mm=2.0)], tolerance_mm=2.0)
    assert q["dice"] == pytest.approx(2 * 25 / 125)
    summ = summarize([s1, s2, score_slice(big, _square(5, 5, n=5), sp, tolerance_mm=2.0)], [p, q])
    assert summ["dice_patient"] == pytest.approx((200 / 208 + 0.4) / 2)
    assert summ["dice"] == pytest.approx((1 + 0 + 0.4) / 3)
    # pixel area matters when spacing differs between a patient's slices (area-weighted pooling)
    s3 = score_slice(small_pred, small_ref, (3.0, 3.0), tolerance_mm=2.0)
    assert pool_patient([s1, s3], tolerance_mm=2.0)["dice"] == pytest.approx(2 * 225 / (2 * 225 + 2 * 36))


def test_surface_distances_and_diagonal():
    a, b = _square(10, 10), _square(13, 10)
    d_ab, d_ba = surface_distances(a, b, (2.0, 0.5))
    assert d_ab.size == d_ba.size == 36 and np.percentile(d_ab, 95) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(a, np.zeros_like(a), (1.0, 1.0))
    assert diagonal_mm((30, 40), (1.0, 1.0)) == pytest.approx(50.0)
