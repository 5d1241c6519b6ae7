"""Window, CLAHE and the joint image/mask geometry policies."""

from __future__ import annotations

import numpy as np
import pytest

from segsweep.data import dicom
from segsweep.data import preprocess as P
from segsweep.data.config import PreprocessConfig


def test_quantiles_match_numpy_linear_percentiles():
    rng = np.random.default_rng(0)
    for data in (
        rng.normal(size=1001),
        rng.integers(0, 50, 777).astype(float),
        np.array([3.0]),
        np.array([1.0, 1.0, 2.0]),
    ):
        vals, counts = np.unique(data, return_counts=True)
        for q in (0, 0.5, 7.3, 50, 99.5, 100):
            assert P.quantiles_from_counts(vals, counts, [q])[0] == pytest.approx(np.percentile(data, q), abs=1e-12)


def test_window_maps_percentiles_to_0_and_255():
    img = np.linspace(0, 1000, 9999, dtype=np.float32).reshape(101, 99)
    u = P.window(img, (1, 99))
    lo, hi = np.percentile(img, [1, 99])
    assert u.dtype == np.uint8
    assert (u[img <= lo] == 0).all() and (u[img >= hi] == 255).all()
    mid = (img > lo) & (img < hi)
    np.testing.assert_array_equal(u[mid], np.rint((img[mid].astype(np.float64) - lo) * 255 / (hi - lo)))
    assert not P.window(np.full((4, 4), 7.0)).any()  # constant image → zeros


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"RescaleSlope": "2", "RescaleIntercept": "-300"},
        {"RescaleSlope": "0.37", "RescaleIntercept": "11.5"},
        {"PhotometricInterpretation": "MONOCHROME1"},
        {"PhotometricInterpretation": "MONOCHROME1", "RescaleSlope": "-1.5"},
    ],
)
@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8])
def test_fast_dicom_window_equals_generic_window(dicom_write, kw, dtype):
    rng = np.random.default_rng(1)
    lo = -500 if np.dtype(dtype).kind == "i" else 0
    hi = 250 if dtype == np.uint8 else 3000
    px = rng.integers(lo, hi, (40, 37)).astype(dtype)
    im = dicom.read(dicom_write("w.dcm", px, **kw))
    for pct in ((0.5, 99.5), (0, 100), (5, 60)):
        fast, flo, fhi = P.window_dicom(im, 0, pct)
        np.testing.assert_array_equal(fast, P.window(im.frame(0), pct))
        assert (flo, fhi) == pytest.approx(tuple(np.percentile(im.frame(0).astype(np.float64), pct)))


def test_clahe_raises_local_contrast_and_respects_grid():
    rng = np.random.default_rng(2)
    img = np.clip(rng.normal(100, 3, (64, 96)), 0, 255).astype(np.uint8)
    img[:, 48:] += 60
    out = P.clahe(img, 2.0, (4, 6))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out[:, :40].std() > img[:, :40].std()  # a low-contrast half is stretched
    assert not np.array_equal(P.clahe(img, 2.0, (2, 2)), out)


def test_resize_pad_keeps_aspect_pads_with_zero_and_scales_spacing():
    img = np.full((256, 216), 200, np.uint8)
    mask = np.zeros((256, 216), np.uint8)
    mask[100:140, 80:120] = 1
    out, m, sp = P.fit(img, mask, (0.7, 0.7), (128, 112), "resize_pad")
    assert out.shape == m.shape == (128, 112)
    # 256x216 → scale 0.5 → 128x108, padded by 2 columns on each side
    assert (out[:, :2] == 0).all() and (out[:, -2:] == 0).all() and (out[:, 2:-2] == 200).all()
    assert sp == pytest.approx((1.4, 0.7 * 216 / 108))
    assert m.sum() == 20 * 20 and m[50:70, 42:62].all()  # the square keeps its place and size


def test_resize_stretches_and_crop_pad_does_not_resample():
    img = np.arange(60 * 40, dtype=np.float32).reshape(60, 40)
    out, _, sp = P.fit(img, None, (1.0, 2.0), (30, 40), "resize")
    assert out.shape == (30, 40) and sp == (2.0, 2.0)
    crop, _, sp = P.fit(img, None, (1.0, 2.0), (50, 50), "crop_pad")
    assert sp == (1.0, 2.0)
    np.testing.assert_array_equal(crop[:, 5:45], img[5:55])  # rows cropped centrally, columns padded
    assert (crop[:, :5] == 0).all() and (crop[:, 45:] == 0).all()
    with pytest.raises(ValueError):
        P.plan((10, 10), (5, 5), "zoom")


def test_mask_labels_survive_nearest_resampling_and_stay_aligned():
    mask = np.zeros((100, 90), np.uint8)
    mask[30:70, 20:60] = 2
    mask[40:60, 30:50] = 1
    img = (mask * 100).astype(np.uint8)
    for policy in P.POLICIES:
        out, m, _ = P.fit(img, mask, (1, 1), (64, 48), policy)
        assert set(np.unique(m)) <= {0, 1, 2}
        # the interior of each label region shows the matching image intensity
        for lab in (1, 2):
            inner = m == lab
            assert inner.any()
            assert abs(np.median(out[inner]) - 100 * lab) <= 2


def test_prepare_outputs_and_ranges():
    rng = np.random.default_rng(4)
    u8 = rng.integers(0, 256, (256, 216)).astype(np.uint8)
    mask = np.zeros((256, 216), bool)
    mask[100:150, 90:130] = True
    res = P.prepare(u8, mask, (0.7, 0.7), PreprocessConfig(size=(128, 112)))
    assert res.raw.shape == res.image.shape == res.mask.shape == (128, 112)
    assert res.raw.dtype == np.uint8 and res.image.dtype == np.float32 and res.mask.dtype == np.uint8
    assert res.image.min() >= 0 and res.image.max() <= 1
    # padding stays exactly zero in both the raw and the CLAHE image
    assert (res.raw[:, :2] == 0).all() and (res.image[:, :2] == 0).all()
    assert res.spacing == pytest.approx((1.4, 1.4))


# ------------------------------------------------------------------------------ inverse (native grid)
def _ellipse(shape, cy, cx, ry, rx):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)


def _dice(a, b):
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


# (native shape, network shape): shrink, enlarge, and aspect ratios that pad rows or columns / crop
CASES = [((256, 216), (96, 80)), ((96, 80), (128, 112)), ((200, 300), (64, 64)), ((61, 47), (64, 64))]


@pytest.mark.parametrize("policy", P.POLICIES)
@pytest.mark.parametrize("native, out", CASES)
def test_invert_round_trip_of_a_mask(policy, native, out):
    g = P.plan(native, out, policy)
    m = _ellipse(native, native[0] * 0.5, native[1] * 0.45, native[0] * 0.2, native[1] * 0.17)
    net = P.apply(g, m, is_mask=True)
    assert net.shape == out
    back = P.invert(g, net, is_mask=True)
    assert back.shape == native and back.dtype == np.uint8
    # probabilities resampled bilinearly and thresholded: the evaluation's route
    prob = P.invert(g, P.apply(g, m.astype(np.float32)), fill=0.0) > 0.5
    seen = P.invert(g, np.ones(out, np.uint8), is_mask=True).astype(bool)  # native pixels the network saw
    if policy == "crop_pad":  # no resampling: exact where the network saw the image, background elsewhere
        np.testing.assert_array_equal(back, m * seen)
        np.testing.assert_array_equal(prob, (m * seen).astype(bool))
    else:
        assert seen.all()
        # the ellipse is ~40 (rows) × 0.34 · cols native pixels; one resampled pixel of error at its border
        # costs a few percent of Dice at the coarsest scale (256×216 → 96×80)
        assert _dice(back, m) > 0.95 and _dice(prob, m) > 0.95
        assert _dice(prob, m) >= _dice(back, m) - 0.01  # bilinear + threshold is no worse than nearest
        # no shift: the centroid comes back within a native pixel
        for a in (back, prob):
            assert np.allclose(np.argwhere(a).mean(0), np.argwhere(m).mean(0), atol=1.0)


@pytest.mark.parametrize("policy", P.POLICIES)
def test_invert_is_exact_without_resampling(policy):
    # output size = native size: every policy is the identity, and so is its inverse
    x = np.random.default_rng(0).random((40, 30)).astype(np.float32)
    g = P.plan(x.shape, x.shape, policy)
    np.testing.assert_array_equal(P.invert(g, P.apply(g, x)), x)
    # crop_pad to a larger grid: pad only, so the round trip is exact for any content
    g = P.plan(x.shape, (48, 48), "crop_pad")
    np.testing.assert_array_equal(P.invert(g, P.apply(g, x)), x)


def test_invert_undoes_the_centred_placement_and_fills_cropped_pixels():
    x = np.arange(6 * 5, dtype=np.float32).reshape(6, 5) + 1
    g = P.plan(x.shape, (4, 7), "crop_pad")  # crop rows 6 → 4 (offset 1), pad cols 5 → 7 (offset 1)
    net = P.apply(g, x)
    np.testing.assert_array_equal(net[:, 1:6], x[1:5])
    assert not net[:, 0].any() and not net[:, 6].any()
    back = P.invert(g, net, fill=-1)
    np.testing.assert_array_equal(back[1:5], x[1:5])
    assert (back[[0, 5]] == -1).all()
    # resize_pad: a pad of 8 rows on each side, removed again
    g = P.plan((32, 64), (32, 48), "resize_pad")
    assert g.resized == (24, 48)
    net = P.apply(g, np.ones((32, 64), np.float32))
    assert not net[:4].any() and not net[-4:].any() and (net[4:-4] == 1).all()
    assert (P.invert(g, net) == 1).all()
    with pytest.raises(ValueError, match="output"):
        P.invert(g, np.zeros((32, 64)))


def test_prepare_records_its_geometry():
    u8 = np.zeros((256, 216), np.uint8)
    res = P.prepare(u8, np.zeros((256, 216), np.uint8), (1.25, 1.25), PreprocessConfig(size=(96, 80)))
    assert res.geometry == P.plan((256, 216), (96, 80), "resize_pad")
    assert res.geometry.resized == (95, 80)
