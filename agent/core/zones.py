"""Privacy-zone rasterisation: relative polygons and boxes to exact pixel masks.

Polygons are validated where the config is loaded (`agent.geometry.validate_polygon`).

Invariants:
- Polygons are relative (0..1). They become pixels only in `zone_mask`.
- Rasterisation is conservative: every pixel whose centre lies inside or on
  the polygon is in the mask, and so is every pixel the outline touches, so
  a polygon that reaches x=1 or y=1 covers the last column or row. Erring
  outward costs a few pixels of over-masking; erring inward would leak.
- Masks are cached per (polygon, width, height), so a resolution change
  mid-stream produces a new, correct mask rather than a stale one.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

from agent.geometry import BoxRel, PointRel

Mask = npt.NDArray[np.uint8]


# Sub-pixel precision for cv2.fillPoly (coordinates are multiplied by 2**_SHIFT).
_SHIFT = 8


def _to_fixed(points: tuple[PointRel, ...], width_px: int, height_px: int) -> npt.NDArray[np.int32]:
    # Pixel (col j, row i) covers [j, j+1) x [i, i+1) in continuous frame
    # coordinates; its centre is (j + 0.5, i + 0.5). cv2 treats integer
    # coordinates as pixel centres, so shift by -0.5.
    arr = np.array([[p.x_rel * width_px - 0.5, p.y_rel * height_px - 0.5] for p in points], dtype=np.float64)
    return np.round(arr * (1 << _SHIFT)).astype(np.int32)


Window = tuple[int, int, int, int]


def _scanline_fill(points: tuple[PointRel, ...], width_px: int, height_px: int, window: Window | None = None) -> Mask:
    """Exact even-odd fill of pixel centres, computed analytically per row.

    For each row the polygon's crossings with the horizontal line through the
    row's pixel centres are paired into intervals; every pixel centre inside
    an interval (closed, with a tiny tolerance) is set. Vectorised over rows.
    `window` (x0, y0, x1, y1; exclusive end) computes only those pixels of the
    frame's mask: exactly the crop of the full fill, at the window's cost.
    """
    wx0, wy0, wx1, wy1 = window if window is not None else (0, 0, width_px, height_px)
    xs = np.array([p.x_rel for p in points], dtype=np.float64) * width_px
    ys = np.array([p.y_rel for p in points], dtype=np.float64) * height_px
    x1, y1 = xs, ys
    x2, y2 = np.concatenate((xs[1:], xs[:1])), np.concatenate((ys[1:], ys[:1]))
    cy = np.arange(wy0, wy1, dtype=np.float64) + 0.5  # row centres
    # Half-open rule (y1 <= cy < y2 or y2 <= cy < y1) counts each vertex once.
    lo, hi = np.minimum(y1, y2)[:, None], np.maximum(y1, y2)[:, None]
    crosses = (lo <= cy[None, :]) & (cy[None, :] < hi)
    dy = (y2 - y1)[:, None]
    # The share of the edge at each row first, then the crossing: on a crossing row
    # |cy - y1| <= |dy|, so the share lies in [0, 1] even for an edge only a hair from
    # horizontal, where (cy - y1) * (x2 - x1) / dy would lose it to underflow. Rows the edge
    # does not cross may divide by zero or overflow; they are replaced by inf just below.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        share = np.clip((cy[None, :] - y1[:, None]) / dy, 0.0, 1.0)
        xi = x1[:, None] + share * (x2 - x1)[:, None]
    xi = np.where(crosses, xi, np.inf)
    xi.sort(axis=0)
    ww, wh = wx1 - wx0, wy1 - wy0
    filled = np.zeros((wh, ww), np.bool_)
    cols = np.arange(ww, dtype=np.int32)[None, :]
    eps = 1e-9
    # Sorted, each row's crossings come first and its infinities last, so only the first
    # `pairs` pairs hold an interval on any row: one for a convex polygon (a foreground hull),
    # where looping over every edge's pair was most of the cost of a small blob.
    pairs = int(crosses.sum(axis=0).max(initial=0)) // 2
    for k in range(0, 2 * pairs, 2):
        a, b = xi[k], xi[k + 1]
        ok = np.isfinite(a) & np.isfinite(b)
        # Pixel j's centre is j + 0.5: inside when a <= j + 0.5 <= b.
        start = np.clip(np.ceil(a - 0.5 - eps), wx0, wx1).astype(np.int32) - wx0
        end = np.clip(np.floor(b - 0.5 + eps) + 1, wx0, wx1).astype(np.int32) - wx0
        end = np.where(ok, end, start)
        # A row's intervals are disjoint: set each one (a compare per pixel of the window, no
        # running sum, which cost as much as the rest of the fill together).
        filled |= (cols >= start[:, None]) & (cols < end[:, None])
    return filled.view(np.uint8) * np.uint8(255)


def _mask_in(points: tuple[PointRel, ...], width_px: int, height_px: int, window: Window) -> Mask:
    """The pixels of the polygon's frame mask inside `window`, computed there only."""
    mask = _scanline_fill(points, width_px, height_px, window)
    # The outline, drawn 8-connected, adds every pixel the boundary passes
    # through (thin slivers whose pixel centres all lie outside); then one
    # pixel of dilation covers pixels the polygon only partly overlaps.
    fixed = _to_fixed(points, width_px, height_px) - np.array([window[0], window[1]], np.int32) * (1 << _SHIFT)
    cv2.polylines(mask, [fixed], True, 255, thickness=1, lineType=cv2.LINE_8, shift=_SHIFT)
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    mask.setflags(write=False)
    return mask


@lru_cache(maxsize=64)
def zone_mask(points: tuple[PointRel, ...], width_px: int, height_px: int) -> Mask:
    """Binary mask (255 inside) for a polygon at a resolution. Read-only, cached."""
    return _mask_in(points, width_px, height_px, (0, 0, width_px, height_px))


def polygon_mask_window(points: tuple[PointRel, ...], width_px: int, height_px: int) -> tuple[Mask, Window]:
    """(mask, bbox): `zone_mask` cropped to `polygon_bbox_px`, computed in the bbox alone.

    The same pixels as the crop of the full mask (the bbox holds all of it, and the dilation
    sees nothing outside it), at the cost of the bbox: a polygon that changes every frame (a
    foreground blob) costs its own size, not a whole frame. Read-only.
    """
    bbox = polygon_bbox_px(points, width_px, height_px)
    return _mask_in(points, width_px, height_px, bbox), bbox


#: The homeowner's zones repeat every frame: cached. A polygon seen once (a foreground blob) goes
#: through `polygon_mask_window` itself, so a frame's dozens of blobs never push the zones out.
zone_mask_window = lru_cache(maxsize=16)(polygon_mask_window)


def box_pixels(box: BoxRel, width_px: int, height_px: int) -> tuple[int, int, int, int]:
    """Conservative pixel bounds (x0, y0, x1, y1), exclusive end, for a relative box."""
    x0 = max(0, math.floor(box.x0_rel * width_px))
    y0 = max(0, math.floor(box.y0_rel * height_px))
    x1 = min(width_px, math.ceil(box.x1_rel * width_px))
    y1 = min(height_px, math.ceil(box.y1_rel * height_px))
    return x0, y0, x1, y1


def rect_pixels(points: tuple[PointRel, ...], width_px: int, height_px: int) -> tuple[int, int, int, int] | None:
    """Pixel bounds (x0, y0, x1, y1; exclusive end) of an axis-aligned rectangle, or None for other polygons.

    Detection boxes are rectangles: they are filled by slicing instead of
    rasterising a full-frame mask per box per frame. Like `zone_mask`, the
    bounds cover every pixel the box touches plus a two-pixel guard, a superset
    of what `zone_mask` (outline rounding plus one pixel of dilation) covers for
    the same rectangle; a degenerate box still hides a few pixels.
    """
    if len(points) != 4:
        return None
    xs = sorted({p.x_rel for p in points})
    ys = sorted({p.y_rel for p in points})
    if len(xs) > 2 or len(ys) > 2:
        return None
    if {(p.x_rel, p.y_rel) for p in points} != {(x, y) for x in xs for y in ys}:
        return None
    x0, y0, x1, y1 = box_pixels(BoxRel(xs[0], ys[0], xs[-1], ys[-1]), width_px, height_px)
    g = 2
    return max(0, x0 - g), max(0, y0 - g), min(width_px, max(x1, x0 + 1) + g), min(height_px, max(y1, y0 + 1) + g)


def polygon_bbox_px(points: tuple[PointRel, ...], width_px: int, height_px: int) -> tuple[int, int, int, int]:
    """Pixel bounds (exclusive end) that contain the whole of `zone_mask` for the polygon."""
    xs = [p.x_rel for p in points]
    ys = [p.y_rel for p in points]
    x0, y0, x1, y1 = box_pixels(BoxRel(min(xs), min(ys), max(xs), max(ys)), width_px, height_px)
    # zone_mask adds an outline and one pixel of dilation: widen to match.
    return max(0, x0 - 2), max(0, y0 - 2), min(width_px, x1 + 2), min(height_px, y1 + 2)


