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
- Polygons seen once (a frame's foreground blobs) are rasterised together:
  `polygons_mask_window` gives exactly the union of their `zone_mask`s,
  in a fixed number of array calls however many there are.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
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


def _fill(polygons: Sequence[tuple[PointRel, ...]], width_px: int, height_px: int,
          bboxes: npt.NDArray[np.int64], window: Window) -> Mask:
    """Exact even-odd fill of pixel centres for every polygon, united, in `window` (x0, y0, x1, y1).

    For each row the polygon's crossings with the horizontal line through the row's pixel centres
    are paired into intervals; every pixel centre inside an interval (closed, with a tiny
    tolerance) is set. A polygon's pixels are those of its own bbox (`bboxes`, one row each), so
    the window, which holds every bbox, crops nothing.

    All the polygons go through the same few array calls, whatever their number. A frame's
    foreground layer has dozens of blobs, and a call per blob was most of what a camera's thread
    did: each call that releases the GIL may wait a whole switch interval to get it back while
    other cameras' threads run, so with four cameras the cost was the handoffs, not the
    arithmetic.
    """
    n = np.fromiter((len(p) for p in polygons), np.int64, len(polygons))
    first = np.cumsum(n) - n
    coords = np.fromiter((c for p in polygons for q in p for c in (q.x_rel, q.y_rel)), np.float64, 2 * int(n.sum()))
    xs, ys = coords[0::2] * width_px, coords[1::2] * height_px
    # Edge i runs from vertex i to the next vertex of its own polygon (the last one closes it).
    nxt = np.arange(1, xs.size + 1)
    nxt[first + n - 1] = first
    pid = np.repeat(np.arange(len(polygons)), n)
    x1, y1, x2, y2 = xs, ys, xs[nxt], ys[nxt]
    lo, hi = np.minimum(y1, y2), np.maximum(y1, y2)
    # Candidate rows per edge: a row or two either side of its span, inside its polygon's bbox;
    # the exact test below keeps only the rows it crosses.
    r0 = np.maximum(np.floor(lo).astype(np.int64) - 1, bboxes[pid, 1])
    r1 = np.minimum(np.ceil(hi).astype(np.int64) + 1, bboxes[pid, 3])
    count = np.maximum(r1 - r0, 0)
    edge = np.repeat(np.arange(xs.size), count)
    row = r0[edge] + np.arange(edge.size) - np.repeat(np.cumsum(count) - count, count)
    cy = row + 0.5  # row centres
    # Half-open rule (y1 <= cy < y2 or y2 <= cy < y1) counts each vertex once, so every
    # polygon crosses each row an even number of times.
    keep = (lo[edge] <= cy) & (cy < hi[edge])
    edge, row, cy = edge[keep], row[keep], cy[keep]
    # The share of the edge at the row first, then the crossing: on a crossing row
    # |cy - y1| <= |dy|, so the share lies in [0, 1] even for an edge only a hair from
    # horizontal, where (cy - y1) * (x2 - x1) / dy would lose it to underflow.
    share = np.clip((cy - y1[edge]) / (y2 - y1)[edge], 0.0, 1.0)
    xi = x1[edge] + share * (x2 - x1)[edge]
    p = pid[edge]
    order = np.lexsort((xi, row, p))
    xi, row, p = xi[order], row[order], p[order]
    if xi.size % 2 or (row[0::2] != row[1::2]).any() or (p[0::2] != p[1::2]).any():
        # Cannot happen (the half-open rule above); if it ever did, pairing crossings of
        # different rows would leave pixels out, so refuse: redaction withholds the frame.
        raise ValueError("polygon crossings do not pair up")
    a, b, row, p = xi[0::2], xi[1::2], row[0::2], p[0::2]
    eps = 1e-9
    bx0, bx1 = bboxes[p, 0], bboxes[p, 2]
    # Pixel j's centre is j + 0.5: inside when a <= j + 0.5 <= b.
    start = np.clip(np.ceil(a - 0.5 - eps).astype(np.int64), bx0, bx1)
    end = np.maximum(np.clip(np.floor(b - 0.5 + eps).astype(np.int64) + 1, bx0, bx1), start)
    return _paint(row, start, end, window)


#: Intervals over one pixel that `_paint` counts in one pass: its counts are kept modulo 256.
_LAYER = 255


def _paint(row: npt.NDArray[np.int64], start: npt.NDArray[np.int64], end: npt.NDArray[np.int64],
           window: Window) -> Mask:
    """The window's pixels (255) covered by any interval [start, end) of frame row `row`.

    Each interval adds 1 at its start and takes 1 away at its end; a running sum along the row
    then counts the intervals over each pixel, and a pixel is set when its count is not 0. The
    running sums are the differences of consecutive rows of one integral image (a single
    vectorised OpenCV call, 4x faster here than numpy's cumulative sum, and one GIL handoff).
    The image is uint8 and its sums are read modulo 256, so a count of 256 would read as 0:
    intervals are therefore painted in layers of at most `_LAYER` per row (one layer on any
    real frame), which keeps every count of a pass in 0..255.
    """
    wx0, wy0, wx1, wy1 = window
    ww, wh = wx1 - wx0, wy1 - wy0
    keep = end > start
    row, start, end = row[keep] - wy0, start[keep] - wx0, end[keep] - wx0
    if row.size == 0:
        return np.zeros((wh, ww), np.uint8)
    if row.size >= 1 << 23:
        # Each pass's integral image sums at most 256 per interval: keep it inside int32.
        raise ValueError(f"{row.size} mask intervals in one frame: too many to rasterise")
    if np.bincount(row).max() <= _LAYER:
        layers = [np.ones(row.size, np.bool_)]
    else:
        order = np.argsort(row, kind="stable")
        row, start, end = row[order], start[order], end[order]
        rank = np.arange(row.size) - np.searchsorted(row, row)  # the interval's place in its row
        layers = [(rank >= k) & (rank < k + _LAYER) for k in range(0, int(rank.max()) + 1, _LAYER)]
    low = 0 if sys.byteorder == "little" else 3  # the byte of each int32 sum that holds it modulo 256

    def covered(sel: npt.NDArray[np.bool_]) -> Mask:
        diff = np.zeros((wh, ww + 1), np.uint8)
        flat = diff.reshape(-1)
        base = row[sel] * (ww + 1)
        np.add.at(flat, base + start[sel], 1)
        np.add.at(flat, base + end[sel], 255)  # -1 modulo 256
        sums = cv2.extractChannel(cv2.integral(diff).view(np.uint8).reshape(wh + 1, ww + 2, 4), low)
        # Row i's running sum is the integral's row i + 1 minus its row i: not 0 modulo 256
        # exactly when the two low bytes differ.
        return cv2.compare(sums[1:, 1:ww + 1], sums[:-1, 1:ww + 1], cv2.CMP_NE)

    out = covered(layers[0])
    for sel in layers[1:]:
        cv2.bitwise_or(out, covered(sel), dst=out)
    return out


def _bboxes(polygons: Sequence[tuple[PointRel, ...]], width_px: int, height_px: int) -> npt.NDArray[np.int64]:
    return np.array([polygon_bbox_px(p, width_px, height_px) for p in polygons], np.int64).reshape(-1, 4)


def polygons_mask_window(polygons: Sequence[tuple[PointRel, ...]], width_px: int,
                         height_px: int) -> tuple[Mask, Window]:
    """(mask, window): the union of the polygons' `zone_mask`s, cropped to the union of their bboxes.

    The same pixels as the crop of the union of the full masks (the window holds every polygon's
    bbox, and the dilation sees nothing outside it), at the cost of the window, and in a fixed
    number of array calls however many polygons there are. Read-only.
    """
    if not polygons:
        return np.zeros((0, 0), np.uint8), (0, 0, 0, 0)
    bboxes = _bboxes(polygons, width_px, height_px)
    window = (int(bboxes[:, 0].min()), int(bboxes[:, 1].min()), int(bboxes[:, 2].max()), int(bboxes[:, 3].max()))
    mask = _fill(polygons, width_px, height_px, bboxes, window)
    # The outline, drawn 8-connected, adds every pixel the boundary passes
    # through (thin slivers whose pixel centres all lie outside); then one
    # pixel of dilation covers pixels the polygon only partly overlaps.
    origin = np.array([window[0], window[1]], np.int32) * (1 << _SHIFT)
    cv2.polylines(mask, [_to_fixed(p, width_px, height_px) - origin for p in polygons], True, 255,
                  thickness=1, lineType=cv2.LINE_8, shift=_SHIFT)
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    mask.setflags(write=False)
    return mask, window


def polygon_mask_window(points: tuple[PointRel, ...], width_px: int, height_px: int) -> tuple[Mask, Window]:
    """(mask, bbox): `zone_mask` cropped to `polygon_bbox_px`, computed in the bbox alone. Read-only."""
    return polygons_mask_window((points,), width_px, height_px)


@lru_cache(maxsize=64)
def zone_mask(points: tuple[PointRel, ...], width_px: int, height_px: int) -> Mask:
    """Binary mask (255 inside) for a polygon at a resolution. Read-only, cached."""
    m, (x0, y0, x1, y1) = polygon_mask_window(points, width_px, height_px)
    mask = np.zeros((height_px, width_px), np.uint8)
    mask[y0:y1, x0:x1] = m
    mask.setflags(write=False)
    return mask


#: The homeowner's zones repeat every frame: cached. Polygons seen once (a frame's foreground
#: blobs) go through `polygons_mask_window` together, so they never push the zones out.
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


