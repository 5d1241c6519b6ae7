"""Intensity window → uint8, CLAHE, and the resize/pad policy applied jointly to image and mask.

Window: ``u = round(255 · clip((x − lo) / (hi − lo), 0, 1))`` with ``lo, hi`` the ``preprocess.window``
percentiles of the image (linear interpolation between order statistics, numpy's default "linear" method:
rank ``h = q/100 · (n − 1)``, value ``v⌊h⌋ + (h − ⌊h⌋)(v⌊h⌋+1 − v⌊h⌋)``).

CLAHE: contrast-limited adaptive histogram equalisation (Zuiderveld, "Contrast Limited Adaptive Histogram
Equalization", Graphics Gems IV, 1994), OpenCV's implementation (``clip_limit``, ``tile_grid`` = tiles as
[rows, cols]), applied to the windowed uint8 image after resizing and before padding (see ``prepare``).

Geometry policies (``preprocess.policy``), to the output size ``(H, W)``:
- ``resize_pad``: keep the aspect ratio, scale to fit inside (H, W), pad centred with zeros;
- ``resize``: stretch to (H, W) (aspect ratio changes; spacing per axis follows);
- ``crop_pad``: no resampling; centre-crop or zero-pad each axis.
Images are resampled with bilinear interpolation, masks with centre-aligned nearest neighbour
(``cv2.INTER_NEAREST_EXACT``: plain ``INTER_NEAREST`` is offset by half a pixel against bilinear).
The returned pixel spacing (row, col, mm) is the input spacing times (input size / resized size) per axis.

Inverse (``invert``, for the final evaluation at native resolution; docs/evaluation.md): a map on the network
grid goes back to the native grid by undoing the centred pad/crop (``_place`` is its own inverse with the
same centring; native pixels that a crop cut away get ``fill``, i.e. background: the network never saw
them) and then resizing from the resized size to the native size. Probability maps are resized with
bilinear interpolation (area averaging when shrinking) and thresholded by the caller, which gives smoother
and more accurate native boundaries than nearest-neighbour resampling of hard labels (the ``nnU-Net``
practice of resampling softmax outputs; Isensee et al., Nat Methods 2021); labels (``is_mask``) use the
same centre-aligned nearest neighbour as the forward mapping.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from segsweep.lazy import LazyModule

# imported on first use: importing this module for `Geometry` (training.evaluate, analysis.final) costs nothing
cv2 = LazyModule("cv2")

POLICIES = ("resize_pad", "resize", "crop_pad")
_MAX_LUT = 1 << 20  # stored-value ranges up to this use the exact histogram fast path

_clahe_cache: dict[tuple[float, tuple[int, int]], object] = {}
# uint8 → float32 in [0, 1] exactly as ``u.astype(np.float32) * np.float32(1 / 255)``, as a 256-entry table
# for cv2.LUT (one pass instead of a conversion and a multiplication)
_UNIT_LUT = np.arange(256, dtype=np.float32) * np.float32(1.0 / 255.0)
# per-thread scratch index buffer for window_dicom: a fresh 8-byte-per-pixel array per image makes malloc
# grow and trim the heap, i.e. ~10 page faults per image on average
_scratch = threading.local()


# ------------------------------------------------------------------------------------------ window
def quantiles_from_counts(values: np.ndarray, counts: np.ndarray, pcts) -> list[float]:
    """Percentiles (linear method) of a sample given as sorted ``values`` with multiplicities ``counts``."""
    cum = np.asarray(counts).cumsum()
    n = int(cum[-1])
    ranks, fracs = [], []
    for q in pcts:
        h = float(q) / 100.0 * (n - 1)
        i = math.floor(h)
        fracs.append(h - i)
        ranks += [i, min(i + 1, n - 1)]
    # the value of order statistic k is the first value whose cumulative count exceeds k (one search for all)
    v = np.asarray(values)[np.searchsorted(cum, ranks, side="right")].astype(np.float64).tolist()
    return [v[2 * k] + f * (v[2 * k + 1] - v[2 * k]) for k, f in enumerate(fracs)]


def _window_values(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(v.shape, dtype=np.uint8)
    scaled = v.astype(np.float64)  # a new array: the in-place steps below compute (v - lo) * (255 / (hi - lo))
    scaled -= lo
    scaled *= 255.0 / (hi - lo)
    np.maximum(scaled, 0.0, out=scaled)  # clip to [0, 255] (np.clip's Python wrapper costs more than this)
    np.minimum(scaled, 255.0, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def window_limits(img: np.ndarray, pcts=(0.5, 99.5)) -> tuple[float, float]:
    vals, counts = np.unique(np.asarray(img).ravel(), return_counts=True)
    lo, hi = quantiles_from_counts(vals, counts, pcts)
    return lo, hi


def window(img: np.ndarray, pcts=(0.5, 99.5)) -> np.ndarray:
    """Float image → uint8 by the percentile window (generic path, any dtype). Constant image → zeros."""
    lo, hi = window_limits(img, pcts)
    return _window_values(img, lo, hi)


def window_dicom(im, frame: int = 0, pcts=(0.5, 99.5)) -> tuple[np.ndarray, float, float]:
    """Window one frame of a ``dicom.DicomImage``: (uint8 image, lo, hi) in rescaled units.

    Same result as ``window(im.frame(frame))``, computed exactly but ~5x faster for integer pixel data:
    percentiles come from a histogram of the stored values (rescale is monotonic, so order statistics map
    one to one), and the window is applied through a lookup table indexed by the stored value.
    """
    s = im.stored[frame]
    if s.dtype.kind not in "iu" or s.dtype.itemsize > 2:
        f = im.frame(frame)
        lo, hi = window_limits(f, pcts)
        return _window_values(f, lo, hi), lo, hi
    # intp indices: numpy's fancy indexing and bincount are ~5x faster on intp than on (u)int16
    offset = (1 << (8 * s.dtype.itemsize - 1)) if s.dtype.kind == "i" else 0
    idx = _index_buffer(s.size).reshape(s.shape)
    np.copyto(idx, s)
    if offset:
        idx += offset
    counts = np.bincount(idx.ravel())  # length max + 1: the last count is > 0
    smin = int((counts != 0).argmax())
    counts = counts[smin:]
    vals = im.to_float(np.arange(smin - offset, len(counts) + smin - offset, dtype=np.int64))  # as for pixels
    order = slice(None, None, -1) if im.invert != (im.slope < 0) else slice(None)  # decreasing map
    lo, hi = quantiles_from_counts(vals[order], counts[order], pcts)
    lut = _window_values(vals, lo, hi)
    if smin:
        # index the table by idx itself (entries below smin are never used): saves a pass over the image
        lut = np.concatenate((np.zeros(smin, np.uint8), lut))
    return lut[idx], lo, hi


def _index_buffer(n: int) -> np.ndarray:
    """An intp scratch array of ``n`` elements, reused by this thread (contents undefined)."""
    buf = getattr(_scratch, "idx", None)
    if buf is None or buf.size < n:
        buf = _scratch.idx = np.empty(n, dtype=np.intp)
    return buf[:n]


# ------------------------------------------------------------------------------------------- CLAHE
def clahe(img_u8: np.ndarray, clip_limit: float = 2.0, tile_grid=(8, 8)) -> np.ndarray:
    """CLAHE on a uint8 image; ``tile_grid`` is (rows, cols) of tiles."""
    key = (float(clip_limit), (int(tile_grid[0]), int(tile_grid[1])))
    op = _clahe_cache.get(key)
    if op is None:
        # OpenCV takes the grid as (width, height) = (cols, rows)
        op = _clahe_cache[key] = cv2.createCLAHE(clipLimit=key[0], tileGridSize=(key[1][1], key[1][0]))
    return op.apply(np.ascontiguousarray(img_u8))


# ----------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Geometry:
    in_shape: tuple[int, int]
    out_shape: tuple[int, int]
    resized: tuple[int, int]  # size after scaling, before the centred crop/pad

    @property
    def factor(self) -> tuple[float, float]:
        """Multiply the input pixel spacing (row, col) by this to get the output spacing."""
        return (self.in_shape[0] / self.resized[0], self.in_shape[1] / self.resized[1])


def plan(in_shape, out_shape, policy: str) -> Geometry:
    return _plan(int(in_shape[0]), int(in_shape[1]), int(out_shape[0]), int(out_shape[1]), policy)


@lru_cache(maxsize=256)  # one plan per distinct input size: computed once, not per image
def _plan(h: int, w: int, H: int, W: int, policy: str) -> Geometry:
    if policy == "resize_pad":
        s = min(H / h, W / w)
        resized = (min(H, max(1, round(h * s))), min(W, max(1, round(w * s))))
    elif policy == "resize":
        resized = (H, W)
    elif policy == "crop_pad":
        resized = (h, w)
    else:
        raise ValueError(f"unknown resize policy {policy!r} (known: {', '.join(POLICIES)})")
    return Geometry((h, w), (H, W), resized)


def _place(arr: np.ndarray, out_shape) -> np.ndarray:
    """Centre ``arr`` in a zero array of ``out_shape``: pad where smaller, crop where larger."""
    if arr.ndim == 2 and len(out_shape) == 2 and arr.dtype == np.uint8:
        (h, w), (H, W) = arr.shape, (int(out_shape[0]), int(out_shape[1]))
        if h <= H and w <= W:
            # pad only (the resize_pad case): one OpenCV call, same placement as below
            top, left = (H - h) // 2, (W - w) // 2
            return cv2.copyMakeBorder(arr, top, H - h - top, left, W - w - left, cv2.BORDER_CONSTANT, value=0)
    out = np.zeros(tuple(out_shape), dtype=arr.dtype)
    src, dst = [], []
    for n_in, n_out in zip(arr.shape, out_shape):
        if n_in <= n_out:
            a = (n_out - n_in) // 2
            src.append(slice(0, n_in))
            dst.append(slice(a, a + n_in))
        else:
            a = (n_in - n_out) // 2
            src.append(slice(a, a + n_out))
            dst.append(slice(0, n_out))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def apply(geom: Geometry, arr: np.ndarray, is_mask: bool = False) -> np.ndarray:
    """Apply a geometry plan to one 2-D array (image: bilinear; mask: nearest, centre-aligned)."""
    if arr.shape != geom.in_shape:
        raise ValueError(f"array shape {arr.shape} does not match the plan's input {geom.in_shape}")
    if geom.resized != geom.in_shape:
        interp = cv2.INTER_NEAREST_EXACT if is_mask else cv2.INTER_LINEAR
        arr = cv2.resize(arr, (geom.resized[1], geom.resized[0]), interpolation=interp)
    if geom.resized != geom.out_shape:
        arr = _place(arr, geom.out_shape)
    return arr


def invert(geom: Geometry, arr: np.ndarray, is_mask: bool = False, fill: float = 0) -> np.ndarray:
    """Map one 2-D array on the network grid (``geom.out_shape``) back to the native grid (``geom.in_shape``).

    Undo the centred pad/crop, then the scaling: bilinear (area averaging when both axes shrink) for an
    image or probability map, centre-aligned nearest neighbour for a label mask (``is_mask``). Native pixels
    outside what the network saw (cropped by ``crop_pad``) are ``fill``. ``invert(g, apply(g, x))`` is ``x``
    up to the resampling (exactly ``x`` where no resampling happened: ``crop_pad`` without a crop).
    """
    arr = np.asarray(arr)
    if arr.shape != geom.out_shape:
        raise ValueError(f"array shape {arr.shape} does not match the plan's output {geom.out_shape}")
    if geom.resized != geom.out_shape:
        dtype = arr.dtype
        out = _place(arr, geom.resized)  # the same centring undoes the pad (crop back) and the crop (pad)
        if fill:
            keep = _place(np.ones(geom.out_shape, dtype=np.uint8), geom.resized).astype(bool)
            out = np.where(keep, out, np.asarray(fill, dtype=dtype))
        arr = out
    if geom.resized != geom.in_shape:
        if is_mask:
            interp = cv2.INTER_NEAREST_EXACT
        elif geom.in_shape[0] <= geom.resized[0] and geom.in_shape[1] <= geom.resized[1]:
            interp = cv2.INTER_AREA  # shrinking: average the covered pixels (bilinear would skip some)
        else:
            interp = cv2.INTER_LINEAR
        src = arr if arr.dtype != np.bool_ else arr.view(np.uint8)
        arr = cv2.resize(np.ascontiguousarray(src), (geom.in_shape[1], geom.in_shape[0]), interpolation=interp)
    return arr


def fit(image: np.ndarray, mask: np.ndarray | None, spacing, size, policy: str):
    """Resize/pad ``image`` (and ``mask``) jointly: (image, mask, new spacing (row, col))."""
    geom = plan(image.shape, size, policy)
    img = apply(geom, image)
    msk = None if mask is None else apply(geom, mask, is_mask=True)
    fy, fx = geom.factor
    return img, msk, (float(spacing[0]) * fy, float(spacing[1]) * fx)


@dataclass(frozen=True)
class Prepared:
    raw: np.ndarray  # uint8 [H, W], windowed, before CLAHE
    image: np.ndarray  # float32 [H, W] in [0, 1], after CLAHE
    mask: np.ndarray  # uint8 [H, W]
    spacing: tuple[float, float]
    geometry: Geometry | None = None  # the plan applied (what `invert` needs to map back to the native grid)


def prepare(u8: np.ndarray, mask: np.ndarray, spacing, prep) -> Prepared:
    """Windowed uint8 image + mask at native size → geometry policy and CLAHE (``prep``: PreprocessConfig).

    Order: resize (bilinear; mask nearest) → CLAHE on the resized content → centred pad/crop. CLAHE thus
    works on the network's pixel grid (tile size in output pixels, the same for every input size) and
    never sees the zero padding, which stays exactly 0 in ``raw`` and ``image``.
    """
    geom = plan(u8.shape, prep.size, prep.policy)
    interp_img, interp_msk = cv2.INTER_LINEAR, cv2.INTER_NEAREST_EXACT
    if geom.resized != geom.in_shape:
        dsize = (geom.resized[1], geom.resized[0])
        u8 = cv2.resize(u8, dsize, interpolation=interp_img)
        mask = cv2.resize(mask.astype(np.uint8, copy=False), dsize, interpolation=interp_msk)
    eq = clahe(u8, prep.clip_limit, prep.tile_grid)
    if geom.resized != geom.out_shape:
        u8, eq, mask = (_place(a, geom.out_shape) for a in (u8, eq, mask))
    img = cv2.LUT(eq, _UNIT_LUT)
    fy, fx = geom.factor
    sp = (float(spacing[0]) * fy, float(spacing[1]) * fx)
    return Prepared(u8, img, mask.astype(np.uint8, copy=False), sp, geom)
