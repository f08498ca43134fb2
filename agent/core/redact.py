"""Redaction: the only place a `RedactedFrame` is built.

Invariants:
- `RedactedFrame` can only be constructed here: its constructor demands a
  module-private mint token, so code elsewhere that tries to wrap a raw frame
  raises `PrivacyViolation`. Encoders, sinks and uploaders accept only
  `RedactedFrame` and check it with `require_redacted`.
- A WITHHOLD decision produces no frame at all.
- Every pixel inside a mask region changes in the output, whatever the style:
  `solid` writes black; `pixelate` and `blur` rebuild the zone from a coarse
  grid and then nudge any pixel that would still equal its original value.
- The decision must belong to the frame (same camera and index); a mismatch
  withholds, because a decision for another frame says nothing about this one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from agent.core.datatypes import Decision, Frame, Image, MaskRegion
from agent.core.zones import Mask, Window, polygons_mask_window, rect_pixels, zone_mask_window
from agent.errors import PrivacyViolation
from agent.geometry import PointRel
from agent.vocab import Action, Style

_MINT = object()


@dataclass(frozen=True, slots=True)
class RedactedFrame:
    """A frame that policy and redaction have released. Safe for encoders and sinks."""

    camera_id: str
    index: int
    t_s: float
    image: Image = field(repr=False, compare=False)
    decision: Decision = field(compare=False)
    _mint: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._mint is not _MINT:
            raise PrivacyViolation("RedactedFrame can only be built by agent.core.redact.apply")
        self.image.setflags(write=False)

    @property
    def width_px(self) -> int:
        return int(self.image.shape[1])

    @property
    def height_px(self) -> int:
        return int(self.image.shape[0])


def require_redacted(obj: object) -> RedactedFrame:
    """Guard for every encoder/sink/network entry point."""
    if not isinstance(obj, RedactedFrame):
        raise PrivacyViolation(f"refusing {type(obj).__name__}: only RedactedFrame may leave the redaction stage")
    return obj


def _coarse(region: Image, style: Style) -> Image:
    h, w = region.shape[:2]
    # Block size scales with the region so a large zone cannot be read at
    # low resolution; at least 12 px so small zones are still destroyed.
    block = max(12, int(math.ceil(max(h, w) / 10)))
    gw, gh = max(1, w // block), max(1, h // block)
    # Each cell is the mean of 64 bilinear samples spread over its block:
    # as destructive as an exact block mean, and ~50x cheaper than a direct
    # INTER_AREA reduction by a large factor.
    if w > gw * 8 and h > gh * 8:
        region = cv2.resize(region, (gw * 8, gh * 8), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(region, (gw, gh), interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_NEAREST if style is Style.PIXELATE else cv2.INTER_LINEAR
    return cv2.resize(small, (w, h), interpolation=interp)


def _stylize(out: Image, original: Image, m: Mask, style: Style, bbox: tuple[int, int, int, int]) -> None:
    """Pixelate or blur the pixels of `out` inside `bbox` where the bbox-sized mask `m` is set, in
    place (`apply` blacks out SOLID itself)."""
    x0, y0, x1, y1 = bbox
    if x1 <= x0 or y1 <= y0:
        return
    sub = out[y0:y1, x0:x1]
    orig = original[y0:y1, x0:x1]
    fill = _coarse(orig, style)
    # A pixel whose coarse value happens to equal its original (flat areas)
    # would survive unchanged; flip a high bit so nothing original remains.
    # The grey of the difference is 0 for every equal pixel (and for a few
    # that differ by a level or two, whose flip is harmless: 64 levels away
    # from the fill in every channel is still not the original). cv2 calls
    # throughout: numpy boolean indexing is ~50x slower here.
    grey = cv2.cvtColor(cv2.absdiff(fill, orig), cv2.COLOR_BGR2GRAY).reshape(m.shape)
    if cv2.countNonZero(grey) < grey.size:
        same = ((grey == 0) & (m > 0)).astype(np.uint8)
        cv2.bitwise_xor(fill, np.full_like(fill, 0x40), dst=fill, mask=same)
    cv2.copyTo(fill, m, sub)


def _rasters(regions: tuple[MaskRegion, ...], w: int, h: int) -> list[tuple[Mask | None, Window, Style]]:
    """The regions as redaction stamps them, each (bbox-sized mask or None for all of it, bbox, style).

    The one rasterisation `apply` and evaluation share. A rectangle (a detection box) is its
    bounds. A zone repeats from frame to frame: its mask comes from the cache. Every other polygon
    (a frame's foreground blobs, new each frame) is rasterised with the others of its style in one
    `polygons_mask_window` call: a call per blob cost a camera's thread more in waiting for the
    GIL than in the work itself.
    """
    out: list[tuple[Mask | None, Window, Style]] = []
    loose: dict[Style, list[tuple[PointRel, ...]]] = {}
    for r in regions:
        rect = rect_pixels(r.points, w, h)
        if rect is not None:
            out.append((None, rect, r.style))
        elif r.kind == "zone":
            m, bbox = zone_mask_window(r.points, w, h)
            out.append((m, bbox, r.style))
        else:
            loose.setdefault(r.style, []).append(r.points)
    for style, polygons in loose.items():
        m, bbox = polygons_mask_window(polygons, w, h)
        out.append((m, bbox, style))
    return out


def _zero(sub: Image, m: Mask) -> None:
    """Black out the pixels of `sub` where `m` is set, in place: x XOR x is 0, and a masked
    OpenCV operation leaves every pixel outside the mask as it was. No black frame to copy from:
    a cached one was a frame-sized buffer held for the life of the process (2.6 MiB at 720p),
    and cv2 with a mask is ~200x faster than numpy boolean indexing."""
    cv2.bitwise_xor(sub, sub, dst=sub, mask=m)


def _ones(shape: tuple[int, int]) -> Mask:
    return np.full(shape, 255, np.uint8)


def apply(frame: Frame, decision: Decision) -> RedactedFrame | None:
    """Apply a decision to a frame. Returns None when the frame is withheld."""
    if decision.camera_id != frame.camera_id or decision.frame_index != frame.index:
        return None
    if decision.action is Action.WITHHOLD:
        return None
    # A PASS that carries regions is contradictory; the regions are applied anyway.
    w, h = frame.width_px, frame.height_px
    out = frame.image.copy()
    for m, (x0, y0, x1, y1), style in _rasters(decision.regions, w, h):
        if style is Style.SOLID:
            if m is None:
                out[y0:y1, x0:x1] = 0
            else:
                _zero(out[y0:y1, x0:x1], m)
            continue
        _stylize(out, frame.image, _ones((y1 - y0, x1 - x0)) if m is None else m, style, (x0, y0, x1, y1))
    return RedactedFrame(frame.camera_id, frame.index, frame.t_s, out, decision, _MINT)


def regions_mask(regions: tuple[MaskRegion, ...], width_px: int, height_px: int) -> Mask:
    """Union mask of regions, rasterised exactly as `apply` does (for evaluation and previews)."""
    out = np.zeros((height_px, width_px), np.uint8)
    for m, (x0, y0, x1, y1), _style in _rasters(regions, width_px, height_px):
        sub = out[y0:y1, x0:x1]
        if m is None:
            sub[:] = 255
        else:
            cv2.bitwise_or(sub, m, dst=sub)
    return out
