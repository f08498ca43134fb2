"""Scene analysis settings: motion in withhold zones, tamper detection, analysis deadlines."""

from __future__ import annotations

from pydantic import (
    Field,
)

from agent.config.base import StrictModel


class MotionConfig(StrictModel):
    min_area_rel: float = Field(
        default=0.005, gt=0, le=1,
        description="Fraction of a withhold zone's area (plus a small guard band) that must move, or differ "
        "from the zone's empty state, to count as activity or presence.",
    )
    hold_s: float = Field(default=3.0, ge=0, description="Seconds to keep withholding after a zone is empty again.")
    clear_diff: float = Field(
        default=25.0, gt=0, le=255,
        description="Grey-level difference (0-255) from the zone's empty reference above which a pixel "
        "counts as changed. A still person keeps their pixels changed, so the zone stays occupied.",
    )
    warmup_frames: int = Field(
        default=5, ge=1, description="Frames at start (or after a resolution change) withheld while the empty reference is learned."
    )


class TamperConfig(StrictModel):
    enabled: bool = Field(default=True, description="Withhold frames when the camera looks covered or moved.")
    covered_std: float = Field(
        default=6.0, ge=0, description="A frame whose grey-level standard deviation is below this counts as covered."
    )
    moved_enabled: bool = Field(
        default=True,
        description="Withhold every frame once the scene no longer matches the one learned at first start and "
        "kept in the data dir (camera turned or re-mounted): the zones would no longer cover what they were "
        "drawn over. It stays withheld, across restarts, until `privacy-agent camera relearn`.",
    )
    moved_threshold: float = Field(
        default=0.6, gt=0, lt=1,
        description="Share of the learned scene's edges that must still be found; below it for "
        "`moved_hold_s` the camera counts as moved. People crossing the view cost about the share they cover.",
    )
    moved_hold_s: float = Field(
        default=1.0, ge=0, description="Seconds the scene must stay unmatched before the camera counts as moved."
    )
    warmup_frames: int = Field(default=5, ge=1, description="Frames used to learn the scene at start.")


class AnalysisConfig(StrictModel):
    timeout_s: float = Field(
        default=2.0, gt=0, description="An analysis of one frame that takes longer withholds the frame."
    )
    max_lag_s: float = Field(
        default=2.0, gt=0,
        description="Live sources: a frame older than this (since the camera sent it) when analysed or released is "
                    "withheld for lag; one read more than half of it behind the camera is withheld unanalysed, and "
                    "the hub skips to the camera's next key frame to catch up.",
    )
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Activity detection in withhold zones.")
    tamper: TamperConfig = Field(default_factory=TamperConfig, description="Covered-camera detection.")
