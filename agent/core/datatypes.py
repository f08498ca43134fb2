"""Frozen data passed between pipeline stages.

Invariants:
- Coordinates are relative (0..1, origin top-left, x to the right, y down)
  until the moment of drawing; only `agent.core.zones` and `agent.core.redact` turn them
  into pixels.
- Everything here is immutable (`frozen=True, slots=True`). Image arrays are
  made read-only when a `Frame` is built so no stage can edit a frame in place.
- Units are in the field names: `_s` seconds, `_px` pixels, `_rel` relative.
- A `Frame` is raw camera data. It must never reach an encoder, sink or the
  network: those accept only `agent.core.redact.RedactedFrame`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.geometry import BoxRel, PointRel
from agent.vocab import Action, Style

Image = npt.NDArray[np.uint8]


#: Frames smaller than this on a side get no `Frame.half`: nothing shrinks them by half.
HALF_MIN_PX = 64


@dataclass(frozen=True, slots=True)
class Frame:
    """A raw decoded camera frame (BGR, uint8, H x W x 3). Never leaves the hub."""

    camera_id: str
    index: int
    t_s: float  # stream time: seconds since the start of this source
    captured_monotonic_s: float  # when the hub captured it, on the injected monotonic clock
    image: Image = field(repr=False, compare=False)
    #: How far behind its live camera the hub read this frame (seconds, by the camera's own
    #: timestamps; already counted in `captured_monotonic_s`). 0 for files and for sources that
    #: cannot say. What a camera's detectors shed under load is chosen by it (`detection.under_load`).
    behind_s: float = 0.0
    #: The image area-averaged to half its width and height (each output pixel the mean of a 2x2
    #: block), or None when a side is odd or under `HALF_MIN_PX`. Every analyzer and detector
    #: shrinks the frame: they start from this, made once while the frame is fresh in the cache
    #: of the thread that decoded it, rather than each reading the whole frame again on its own
    #: core (a 720p frame is 2.6 MiB, more than a core's cache). Derived, never supplied.
    half: Image | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise ValueError("frame image must be a uint8 numpy array")
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"frame image must be HxWx3, got shape {img.shape}")
        img.setflags(write=False)
        h, w = img.shape[:2]
        if not (w % 2 or h % 2) and min(w, h) >= HALF_MIN_PX:
            half = np.asarray(cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA), dtype=np.uint8)
            half.setflags(write=False)
            object.__setattr__(self, "half", half)

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
class ForegroundBlob:
    """One region that differs from the camera's learned empty scene (`agent.analysis.foreground`).

    `points` is a convex relative polygon around the (slightly dilated) region, `box` its bounds,
    `area_rel` the region's share of the frame before dilation.
    """

    box: BoxRel
    points: tuple[PointRel, ...]
    area_rel: float


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything the analysis stage learned about one frame.

    `faults` are reasons that force WITHHOLD (camera covered, detector fault,
    model missing, ...). `detections_age_s` is the age of the newest detector
    result used for this frame, or None when no detector is configured.
    `foreground` are the regions that differ from the learned empty scene;
    `foreground_ready` is False while that scene is still being learned (the
    policy withholds). `room` is the private-room kind the object detector has
    seen on this camera (`bathroom`, `bedroom`), latched for the run, or None.
    `under_load`: the face detector skipped this frame because the hub is behind
    the live camera; the policy then requires the next frame's faces.
    """

    detections: tuple[Detection, ...] = ()
    zone_activity: tuple[ZoneActivity, ...] = ()
    faults: tuple[str, ...] = ()
    detections_age_s: float | None = None
    foreground: tuple[ForegroundBlob, ...] = ()
    foreground_ready: bool = True
    room: str | None = None
    under_load: bool = False


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
