"""Manual contour files: parse, validate, rasterise.

File format (RVSC and Sunnybrook alike): one ``x y`` pair of floats per line, x = column, y = row, in pixel
coordinates of the image array (``image[y, x]``); the points trace a closed polygon (the last point may or
may not repeat the first: the polygon is always closed implicitly).

Coordinate convention: pixel ``(row r, column c)`` has its centre at ``(x=c, y=r)``, so integer coordinates
are pixel centres and the image covers ``[-0.5, W-0.5] x [-0.5, H-0.5]``.

Rasterisation rule (one rule, everywhere): a pixel belongs to the mask iff its centre lies inside the
polygon under the **nonzero winding rule**. Ties (a centre exactly on an edge) follow the half-open
"top-left" convention of scan-line fill: an edge counts for rows ``y`` with ``y_min <= y < y_max``, and a
crossing at ``x`` counts for centres with ``c >= x``. Hence a centre on a left edge is inside, on a right or
bottom edge outside, and an axis-aligned rectangle ``[x0, x1) x [y0, y1)`` with integer corners covers
exactly ``(x1 - x0) * (y1 - y0)`` pixels (its area). Nonzero (not even-odd) is used because a manual
tracing that overlaps itself near its start point should fill the overlap, not punch a hole in it.
Self-intersecting polygons are flagged (``contour_self_intersecting``) and still rasterised.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError

REASONS: dict[str, tuple[str, str]] = {
    "contour_unreadable": ("failure", "file cannot be opened or is not text"),
    "contour_empty": ("failure", "file holds no coordinates"),
    "contour_not_numeric": ("failure", "a token is not a number"),
    "contour_odd_values": ("failure", "odd number of values: not x y pairs"),
    "contour_bad_line": ("failure", "a line does not hold exactly one x y pair"),
    "contour_nonfinite": ("failure", "NaN or infinite coordinate"),
    "contour_too_few_points": ("failure", "fewer than 3 distinct points"),
    "contour_empty_mask": ("failure", "polygon covers no pixel centre (zero area or outside the image)"),
    "contour_outside_image": ("warning", "points outside the image: the polygon is clipped to the image"),
    "contour_self_intersecting": ("warning", "polygon crosses itself: rasterised with the nonzero rule"),
}


class ContourError(DataError):
    """A contour file that cannot be used; ``reason`` is a stable QC code (see REASONS)."""

    def __init__(self, reason: str, message: str, path: str | Path | None = None):
        assert reason in REASONS, reason
        self.reason = reason
        self.path = None if path is None else Path(path)
        self.detail = message
        super().__init__(f"{path}: {message}" if path is not None else message)


@dataclass(frozen=True)
class Contour:
    """A validated polygon: ``points`` float64 [N, 2] as (x=column, y=row), open (not repeating point 0)."""

    points: np.ndarray
    warnings: tuple[tuple[str, str], ...] = field(default=())

    @property
    def self_intersecting(self) -> bool:
        return any(code == "contour_self_intersecting" for code, _ in self.warnings)


def parse_text(text: str, path: str | Path | None = None) -> Contour:
    """Parse and validate contour text. Raises ContourError with a reason code."""
    tokens = text.split()
    if not tokens:
        raise ContourError("contour_empty", "no coordinates", path)
    try:
        values = np.array(tokens, dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise ContourError("contour_not_numeric", f"not a number: {bad[:20]!r}", path) from None
    if values.size % 2:
        raise ContourError("contour_odd_values", f"{values.size} values (odd): not x y pairs", path)
    # every non-blank line must hold one pair; otherwise x and y of neighbouring points get mixed up
    for lineno, line in enumerate(text.splitlines(), 1):
        n = len(line.split())
        if n != 2 and n != 0:
            raise ContourError("contour_bad_line", f"line {lineno} holds {n} values, expected 2", path)
    if not np.all(np.isfinite(values)):
        raise ContourError("contour_nonfinite", "NaN or infinite coordinate", path)
    pts = values.reshape(-1, 2)
    # drop consecutive duplicates and the explicit closing point
    keep = np.ones(len(pts), bool)
    keep[1:] = np.any(pts[1:] != pts[:-1], axis=1)
    pts = pts[keep]
    if len(pts) > 1 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]
    # at least 3 distinct points: after dropping consecutive duplicates pts[0] != pts[1], so a third
    # distinct point is one that differs from both
    if len(pts) < 3 or not np.any(np.any(pts != pts[0], axis=1) & np.any(pts != pts[1], axis=1)):
        n_distinct = len(np.unique(pts, axis=0))
        raise ContourError("contour_too_few_points", f"{n_distinct} distinct point(s), at least 3 needed", path)
    notes = []
    if self_intersects(pts):
        notes.append(("contour_self_intersecting", "polygon crosses itself; nonzero winding rule applied"))
    return Contour(pts, tuple(notes))


def _is_float(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def parse(path: str | Path) -> Contour:
    """Read and validate one contour file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ContourError("contour_unreadable", f"cannot read file ({type(exc).__name__})", path) from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ContourError("contour_unreadable", "not a text file", path) from None
    if "\x00" in text:
        raise ContourError("contour_unreadable", "not a text file (NUL bytes)", path)
    return parse_text(text, path)


def self_intersects(pts: np.ndarray) -> bool:
    """True if two non-adjacent edges of the closed polygon touch or cross (exact orientation tests).

    Candidate pairs come from a sweep over edges sorted by their left end: edge ``a`` is compared with
    the following edges in that order while they start before ``a`` ends, so short edges of a smooth
    contour meet only a handful of neighbours (near-linear instead of all E² pairs).
    """
    n = len(pts)
    if n < 4:
        return False
    a = pts
    b = np.roll(pts, -1, axis=0)
    xmin = np.minimum(a[:, 0], b[:, 0])
    xmax = np.maximum(a[:, 0], b[:, 0])
    ymin = np.minimum(a[:, 1], b[:, 1])
    ymax = np.maximum(a[:, 1], b[:, 1])
    order = np.argsort(xmin, kind="stable")
    xs_min, xs_max = xmin[order], xmax[order]
    first, second = [], []
    active = np.ones(n, bool)
    for shift in range(1, n):
        active = active[: n - shift] & (xs_min[shift:] <= xs_max[: n - shift])
        if not active.any():
            break
        idx = np.flatnonzero(active)
        first.append(order[idx])
        second.append(order[idx + shift])
    if not first:
        return False
    i = np.concatenate(first)
    j = np.concatenate(second)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    # neighbours share a point: skip them (edge n-1 and edge 0 share point 0)
    keep = (hi - lo > 1) & ~((lo == 0) & (hi == n - 1))
    keep &= (ymin[i] <= ymax[j]) & (ymin[j] <= ymax[i])
    i, j = i[keep], j[keep]
    if i.size == 0:
        return False
    p1, p2, q1, q2 = a[i], b[i], a[j], b[j]
    d1 = _orient(q1, q2, p1)
    d2 = _orient(q1, q2, p2)
    d3 = _orient(p1, p2, q1)
    d4 = _orient(p1, p2, q2)
    proper = (d1 * d2 < 0) & (d3 * d4 < 0)
    # touching / collinear overlap: an endpoint lies on the other segment
    touch = (
        ((d1 == 0) & _on_box(q1, q2, p1)) | ((d2 == 0) & _on_box(q1, q2, p2))
        | ((d3 == 0) & _on_box(p1, p2, q1)) | ((d4 == 0) & _on_box(p1, p2, q2))
    )
    return bool(np.any(proper | touch))


def _orient(p, q, r):
    return np.sign((q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0]))


def _on_box(p, q, r):
    return (
        (np.minimum(p[:, 0], q[:, 0]) <= r[:, 0]) & (r[:, 0] <= np.maximum(p[:, 0], q[:, 0]))
        & (np.minimum(p[:, 1], q[:, 1]) <= r[:, 1]) & (r[:, 1] <= np.maximum(p[:, 1], q[:, 1]))
    )


def winding(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Winding number of the closed polygon at every pixel centre, int32 [H, W] (see module docstring).

    Scan-line algorithm, vectorised: every non-horizontal edge contributes one crossing per row ``r`` with
    ``y_min <= r < y_max``, at ``x = x0 + (r - y0)(x1 - x0)/(y1 - y0)``, signed by the edge direction. A
    cumulative sum along each row of the crossings placed at column ``ceil(x)`` counts the crossings at or
    left of each centre: that sum is the winding number (up to a global sign, irrelevant for both rules).
    """
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), dtype=np.int32)
    p = np.asarray(points, dtype=np.float64)
    q = np.roll(p, -1, axis=0)
    x0, y0, x1, y1 = p[:, 0], p[:, 1], q[:, 0], q[:, 1]
    nonflat = y0 != y1
    x0, y0, x1, y1 = x0[nonflat], y0[nonflat], x1[nonflat], y1[nonflat]
    if x0.size == 0:
        return out
    direction = np.where(y1 > y0, 1, -1).astype(np.int32)
    ylo = np.minimum(y0, y1)
    yhi = np.maximum(y0, y1)
    r_start = np.clip(np.ceil(ylo), 0, h).astype(np.int64)
    r_end = np.clip(np.ceil(yhi), 0, h).astype(np.int64)  # exclusive: y < y_max
    counts = np.maximum(r_end - r_start, 0)
    total = int(counts.sum())
    if total == 0:
        return out
    edge = np.repeat(np.arange(len(counts)), counts)
    first = np.cumsum(counts) - counts
    rows = r_start[edge] + (np.arange(total) - first[edge])
    t = (rows - y0[edge]) / (y1[edge] - y0[edge])
    x = x0[edge] + t * (x1[edge] - x0[edge])
    # snap float noise so that a crossing that is exactly on a pixel centre keeps the tie rule
    xr = np.round(x)
    x = np.where(np.abs(x - xr) < 1e-9, xr, x)
    # work on the polygon's bounding box only: outside it the winding number is 0
    ra, rb = int(rows.min()), int(rows.max()) + 1
    ca = int(np.clip(np.floor(p[:, 0].min()), 0, w))
    cb = int(np.clip(np.ceil(p[:, 0].max()) + 1, 0, w))
    if cb <= ca:
        return out
    cols = np.clip(np.ceil(x), ca, cb).astype(np.int64) - ca
    acc = np.zeros((rb - ra, cb - ca + 1), dtype=np.int32)
    np.add.at(acc, (rows - ra, cols), direction[edge])
    out[ra:rb, ca:cb] = np.cumsum(acc, axis=1, dtype=np.int32)[:, : cb - ca]
    return out


def rasterize(points: np.ndarray, shape: tuple[int, int], rule: str = "nonzero") -> np.ndarray:
    """Boolean mask [H, W]: pixel centres inside the polygon (``rule``: "nonzero" default, or "evenodd")."""
    wn = winding(points, shape)
    if rule == "nonzero":
        return wn != 0
    if rule == "evenodd":
        return (wn & 1) == 1
    raise ValueError(f"unknown fill rule {rule!r} (nonzero, evenodd)")


def outside_image(points: np.ndarray, shape: tuple[int, int]) -> int:
    """Number of points outside the image extent [-0.5, W-0.5] x [-0.5, H-0.5]."""
    h, w = shape
    x, y = points[:, 0], points[:, 1]
    return int(np.count_nonzero((x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5)))


def to_mask(contour: Contour, shape: tuple[int, int], path: str | Path | None = None):
    """Rasterise a parsed contour for an image of ``shape``: (mask bool [H, W], warnings tuple).

    Points outside the image are allowed (the polygon is clipped to the image by the pixel-centre rule)
    and reported; a polygon that covers no pixel centre raises ContourError("contour_empty_mask").
    """
    notes = list(contour.warnings)
    n_out = outside_image(contour.points, shape)
    if n_out:
        notes.append(("contour_outside_image", f"{n_out} of {len(contour.points)} points outside the "
                                               f"{shape[0]}x{shape[1]} image; clipped"))
    mask = rasterize(contour.points, shape)
    if not mask.any():
        raise ContourError("contour_empty_mask", "the polygon covers no pixel centre of the image", path)
    return mask, tuple(notes)
