"""Batched joint augmentation: identity when off, image and mask stay aligned, mask stays binary, seeded."""

import torch
import torch.nn.functional as F

from segsweep.training.augment import Augmenter, rotation_scale_theta
from segsweep.training.params import AugmentParams

torch.set_num_threads(1)


def _disc_batch(b=16, h=40, w=32, r=7.0):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    # off-centre disc so flips and rotations move it
    mask = (((yy - 12.0) ** 2 + (xx - 10.0) ** 2) <= r * r).float()
    mask = mask.expand(b, 1, h, w).clone()
    image = 0.2 + 0.6 * mask
    return image, mask


def test_off_is_identity_and_draws_nothing():
    aug = Augmenter(AugmentParams(), seed=3)
    assert not aug.active
    image, mask = _disc_batch()
    state = aug.generator.get_state()
    out_i, out_m = aug(image, mask)
    assert out_i is image and out_m is mask
    assert torch.equal(aug.generator.get_state(), state)


def test_flip_moves_image_and_mask_together_to_a_mirror_position():
    b, h, w = 64, 9, 7
    image = torch.zeros(b, 1, h, w)
    mask = torch.zeros(b, 1, h, w)
    image[:, 0, 2, 1] = 1.0  # known pixel
    mask[:, 0, 2, 1] = 1.0
    out_i, out_m = Augmenter(AugmentParams(flip=True), seed=0)(image, mask)
    seen = set()
    for k in range(b):
        pos_i = tuple(torch.nonzero(out_i[k, 0]).flatten().tolist())
        pos_m = tuple(torch.nonzero(out_m[k, 0]).flatten().tolist())
        assert pos_i == pos_m
        assert pos_i in {(2, 1), (2, w - 2), (h - 3, 1), (h - 3, w - 2)}
        seen.add(pos_i)
    assert len(seen) == 4  # per-sample choice: all four flip combinations occur in 64 draws
    assert set(out_m.unique().tolist()) == {0.0, 1.0}


def test_rotation_scale_keeps_mask_binary_and_aligned():
    image, mask = _disc_batch(b=32)
    aug = Augmenter(AugmentParams(flip=True, rotate_deg=30, scale=0.2), seed=1)
    out_i, out_m = aug(image, mask)
    assert set(out_m.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(out_m, mask)  # it did move things
    # the image was 0.2 + 0.6·mask before: thresholding the bilinear image at the midpoint must give the
    # nearest-resampled mask except on a thin boundary band
    agree = ((out_i > 0.5).float() == out_m).float().mean()
    assert agree > 0.985
    # the disc's area changes only by the zoom (≤ ±20 % per axis)
    ratio = out_m.sum((1, 2, 3)) / mask.sum((1, 2, 3))
    assert torch.all(ratio > 0.8**2 * 0.9) and torch.all(ratio < 1.2**2 * 1.1)


def test_rotation_by_90_degrees_on_a_non_square_image_has_no_shear():
    h, w = 8, 6
    img = torch.zeros(1, 1, h, w)
    img[0, 0, 1, 2] = 1.0
    theta = rotation_scale_theta(torch.tensor([90.0]), torch.tensor([1.0]), h, w)
    grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
    out = F.grid_sample(img, grid, mode="nearest", align_corners=False)
    # pixel offset from the centre (3.5, 2.5) is (dy, dx) = (-2.5, -0.5); a 90° turn gives (-0.5, 2.5)
    assert torch.nonzero(out[0, 0]).tolist() == [[3, 5]]


def test_theta_is_identity_for_zero_angle_unit_scale():
    theta = rotation_scale_theta(torch.zeros(3), torch.ones(3), 10, 20)
    assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3))


def test_intensity_jitter_touches_only_the_image_and_stays_in_range():
    image, mask = _disc_batch(b=8)
    out_i, out_m = Augmenter(AugmentParams(intensity=0.5), seed=2)(image, mask)
    assert torch.equal(out_m, mask)
    assert out_i.min() >= 0 and out_i.max() <= 1
    # per-sample affine map of the two grey levels: the samples differ
    fg = out_i[:, 0, 12, 10]
    assert fg.unique().numel() > 4


def test_seeded_and_checkpointable():
    image, mask = _disc_batch(b=8)
    params = AugmentParams(flip=True, rotate_deg=15, scale=0.1, intensity=0.1)
    a, b = Augmenter(params, seed=7), Augmenter(params, seed=7)
    ra, rb = a(image, mask), b(image, mask)
    assert torch.equal(ra[0], rb[0]) and torch.equal(ra[1], rb[1])
    other = Augmenter(params, seed=8)(image, mask)
    assert not torch.equal(ra[0], other[0])
    state = a.state_dict()
    first = a(image, mask)
    a.load_state_dict(state)
    again = a(image, mask)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_rotation_range_is_respected():
    # with a tiny rotation range the result is close to the input everywhere
    image, mask = _disc_batch(b=4)
    out_i, out_m = Augmenter(AugmentParams(rotate_deg=0.5), seed=0)(image, mask)
    assert (out_m != mask).float().mean() < 0.01


def test_flips_folded_into_the_affine_land_on_mirror_pixels():
    # with a (practically) zero rotation the flips go through the grid_sample path: still exact mirrors
    b, h, w = 64, 9, 7
    image = torch.zeros(b, 1, h, w)
    image[:, 0, 2, 1] = 1.0
    mask = image.clone()
    out_i, out_m = Augmenter(AugmentParams(flip=True, rotate_deg=1e-9), seed=0)(image, mask)
    seen = set()
    for k in range(b):
        pos = tuple(torch.nonzero(out_m[k, 0]).flatten().tolist())
        assert pos in {(2, 1), (2, w - 2), (h - 3, 1), (h - 3, w - 2)}
        assert out_i[k, 0][pos] > 0.999 and out_i[k].sum() < 1.001
        seen.add(pos)
    assert len(seen) == 4
