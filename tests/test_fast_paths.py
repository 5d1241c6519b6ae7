"""The optimised ingestion paths give exactly what their plain counterparts give.

- ``contours.read_masks`` (one vectorised pass over many files) == ``to_mask(parse(path), shape, path)``
  file by file, errors included;
- the regex line check in contour parsing == the documented rule "one ``x y`` pair of floats per non-blank
  line", where lines are those of ``str.splitlines()`` (the rule stated in contours.py);
- ``ingest.write_npz`` with a list value == the same call with ``np.stack(list)``;
- ``io.read_file`` == ``Path.read_bytes()`` / ``Path.stat().st_size``.
"""

from __future__ import annotations

import io
import math
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from segsweep.data import contours as C
from segsweep.data import ingest
from segsweep.io import read_file


# ------------------------------------------------------------------------------- contour test material
def _fmt(pts: np.ndarray, rng: np.random.Generator) -> str:
    """Contour text: one "x y" line per point, in varied but valid number formats."""
    style = rng.integers(3)
    if style == 0:
        lines = [f"{x!r} {y!r}" for x, y in pts.tolist()]
    elif style == 1:
        lines = [f"{x:.3f}\t{y:.3f}" for x, y in pts.tolist()]
    else:
        lines = [f"  {x:e}   {y:e}  " for x, y in pts.tolist()]
    return "\n".join(lines) + ("\n" if rng.random() < 0.7 else "")


def _star(rng, cx, cy, r_out, r_in, n):
    """Concave star polygon (alternating radii), points quantised to 1/8 px (exact float arithmetic)."""
    a = np.sort(rng.uniform(0, 2 * np.pi, 2 * n))
    r = np.where(np.arange(2 * n) % 2 == 0, r_out, r_in)
    return np.round(np.c_[cx + r * np.cos(a), cy + r * np.sin(a)] * 8) / 8


def _random_polygons(seed: int):
    """(name, points, shape) of seeded random polygons of every kind the batch must handle."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(14):  # convex, well inside
        h, w = (int(v) for v in rng.integers(12, 48, 2))
        n = int(rng.integers(3, 25))
        a = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(1.5, min(h, w) / 2 - 1)
        pts = np.c_[w / 2 + r * np.cos(a), h / 2 + r * np.sin(a)]
        if k % 2:  # half of them on the 1/8 grid: many crossings exactly on pixel centres (tie rule)
            pts = np.round(pts * 8) / 8
        out.append((f"convex{k}", pts, (h, w)))
    for k in range(10):  # concave stars
        h, w = (int(v) for v in rng.integers(16, 40, 2))
        out.append(
            (f"star{k}", _star(rng, w / 2, h / 2, min(h, w) / 2.5, min(h, w) / 6, int(rng.integers(3, 9))), (h, w))
        )
    for k in range(10):  # random vertex order: mostly self-intersecting
        h, w = (int(v) for v in rng.integers(10, 32, 2))
        pts = np.round(rng.uniform(-1, [w, h], (int(rng.integers(4, 12)), 2)) * 4) / 4
        out.append((f"tangle{k}", pts, (h, w)))
    for k in range(8):  # partly outside the image (any side), one fully outside
        h, w = (int(v) for v in rng.integers(10, 30, 2))
        cx, cy = rng.choice([-3.0, w + 2.0, w / 2]), rng.choice([-3.0, h + 2.0, h / 2])
        if cx == w / 2 and cy == h / 2:
            cx = -4.0
        if k == 7:
            cx, cy = -40.0, -40.0
        out.append((f"outside{k}", _star(rng, cx, cy, 8.0, 5.0, 5), (h, w)))
    tiny = [
        ("tiny_between_centres", [[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]], (4, 4)),  # covers no centre
        ("tiny_on_centre", [[1.0, 1.0], [1.5, 1.0], [1.0, 1.5]], (4, 4)),  # a left/top tie: inside
        ("collinear3", [[0, 0], [2, 2], [4, 4]], (6, 6)),
        ("collinear4", [[0, 0], [1, 1], [3, 3], [2, 2]], (6, 6)),  # overlapping edges: self-intersecting
        ("flat_horizontal", [[0, 2], [3, 2], [5, 2]], (6, 6)),
        ("rect_int", [[1, 1], [4, 1], [4, 3], [1, 3]], (5, 6)),
        ("rect_closed_dups", [[1, 1], [1, 1], [4, 1], [4, 3], [4, 3], [1, 3], [1, 1]], (5, 6)),
        ("bowtie", [[0, 0], [6, 6], [6, 0], [0, 6]], (8, 8)),
        ("figure8_overlap", [[1, 1], [7, 1], [7, 7], [1, 7], [1, 0.5], [3, 0.5], [3, 3], [1, 3]], (9, 9)),
        ("touching_vertex", [[0, 0], [4, 0], [2, 2], [4, 4], [0, 4], [2, 2]], (6, 6)),
        ("whole_image_plus", [[-10, -10], [50, -10], [50, 50], [-10, 50]], (7, 5)),
        ("negative_zero", [[-0.0, 0.0], [3, 0], [3, 3], [0.0, -0.0]], (4, 4)),
        ("one_px_image", [[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5]], (1, 1)),
        ("huge_but_safe", [[5e8, 2], [-5e8, 3], [2, 5e8]], (8, 8)),  # contours.py rejects |x| > 1e9
    ]
    out += [(name, np.array(p, dtype=np.float64), s) for name, p, s in tiny]
    return out


BAD_TEXTS = {
    "empty": "",
    "blank_only": " \n\t\r\n \n",
    "nan": "1 2\n3 nan\n5 6\n",
    "inf": "1 2\n3 4\n-inf 6\n",
    "overflow_inf": "1 2\n3 1e400\n5 6\n",
    "odd": "1 2\n3 4\n5\n",
    "garbage": "1 2\nx y\n5 6\n",
    "hexfloat": "0x1 2\n3 4\n5 6\n",
    "commas": "1,2\n3,4\n5,6\n",
    "comma_decimal": "1,5 2\n3 4\n5 6\n",
    "three_on_a_line": "1 2 3\n4 5 6\n7 8\n9 10\n",
    "two_points": "1 2\n3 4\n",
    "two_distinct": "1 2\n3 4\n1 2\n3 4\n",
    "one_point_repeated": "2 2\n2 2\n2 2\n",
    "header_line": "x y\n1 2\n3 4\n5 6\n",
}


def _write_batch(tmp_path: Path, seed: int):
    """(path, shape) pairs: random polygons and bad texts interleaved, plus unreadable files."""
    rng = np.random.default_rng(seed + 1)
    files = []
    for name, pts, shape in _random_polygons(seed):
        p = tmp_path / f"{name}.txt"
        p.write_text(_fmt(pts, rng))
        files.append((p, shape))
    for i, (name, text) in enumerate(BAD_TEXTS.items()):
        p = tmp_path / f"bad_{name}.txt"
        p.write_text(text)
        files.insert(3 * i + 1, (str(p), (16, 16)))  # between good files; also a str path
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x01 1 2\n")
    (tmp_path / "nul.txt").write_bytes(b"1 2\n3 4\x00\n5 6\n")
    (tmp_path / "a_folder.txt").mkdir()
    for name in ("binary.txt", "nul.txt", "missing.txt", "a_folder.txt"):
        files.insert(len(files) // 2, (tmp_path / name, (8, 8)))
    return files


def _reference(path, shape):
    try:
        return C.to_mask(C.parse(path), shape, path)
    except Exception as exc:  # noqa: BLE001 - the reference outcome, compared below
        return exc


def _assert_same(got, ref, label):
    if isinstance(ref, Exception):
        assert isinstance(got, Exception), f"{label}: read_masks returned a mask, to_mask raised {ref!r}"
        assert type(got) is type(ref), f"{label}: {type(got).__name__} != {type(ref).__name__}"
        assert getattr(got, "reason", None) == getattr(ref, "reason", None), label
        assert str(got) == str(ref), label
        return
    assert not isinstance(got, Exception), f"{label}: read_masks gave {got!r}, to_mask succeeded"
    mask, notes = got
    assert mask.dtype == bool and mask.shape == ref[0].shape, label
    assert np.array_equal(mask, ref[0]), f"{label}: masks differ at {np.argwhere(mask != ref[0])[:5].tolist()}"
    assert notes == ref[1], f"{label}: notes {notes} != {ref[1]}"


def _crosses_brute(pts: np.ndarray) -> bool:
    """Two non-adjacent edges of the closed polygon touch or cross: all pairs, exact rational arithmetic."""
    p = [(Fraction(x), Fraction(y)) for x, y in pts.tolist()]
    n = len(p)
    if n < 4:
        return False

    def orient(a, b, c):
        v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return (v > 0) - (v < 0)

    def on_seg(a, b, c):  # c collinear with a-b: inside its box?
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue
            a, b, c, d = p[i], p[(i + 1) % n], p[j], p[(j + 1) % n]
            d1, d2, d3, d4 = orient(c, d, a), orient(c, d, b), orient(a, b, c), orient(a, b, d)
            if d1 * d2 < 0 and d3 * d4 < 0:
                return True
            if (
                (d1 == 0 and on_seg(c, d, a))
                or (d2 == 0 and on_seg(c, d, b))
                or (d3 == 0 and on_seg(a, b, c))
                or (d4 == 0 and on_seg(a, b, d))
            ):
                return True
    return False


# ---------------------------------------------------------------------------------- 1. read_masks
@pytest.mark.parametrize("seed", [0, 1])
def test_read_masks_equals_to_mask_file_by_file(tmp_path, seed):
    files = _write_batch(tmp_path, seed)
    got = C.read_masks(files)
    assert len(got) == len(files)
    outcomes = set()
    for (path, shape), g in zip(files, got):
        ref = _reference(path, shape)
        _assert_same(g, ref, f"{Path(path).name} {shape}")
        # only QC errors: an unexpected one would send the whole batch down read_masks' one-by-one fallback
        assert not isinstance(ref, Exception) or isinstance(ref, C.ContourError), f"{path}: {ref!r}"
        outcomes.add(
            getattr(ref, "reason", None)
            if isinstance(ref, Exception)
            else ("self" if C._SELF_NOTE[0] in ref[1] else "mask")
        )
    # the batch exercised what it claims to: every failure kind, masks with and without self-crossings
    expected = {
        "contour_empty",
        "contour_nonfinite",
        "contour_odd_values",
        "contour_not_numeric",
        "contour_bad_line",
        "contour_too_few_points",
        "contour_unreadable",
        "contour_empty_mask",
        "self",
        "mask",
    }
    assert expected <= outcomes, expected - outcomes


def test_read_masks_does_not_depend_on_neighbours(tmp_path):
    files = _write_batch(tmp_path, 3)
    together = C.read_masks(files)
    alone = [C.read_masks([f])[0] for f in files]
    reversed_ = C.read_masks(files[::-1])[::-1]
    for (path, shape), t, a, r in zip(files, together, alone, reversed_):
        label = f"{Path(path).name} {shape}"
        ref = _reference(path, shape)
        _assert_same(t, ref, label + " (batch)")
        _assert_same(a, ref, label + " (alone)")
        _assert_same(r, ref, label + " (reversed batch)")
    assert C.read_masks([]) == []


def test_read_masks_self_intersection_flag_matches_all_pairs_test(tmp_path):
    """The sweep (batched and single) flags exactly the polygons that an all-pairs exact test flags."""
    polys = [(n, p, s) for n, p, s in _random_polygons(5) if np.all(p * 8 == np.round(p * 8))]
    files = []
    for name, pts, shape in polys:
        (tmp_path / name).write_text("\n".join(f"{x!r} {y!r}" for x, y in pts.tolist()))
        files.append((tmp_path / name, shape))
    results = C.read_masks(files)
    n_cross = 0
    for (name, _, _), (path, _), res in zip(polys, files, results):
        contour = C.parse(path)
        want = _crosses_brute(contour.points)
        n_cross += want
        assert contour.self_intersecting == want, f"{name}: parse says {contour.self_intersecting}"
        if not isinstance(res, Exception):
            assert (C._SELF_NOTE[0] in res[1]) == want, f"{name}: read_masks notes {res[1]}"
    assert 5 <= n_cross < len(polys)  # both outcomes are well represented


def test_read_masks_unexpected_error_stays_on_its_file(tmp_path):
    """A finite polygon whose edge length overflows float64 makes the geometry raise; the other files of
    the batch still get exactly their own results."""
    files = _write_batch(tmp_path, 4)[:12]
    boom = tmp_path / "overflow.txt"
    boom.write_text("1.5e308 5\n-1.5e308 10\n3 20\n")
    files.insert(5, (boom, (32, 32)))
    with np.errstate(all="ignore"):
        got = C.read_masks(files)
        for (path, shape), g in zip(files, got):
            _assert_same(g, _reference(path, shape), Path(path).name)


def test_overflowing_coordinates_give_a_contour_error_or_a_mask(tmp_path):
    # a user's file can do this; errors users cause must be SegsweepError subclasses (QC rows), not bugs
    p = tmp_path / "overflow.txt"
    p.write_text("1.5e308 5\n-1.5e308 10\n3 20\n")
    with np.errstate(all="ignore"):
        res = C.read_masks([(p, (32, 32))])[0]
    assert isinstance(res, C.ContourError) and res.reason == "contour_nonfinite", (
        f"contours.to_mask/read_masks gave {type(res).__name__}: {res}"
    )


# ------------------------------------------------------------------ 2. the line check vs the line rule
def _rule(text: str):
    """The documented reading, done the plain way: lines of str.splitlines(), each blank or one x y pair;
    checks in the order of contours.REASONS. Returns points [N, 2] or (reason, line number or None)."""
    lines = [line.split() for line in text.splitlines()]
    tokens = [t for line in lines for t in line]
    if not tokens:
        return "contour_empty", None
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        return "contour_not_numeric", None
    if len(values) % 2:
        return "contour_odd_values", None
    for lineno, line in enumerate(lines, 1):
        if len(line) not in (0, 2):
            return "contour_bad_line", lineno
    if not all(math.isfinite(v) and abs(v) <= 1e9 for v in values):  # documented bound, docs/qc.md
        return "contour_nonfinite", None
    pts = list(zip(values[0::2], values[1::2]))
    pts = [p for i, p in enumerate(pts) if i == 0 or p != pts[i - 1]]  # consecutive duplicates
    if len(pts) > 1 and pts[0] == pts[-1]:  # explicit closing point
        pts.pop()
    if len(set(pts)) < 3:
        return "contour_too_few_points", None
    return np.array(pts, dtype=np.float64)


def _outcome(text: str):
    try:
        return C.parse_text(text).points
    except C.ContourError as exc:
        line = None
        if exc.reason == "contour_bad_line":
            line = int(exc.detail.split()[1])  # "line {n} holds ..."
        return exc.reason, line


BREAKS = ["\n", "\r\n", "\r", "\v", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
SPACES = [" ", "\t", "  ", " \t ", "\xa0", "\x1f", "\u3000"]  # whitespace that breaks no line


@pytest.mark.parametrize(
    "text, want",
    [
        ("1 2\r3 4\r5 6\r", 3),  # lone \r ends lines
        ("1 2\r\n3 4\r\n5 6\r\n", 3),
        ("1 2\r\r\n3 4\r\n5 6", 3),  # \r, then \r\n: a blank line between
        ("1\r2\n3 4\n5 6\n", ("contour_bad_line", 1)),
        ("1 2\n3\v4\n5 6\n", ("contour_bad_line", 2)),
        ("1 2\x0c3 4\x0c5 6", 3),
        ("1\x0c2\n3 4\n5 6\n", ("contour_bad_line", 1)),
        ("1 2\u20283 4\u20295 6\x1c", 3),
        ("1 2\x1c3 4 5 6\n", ("contour_bad_line", 2)),
        ("1 2\x1f3 4\x1f5 6", ("contour_bad_line", 1)),  # \x1f is whitespace, not a line break
        ("\n\n  \t\n1 2  \n\t3\t4\t\n \n5 6 \n\n", 3),
        ("1 2 3 4\n5 6\n7 8\n", ("contour_bad_line", 1)),
        ("1 2\n3 4\n5 6 7 8\n", ("contour_bad_line", 3)),
        ("1 2\n3\n4 5 6\n", ("contour_bad_line", 2)),
        ("1\xa02\n3\u30004\n5 6", 3),
    ],
)
def test_line_rule_examples(text, want):
    got = _outcome(text)
    expected = _rule(text)
    if isinstance(want, int):
        assert isinstance(expected, np.ndarray) and len(expected) == want  # the rule, as read by hand
        assert isinstance(got, np.ndarray), f"{text!r}: parse gave {got}"
        assert np.array_equal(got, expected)
    else:
        assert expected == want
        assert got == want, f"{text!r}: parse gave {got}, the line rule gives {want}"


def _odd_text(rng: np.random.Generator) -> str:
    """A contour-like text with random line breaks, spacing, blank lines and (sometimes) broken pairs."""
    n = int(rng.integers(3, 7))
    vals = [str(v) for v in rng.integers(-3, 40, 2 * n).tolist()]
    if rng.random() < 0.1:
        vals[int(rng.integers(len(vals)))] = str(rng.choice(["nan", "inf", "x", "1,5"]))
    if rng.random() < 0.05:
        vals.pop()
    if rng.random() < 0.7:
        chunks = [vals[i : i + 2] for i in range(0, len(vals), 2)]
    else:  # regroup: some lines get 1, 3 or 4 numbers
        chunks, i = [], 0
        while i < len(vals):
            k = int(rng.integers(1, 5))
            chunks.append(vals[i : i + k])
            i += k
    one_break = rng.random() < 0.5
    brk = str(rng.choice(BREAKS))
    lines = []
    for chunk in chunks:
        if rng.random() < 0.2:  # blank line, perhaps with spaces
            lines.append(str(rng.choice(["", " ", "\t", " \t", "\xa0"])))
        lead, trail = (str(rng.choice(["", "", " ", "\t", "\x1f"])) for _ in range(2))
        sep = str(rng.choice(SPACES))
        lines.append(lead + sep.join(chunk) + trail)
    text = ""
    for line in lines:
        text += line + (brk if one_break else str(rng.choice(BREAKS)))
    return text if rng.random() < 0.7 else text.rstrip("".join(BREAKS))


def test_line_check_matches_rule_on_random_whitespace(tmp_path):
    rng = np.random.default_rng(11)
    seen = set()
    texts = [_odd_text(rng) for _ in range(400)]
    for text in texts:
        want, got = _rule(text), _outcome(text)
        if isinstance(want, np.ndarray):
            seen.add("points")
            assert isinstance(got, np.ndarray), f"{text!r}: parse gave {got}, the line rule gives points"
            assert np.array_equal(got, want), repr(text)
        else:
            seen.add(want[0])
            assert got == want, f"{text!r}: parse gave {got}, the line rule gives {want}"
    assert {"points", "contour_bad_line", "contour_not_numeric", "contour_nonfinite"} <= seen, seen
    # the same texts as UTF-8 files through the batch reader (no polygon here overflows)
    files = []
    for i, text in enumerate(texts[:60]):
        (tmp_path / f"{i}.txt").write_bytes(text.encode("utf-8"))
        files.append((tmp_path / f"{i}.txt", (48, 48)))
    for (path, shape), g in zip(files, C.read_masks(files)):
        _assert_same(g, _reference(path, shape), repr(texts[int(path.stem)]))


# ------------------------------------------------------------------------------------ 3. write_npz
def _arrays(rng):
    return {
        "image": [rng.standard_normal((5, 7)).astype(np.float32) for _ in range(4)],
        "mask": [rng.integers(0, 3, (5, 7), dtype=np.uint8) for _ in range(4)],
        "strided": [rng.integers(-9, 9, (6, 8), dtype=np.int16)[::2, 1::3] for _ in range(3)],  # views
        "fortran": [np.asfortranarray(rng.standard_normal((3, 4))) for _ in range(2)],
        "bool": [rng.random((2, 3)) < 0.5 for _ in range(3)],
        "single": [np.arange(6, dtype=np.int64).reshape(2, 3)],
        "vectors": [rng.standard_normal(2).astype(np.float32) for _ in range(5)],
        "plain": rng.standard_normal((2, 2)),
    }


def test_write_npz_list_is_written_as_np_stack(tmp_path):
    arrays = _arrays(np.random.default_rng(2))
    stacked = {k: np.stack(v) if isinstance(v, list) else v for k, v in arrays.items()}
    ingest.write_npz(tmp_path / "list.npz", arrays)
    ingest.write_npz(tmp_path / "stack.npz", stacked)
    a, b = (tmp_path / "list.npz").read_bytes(), (tmp_path / "stack.npz").read_bytes()
    assert a == b, "write_npz(list) and write_npz(np.stack(list)) wrote different bytes"
    # each member is what numpy itself writes for the stacked array
    with zipfile.ZipFile(tmp_path / "list.npz") as zf:
        assert zf.namelist() == [f"{k}.npy" for k in arrays]
        for k, v in stacked.items():
            buf = io.BytesIO()
            np.save(buf, v, allow_pickle=False)
            assert zf.read(f"{k}.npy") == buf.getvalue(), k
    with np.load(tmp_path / "list.npz", allow_pickle=False) as z:
        for k, v in stacked.items():
            assert z[k].dtype == v.dtype and z[k].shape == v.shape, k
            assert np.array_equal(z[k], v), k
    # fixed member timestamps: the same arrays give the same bytes again
    ingest.write_npz(tmp_path / "list.npz", arrays)
    assert (tmp_path / "list.npz").read_bytes() == a
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.npz", "stack.npz"]  # no temp files left


def _loaded(path: Path, key: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        return z[key]


def test_write_npz_list_of_non_native_byte_order_is_written_as_np_stack(tmp_path):
    # np.stack gives native byte order ('<f4' on x86) whatever the inputs' order
    arrays = [(np.arange(4) + k).astype(">f4") for k in range(2)]
    ingest.write_npz(tmp_path / "list.npz", {"a": arrays})
    ingest.write_npz(tmp_path / "stack.npz", {"a": np.stack(arrays)})
    got, want = _loaded(tmp_path / "list.npz", "a"), np.stack(arrays)
    assert np.array_equal(got, want)
    assert got.dtype.str == want.dtype.str, (
        f"BUG ingest._npy_parts: list of {arrays[0].dtype.str} arrays written as {got.dtype.str}, "
        f"np.stack gives {want.dtype.str}"
    )
    assert (tmp_path / "list.npz").read_bytes() == (tmp_path / "stack.npz").read_bytes()


def test_write_npz_keeps_zero_dimensional_shapes(tmp_path):
    path = tmp_path / "s.npz"
    ingest.write_npz(path, {"s": np.array(2.5), "l": [np.float32(1.5), np.float32(-2.0)]})
    s, lst = _loaded(path, "s"), _loaded(path, "l")
    assert s.shape == (), (
        f"BUG ingest.write_npz: 0-d array loads with shape {s.shape} (np.ascontiguousarray makes ndim >= 1)"
    )
    assert lst.shape == (2,), (
        f"BUG ingest.write_npz: list of 0-d arrays loads with shape {lst.shape}, np.stack gives (2,)"
    )


def test_write_npz_rejects_unequal_list_and_keeps_old_file(tmp_path):
    path = tmp_path / "p.npz"
    ingest.write_npz(path, {"a": np.zeros(3)})
    before = path.read_bytes()
    with pytest.raises(ValueError):
        ingest.write_npz(path, {"a": [np.zeros(3), np.zeros(4)]})
    with pytest.raises(ValueError):
        ingest.write_npz(path, {"a": [np.zeros(3, np.float32), np.zeros(3, np.float64)]})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]


# ------------------------------------------------------------------------------------ 4. read_file
@pytest.mark.parametrize("size", [0, 37, (1 << 20) + 12345])
def test_read_file_equals_read_bytes(tmp_path, size):
    path = tmp_path / f"f{size}.bin"
    path.write_bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes())
    for p in (path, str(path)):
        data, n = read_file(p)
        assert type(data) is bytes
        assert data == path.read_bytes()
        assert n == path.stat().st_size == size


def test_read_file_reads_past_a_zero_stat_size():
    # /proc files report st_size 0 but hold content: the "grew since fstat" branch must read all of it
    proc = Path("/proc/self/cmdline")
    if not proc.exists():
        pytest.skip("no /proc")
    data, n = read_file(proc)
    assert n == 0
    assert data == proc.read_bytes() and len(data) > 0


def test_read_file_missing_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_file(tmp_path / "nope")
