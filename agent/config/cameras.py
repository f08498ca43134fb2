"""Cameras, their privacy zones, and the household modes and schedule."""

from __future__ import annotations

import logging
import re
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from agent.config.base import ID_RE, StrictModel
from agent.config.detection import CameraDetectionConfig
from agent.geometry import PolygonError, validate_polygon
from agent.vocab import Mode, Style, ZoneAction

log = logging.getLogger(__name__)


class ZoneConfig(StrictModel):
    name: str = Field(description="Name shown in previews, decisions and events. Unique per camera.")
    points: list[list[float]] = Field(
        description="Polygon corners as [x, y] pairs relative to the frame (0..1, origin top-left). "
        "At least 3 points, no self-intersection. Touching the frame edge (0 or 1) masks the edge row/column."
    )
    action: ZoneAction = Field(
        default=ZoneAction.MASK,
        description="`mask`: replace the zone's pixels in every frame. `withhold`: drop whole frames "
        "while there is activity or presence in the zone, until it is back to its empty state plus `hold_s`.",
    )
    style: Style = Field(
        default=Style.SOLID,
        description="How masked pixels are replaced: `solid` (black, default), `pixelate` or `blur`. "
        "All three leave no original pixel value in the zone.",
    )
    hold_s: float | None = Field(
        default=None,
        ge=0,
        description="For `withhold` zones: seconds to keep withholding after the zone is empty again. "
        "Defaults to `analysis.motion.hold_s`.",
    )

    @field_validator("points")
    @classmethod
    def _polygon(cls, v: list[list[float]]) -> list[list[float]]:
        try:
            validate_polygon(v)
        except PolygonError as e:
            raise ValueError(str(e)) from None
        return v


class CameraModeConfig(StrictModel):
    withhold_all: bool = Field(
        default=False, description="Withhold every frame of this camera in this mode."
    )
    zones: dict[str, ZoneAction] = Field(
        default_factory=dict,
        description="Per-zone action override in this mode, by zone name (for example make a "
        "`mask` zone `withhold` while the household is home).",
    )


class CameraConfig(StrictModel):
    id: str = Field(description="Camera id: lower-case letters, digits, `_` or `-`. Unique.")
    source: str = Field(
        description="Where frames come from: a video file path, an `rtsp://` URL, `/dev/videoN`, "
        "or an image glob such as `frames/*.png`. Relative paths are relative to the config file."
    )
    name: str | None = Field(default=None, description="Human-readable name (encrypted in clips).")
    fps: float | None = Field(
        default=None, gt=0, le=120, description="Frame rate to assume when the source does not report one."
    )
    zones: list[ZoneConfig] = Field(default_factory=list, description="Privacy zones drawn by the homeowner.")
    modes: dict[Mode, CameraModeConfig] = Field(
        default_factory=dict,
        description="Per-mode overrides for this camera. `privacy` always withholds everything; "
        "it cannot be weakened here.",
    )
    recipients: list[str] | None = Field(
        default=None,
        description="Devices that can open this camera's clips (for example a bedroom camera: the owner "
        "only). Same forms as the top-level `recipients`, which apply when this is absent.",
    )
    detection: CameraDetectionConfig | None = Field(
        default=None,
        description="Per-camera overrides of the hub-wide `detection` settings (unset keys inherit).",
    )
    privacy_room: Literal["auto", "bathroom", "bedroom", "none"] = Field(
        default="auto",
        description="Whether this camera watches a private room. `bathroom` or `bedroom`: a person in view "
        "(a detection or unexplained foreground) withholds the whole frame instead of masking a box, and "
        "private objects get a wide margin. `auto` (default): the same once the object detector has seen a "
        "bed (bedroom) or a toilet or sink (bathroom) on this camera, for the rest of the run. `none`: never "
        "(logged as a warning).",
    )
    retention_days: int | None = Field(
        default=None, ge=1, le=36_500, strict=True,
        description="Days this camera's clips are kept (for example a short period for a bedroom camera); "
        "overrides `retention.days`. Absent or `null`: `retention.days` applies.",
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ID_RE.match(v):
            raise ValueError("camera id must be 1-63 chars of a-z, 0-9, _ or -, starting with a letter or digit")
        return v

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, v: list[ZoneConfig]) -> list[ZoneConfig]:
        seen: set[str] = set()
        for z in v:
            if z.name in seen:
                raise ValueError(f"duplicate zone name {z.name!r}")
            seen.add(z.name)
        return v

    @model_validator(mode="after")
    def _warn_room_off(self) -> CameraConfig:
        if self.privacy_room == "none":
            log.warning("camera %s: privacy_room: none; a bed, toilet or sink in view does not make it a "
                        "private room (people are masked, not withheld)", self.id)
        return self

    @model_validator(mode="after")
    def _mode_zone_names(self) -> CameraConfig:
        names = {z.name for z in self.zones}
        for mode, mc in self.modes.items():
            for zname in mc.zones:
                if zname not in names:
                    raise ValueError(f"modes.{mode}.zones names unknown zone {zname!r}")
        return self


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


_DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ScheduleEntry(StrictModel):
    mode: Mode = Field(description="Mode that applies during this window.")
    days: list[Day] = Field(
        default_factory=lambda: list(_DAYS), description="Days of the week the window applies on."
    )
    start: str = Field(description="Start time, local `HH:MM`.")
    end: str = Field(description="End time, local `HH:MM`; may be before `start` to span midnight.")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", v)
        if not m:
            raise ValueError(f"time {v!r} must be HH:MM (24 h)")
        return v


class ModesConfig(StrictModel):
    default: Mode = Field(default=Mode.HOME, description="Mode when no schedule window and no manual override applies.")
    schedule: list[ScheduleEntry] = Field(
        default_factory=list, description="Time windows that pick the mode. The first matching window wins."
    )
