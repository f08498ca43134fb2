"""Drawing zones over a frame for the homeowner: fill, outline, label, a legend and a coordinate grid.

The grid (a light line every 0.1, labelled along the top and left edges) lets the homeowner read
relative `[x, y]` points (0..1, origin top-left) off the picture and type them into `points:`.
The legend names each zone with its action and style in the zone's colour. The output keeps the
frame's size, so pixel positions in the picture are the frame's; text sizes follow the frame so
the picture reads the same on a 320x240 and a 1920x1080 camera.

Invariant: the picture is drawn over the frame as it leaves the hub, never over a raw frame.
`render_zones` takes a `RedactedFrame` (built by `agent.core.redact.apply` from the camera's own
policy, see `redacted_view`) or a `Withheld` notice, and nothing else: mask zones show exactly
the pixels the pipeline sends (solid, pixelate or blur), withhold zones are outlined (they pass
untouched while empty), and a frame the mode withholds as a whole shows no pixel of it, only a
filled canvas that says so. A tint over raw pixels (the old preview) inverts almost exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from agent.core.datatypes import Analysis, Frame, Image
from agent.core.health import SCENE_LEGEND
from agent.core.policy import CameraPolicy, decide_preview
from agent.core.redact import RedactedFrame, apply, require_redacted
from agent.core.zones import zone_mask
from agent.geometry import PointRel
from agent.vocab import Mode

_ZONE_COLOURS = [(0, 0, 255), (0, 200, 255), (255, 0, 255), (0, 255, 0), (255, 128, 0), (255, 255, 0)]
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GRID_STEPS = 10  # a line every 0.1
_GRID_COLOUR = (235, 235, 235)
_GRID_ALPHA = 0.45  # light enough to see the scene through, visible on dark and mid-tone frames
_LEGEND_BG = (0, 0, 0)
_WITHHELD_BG = (64, 64, 64)  # a frame withheld as a whole: mid grey, so black solid zones still show
_WITHHELD_TEXT = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class Withheld:
    """A frame the policy withholds as a whole (privacy mode, `withhold_all`): nothing of it is drawn."""

    width_px: int
    height_px: int
    reasons: tuple[str, ...]


def preview_zones(policy: CameraPolicy, mode: Mode) -> list[PreviewZone]:
    """The camera's zones as they act in `mode` (a mode may turn a `mask` zone into `withhold`)."""
    return [PreviewZone(z.name, z.points, str(z.action), str(z.style)) for z in policy.zones_for(mode)]


def preview_frame(policy: CameraPolicy, img: Image) -> Frame:
    """The frame a preview analyses and redacts (frame 0 of the camera)."""
    return Frame(policy.camera_id, 0, 0.0, 0.0, img)


def redacted_view(img: Image, policy: CameraPolicy, mode: Mode,
                  detected: Analysis | None = None) -> RedactedFrame | Withheld:
    """The frame `img` as it leaves the hub in `mode`, through the pipeline's own policy and
    redaction (`agent.core.redact.apply`): the zones, and what the camera's detectors found on
    this frame (`detected`; the caller runs them, `agent.analysis.build.preview_detections`)."""
    frame = preview_frame(policy, img)
    decision = decide_preview(policy, frame, mode, detected)
    released = apply(frame, decision)
    if released is None:
        return Withheld(frame.width_px, frame.height_px, decision.reasons)
    return released


def canvas(view: RedactedFrame | Withheld) -> Image:
    """A writable picture to draw on: the redacted frame's pixels, or a plain fill for a withheld one.

    Anything else (a raw `Frame`, a bare array) raises PrivacyViolation: no preview of raw pixels.
    """
    if isinstance(view, Withheld):
        return np.full((view.height_px, view.width_px, 3), _WITHHELD_BG, np.uint8)
    return np.array(require_redacted(view).image, dtype=np.uint8, copy=True)


def draw_withheld_notice(out: Image, view: Withheld) -> tuple[int, int, int, int]:
    """`WITHHELD` and why, centred on a dark tab; returns the tab's box (x0, y0, x1, y1)."""
    h, w = out.shape[:2]
    scale = _text_scale(w, h)
    lines = [("WITHHELD: no frame leaves the hub", scale * 1.3),
             (", ".join(view.reasons) or "withheld", scale)]
    sizes = [(cv2.getTextSize(t, _FONT, sc, _thickness(sc)), sc) for t, sc in lines]
    pad = max(3, round(8 * scale))
    box_w = min(w, max(tw for ((tw, _), _), _ in sizes) + 2 * pad)
    box_h = min(h, sum(th + base + pad for ((_, th), base), _ in sizes) + pad)
    x0, y0 = max(0, (w - box_w) // 2), max(0, (h - box_h) // 2)
    x1, y1 = min(w - 1, x0 + box_w - 1), min(h - 1, y0 + box_h - 1)
    cv2.rectangle(out, (x0, y0), (x1, y1), _LEGEND_BG, -1)
    y = y0 + pad
    for (text, sc), (((_, th), base), _) in zip(lines, sizes, strict=True):
        cv2.putText(out, text, (x0 + pad, y + th), _FONT, sc, _WITHHELD_TEXT, _thickness(sc), cv2.LINE_AA)
        y += th + base + pad
    return x0, y0, x1, y1


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
    label_boxes_px: tuple[tuple[int, int, int, int], ...] = ()  # each zone's name tab, x0, y0, x1, y1
    withheld: bool = False  # the frame is withheld as a whole: the picture holds none of its pixels
    notice_box_px: tuple[int, int, int, int] | None = None  # the `WITHHELD` tab, when withheld


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


def camera_notes(camera_id: str, *, scene: str | None = None, private_room: str | None = None) -> list[str]:
    """Legend lines about the camera itself: its private room and a learned scene it no longer matches.

    `scene` is what tamper keeps (`moved`, `unreadable`, None when fine); `private_room` the room
    the policy treats the camera as (`bathroom`, `bedroom`), None when it is none."""
    notes = []
    if private_room:
        notes.append(f"private room: {private_room} (people withhold the frame)")
    legend = SCENE_LEGEND.get(scene) if scene else None
    if legend is not None:
        notes.append(legend.format(camera=camera_id))
    return notes


def _place_legend(occupied: np.ndarray, box_w: int, box_h: int, band_w: int, band_h: int) -> tuple[int, int]:
    """Top-left of the legend: the corner where it hides the least of the zones (ties: bottom-right)."""
    h, w = occupied.shape[:2]
    margin = max(2, band_h // 3)
    left, top = band_w + margin, band_h + margin  # clear of the grid labels
    right, bottom = max(left, w - box_w - margin), max(top, h - box_h - margin)
    corners = [(right, bottom), (right, top), (left, bottom), (left, top)]
    return min(corners, key=lambda c: int(occupied[c[1]:c[1] + box_h, c[0]:c[0] + box_w].sum()))


def _draw_legend(out: np.ndarray, zones: Sequence[PreviewZone], occupied: np.ndarray, scale: float,
                 band_w: int, band_h: int, notes: Sequence[str] = ()
                 ) -> tuple[tuple[int, int, int, int] | None, tuple[str, ...]]:
    if not zones and not notes:
        return None, ()
    h, w = out.shape[:2]
    rows = _legend_rows(zones) + list(notes)
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
        colour = colour_of(i) if i < len(zones) else _WITHHELD_TEXT  # notes about the camera: white
        top = y0 + pad + i * row_h
        cv2.rectangle(out, (x0 + pad, top), (x0 + pad + swatch - 1, top + th - 1), colour, -1)
        cv2.putText(out, row, (x0 + 2 * pad + swatch, top + th), _FONT, scale, colour, thick, cv2.LINE_AA)
    return (x0, y0, x1, y1), tuple(rows)


def render_zones(view: RedactedFrame | Withheld, zones: Sequence[PreviewZone],
                 notes: Sequence[str] = ()) -> tuple[np.ndarray, PreviewLayout]:
    """Draw zones over the frame as it leaves the hub: outlines, names, a 0.1 grid and a legend
    (ending with `notes` about the camera, `camera_notes`: its private room, a moved view).

    `view` is the redacted frame (its mask zones already filled by redaction, drawn as they are)
    or a `Withheld` notice (a grey canvas saying so). Zones are outlined in their colour, never
    tinted: a tint over pixels is only ever a tint over what leaves the hub anyway.
    """
    out = canvas(view)
    h, w = out.shape[:2]
    occupied = np.zeros((h, w), np.uint8)
    scale = _text_scale(w, h)
    for z in zones:
        occupied[zone_mask(z.points, w, h) > 0] = 1
    thick = _thickness(scale)
    for i, z in enumerate(zones):
        poly = np.array([[p.x_rel * w, p.y_rel * h] for p in z.points], np.int32)
        cv2.polylines(out, [poly], True, colour_of(i), max(1, w // 400), cv2.LINE_AA)
    # After the outlines, so an outline along an edge never hides a grid label.
    xs, ys, band_w, band_h = _draw_grid(out, scale)
    labels: list[tuple[int, int, int, int]] = []
    for i, z in enumerate(zones):
        cx = int(sum(p.x_rel for p in z.points) / len(z.points) * w)
        cy = int(sum(p.y_rel for p in z.points) / len(z.points) * h)
        (tw, th), _ = cv2.getTextSize(z.name, _FONT, scale, thick)
        x0 = max(0, min(w - tw - 4, cx - tw // 2))
        y0 = max(th + 4, min(h - 4, cy))
        cv2.rectangle(out, (x0 - 2, y0 - th - 4), (x0 + tw + 2, y0 + 4), _LEGEND_BG, -1)
        cv2.putText(out, z.name, (x0, y0), _FONT, scale, colour_of(i), thick, cv2.LINE_AA)
        labels.append((max(0, x0 - 2), max(0, y0 - th - 4), min(w - 1, x0 + tw + 2), min(h - 1, y0 + 4)))
    notice = draw_withheld_notice(out, view) if isinstance(view, Withheld) else None
    legend_box, rows = _draw_legend(out, zones, occupied, scale, band_w, band_h, notes)
    return out, PreviewLayout(xs, ys, legend_box, rows, scale, tuple(labels), notice is not None, notice)
