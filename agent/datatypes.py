"""Frozen data passed between pipeline stages.

Invariants:
- Coordinates are relative (0..1, origin top-left, x to the right, y down)
  until the moment of drawing; only `agent.zones` and `agent.redact` turn them
  into pixels.
- Everything here is immutable (`frozen=True, slots=True`). Image arrays are
  made read-only when a `Frame` is built so no stage can edit a frame in place.
- Units are in the field names: `_s` seconds, `_px` pixels, `_rel` relative.
- A `Frame` is raw camera data. It must never reach an encoder, sink or the
  network: those accept only `agent.redact.RedactedFrame`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


class Action(StrEnum):
    """What happens to a frame. Ordered by strictness: PASS < MASK < WITHHOLD."""

    PASS = "pass"
    MASK = "mask"
    WITHHOLD = "withhold"

    @property
    def rank(self) -> int:
        return _ACTION_RANK[self]

    def stricter(self, other: Action) -> Action:
        return self if self.rank >= other.rank else other


_ACTION_RANK = {Action.PASS: 0, Action.MASK: 1, Action.WITHHOLD: 2}


class ZoneAction(StrEnum):
    """What a privacy zone does: mask its pixels, or withhold whole frames while it is occupied."""

    MASK = "mask"
    WITHHOLD = "withhold"


class Style(StrEnum):
    """How masked pixels are replaced. `solid` (black) is the default: blur can be partly reversed."""

    SOLID = "solid"
    PIXELATE = "pixelate"
    BLUR = "blur"


class Mode(StrEnum):
    """Household mode. `privacy` withholds every frame of every camera."""

    HOME = "home"
    AWAY = "away"
    PRIVACY = "privacy"


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


@dataclass(frozen=True, slots=True)
class Frame:
    """A raw decoded camera frame (BGR, uint8, H x W x 3). Never leaves the hub."""

    camera_id: str
    index: int
    t_s: float  # stream time: seconds since the start of this source
    captured_monotonic_s: float  # when the hub captured it, on the injected monotonic clock
    image: Image = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise ValueError("frame image must be a uint8 numpy array")
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"frame image must be HxWx3, got shape {img.shape}")
        img.setflags(write=False)

    @property
    def width_px(self) -> int:
        return int(self.image.shape[1])

    @property
    def height_px(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object. `label` is a policy label: face, person, bed, toilet, sink, ..."""

    label: str
    score: float
    box: BoxRel
    detector: str = ""


@dataclass(frozen=True, slots=True)
class ZoneActivity:
    """Occupancy of one `withhold` zone, as the analysis stage sees it."""

    zone: str
    occupied: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything the analysis stage learned about one frame.

    `faults` are reasons that force WITHHOLD (camera covered, detector fault,
    model missing, ...). `detections_age_s` is the age of the newest detector
    result used for this frame, or None when no detector is configured.
    """

    detections: tuple[Detection, ...] = ()
    zone_activity: tuple[ZoneActivity, ...] = ()
    faults: tuple[str, ...] = ()
    detections_age_s: float | None = None


@dataclass(frozen=True, slots=True)
class MaskRegion:
    """An area to mask, as a relative polygon. `kind` is `zone` or `detection`."""

    name: str
    kind: str
    points: tuple[PointRel, ...]
    style: Style = Style.SOLID

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "style": str(self.style),
            "points": [[round(p.x_rel, 6), round(p.y_rel, 6)] for p in self.points],
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's verdict on one frame."""

    camera_id: str
    frame_index: int
    t_s: float
    action: Action
    reasons: tuple[str, ...] = ()
    regions: tuple[MaskRegion, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "camera": self.camera_id,
            "frame": self.frame_index,
            "t_s": round(self.t_s, 6),
            "action": str(self.action),
            "reasons": list(self.reasons),
            "regions": [r.to_json() for r in self.regions],
        }


def _freeze(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True, slots=True)
class Event:
    """Something a homeowner or installer should know about (withheld, source lost, model fault...).

    Never carries image data, keys or tokens.
    """

    kind: str
    camera_id: str | None
    message: str
    monotonic_s: float
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", _freeze(self.details))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "camera": self.camera_id,
            "message": self.message,
            "monotonic_s": round(self.monotonic_s, 6),
            "details": dict(self.details),
        }
