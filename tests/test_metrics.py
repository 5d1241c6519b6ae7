"""Metrics: Dice/IoU on hand-made masks (incl. empty-mask conventions), HD95 in mm vs hand values and MONAI."""

import math

import numpy as np
import pytest
import torch

from segsweep.training.metrics import dice_per_image, hd95_mm, hd95_per_image, iou_per_image

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
