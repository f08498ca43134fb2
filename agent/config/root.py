"""The whole config file: `AgentConfig`, the root model every section hangs from."""

from __future__ import annotations

from pydantic import (
    Field,
    field_validator,
)

from agent.config.analysis import AnalysisConfig
from agent.config.base import StrictModel
from agent.config.cameras import CameraConfig, ModesConfig
from agent.config.detection import DetectionConfig
from agent.config.hardware import HardwareConfig
from agent.config.mqtt import MqttConfig
from agent.config.retention import RetentionConfig
from agent.config.sinks import SinkConfig
from agent.config.video import VideoConfig
from agent.config.web import WebConfig
from agent.errors import ConfigError


class AgentConfig(StrictModel):
    data_dir: str = Field(
        default="./data",
        description="The hub's data directory: identity keys, outbox, runtime state (current mode). "
        "Relative paths are relative to the config file.",
    )
    modes: ModesConfig = Field(default_factory=ModesConfig, description="Household modes and their schedule.")
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig, description="Analysis stage settings.")
    cameras: list[CameraConfig] = Field(description="The cameras this hub processes.", min_length=1)
    sinks: list[SinkConfig] = Field(default_factory=list, description="Where redacted output goes.")
    recipients: list[str] = Field(
        default_factory=list,
        description="Devices that can open encrypted clips: public key files (`owner.key.pub`, relative to "
        "the config file) or encoded values (`epa1pub:...`). Empty: every device of the owner-signed roster "
        "in `data_dir`. With a roster installed, only enrolled, non-revoked devices are used.",
    )
    mqtt: MqttConfig | None = Field(
        default=None,
        description="MQTT broker for state, events, Home Assistant discovery, access requests and audit "
        "checkpoints (see the MQTT section of README.md). Absent: the hub does not use MQTT.",
    )
    detection: DetectionConfig = Field(
        default_factory=DetectionConfig,
        description="On-device detection of faces, persons and private objects (beds, toilets, sinks). "
        "On by default for every camera, even one without zones; turning a protection off is logged.",
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig,
        description="Retention and the right to delete: how long clips are kept (`days`) and the epoch keys "
        "clips are sealed to (see the Retention and epoch keys sections of README.md).",
    )
    video: VideoConfig = Field(
        default_factory=VideoConfig,
        description="How redacted frames are encoded: the H.264 encoder (`auto` tries the hardware one) and its "
        "quality settings.",
    )
    hardware: HardwareConfig = Field(
        default_factory=HardwareConfig,
        description="The hub's privacy LED and privacy switch on GPIO lines (see firmware_hooks/CONTRACT.md).",
    )
    web: WebConfig = Field(
        default_factory=WebConfig,
        description="The homeowner's page on the hub: draw zones on redacted frames, see each camera's state "
        "(see \"The homeowner's page\" in README.md). Off by default.",
    )

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, v: list[CameraConfig]) -> list[CameraConfig]:
        seen: set[str] = set()
        for c in v:
            if c.id in seen:
                raise ValueError(f"duplicate camera id {c.id!r}")
            seen.add(c.id)
        return v

    def retention_days_for(self, camera_id: str) -> int | None:
        """Days a camera's clips are kept: its own `retention_days`, else `retention.days`; None: for ever.
        A camera no longer in the config (its clips are still in the index) gets `retention.days`."""
        for c in self.cameras:
            if c.id == camera_id and c.retention_days is not None:
                return c.retention_days
        return self.retention.days

    def camera(self, camera_id: str) -> CameraConfig:
        for c in self.cameras:
            if c.id == camera_id:
                return c
        known = ", ".join(c.id for c in self.cameras)
        raise ConfigError(f"no camera with id {camera_id!r} in config (known: {known})")
