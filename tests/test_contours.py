"""Contour parsing, validation and the rasterisation rule (pixel centres at integer coordinates,
nonzero winding, half-open ties)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from segsweep.data import contours as C

SAMPLE = __import__("pathlib").Path(__file__).parent / "data" / "sunnybrook" / "contourfiles"


def rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


# ------------------------------------------------------------------------------------ rasterisation
def test_integer_rectangle_covers_exactly_its_area():
    # centres (c, r) with 2 <= c < 5 and 1 <= r < 3: columns 2,3,4 × rows 1,2
    m = C.rasterize(rect(2, 1, 5, 3), (6, 8))
    assert m.sum() == 6
    assert sorted(map(tuple, np.argwhere(m))) == [(1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (2, 4)]


def test_fractional_rectangle_counts_pixel_centres():
    # x in [1.5, 4.5): centres 2,3,4; y in [0.2, 2.7): centres 1,2 → 6 pixels (area 7.5 does not matter)
    m = C.rasterize(rect(1.5, 0.2, 4.5, 2.7), (5, 6))
    assert m.sum() == 6
    assert m[1:3, 2:5].all()


def test_triangle_hand_counted():
    # (0,0),(4,0),(0,4): row r holds centres c = 0 .. 3-r (the hypotenuse c + r = 4 is a right edge: out)
    m = C.rasterize(np.array([[0, 0], [4, 0], [0, 4]], float), (6, 6))
    expected = np.zeros((6, 6), bool)
    for r in range(4):
        expected[r, : 4 - r] = True
    assert m.sum() == 10
    np.testing.assert_array_equal(m, expected)


def test_orientation_does_not_matter():
    tri = np.array([[0.3, 0.2], [7.7, 1.1], [2.2, 6.6]])
    np.testing.assert_array_equal(C.rasterize(tri, (8, 9)), C.rasterize(tri[::-1], (8, 9)))


def test_adjacent_polygons_tile_without_gap_or_overlap():
    # two rectangles sharing the edge x = 3.0 (through pixel centres) and two triangles sharing a diagonal
    a, b = C.rasterize(rect(0, 0, 3, 5), (6, 7)), C.rasterize(rect(3, 0, 7, 5), (6, 7))
    assert not (a & b).any()
    np.testing.assert_array_equal(a | b, C.rasterize(rect(0, 0, 7, 5), (6, 7)))
    t1 = C.rasterize(np.array([[0, 0], [6, 0], [6, 6]], float), (7, 7))
    t2 = C.rasterize(np.array([[0, 0], [6, 6], [0, 6]], float), (7, 7))
    assert not (t1 & t2).any()
    np.testing.assert_array_equal(t1 | t2, C.rasterize(rect(0, 0, 6, 6), (7, 7)))


def test_evenodd_matches_matplotlib_on_random_polygons():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:30, 0:30]
    centres = np.c_[xx.ravel(), yy.ravel()]
    for _ in range(50):
        # irrational-ish offsets keep vertices off pixel centres (matplotlib's tie rule differs)
        pts = rng.uniform(-4, 34, (int(rng.integers(3, 25)), 2)) + 1e-4 * math.pi
        ref = MplPath(pts).contains_points(centres).reshape(30, 30)
        np.testing.assert_array_equal(C.rasterize(pts, (30, 30), rule="evenodd"), ref)


def _winding_bruteforce(pts, x, y):
    ang = np.arctan2(pts[:, 1] - y, pts[:, 0] - x)
    d = np.diff(np.r_[ang, ang[:1]])
    d = (d + np.pi) % (2 * np.pi) - np.pi
    return int(round(d.sum() / (2 * np.pi)))


def test_nonzero_matches_angle_sum_winding_number():
    rng = np.random.default_rng(5)
    for _ in range(15):
        pts = rng.uniform(0, 16, (int(rng.integers(3, 12)), 2)) + 1e-4 * math.e
        wn = C.winding(pts, (16, 16))
        for r in range(16):
            for c in range(16):
                assert abs(wn[r, c]) == abs(_winding_bruteforce(pts, c, r)), (r, c)


def test_nonzero_fills_overlap_evenodd_does_not():
    # a pentagram: the centre pentagon has winding number 2
    ang = np.pi / 2 + np.arange(5) * 4 * np.pi / 5
    star = np.c_[20 + 15 * np.cos(ang), 20 + 15 * np.sin(ang)]
    nz, eo = C.rasterize(star, (41, 41)), C.rasterize(star, (41, 41), rule="evenodd")
    assert nz[20, 20] and not eo[20, 20]
    assert (eo & ~nz).sum() == 0 and (nz & ~eo).sum() > 20
    with pytest.raises(ValueError):
        C.rasterize(star, (41, 41), rule="bogus")


def test_polygon_outside_the_image_is_clipped():
    m = C.rasterize(rect(-10, -10, 3, 2), (5, 5))
    assert m.sum() == 3 * 2 and m[:2, :3].all()
    assert C.rasterize(rect(10, 10, 20, 20), (5, 5)).sum() == 0


def test_sunnybrook_contours_rasterise_to_plausible_areas():
    # endocardial areas of a real adult LV: roughly 300-3000 pixels at 1.37 mm
    files = sorted(SAMPLE.glob("*/i-contours/*.txt"))
    assert len(files) == 6
    for f in files:
        c = C.parse(f)
        mask, notes = C.to_mask(c, (256, 256), f)
        poly_area = 0.5 * abs(
            np.dot(c.points[:, 0], np.roll(c.points[:, 1], 1)) - np.dot(c.points[:, 1], np.roll(c.points[:, 0], 1))
        )
        assert 300 < mask.sum() < 3000
        # pixel-centre sampling of a smooth blob: count ≈ area (boundary error ~ perimeter / 2)
        assert abs(mask.sum() - poly_area) < 0.5 * len(c.points) * 0.6 + 10
        assert notes == ()


# ------------------------------------------------------------------------------------------ parsing
def write(tmp_path, text, name="c.txt"):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return p


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "contour_empty"),
        ("  \n\n \t\n", "contour_empty"),
        ("1 2\n3 4\nnan 5\n", "contour_nonfinite"),
        ("1 2\n3 inf\n5 6\n", "contour_nonfinite"),
        ("1 2\n3 4\n5\n", "contour_odd_values"),
        ("1 2\n3 four\n5 6\n", "contour_not_numeric"),
        ("1,2\n3,4\n5,6\n", "contour_not_numeric"),
        ("1 2 3\n4\n5 6\n", "contour_bad_line"),
        ("1 2\n3 4\n", "contour_too_few_points"),
        ("1 2\n3 4\n1 2\n3 4\n", "contour_too_few_points"),
        ("1 1\n1 1\n1 1\n1 1\n", "contour_too_few_points"),
    ],
)
def test_bad_contour_text_gets_a_reason(tmp_path, text, reason):
    with pytest.raises(C.ContourError) as err:
        C.parse(write(tmp_path, text))
    assert err.value.reason == reason
    assert str(tmp_path / "c.txt") in str(err.value)


def test_binary_and_missing_files_are_unreadable(tmp_path):
    with pytest.raises(C.ContourError) as err:
        C.parse(write(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe"))
    assert err.value.reason == "contour_unreadable"
    with pytest.raises(C.ContourError) as err:
        C.parse(tmp_path / "missing.txt")
    assert err.value.reason == "contour_unreadable"


def test_closed_and_unclosed_polygons_give_the_same_mask(tmp_path):
    open_ = C.parse(write(tmp_path, "1 1\n6 1\n6 5\n1 5\n", "a.txt"))
    closed = C.parse(write(tmp_path, "1 1\n6 1\n6 5\n1 5\n1 1\n", "b.txt"))
    np.testing.assert_array_equal(open_.points, closed.points)
    assert C.to_mask(open_, (8, 8))[0].sum() == 5 * 4


def test_crlf_tabs_and_blank_lines_are_accepted(tmp_path):
    c = C.parse(write(tmp_path, "1.5\t1.5\r\n\r\n6.5 1.5\r\n6.5  5.5\r\n1.5 5.5"))
    assert c.points.shape == (4, 2) and c.warnings == ()


def test_points_outside_the_image_warn_and_clip(tmp_path):
    c = C.parse(write(tmp_path, "-3 -3\n4 -3\n4 2\n-3 2\n"))
    mask, notes = C.to_mask(c, (6, 6))
    assert [code for code, _ in notes] == ["contour_outside_image"]
    assert mask.sum() == 4 * 2  # columns 0..3, rows 0..1


def test_self_intersecting_contour_warns_and_still_rasterises(tmp_path):
    bowtie = C.parse(write(tmp_path, "0 0\n10 10\n10 0\n0 10\n"))
    assert bowtie.self_intersecting
    mask, notes = C.to_mask(bowtie, (12, 12))
    assert "contour_self_intersecting" in [code for code, _ in notes]
    assert mask[5, 1] and mask[5, 9] and not mask[1, 5] and not mask[9, 5]  # the two lobes, left and right


def test_self_intersection_test_agrees_with_brute_force():
    def brute(p):
        n = len(p)

        def orient(a, b, c):
            return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

        def on(a, b, c):
            return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

        for i in range(n):
            for j in range(i + 2, n):
                if i == 0 and j == n - 1:
                    continue
                p1, p2, q1, q2 = p[i], p[(i + 1) % n], p[j], p[(j + 1) % n]
                d = orient(q1, q2, p1), orient(q1, q2, p2), orient(p1, p2, q1), orient(p1, p2, q2)
                if d[0] * d[1] < 0 and d[2] * d[3] < 0:
                    return True
                if (
                    (d[0] == 0 and on(q1, q2, p1))
                    or (d[1] == 0 and on(q1, q2, p2))
                    or (d[2] == 0 and on(p1, p2, q1))
                    or (d[3] == 0 and on(p1, p2, q2))
                ):
                    return True
        return False

    rng = np.random.default_rng(11)
    seen = set()
    for _ in range(150):
        pts = np.round(rng.uniform(0, 5, (int(rng.integers(4, 10)), 2)))  # grid points: many touches
        got = C.self_intersects(pts)
        assert got == brute(pts)
        seen.add(got)
    assert seen == {True, False}
    circle = np.c_[np.cos(np.linspace(0, 6.2, 300)), np.sin(np.linspace(0, 6.2, 300))] * 40
    assert not C.self_intersects(circle)


def test_zero_area_polygon_has_an_empty_mask(tmp_path):
    c = C.parse(write(tmp_path, "1 1\n3 3\n5 5\n"))  # collinear
    with pytest.raises(C.ContourError) as err:
        C.to_mask(c, (8, 8))
    assert err.value.reason == "contour_empty_mask"


def test_every_reason_is_documented():
    doc = (__import__("pathlib").Path(__file__).parents[1] / "docs" / "qc.md").read_text()
    for code in C.REASONS:
        assert f"`{code}`" in doc
