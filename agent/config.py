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
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from agent.datatypes import Mode, Style, ZoneAction
from agent.errors import ConfigError
from agent.zones import PolygonError, validate_polygon


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# MqttConfig subclasses StrictModel, so it is imported after StrictModel exists
# (agent/mqtt/__init__.py imports this module first to keep the order).
# Same for the detection settings (agent/detect/__init__.py imports this module first).
from agent.detect.config import CameraDetectionConfig, DetectionConfig  # noqa: E402
from agent.mqtt.config import MqttConfig  # noqa: E402

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


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

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID_RE.match(v):
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
        description="Withhold every frame once the scene no longer matches the one learned at start "
        "(camera turned or re-mounted): the zones would no longer cover what they were drawn over.",
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
        default=2.0, gt=0, description="Live sources: a frame older than this when analysed is withheld."
    )
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Activity detection in withhold zones.")
    tamper: TamperConfig = Field(default_factory=TamperConfig, description="Covered-camera detection.")


class DirectorySinkConfig(StrictModel):
    type: Literal["directory"] = Field(description="Write segments to a local or NAS directory.")
    path: str = Field(description="Directory for output. Relative paths are relative to the config file.")
    plaintext: bool = Field(
        default=False,
        description="Must be `true` to write unencrypted video. Plaintext output is for testing; "
        "`run` warns about it.",
    )
    segment_s: float = Field(
        default=10.0, ge=1, le=600,
        description="Length of each segment in seconds. Encrypted clips (`plaintext: false`) take 10 to 60.",
    )

    @model_validator(mode="after")
    def _encrypted_segment(self) -> DirectorySinkConfig:
        if not self.plaintext:
            _check_clip_segment(self.segment_s)
        return self


# Encrypted clips are cut into 10-60 s segments: shorter wastes a header and signatures per
# clip, longer delays upload and makes one lost clip cost more (secretstream cannot seek).
CLIP_SEGMENT_MIN_S = 10.0
CLIP_SEGMENT_MAX_S = 60.0


def _check_clip_segment(v: float) -> None:
    if not (CLIP_SEGMENT_MIN_S <= v <= CLIP_SEGMENT_MAX_S):
        raise ValueError(
            f"segment_s {v:g} is outside {CLIP_SEGMENT_MIN_S:g}..{CLIP_SEGMENT_MAX_S:g} s for encrypted clips"
        )


class S3SinkConfig(StrictModel):
    type: Literal["s3"] = Field(description="Upload encrypted clips to S3-compatible object storage.")
    bucket: str = Field(min_length=3, max_length=63, description="Bucket name. It must exist.")
    endpoint: str | None = Field(
        default=None,
        description="Endpoint URL of an S3-compatible service (MinIO, Garage, a NAS, ...), for example "
        "`https://s3.example.net`. Absent: AWS S3 for `region`.",
    )
    prefix: str = Field(
        default="",
        description="Key prefix for uploaded clips, for example `hub1/`. Object names carry only an opaque "
        "stream id and sequence number, never the camera name.",
    )
    region: str = Field(default="us-east-1", description="Region name passed to the S3 client.")
    access_key_id: str | None = Field(
        default=None, description="Access key id. Prefer `credentials_file` so secrets stay out of the config."
    )
    secret_access_key: str | None = Field(
        default=None, description="Secret access key (with `access_key_id`). Prefer `credentials_file`."
    )
    credentials_file: str | None = Field(
        default=None,
        description="File (mode 0600) in AWS shared-credentials format with `aws_access_key_id` and "
        "`aws_secret_access_key` under `[default]`. Relative paths are relative to the config file. "
        "Absent with no keys given: the usual AWS environment variables.",
    )
    segment_s: float = Field(default=10.0, description="Length of each encrypted clip in seconds (10 to 60).")

    @field_validator("segment_s")
    @classmethod
    def _segment(cls, v: float) -> float:
        _check_clip_segment(v)
        return v

    @model_validator(mode="after")
    def _credentials(self) -> S3SinkConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if self.credentials_file is not None and self.access_key_id is not None:
            raise ValueError("give either credentials_file or access_key_id/secret_access_key, not both")
        return self


SinkConfig = Annotated[DirectorySinkConfig | S3SinkConfig, Field(discriminator="type")]


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

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, v: list[CameraConfig]) -> list[CameraConfig]:
        seen: set[str] = set()
        for c in v:
            if c.id in seen:
                raise ValueError(f"duplicate camera id {c.id!r}")
            seen.add(c.id)
        return v

    def camera(self, camera_id: str) -> CameraConfig:
        for c in self.cameras:
            if c.id == camera_id:
                return c
        known = ", ".join(c.id for c in self.cameras)
        raise ConfigError(f"no camera with id {camera_id!r} in config (known: {known})")


class LoadedConfig(BaseModel):
    """A validated config plus where it came from (for relative paths and the hash)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: AgentConfig
    path: Path
    sha256: str

    def resolve(self, p: str) -> Path:
        """Resolve a path from the config relative to the config file's directory."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.path.parent / q)

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.config.data_dir)


# --- loading -----------------------------------------------------------------


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def _to_plain(node: Any) -> Any:
    if isinstance(node, CommentedMap):
        return {str(k): _to_plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_to_plain(v) for v in node]
    return node


def _line_of(root: Any, loc: Sequence[int | str]) -> int | None:
    """1-based YAML line of the deepest node of `loc` that exists in the document."""
    node = root
    line: int | None = None
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            try:
                line = node.lc.key(key)[0] + 1
            except (KeyError, TypeError, AttributeError):
                pass
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            try:
                line = node.lc.item(key)[0] + 1
            except (KeyError, TypeError, AttributeError):
                pass
            node = node[key]
        else:
            break
    return line


def _format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def _clean_loc(loc: Sequence[int | str]) -> list[int | str]:
    # pydantic adds the discriminator tag ("directory") and "[key]" bits for
    # unions; they are not YAML keys.
    return [p for p in loc if not (isinstance(p, str) and (p in {"directory", "s3"} or p.startswith("function-")))]


def _messages(err: ValidationError, root: Any, fname: str) -> list[str]:
    msgs = []
    for e in err.errors():
        loc = _clean_loc(e["loc"])
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}" if loc else "unknown key"
            # point at the unknown key itself, but name its parent in the path
        line = _line_of(root, loc)
        where = f" ({fname}:{line})" if line else f" ({fname})"
        msgs.append(f"{_format_loc(loc)}: {msg}{where}")
    return msgs


def parse_config_text(text: str, fname: str = "config.yaml") -> AgentConfig:
    """Parse and validate YAML text. Raises ConfigError with key paths and lines."""
    try:
        root = _yaml().load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark
        line = f"{fname}:{mark.line + 1}" if mark is not None else fname
        raise ConfigError(f"malformed YAML: {e.problem or e} ({line})") from None
    except YAMLError as e:
        raise ConfigError(f"malformed YAML in {fname}: {e}") from None
    if root is None:
        raise ConfigError(f"{fname} is empty; it needs at least a `cameras:` list")
    if not isinstance(root, CommentedMap):
        raise ConfigError(f"{fname}: the top level must be a mapping with a `cameras:` key")
    try:
        return AgentConfig.model_validate(_to_plain(root))
    except ValidationError as e:
        msgs = _messages(e, root, fname)
        raise ConfigError("invalid config:\n  " + "\n  ".join(msgs)) from None


def config_hash(cfg: AgentConfig) -> str:
    canon = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def load_config(path: str | Path) -> LoadedConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from None
    cfg = parse_config_text(text, p.name)
    return LoadedConfig(config=cfg, path=p.resolve(), sha256=config_hash(cfg))
