"""Exact masks: every pixel whose centre is inside a zone is masked, frame edges included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.zones import polygons_mask_window, zone_mask
from agent.geometry import PointRel, PolygonError, validate_polygon


def centres_inside(points: list[tuple[float, float]], w: int, h: int) -> np.ndarray:
    """Even-odd test of every pixel centre, independent of OpenCV; points on an edge count as inside."""
    ys, xs = np.mgrid[0:h, 0:w]
    cx = (xs + 0.5) / w
    cy = (ys + 0.5) / h
    inside = np.zeros((h, w), bool)
    n = len(points)
    for i in range(n):
        (x1, y1), (x2, y2) = points[i], points[(i + 1) % n]
        cond = (y1 > cy) != (y2 > cy)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            xi = x1 + (cy - y1) * (x2 - x1) / (y2 - y1)
        inside ^= cond & (cx < xi)
    return inside


@st.composite
def star_polygons(draw: st.DrawFn) -> list[tuple[float, float]]:
    """Simple (non-self-intersecting) polygons: points sorted by angle around a centre, may touch edges."""
    n = draw(st.integers(3, 8))
    cx = draw(st.floats(0.2, 0.8))
    cy = draw(st.floats(0.2, 0.8))
    angles = sorted(draw(st.lists(st.floats(0, 2 * np.pi, exclude_max=True), min_size=n, max_size=n, unique=True)))
    pts = []
    for a in angles:
        r = draw(st.floats(0.05, 1.0))
        x = min(1.0, max(0.0, cx + r * np.cos(a)))
        y = min(1.0, max(0.0, cy + r * np.sin(a)))
        pts.append((x, y))
    return pts


@settings(max_examples=150, deadline=None)
@given(star_polygons(), st.integers(1, 97), st.integers(1, 83))
def test_every_pixel_centre_inside_is_masked(pts: list[tuple[float, float]], w: int, h: int) -> None:
    try:
        poly = validate_polygon(pts)
    except PolygonError:
        return  # clipping can make a degenerate polygon; validation rejects it, which is the contract
    mask = zone_mask(poly, w, h) > 0
    want = centres_inside(pts, w, h)
    assert not (want & ~mask).any(), "a pixel inside the zone is not masked"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=3, max_size=12), st.integers(1, 97),
       st.integers(1, 83))
def test_every_pixel_centre_inside_is_masked_in_any_vertex_order(pts: list[tuple[float, float]], w: int,
                                                                  h: int) -> None:
    # Vertices in any order, as a foreground outline may come: crossing edges and several
    # intervals per row (the even-odd rule). Not validated on purpose: only zones are.
    poly = tuple(PointRel(x, y) for x, y in pts)
    mask = zone_mask(poly, w, h) > 0
    assert not (centres_inside(pts, w, h) & ~mask).any(), "a pixel inside the polygon is not masked"


def union_of_zone_masks(polys: list[tuple[PointRel, ...]], w: int, h: int) -> np.ndarray:
    want = np.zeros((h, w), bool)
    for p in polys:
        want |= zone_mask(p, w, h) > 0
    return want


def placed(polys: list[tuple[PointRel, ...]], w: int, h: int) -> np.ndarray:
    m, (x0, y0, x1, y1) = polygons_mask_window(polys, w, h)
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = m > 0
    return out


@settings(max_examples=120, deadline=None)
@given(st.lists(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=3, max_size=9), min_size=1,
                max_size=7), st.integers(1, 97), st.integers(1, 83))
def test_polygons_together_are_the_union_of_each_alone(polys: list[list[tuple[float, float]]], w: int,
                                                        h: int) -> None:
    # A frame's foreground blobs are rasterised in one call: exactly the pixels each would get alone.
    pp = [tuple(PointRel(x, y) for x, y in p) for p in polys]
    assert np.array_equal(placed(pp, w, h), union_of_zone_masks(pp, w, h))


@pytest.mark.parametrize("copies", [255, 256, 257, 512, 600])
def test_many_polygons_over_one_pixel_still_mask_it(copies: int) -> None:
    # Counts over a pixel are kept modulo 256 in each pass: 256 intervals over one pixel must not
    # read as none. The same triangle many times over, and many thin slivers across one row.
    tri = validate_polygon([[0.1, 0.1], [0.9, 0.2], [0.4, 0.9]])
    assert np.array_equal(placed([tri] * copies, 64, 48), zone_mask(tri, 64, 48) > 0)
    slivers = [tuple(PointRel(x, y) for x, y in ((i / copies, 0.4), ((i + 1) / copies, 0.4), (i / copies, 0.6)))
               for i in range(copies)]
    assert np.array_equal(placed(slivers, 1000, 50), union_of_zone_masks(slivers, 1000, 50))


def test_no_polygons_mask_nothing() -> None:
    m, window = polygons_mask_window([], 64, 48)
    assert m.size == 0 and window == (0, 0, 0, 0)


def test_a_comb_masks_each_tooth_and_leaves_the_gaps() -> None:
    # Four teeth hanging from a bar: eight crossings on every row through the teeth.
    pts = [(0.0, 0.0), (7 / 8, 0.0)]
    for i in range(3, -1, -1):
        x0, x1 = i / 4, i / 4 + 1 / 8
        pts += [(x1, 1.0), (x0, 1.0)] + ([(x0, 0.25)] if i else [])
        pts += [(x0 - 1 / 8, 0.25)] if i else []
    poly = validate_polygon(pts)
    m = zone_mask(poly, 64, 64) > 0
    assert not (centres_inside(pts, 64, 64) & ~m).any()
    assert m[40:, 0:8].all() and m[40:, 16:24].all() and m[40:, 32:40].all() and m[40:, 48:56].all()
    # Between the teeth stays visible, but for the pixel of outline and dilation on each side.
    assert not m[40:, 10:14].any() and not m[40:, 26:30].any() and not m[40:, 42:46].any()


@pytest.mark.parametrize(("w", "h"), [(1, 1), (2, 3), (640, 480), (1920, 1080), (7, 5)])
def test_full_frame_zone_covers_every_pixel(w: int, h: int) -> None:
    m = zone_mask(validate_polygon([[0, 0], [1, 0], [1, 1], [0, 1]]), w, h)
    assert m.min() == 255


@pytest.mark.parametrize(("w", "h"), [(640, 480), (33, 17), (1920, 1080)])
def test_zone_touching_right_and_bottom_edges_covers_last_row_and_column(w: int, h: int) -> None:
    m = zone_mask(validate_polygon([[0.7, 0.6], [1.0, 0.6], [1.0, 1.0], [0.7, 1.0]]), w, h)
    assert (m[-1, int(w * 0.71):] == 255).all()
    assert (m[int(h * 0.61):, -1] == 255).all()


def test_mask_outside_stays_small() -> None:
    # Conservative, but not wildly so: a half-frame zone masks about half the frame.
    m = zone_mask(validate_polygon([[0, 0], [0.5, 0], [0.5, 1], [0, 1]]), 640, 480)
    frac = (m > 0).mean()
    assert 0.5 <= frac < 0.51


def test_masks_are_read_only_and_cached() -> None:
    poly = validate_polygon([[0, 0], [1, 0], [0, 1]])
    a = zone_mask(poly, 10, 10)
    assert a is zone_mask(poly, 10, 10)
    with pytest.raises(ValueError):
        a[0, 0] = 0


@pytest.mark.parametrize(
    ("pts", "msg"),
    [
        ([[0, 0], [1, 1]], "at least 3 points"),
        ([[0, 0], [1, 0], [2, 1]], "out of range"),
        ([[0, 0], [0.5, 0.5], [1, 1]], "zero area"),
        ([[0.1, 0.1], [0.4, 0.9], [0.4, 0.1], [0.1, 0.9]], "self-intersecting"),
        ([[0, 0], [1, 0], [float("nan"), 1]], "out of range"),
        ([[0, 0, 0], [1, 0], [1, 1]], "must be [x, y]"),
    ],
)
def test_bad_polygons(pts: list[list[float]], msg: str) -> None:
    with pytest.raises(PolygonError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        validate_polygon(pts)
