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

``read_masks`` gives, for many files at once, exactly what ``to_mask(parse(path), shape, path)`` gives for
each (or the exception it raises), with the geometry vectorised over all polygons (ingest uses it).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segsweep.errors import QCError
from segsweep.io import read_file

REASONS: dict[str, tuple[str, str]] = {
    "contour_unreadable": ("failure", "file cannot be opened or is not text"),
    "contour_empty": ("failure", "file holds no coordinates"),
    "contour_not_numeric": ("failure", "a token is not a number"),
    "contour_odd_values": ("failure", "odd number of values: not x y pairs"),
    "contour_bad_line": ("failure", "a line does not hold exactly one x y pair"),
    "contour_nonfinite": ("failure", "NaN, infinite or absurdly large (> 1e9) coordinate"),
    "contour_too_few_points": ("failure", "fewer than 3 distinct points"),
    "contour_empty_mask": ("failure", "polygon covers no pixel centre (zero area or outside the image)"),
    "contour_outside_image": ("warning", "points outside the image: the polygon is clipped to the image"),
    "contour_self_intersecting": ("warning", "polygon crosses itself: rasterised with the nonzero rule"),
}


_MAX_COORD = 1e9


class ContourError(QCError):
    """A contour file that cannot be used; ``reason`` is a stable QC code (see REASONS)."""

    reasons = REASONS


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
    pts = _points(text, path)
    return Contour(pts, _SELF_NOTE if self_intersects(pts) else ())


_SELF_NOTE = (("contour_self_intersecting", "polygon crosses itself; nonzero winding rule applied"),)


def _points(text: str, path: str | Path | None) -> np.ndarray:
    """The validated polygon of contour text (all checks of parse_text but the self-intersection test)."""
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
    # every non-blank line must hold one pair; otherwise x and y of neighbouring points get mixed up.
    # One regex pass proves the common case; the per-line loop runs only to find the offending line.
    if not _pairs_per_line(text):
        for lineno, line in enumerate(text.splitlines(), 1):
            n = len(line.split())
            if n != 2 and n != 0:
                raise ContourError("contour_bad_line", f"line {lineno} holds {n} values, expected 2", path)
    return _validated(values, path)


def from_points(points, path: str | Path | None = None) -> Contour:
    """Validate a polygon given as (x = column, y = row) points in pixel coordinates (e.g. converted from an
    RTSTRUCT): the checks of ``parse_text`` after the text (finite, at least 3 distinct points, duplicates
    and the closing point dropped, self-intersection flagged). Raises ContourError with a reason code."""
    values = np.ascontiguousarray(points, dtype=np.float64).reshape(-1)
    if values.size % 2:
        raise ContourError("contour_odd_values", f"{values.size} values (odd): not x y pairs", path)
    if not values.size:
        raise ContourError("contour_empty", "no coordinates", path)
    pts = _validated(values, path)
    return Contour(pts, _SELF_NOTE if self_intersects(pts) else ())


def _validated(values: np.ndarray, path: str | Path | None) -> np.ndarray:
    """Points [N, 2] of flat, C-contiguous float64 ``x y x y ...`` values: finite, consecutive duplicates
    and the closing point dropped, at least 3 distinct. Raises ContourError."""
    # |x| > 1e9 is no pixel coordinate of any scanner, and near 1e308 edge arithmetic overflows to inf/NaN
    if not (np.abs(values) <= _MAX_COORD).all():
        raise ContourError("contour_nonfinite", "NaN, infinite or absurdly large (> 1e9) coordinate", path)
    pts = values.reshape(-1, 2)
    # one complex number per point: == / != compare x and y together (same float equality as per column)
    z = values.view(np.complex128)
    # drop consecutive duplicates and the explicit closing point
    if len(z) > 1:
        keep = np.empty(len(z), bool)
        keep[0] = True
        np.not_equal(z[1:], z[:-1], out=keep[1:])
        if not keep.all():
            pts, z = pts[keep], z[keep]
    if len(z) > 1 and z[0] == z[-1]:
        pts, z = pts[:-1], z[:-1]
    # at least 3 distinct points: after dropping consecutive duplicates pts[0] != pts[1], so a third
    # distinct point is one that differs from both
    if len(z) < 3 or not ((z != z[0]) & (z != z[1])).any():
        n_distinct = len(np.unique(pts, axis=0))
        raise ContourError("contour_too_few_points", f"{n_distinct} distinct point(s), at least 3 needed", path)
    return pts


# A text whose lines are all blank or "x y" (separated by spaces/tabs, lines ended by \n or \r\n). Possessive
# quantifiers keep the scan linear. \S/\s are str.split()'s notion of whitespace; any other line break that
# str.splitlines() knows (\v, \f, \x1c-\x1e, \x85, \u2028, ...) is whitespace too, so it makes the match fail
# and the exact per-line check run instead. A lone \r is excluded before matching (see _pairs_per_line).
_PAIR_LINES = re.compile(r"(?:[ \t\r]*+(?:\S++[ \t\r]++\S++[ \t\r]*+)?+\n)*+[ \t\r]*+(?:\S++[ \t\r]++\S++[ \t\r]*+)?+")


def _pairs_per_line(text: str) -> bool:
    """True only if every line of ``text.splitlines()`` holds 0 or 2 tokens (False may also mean: unsure)."""
    if "\r" in text and text.count("\r") != text.count("\r\n"):
        return False  # a lone \r is a line break for splitlines(), but the pattern treats it as a space
    return _PAIR_LINES.fullmatch(text) is not None


def _is_float(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def parse(path: str | Path) -> Contour:
    """Read and validate one contour file."""
    path = path if isinstance(path, Path) else Path(path)  # (re-parsing a Path costs µs per file)
    return parse_text(_read_text(path), path)


def _read_text(path: Path) -> str:
    try:
        raw = read_file(path)[0]
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
    return text


def self_intersects(pts: np.ndarray) -> bool:
    """True if two non-adjacent edges of the closed polygon touch or cross (exact orientation tests).

    Candidate pairs come from a sweep over edges sorted by their left end: edge ``a`` is paired with the
    following edges in that order that start before ``a`` ends (one ``searchsorted``), so short edges of a
    smooth contour meet only a handful of neighbours (near-linear instead of all E² pairs).
    """
    n = len(pts)
    if n < 4:
        return False
    # (ufunc methods and ndarray methods below: numpy's module-level wrappers cost ~1 µs per call)
    a = np.asarray(pts, dtype=np.float64)
    b = np.concatenate((a[1:], a[:1]))
    xmin = np.minimum(a[:, 0], b[:, 0])
    order = xmin.argsort(kind="stable")
    xs_min, xs_max = xmin[order], np.maximum(a[:, 0], b[:, 0])[order]
    # sorted position k is paired with positions k+1 .. end[k]-1: xs_min is sorted, so these are exactly the
    # later edges whose left end is <= xs_max[k] (x ranges overlap)
    cnt = xs_min.searchsorted(xs_max, side="right") - np.arange(1, n + 1)
    total = int(np.add.reduce(cnt))
    if total == 0:
        return False
    k = np.arange(n).repeat(cnt)
    m = np.arange(1, total + 1) + (np.arange(n) - (cnt.cumsum() - cnt))[k]
    i, j = order[k], order[m]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    ymin = np.minimum(a[:, 1], b[:, 1])
    ymax = np.maximum(a[:, 1], b[:, 1])
    # neighbours share a point: skip them (edge n-1 and edge 0 share point 0)
    keep = (hi - lo > 1) & ((lo != 0) | (hi != n - 1))
    keep &= (ymin[i] <= ymax[j]) & (ymin[j] <= ymax[i])
    if not keep.any():
        return False
    i, j = i[keep], j[keep]
    return bool(_segments_meet(a[i], b[i], a[j], b[j]).any())


def _segments_meet(p1, p2, q1, q2):
    """Per pair: do segments p1-p2 and q1-q2 cross or touch (exact orientation tests)?"""
    d1 = _orient(q1, q2, p1)
    d2 = _orient(q1, q2, p2)
    d3 = _orient(p1, p2, q1)
    d4 = _orient(p1, p2, q2)
    proper = (d1 * d2 < 0) & (d3 * d4 < 0)
    # touching / collinear overlap: an endpoint lies on the other segment
    touch = (
        ((d1 == 0) & _on_box(q1, q2, p1))
        | ((d2 == 0) & _on_box(q1, q2, p2))
        | ((d3 == 0) & _on_box(p1, p2, q1))
        | ((d4 == 0) & _on_box(p1, p2, q2))
    )
    return proper | touch


def _orient(p, q, r):
    return np.sign((q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0]))


def _on_box(p, q, r):
    return (
        (np.minimum(p[:, 0], q[:, 0]) <= r[:, 0])
        & (r[:, 0] <= np.maximum(p[:, 0], q[:, 0]))
        & (np.minimum(p[:, 1], q[:, 1]) <= r[:, 1])
        & (r[:, 1] <= np.maximum(p[:, 1], q[:, 1]))
    )


def _row_crossings(x0, y0, x1, y1, h):
    """Where each non-flat edge crosses the pixel-centre rows of an image of height ``h`` (a number, or one
    per edge): (edge index, row, x) per crossing, plus the crossing count per edge; None if there are none."""
    n = x0.size
    # rows of each edge: clip(ceil(y_min), 0, h) <= r < clip(ceil(y_max), 0, h), both ends in one array
    # (ufuncs with out= and ndarray methods: numpy's module-level wrappers cost ~1 µs per call)
    lim = np.empty((2, n))
    np.minimum(y0, y1, out=lim[0])
    np.maximum(y0, y1, out=lim[1])
    np.ceil(lim, out=lim)
    np.maximum(lim, 0, out=lim)
    np.minimum(lim, h, out=lim)
    r_start, r_end = lim.astype(np.int64)
    counts = r_end - r_start
    np.maximum(counts, 0, out=counts)
    total = int(np.add.reduce(counts))
    if total == 0:
        return None
    edge = np.arange(n).repeat(counts)
    # row of crossing k: r_start[e] + (k - first[e]) with first = index of edge e's first crossing
    rows = np.arange(total) - (counts.cumsum() - counts - r_start)[edge]
    y0e, dye = y0[edge], (y1 - y0)[edge]
    t = (rows - y0e) / dye
    x = x0[edge] + t * (x1 - x0)[edge]
    # snap float noise so that a crossing that is exactly on a pixel centre keeps the tie rule
    xr = np.rint(x)
    x = np.where(np.abs(x - xr) < 1e-9, xr, x)
    return edge, rows, x, dye, counts


def _winding_box(points: np.ndarray, shape: tuple[int, int]):
    """Winding numbers on the polygon's bounding box within the image: (float64 [rb-ra, cb-ca], ra, ca), or
    None if no pixel centre can be inside. Outside the box the winding number is 0 (see ``winding``)."""
    h, w = int(shape[0]), int(shape[1])
    p = np.asarray(points, dtype=np.float64)
    q = np.concatenate((p[1:], p[:1]))
    x0, y0, x1, y1 = p[:, 0], p[:, 1], q[:, 0], q[:, 1]
    nonflat = y0 != y1
    if not nonflat.all():
        x0, y0, x1, y1 = x0[nonflat], y0[nonflat], x1[nonflat], y1[nonflat]
    n = x0.size
    if n == 0:
        return None
    crossings = _row_crossings(x0, y0, x1, y1, h)
    if crossings is None:
        return None
    edge, rows, x, dye, counts = crossings
    # work on the polygon's bounding box only: outside it the winding number is 0
    ra, rb = int(np.minimum.reduce(rows)), int(np.maximum.reduce(rows)) + 1
    # clip(floor(min x), 0, w) and clip(ceil(max x) + 1, 0, w) in plain Python (numpy scalars cost µs each)
    xmin, xmax = float(np.minimum.reduce(p[:, 0])), float(np.maximum.reduce(p[:, 0]))
    ca = 0 if xmin <= 0 else w if xmin >= w else math.floor(xmin)
    cb = 0 if xmax <= -1 else w if xmax >= w - 1 else math.ceil(xmax) + 1
    if cb <= ca:
        return None
    width = cb - ca + 1
    # crossing k counts for the centres at columns >= clip(ceil(x), ca, cb) (box column index - ca)
    c = np.ceil(x)
    np.maximum(c, ca, out=c)
    np.minimum(c, cb, out=c)
    c -= ca
    flat = (rows - ra) * width
    flat += c.astype(np.int64)
    # signed crossings (+1 upward edge, -1 downward) per box cell; bincount sums small integers exactly
    acc = np.bincount(flat, weights=np.sign(dye), minlength=(rb - ra) * width).reshape(rb - ra, width)
    return acc[:, : cb - ca].cumsum(axis=1), ra, ca


def winding(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Winding number of the closed polygon at every pixel centre, int32 [H, W] (see module docstring).

    Scan-line algorithm, vectorised: every non-horizontal edge contributes one crossing per row ``r`` with
    ``y_min <= r < y_max``, at ``x = x0 + (r - y0)(x1 - x0)/(y1 - y0)``, signed by the edge direction. A
    cumulative sum along each row of the crossings placed at column ``ceil(x)`` counts the crossings at or
    left of each centre: that sum is the winding number (up to a global sign, irrelevant for both rules).
    """
    out = np.zeros((int(shape[0]), int(shape[1])), dtype=np.int32)
    box = _winding_box(points, shape)
    if box is not None:
        wn, ra, ca = box
        out[ra : ra + wn.shape[0], ca : ca + wn.shape[1]] = wn
    return out


def _fill(wn: np.ndarray, rule: str) -> np.ndarray:
    if rule == "nonzero":
        return wn != 0
    if rule == "evenodd":
        return (wn.astype(np.int64) & 1) == 1
    raise ValueError(f"unknown fill rule {rule!r} (nonzero, evenodd)")


def rasterize(points: np.ndarray, shape: tuple[int, int], rule: str = "nonzero") -> np.ndarray:
    """Boolean mask [H, W]: pixel centres inside the polygon (``rule``: "nonzero" default, or "evenodd")."""
    mask = np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
    box = _winding_box(points, shape)
    if box is None:
        _fill(np.zeros(0), rule)  # an unknown rule still raises
    else:
        wn, ra, ca = box
        mask[ra : ra + wn.shape[0], ca : ca + wn.shape[1]] = _fill(wn, rule)
    return mask


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
    return _mask_result(contour.points, contour.warnings, shape, _winding_box(contour.points, shape), path)


def _mask_result(pts, warnings, shape, box, path):
    """(mask, notes) of ``to_mask`` from the polygon's winding box, or raise contour_empty_mask."""
    notes = list(warnings)
    lo, hi = np.minimum.reduce(pts, axis=0), np.maximum.reduce(pts, axis=0)
    # count only when the bounds show a point outside (the common contour lies inside: 2 reductions)
    if lo[0] < -0.5 or lo[1] < -0.5 or hi[0] > shape[1] - 0.5 or hi[1] > shape[0] - 0.5:
        n_out = outside_image(pts, shape)
        notes.append(
            ("contour_outside_image", f"{n_out} of {len(pts)} points outside the {shape[0]}x{shape[1]} image; clipped")
        )
    inside = None if box is None else box[0] != 0
    if inside is None or not inside.any():
        raise ContourError("contour_empty_mask", "the polygon covers no pixel centre of the image", path)
    mask = np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
    _, ra, ca = box
    mask[ra : ra + inside.shape[0], ca : ca + inside.shape[1]] = inside
    return mask, tuple(notes)


# ------------------------------------------------------------------------------------- many at once
def read_masks(files) -> list:
    """``to_mask(parse(path), shape, path)`` for many ``(path, shape)`` pairs: element k is what that call
    returns for pair k, or the exception it raises (ContourError or any other).

    Same results as the calls one by one; the self-intersection test and the rasterisation run as one
    vectorised pass over all polygons, because for single ~150-point contours numpy's per-call overhead,
    not arithmetic, is most of their cost.
    """
    out: list = [None] * len(files)
    live = []
    for k, (path, _) in enumerate(files):
        try:
            path = path if isinstance(path, Path) else Path(path)
            out[k] = _points(_read_text(path), path)
            live.append(k)
        except Exception as exc:  # reported per file, as parse would raise it
            out[k] = exc
    if not live:
        return out
    polys = [out[k] for k in live]
    shapes = [(int(files[k][1][0]), int(files[k][1][1])) for k in live]
    try:
        crossing = _self_intersections(polys)
        boxes = _winding_boxes(polys, shapes)
    except Exception:  # unexpected: redo one by one, so that the error lands on its own file
        for k in live:
            path, shape = files[k]
            try:
                out[k] = to_mask(Contour(out[k], _SELF_NOTE if self_intersects(out[k]) else ()), shape, path)
            except Exception as exc:
                out[k] = exc
        return out
    for k, pts, shape, cross, box in zip(live, polys, shapes, crossing, boxes):
        try:
            out[k] = _mask_result(pts, _SELF_NOTE if cross else (), shape, box, files[k][0])
        except Exception as exc:
            out[k] = exc
    return out


def _closed(polys: list[np.ndarray]):
    """All vertices (P), each one's successor on its own closed polygon (Q), polygon id per vertex,
    first vertex index and vertex count per polygon."""
    sizes = np.fromiter(map(len, polys), dtype=np.intp, count=len(polys))
    P = np.concatenate([np.asarray(p, dtype=np.float64) for p in polys])
    first = sizes.cumsum() - sizes
    nxt = np.arange(1, len(P) + 1)
    nxt[first + sizes - 1] = first
    return P, P[nxt], np.arange(len(polys)).repeat(sizes), first, sizes


def _self_intersections(polys: list[np.ndarray]) -> np.ndarray:
    """``[self_intersects(p) for p in polys]`` in one pass (bool array; same exact tests, same pairs)."""
    P, Q, g, first, sizes = _closed(polys)
    n = len(P)
    lo, hi = np.minimum(P, Q), np.maximum(P, Q)  # edge boxes: [:, 0] x, [:, 1] y
    # sort edges by (polygon, left end): complex numbers sort and search lexicographically (real, imag),
    # so each edge is paired with the later edges of its own polygon whose left end is <= its right end
    key = np.empty(n, dtype=np.complex128)
    key.real, key.imag = g, lo[:, 0]
    order = key.argsort(kind="stable")
    bound = np.empty(n, dtype=np.complex128)
    bound.real, bound.imag = g[order], hi[order, 0]
    cnt = key[order].searchsorted(bound, side="right") - np.arange(1, n + 1)
    total = int(np.add.reduce(cnt))
    hit = np.zeros(len(polys), dtype=bool)
    if total == 0:
        return hit
    k = np.arange(n).repeat(cnt)
    m = np.arange(1, total + 1) + (np.arange(n) - (cnt.cumsum() - cnt))[k]
    i, j = order[k], order[m]
    d = np.abs(i - j)  # same polygon: the distance of the local indices
    # neighbours share a point: skip them (edge n-1 and edge 0 share point 0); no pairs below 4 points
    ni = sizes[g[i]]
    keep = (d > 1) & (d != ni - 1) & (ni >= 4)
    keep &= (lo[i, 1] <= hi[j, 1]) & (lo[j, 1] <= hi[i, 1])
    if not keep.any():
        return hit
    i, j = i[keep], j[keep]
    hit[g[i[_segments_meet(P[i], Q[i], P[j], Q[j])]]] = True
    return hit


def _winding_boxes(polys: list[np.ndarray], shapes: list[tuple[int, int]]) -> list:
    """``[_winding_box(p, s) for p, s in zip(polys, shapes)]`` in one pass: the same arithmetic per
    crossing, one bincount for all boxes (each polygon's box is its own block of the count array)."""
    P, Q, g, first, sizes = _closed(polys)
    m = len(polys)
    hs = np.array([s[0] for s in shapes], dtype=np.int64)
    ws = [s[1] for s in shapes]
    x0, y0, x1, y1 = P[:, 0], P[:, 1], Q[:, 0], Q[:, 1]
    nonflat = y0 != y1
    if not nonflat.all():
        x0, y0, x1, y1, g = x0[nonflat], y0[nonflat], x1[nonflat], y1[nonflat], g[nonflat]
    n = x0.size
    boxes: list = [None] * m
    if n == 0:
        return boxes
    crossings = _row_crossings(x0, y0, x1, y1, hs[g])  # each edge clipped to its own image height
    if crossings is None:
        return boxes
    edge, rows, x, dye, counts = crossings
    # crossings come grouped by polygon (edges are in polygon order): per-polygon row range by reduceat
    per = np.bincount(g, weights=counts, minlength=m).astype(np.int64)
    start = per.cumsum() - per
    has = per > 0
    ra = np.zeros(m, dtype=np.int64)
    rb = np.zeros(m, dtype=np.int64)
    ra[has] = np.minimum.reduceat(rows, start[has])
    rb[has] = np.maximum.reduceat(rows, start[has]) + 1
    xmins = np.minimum.reduceat(P[:, 0], first).tolist()
    xmaxs = np.maximum.reduceat(P[:, 0], first).tolist()
    ca = np.zeros(m, dtype=np.int64)
    cb = np.zeros(m, dtype=np.int64)
    for k in range(m):  # clip(floor(min x), 0, w), clip(ceil(max x) + 1, 0, w), as in _winding_box
        w, xmin, xmax = ws[k], xmins[k], xmaxs[k]
        ca[k] = 0 if xmin <= 0 else w if xmin >= w else math.floor(xmin)
        cb[k] = 0 if xmax <= -1 else w if xmax >= w - 1 else math.ceil(xmax) + 1
    ok = has & (cb > ca)
    width = cb - ca + 1
    size = np.where(ok, (rb - ra) * width, 0)
    offset = size.cumsum() - size
    ge = g[edge]  # polygon of each crossing
    sel = ok[ge]
    c = np.ceil(x)
    np.maximum(c, ca[ge], out=c)
    np.minimum(c, cb[ge], out=c)
    c -= ca[ge]
    flat = offset[ge] + (rows - ra[ge]) * width[ge] + c.astype(np.int64)
    acc = np.bincount(flat[sel], weights=np.sign(dye)[sel], minlength=int(size.sum()))
    for k in np.flatnonzero(ok).tolist():
        nr, wd = int(rb[k] - ra[k]), int(width[k])
        block = acc[offset[k] : offset[k] + nr * wd].reshape(nr, wd)
        boxes[k] = (block[:, : wd - 1].cumsum(axis=1), int(ra[k]), int(ca[k]))
    return boxes
