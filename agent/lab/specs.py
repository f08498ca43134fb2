"""The data a fixture scenario is made of: the background, pasted sprites and drawn figures of
each frame, the zones, and the render parameters. Frozen and pure; `agent.lab.fixtures` draws them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from agent.errors import FixtureError
from agent.lab.figures import Figure

DEFAULT_SIZE = (640, 480)


DEFAULT_SECONDS = 7.0


DEFAULT_FPS = 10.0


DEFAULT_SEED = 20261127


@dataclass(frozen=True, slots=True)
class Background:
    """A photo scaled to cover the frame (times `zoom`), then cropped at `pan` (0..1 of the slack)."""

    photo: str
    zoom: float = 1.0
    pan_x: float = 0.5
    pan_y: float = 0.5


@dataclass(frozen=True, slots=True)
class Placement:
    """A sprite pasted with its top-left corner at (x_px, y_px), scaled to `height_px`."""

    sprite: str
    x_px: int
    y_px: int
    height_px: int


@dataclass(frozen=True, slots=True)
class FrameSpec:
    width_px: int
    height_px: int
    background: Background
    placements: tuple[Placement, ...] = ()
    # Drawn figures with exact pixel masks (agent.lab.figures), painted after the placements.
    figures: tuple[Figure, ...] = ()
    # The room's light: every pixel times this gain, then sensor noise of `noise_sd` levels
    # (seeded by `noise_seed`), as a camera adds it; neither changes any mask.
    light_gain: float = 1.0
    noise_sd: float = 0.0
    noise_seed: int = 0


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    name: str
    points: tuple[tuple[float, float], ...]
    action: str
    style: str = "solid"
    # Only for withhold zones; None keeps the config default (`analysis.motion.hold_s`).
    hold_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "points": [[x, y] for x, y in self.points],
            "action": self.action,
            "style": self.style,
        }
        if self.hold_s is not None:
            doc["hold_s"] = self.hold_s
        return doc


@dataclass(frozen=True, slots=True)
class Params:
    width_px: int = DEFAULT_SIZE[0]
    height_px: int = DEFAULT_SIZE[1]
    seconds: float = DEFAULT_SECONDS
    fps: float = DEFAULT_FPS
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if not (32 <= self.width_px <= 4096 and 32 <= self.height_px <= 4096):
            raise FixtureError(f"fixture size {self.width_px}x{self.height_px} must be 32..4096 on each side")
        if not (math.isfinite(self.fps) and 1 <= self.fps <= 60):
            raise FixtureError(f"fixture fps {self.fps} must be 1..60")
        if not (math.isfinite(self.seconds) and 1 <= self.seconds <= 600):
            raise FixtureError(f"fixture length {self.seconds} s must be 1..600 s")

    @property
    def frames(self) -> int:
        return max(2, round(self.seconds * self.fps))


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    zones: tuple[ZoneSpec, ...]
    frames: tuple[FrameSpec, ...]
    png: bool = False
    canary: CanarySpec | None = None
    # Drawn scenarios write a label image per frame (masks/), even for frames with no figure.
    labelled: bool = False
    # `cameras[].privacy_room` in the written config; None leaves the default (`auto`). Scenes
    # made to show how people and faces are *masked* in a room with a bed say `none`: in a
    # private room a person withholds the whole frame, and there would be no mask to see.
    privacy_room: str | None = None


@dataclass(frozen=True, slots=True)
class CanarySpec:
    zone: str
    seed: int
    box_px: tuple[int, int, int, int]
