"""Drawing zones over a frame for the homeowner: fill, outline, label, a legend and a coordinate grid.

The grid (a light line every 0.1, labelled along the top and left edges) lets the homeowner read
relative `[x, y]` points (0..1, origin top-left) off the picture and type them into `points:`.
The legend names each zone with its action and style in the zone's colour. The output keeps the
frame's size, so pixel positions in the picture are the frame's; text sizes follow the frame so
the picture reads the same on a 320x240 and a 1920x1080 camera.

The frame drawn on is unredacted: the picture is written only where the homeowner asks, on the hub.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from agent.core.zones import zone_mask
from agent.geometry import PointRel

_ZONE_COLOURS = [(0, 0, 255), (0, 200, 255), (255, 0, 255), (0, 255, 0), (255, 128, 0), (255, 255, 0)]
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GRID_STEPS = 10  # a line every 0.1
_GRID_COLOUR = (235, 235, 235)
_GRID_ALPHA = 0.45  # light enough to see the scene through, visible on dark and mid-tone frames
_LEGEND_BG = (0, 0, 0)


@dataclass(frozen=True, slots=True)
class PreviewZone:
    """One zone to draw: its name, relative points, action and style as the config states them."""

    name: str
    points: tuple[PointRel, ...]
    action: str
    style: str


@dataclass(frozen=True, slots=True)
class PreviewLayout:
    """Where the drawing put things, in pixels of the frame: for tests and for anyone placing more."""

    grid_x_px: tuple[int, ...]  # columns of the vertical lines at x = 0.1 .. 0.9
    grid_y_px: tuple[int, ...]  # rows of the horizontal lines at y = 0.1 .. 0.9
    legend_box_px: tuple[int, int, int, int] | None  # x0, y0, x1, y1 (inclusive); None without zones
    legend_rows: tuple[str, ...]
    text_scale: float


def colour_of(index: int) -> tuple[int, int, int]:
    """The BGR colour of the zone at `index` in the config's order (fill, outline, label and legend)."""
    c = _ZONE_COLOURS[index % len(_ZONE_COLOURS)]
    return (c[0], c[1], c[2])


def _text_scale(w: int, h: int) -> float:
    # Hershey text at scale 1 is ~22 px high: 0.4 is the smallest that stays legible on 320x240,
    # and tying it to the short side keeps the legend a similar share of any frame.
    return max(0.4, min(w, h) / 900)


def _thickness(scale: float) -> int:
    return max(1, round(scale * 1.6))


def grid_positions(size_px: int) -> tuple[int, ...]:
    """Pixel row/column of the grid lines at 0.1 .. 0.9 along a side of `size_px` pixels."""
    return tuple(min(size_px - 1, round(k * size_px / _GRID_STEPS)) for k in range(1, _GRID_STEPS))


def _draw_grid(out: np.ndarray, scale: float) -> tuple[tuple[int, ...], tuple[int, ...], int, int]:
    """Light lines every 0.1 with labels on the top and left edges; returns the positions and label bands."""
    h, w = out.shape[:2]
    xs, ys = grid_positions(w), grid_positions(h)
    line_w = max(1, round(min(w, h) / 700))
    lines = out.copy()
    for x in xs:
        cv2.line(lines, (x, 0), (x, h - 1), _GRID_COLOUR, line_w)
    for y in ys:
        cv2.line(lines, (0, y), (w - 1, y), _GRID_COLOUR, line_w)
    cv2.addWeighted(lines, _GRID_ALPHA, out, 1 - _GRID_ALPHA, 0, dst=out)
    lscale = scale * 0.85
    thick = _thickness(lscale)
    (tw, th), base = cv2.getTextSize("0.9", _FONT, lscale, thick)
    pad = max(1, th // 4)
    band_h, band_w = th + base + 2 * pad, tw + 2 * pad
    # Labels sit on small dark tabs so they read on any background; x along the top, y down the left.
    for k, x in enumerate(xs, start=1):
        x0 = max(0, min(w - band_w, x - band_w // 2))
        cv2.rectangle(out, (x0, 0), (x0 + band_w - 1, band_h - 1), _LEGEND_BG, -1)
        cv2.putText(out, f"0.{k}", (x0 + pad, pad + th), _FONT, lscale, _GRID_COLOUR, thick, cv2.LINE_AA)
    for k, y in enumerate(ys, start=1):
        y0 = max(0, min(h - band_h, y - band_h // 2))
        cv2.rectangle(out, (0, y0), (band_w - 1, y0 + band_h - 1), _LEGEND_BG, -1)
        cv2.putText(out, f"0.{k}", (pad, y0 + pad + th), _FONT, lscale, _GRID_COLOUR, thick, cv2.LINE_AA)
    cv2.rectangle(out, (0, 0), (band_w - 1, band_h - 1), _LEGEND_BG, -1)
    cv2.putText(out, "0", (pad, pad + th), _FONT, lscale, _GRID_COLOUR, thick, cv2.LINE_AA)
    return xs, ys, band_w, band_h


def _legend_rows(zones: Sequence[PreviewZone]) -> list[str]:
    return [f"{z.name}: {z.action}, {z.style}" for z in zones]


def _place_legend(occupied: np.ndarray, box_w: int, box_h: int, band_w: int, band_h: int) -> tuple[int, int]:
    """Top-left of the legend: the corner where it hides the least of the zones (ties: bottom-right)."""
    h, w = occupied.shape[:2]
    margin = max(2, band_h // 3)
    left, top = band_w + margin, band_h + margin  # clear of the grid labels
    right, bottom = max(left, w - box_w - margin), max(top, h - box_h - margin)
    corners = [(right, bottom), (right, top), (left, bottom), (left, top)]
    return min(corners, key=lambda c: int(occupied[c[1]:c[1] + box_h, c[0]:c[0] + box_w].sum()))


def _draw_legend(out: np.ndarray, zones: Sequence[PreviewZone], occupied: np.ndarray, scale: float,
                 band_w: int, band_h: int) -> tuple[tuple[int, int, int, int] | None, tuple[str, ...]]:
    if not zones:
        return None, ()
    h, w = out.shape[:2]
    rows = _legend_rows(zones)
    thick = _thickness(scale)
    sizes = [cv2.getTextSize(r, _FONT, scale, thick) for r in rows]
    th = max(s[0][1] for s in sizes)
    base = max(s[1] for s in sizes)
    pad = max(2, th // 3)
    swatch = th
    row_h = th + base + pad
    box_w = min(w, pad * 3 + swatch + max(s[0][0] for s in sizes))
    box_h = min(h, pad + row_h * len(rows))
    x0, y0 = _place_legend(occupied, box_w, box_h, band_w, band_h)
    x1, y1 = min(w - 1, x0 + box_w - 1), min(h - 1, y0 + box_h - 1)
    # Opaque background: the legend must read the same over a white wall or a dark room.
    cv2.rectangle(out, (x0, y0), (x1, y1), _LEGEND_BG, -1)
    for i, row in enumerate(rows):
        colour = colour_of(i)
        top = y0 + pad + i * row_h
        cv2.rectangle(out, (x0 + pad, top), (x0 + pad + swatch - 1, top + th - 1), colour, -1)
        cv2.putText(out, row, (x0 + 2 * pad + swatch, top + th), _FONT, scale, colour, thick, cv2.LINE_AA)
    return (x0, y0, x1, y1), tuple(rows)


def render_zones(img: np.ndarray, zones: Sequence[PreviewZone]) -> tuple[np.ndarray, PreviewLayout]:
    """Draw zones over a frame (fill, outline, label), a 0.1 grid and a legend; the frame is not changed."""
    h, w = img.shape[:2]
    out = img.copy()
    overlay = img.copy()
    occupied = np.zeros((h, w), np.uint8)
    scale = _text_scale(w, h)
    for i, z in enumerate(zones):
        m = zone_mask(z.points, w, h)
        overlay[m > 0] = colour_of(i)
        occupied[m > 0] = 1
    out = cv2.addWeighted(overlay, 0.35, out, 0.65, 0)
    thick = _thickness(scale)
    for i, z in enumerate(zones):
        poly = np.array([[p.x_rel * w, p.y_rel * h] for p in z.points], np.int32)
        cv2.polylines(out, [poly], True, colour_of(i), max(1, w // 400), cv2.LINE_AA)
    # After the outlines, so an outline along an edge never hides a grid label.
    xs, ys, band_w, band_h = _draw_grid(out, scale)
    for i, z in enumerate(zones):
        cx = int(sum(p.x_rel for p in z.points) / len(z.points) * w)
        cy = int(sum(p.y_rel for p in z.points) / len(z.points) * h)
        (tw, th), _ = cv2.getTextSize(z.name, _FONT, scale, thick)
        x0 = max(0, min(w - tw - 4, cx - tw // 2))
        y0 = max(th + 4, min(h - 4, cy))
        cv2.rectangle(out, (x0 - 2, y0 - th - 4), (x0 + tw + 2, y0 + 4), _LEGEND_BG, -1)
        cv2.putText(out, z.name, (x0, y0), _FONT, scale, colour_of(i), thick, cv2.LINE_AA)
    legend_box, rows = _draw_legend(out, zones, occupied, scale, band_w, band_h)
    return out, PreviewLayout(xs, ys, legend_box, rows, scale)
