"""The homeowner's config: pydantic models and a YAML loader with line numbers.

Invariants:
- Every model forbids unknown keys (`extra="forbid"`) and every field has a
  description; `config/example.yaml` documents the same fields.
- A validation error names the key path and its YAML line, for example
  `cameras[0].zones[1].points: polygon needs at least 3 points (config.yaml:14)`.
- Runtime state (current mode, keys, counters) never lives here; it lives in
  `data_dir`.
- Defaults are the private choice: a camera without zones still withholds in
  `privacy` mode, and a plaintext sink must be named as plaintext.

One module per section: `base`, `cameras`, `analysis`, `detection`, `sinks`, `mqtt`, `epochkeys`
(the epoch key settings of `retention:`), `retention` (the whole `retention:` section), `video` (the H.264 encoder), `hardware` (the privacy LED and switch), `web` (the homeowner's page), `root` (the whole file), `loader` (YAML with line numbers) and `edit` (comment-keeping edits). Sections import
only `base` and the ground floor, so there is no cycle. Code outside the package imports from
`agent.config`.
"""

from agent.config.analysis import (
    AnalysisConfig,
    MotionConfig,
    TamperConfig,
)
from agent.config.base import (
    StrictModel,
)
from agent.config.cameras import (
    CameraConfig,
    CameraModeConfig,
    Day,
    ModesConfig,
    ScheduleEntry,
    ZoneConfig,
)
from agent.config.detection import (
    DEFAULT_HARMLESS_LABELS,
    DEFAULT_PRIVATE_LABELS,
    DEFAULT_THRESHOLDS,
    FALLBACK_THRESHOLD,
    ROOM_LABELS,
    CameraDetectionConfig,
    DetectionConfig,
    FaceDetectionConfig,
    ForegroundConfig,
    ObjectDetectionConfig,
    OnnxRuntimeConfig,
    PersonRuleConfig,
    PrivateObjectsConfig,
    PrivateRoomConfig,
    SceneCutConfig,
    UnderLoadConfig,
    detection_rules,
    effective_detection,
    protections_off,
)
from agent.config.epochkeys import (
    EpochKeySettings,
    MissingEpochKey,
)
from agent.config.hardware import (
    GpioLineConfig,
    HardwareConfig,
)
from agent.config.loader import (
    LoadedConfig,
    at_key,
    config_hash,
    load_config,
    parse_config_text,
)
from agent.config.mqtt import (
    REQUESTER_ROLES,
    AccessPolicyConfig,
    MqttConfig,
)
from agent.config.retention import (
    RETENTION_MAX_DAYS,
    RetentionConfig,
)
from agent.config.root import (
    AgentConfig,
)
from agent.config.sinks import (
    CLIP_SEGMENT_MAX_S,
    CLIP_SEGMENT_MIN_S,
    DirectorySinkConfig,
    S3SinkConfig,
    SinkConfig,
    is_plaintext,
)
from agent.config.video import (
    EncoderSetting,
    VideoConfig,
)
from agent.config.web import (
    WebConfig,
)

__all__ = [
    "AccessPolicyConfig",
    "AgentConfig",
    "AnalysisConfig",
    "EpochKeySettings",
    "MissingEpochKey",
    "CLIP_SEGMENT_MAX_S",
    "CLIP_SEGMENT_MIN_S",
    "CameraConfig",
    "CameraDetectionConfig",
    "CameraModeConfig",
    "DEFAULT_HARMLESS_LABELS",
    "DEFAULT_PRIVATE_LABELS",
    "DEFAULT_THRESHOLDS",
    "Day",
    "DetectionConfig",
    "DirectorySinkConfig",
    "is_plaintext",
    "FALLBACK_THRESHOLD",
    "FaceDetectionConfig",
    "ForegroundConfig",
    "GpioLineConfig",
    "HardwareConfig",
    "LoadedConfig",
    "ModesConfig",
    "MotionConfig",
    "MqttConfig",
    "ObjectDetectionConfig",
    "OnnxRuntimeConfig",
    "PersonRuleConfig",
    "PrivateObjectsConfig",
    "PrivateRoomConfig",
    "ROOM_LABELS",
    "SceneCutConfig",
    "UnderLoadConfig",
    "REQUESTER_ROLES",
    "RETENTION_MAX_DAYS",
    "RetentionConfig",
    "S3SinkConfig",
    "ScheduleEntry",
    "SinkConfig",
    "StrictModel",
    "TamperConfig",
    "at_key",
    "EncoderSetting",
    "VideoConfig",
    "WebConfig",
    "ZoneConfig",
    "config_hash",
    "detection_rules",
    "effective_detection",
    "load_config",
    "parse_config_text",
    "protections_off",
]
