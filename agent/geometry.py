"""Relative coordinates: points, boxes and the polygon check every privacy zone passes.

Coordinates are relative to the frame (0..1, origin top-left) until drawing, so a zone survives a
resolution change. Pure Python, no numpy: the config validates zones with `validate_polygon`, and
the pipeline rasterises them in `agent.core.zones`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PointRel:
    x_rel: float
    y_rel: float

    def __post_init__(self) -> None:
        for v in (self.x_rel, self.y_rel):
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"relative coordinate {v!r} is outside 0..1")


@dataclass(frozen=True, slots=True)
class BoxRel:
    """Axis-aligned box in relative coordinates; x0 <= x1, y0 <= y1."""

    x0_rel: float
    y0_rel: float
    x1_rel: float
    y1_rel: float

    def __post_init__(self) -> None:
        for v in (self.x0_rel, self.y0_rel, self.x1_rel, self.y1_rel):
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"box coordinate {v!r} is outside 0..1")
        if self.x0_rel > self.x1_rel or self.y0_rel > self.y1_rel:
            raise ValueError("box corners are inverted")

    @staticmethod
    def clipped(x0: float, y0: float, x1: float, y1: float) -> BoxRel:
        """Build a box from possibly out-of-range values, clipping to the frame."""

        def c(v: float) -> float:
            return min(1.0, max(0.0, v))

        x0, x1 = sorted((c(x0), c(x1)))
        y0, y1 = sorted((c(y0), c(y1)))
        return BoxRel(x0, y0, x1, y1)

    @property
    def width_rel(self) -> float:
        return self.x1_rel - self.x0_rel

    @property
    def height_rel(self) -> float:
        return self.y1_rel - self.y0_rel

    @property
    def area_rel(self) -> float:
        return self.width_rel * self.height_rel

    def expanded(self, margin_rel: float) -> BoxRel:
        """Grow each side by `margin_rel` times the box's own width/height."""
        dx = self.width_rel * margin_rel
        dy = self.height_rel * margin_rel
        return BoxRel.clipped(self.x0_rel - dx, self.y0_rel - dy, self.x1_rel + dx, self.y1_rel + dy)

    def grown_abs(self, grow_rel: float) -> BoxRel:
        """Grow each side by an absolute relative distance (used as detections age)."""
        return BoxRel.clipped(
            self.x0_rel - grow_rel, self.y0_rel - grow_rel, self.x1_rel + grow_rel, self.y1_rel + grow_rel
        )

    def iou(self, other: BoxRel) -> float:
        ix = max(0.0, min(self.x1_rel, other.x1_rel) - max(self.x0_rel, other.x0_rel))
        iy = max(0.0, min(self.y1_rel, other.y1_rel) - max(self.y0_rel, other.y0_rel))
        inter = ix * iy
        union = self.area_rel + other.area_rel - inter
        return inter / union if union > 0 else 0.0

    def to_points(self) -> tuple[PointRel, ...]:
        return (
            PointRel(self.x0_rel, self.y0_rel),
            PointRel(self.x1_rel, self.y0_rel),
            PointRel(self.x1_rel, self.y1_rel),
            PointRel(self.x0_rel, self.y1_rel),
        )


class PolygonError(ValueError):
    """A polygon is not usable as a privacy zone."""


def _segments_intersect(
    p1: tuple[float, float], p2: tuple[float, float], p3: tuple[float, float], p4: tuple[float, float]
) -> bool:
    def orient(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    def on_seg(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> bool:
        return min(a[0], b[0]) - 1e-12 <= c[0] <= max(a[0], b[0]) + 1e-12 and min(a[1], b[1]) - 1e-12 <= c[
            1
        ] <= max(a[1], b[1]) + 1e-12

    d1, d2 = orient(p3, p4, p1), orient(p3, p4, p2)
    d3, d4 = orient(p1, p2, p3), orient(p1, p2, p4)
    eps = 1e-12
    if ((d1 > eps and d2 < -eps) or (d1 < -eps and d2 > eps)) and (
        (d3 > eps and d4 < -eps) or (d3 < -eps and d4 > eps)
    ):
        return True
    if abs(d1) <= eps and on_seg(p3, p4, p1):
        return True
    if abs(d2) <= eps and on_seg(p3, p4, p2):
        return True
    if abs(d3) <= eps and on_seg(p1, p2, p3):
        return True
    return abs(d4) <= eps and on_seg(p1, p2, p4)


def validate_polygon(points: Sequence[Sequence[float]]) -> tuple[PointRel, ...]:
    """Check a zone polygon and return it as PointRel. Raises PolygonError with a homeowner-readable reason."""
    if len(points) < 3:
        raise PolygonError(f"polygon needs at least 3 points, got {len(points)}")
    pts: list[tuple[float, float]] = []
    for i, p in enumerate(points):
        if len(p) != 2:
            raise PolygonError(f"point {i} must be [x, y], got {list(p)!r}")
        x, y = float(p[0]), float(p[1])
        if not (math.isfinite(x) and math.isfinite(y)) or not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise PolygonError(
                f"point {i} {[x, y]} is out of range: coordinates are relative to the frame, 0..1"
            )
        pts.append((x, y))
    n = len(pts)
    for i in range(n):
        a1, a2 = pts[i], pts[(i + 1) % n]
        for j in range(i + 1, n):
            if j == i or (j + 1) % n == i or j == (i + 1) % n:
                continue  # adjacent edges share a vertex
            b1, b2 = pts[j], pts[(j + 1) % n]
            if _segments_intersect(a1, a2, b1, b2):
                raise PolygonError(f"polygon is self-intersecting (edge {i} crosses edge {j})")
    area2 = sum(pts[i][0] * pts[(i + 1) % n][1] - pts[(i + 1) % n][0] * pts[i][1] for i in range(n))
    if abs(area2) < 1e-9:
        raise PolygonError("polygon has zero area (points are collinear or repeated)")
    return tuple(PointRel(x, y) for x, y in pts)
