"""Detection config: which detectors run, how often, and what their detections mean to the policy.

Invariants:
- Protections are on by default. With no `detection:` section at all, every
  camera masks faces (YuNet-s), masks persons and masks beds, toilets and
  sinks (YOLOX-Nano). Turning a protection off must be written in the config,
  and validation logs a warning naming what was turned off.
- A missing or corrupt model withholds that camera's frames by default
  (`on_model_missing: withhold`); `refuse_start` makes startup fail instead.
  There is no setting that passes frames without a configured detector.
- `detection_rules()` is the one translation from this config to the
  policy's detection rules; it is pure.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.config.base import StrictModel
from agent.vocab import Action, Style, ZoneAction

log = logging.getLogger(__name__)

DEFAULT_PRIVATE_LABELS: tuple[str, ...] = ("bed", "toilet", "sink")
# Classes whose moving pixels are not a person's: a foreground blob inside one of their boxes stays visible.
DEFAULT_HARMLESS_LABELS: tuple[str, ...] = (
    "bird", "cat", "dog", "horse", "sheep", "cow",
    "bicycle", "car", "motorbike", "bus", "truck", "boat",
)
# What makes a camera a private room under `privacy_room: auto` (the object model's names).
# "bathtub" is not one of COCO-80 (the bundled object models): it counts for a model whose labels have it.
ROOM_LABELS: dict[str, str] = {"bed": "bedroom", "toilet": "bathroom", "sink": "bathroom", "bathtub": "bathroom"}
DEFAULT_THRESHOLDS: dict[str, float] = {
    # Low on purpose: a missed face or bed leaks, an extra mask costs only pixels.
    "face": 0.5,
    "person": 0.35,
    "bed": 0.2,
    "toilet": 0.2,
    "sink": 0.2,
}
FALLBACK_THRESHOLD = 0.35


class OnnxRuntimeConfig(StrictModel):
    intra_op_threads: int = Field(
        default=1, ge=0, le=64,
        description="Threads ONNX Runtime uses inside one operator. 1 keeps one camera on one core "
        "of a Pi; 0 lets ONNX Runtime pick (all cores).",
    )
    inter_op_threads: int = Field(
        default=1, ge=0, le=64, description="Threads for running independent operators in parallel (1 = sequential)."
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        default="all", description="ONNX Runtime graph optimisation level."
    )
    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        min_length=1,
        description="Execution providers in order of preference. Unavailable ones are skipped with a "
        "warning; if none is available the model counts as missing.",
    )
    allow_spinning: bool = Field(
        default=False,
        description="Let idle ONNX Runtime threads spin. Off: spinning burns CPU another camera needs.",
    )
    memory_pattern: bool = Field(
        default=False,
        description="Let ONNX Runtime pre-plan one block for all intermediate tensors of an input size. "
        "Off by default: with inputs fitted to each frame it saves no time here and holds about 11 MiB "
        "more per camera.",
    )


class FaceDetectionConfig(StrictModel):
    enabled: bool = Field(
        default=True,
        description="Detect and mask faces. Turning this off is logged as a warning.",
    )
    model: str = Field(
        default="yunet_s_dynamic",
        description="Face model name from models/MANIFEST.tsv: yunet_s_dynamic (default; YuNet-s with its "
        "input fitted to the frame's aspect, long side 640), yunet_s_640, yunet_s_320, "
        "yunet_s_dynamic, ultraface_rfb_320 or centerface.",
    )
    input_size: tuple[int, int] | None = Field(
        default=None,
        description="[width, height] for models with a dynamic input (yunet_s_dynamic, centerface); "
        "multiples of 32. Default: fitted to each frame (long side 640, aspect kept) for yunet_s_dynamic, the frame size rounded up for centerface.",
    )
    margin_rel: float = Field(
        default=0.25, ge=0, le=2,
        description="Each side of a face box grows by this fraction of the box's width/height before masking.",
    )
    style: Style = Field(default=Style.SOLID, description="How face pixels are replaced: solid, pixelate or blur.")
    every_n_frames: int = Field(
        default=1, ge=1, le=300, description="Run the face detector on every n-th frame (1 = every frame)."
    )

    @field_validator("input_size")
    @classmethod
    def _mult32(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and (v[0] % 32 or v[1] % 32 or min(v) < 32 or max(v) > 4096):
            raise ValueError("input_size must be two multiples of 32 between 32 and 4096")
        return v


class ObjectDetectionConfig(StrictModel):
    enabled: bool = Field(
        default=True,
        description="Run the object detector (persons and private objects). Turning it off turns off "
        "person and private-object protection and is logged as a warning.",
    )
    model: str = Field(
        default="yolox_nano",
        description="Object model name from models/MANIFEST.tsv: yolox_nano (default) or nanodet_m_416.",
    )
    every_n_frames: int = Field(
        default=5, ge=1, le=300,
        description="Run the object detector on every n-th frame. Between runs its boxes carry forward "
        "and grow (see `grow_rel_per_s`); it also runs whenever its last result would otherwise be older "
        "than `max_detection_age_s`.",
    )
    adaptive: bool = Field(
        default=False,
        description="Pick the interval from the measured inference time instead: run as often as fits "
        "`budget_rel` of the frame interval, between 1 and `max_every_n_frames`.",
    )
    budget_rel: float = Field(
        default=0.5, gt=0, le=1,
        description="Adaptive cadence: fraction of each frame interval the object detector may use on average.",
    )
    max_every_n_frames: int = Field(
        default=30, ge=1, le=300, description="Adaptive cadence: the longest interval, in frames."
    )
    asynchronous: bool = Field(
        default=False,
        description="Run the object detector beside the frames instead of in line: frames do not wait "
        "for it, and each result is used once ready, aged (and its boxes grown) from the frame it was "
        "computed on; `max_detection_age_s` still withholds if it falls behind. Off by default, live "
        "cameras included: the object model already runs on its own analysis lane beside the face model, "
        "and in-line results are frame-exact. Turn it on for a hub where one object run takes longer than "
        "`every_n_frames` frame intervals.",
    )


class PersonRuleConfig(StrictModel):
    enabled: bool = Field(
        default=True, description="Protect detected persons. Turning this off is logged as a warning."
    )
    action: ZoneAction = Field(
        default=ZoneAction.MASK,
        description="`mask`: black out each person's box. `withhold`: drop frames that show a person.",
    )
    margin_rel: float = Field(default=0.1, ge=0, le=2, description="Margin added around person boxes.")
    style: Style = Field(default=Style.SOLID, description="How person pixels are replaced.")


def object_label_names(v: list[str], no_people: str) -> list[str]:
    """COCO object class names as the config gives them, normalised (`Teddy Bear` -> `teddy_bear`).
    Faces and persons have rules of their own, so a list of objects may not name them."""
    out = [x.strip().lower().replace(" ", "_") for x in v]
    if any(not x for x in out):
        raise ValueError("labels must be non-empty names")
    if "face" in out or "person" in out:
        raise ValueError(no_people)
    return out


class PrivateObjectsConfig(StrictModel):
    enabled: bool = Field(
        default=True,
        description="Treat detected private objects as private areas. Turning this off is logged as a warning.",
    )
    labels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PRIVATE_LABELS),
        description="COCO labels that make a private area (default bed, toilet, sink). Names use "
        "underscores for spaces, for example `dining_table`.",
    )
    action: ZoneAction = Field(
        default=ZoneAction.MASK,
        description="`mask`: black out the object's box. `withhold`: drop frames that show one.",
    )
    margin_rel: float = Field(
        default=0.25, ge=0, le=2,
        description="Each side of a private-object box grows by this fraction of its width/height. "
        "Generous on purpose: what is private extends past the object (the taps over a sink, a body on a "
        "bed), and an extra margin costs only pixels.",
    )
    style: Style = Field(default=Style.SOLID, description="How private-object pixels are replaced.")

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        return object_label_names(v, "face and person have their own settings (faces, persons); list objects only")


class ForegroundConfig(StrictModel):
    enabled: bool = Field(
        default=True,
        description="Mask what differs from the camera's learned empty scene and no detection explains "
        "(a head at the frame edge before the person detector fires, an arm outside a person box, a "
        "person the detector missed). Turning this off is logged as a warning.",
    )
    harmless_labels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_HARMLESS_LABELS),
        description="Object classes whose boxes explain a foreground region, leaving it visible (a pet, "
        "a car). Names as in `private_objects.labels`. Any other region that differs from the empty scene "
        "is masked.",
    )
    diff: float = Field(
        default=10.0, gt=0, le=255,
        description="Colour difference (0-255, the largest over the three channels) from the empty scene, "
        "after the whole frame's brightness change is taken out, above which a pixel is foreground.",
    )
    min_area_rel: float = Field(
        default=0.0001, gt=0, le=1,
        description="Smallest foreground region that counts, as a share of the frame (0.0001 is a "
        "3x2 patch at 320x180: the first hair of a head entering at 720p).",
    )
    dilate_rel: float = Field(
        default=0.02, ge=0, le=0.2,
        description="Each foreground region grows by this share of the frame's width before masking, "
        "so its outline (hair, fingers) is covered too.",
    )
    warmup_frames: int = Field(
        default=5, ge=1, le=600,
        description="Frames at start (or after a relearn or a resolution change) used to learn the empty "
        "scene; they are withheld (`foreground:learning`).",
    )
    learn_rate: float = Field(
        default=0.02, ge=0, le=1,
        description="How fast the empty scene follows slow change, per frame, where nothing is in the "
        "foreground. A region that is foreground is never learned, so a person who stops stays masked.",
    )
    hold_s: float = Field(
        default=0.4, ge=0, le=5,
        description="A foreground region stays masked for this long (stream time, seconds) after it was "
        "last seen: someone leaving through an edge, or briefly the colour of what is behind them, is still "
        "where they were a moment before. 0 masks only what differs on the frame itself.",
    )
    style: Style = Field(default=Style.SOLID, description="How unexplained foreground is replaced.")

    @field_validator("harmless_labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        return object_label_names(v, "a face or person never explains foreground as harmless")


class SceneCutConfig(StrictModel):
    enabled: bool = Field(
        default=True,
        description="Find scene cuts (a large change of the whole view between two frames) and run the "
        "object detector on the cut frame itself, so boxes from the previous scene are never applied to "
        "the new one. Turning this off is logged as a warning.",
    )
    threshold: float = Field(
        default=25.0, gt=0, le=255,
        description="Mean absolute grey-level difference (0-255) between two consecutive frames, on a "
        "32x18 thumbnail with each frame's mean level taken out, above which a frame starts a new scene. "
        "Two different rooms measure 37-72; a person filling half the view about 9, the lights dimmed "
        "by half about 17.",
    )


class UnderLoadConfig(StrictModel):
    enabled: bool = Field(
        default=True,
        description="Live cameras: once the hub reads a camera's frames `behind_s` behind it, that camera's "
        "face detector runs on every second frame, and its object detector every `object_every_n_frames`, "
        "until the hub has caught up, instead of withholding frames for lag. A frame the face detector "
        "skips is masked with the faces of both frames beside it (the one before, carried; the one after, "
        "by look-ahead), its reasons say `under_load`, and it is withheld unless the frame after it was "
        "judged with a face run of its own. Off: every frame is analysed at the configured cadence, and a "
        "hub that cannot keep up withholds frames for lag. Files are always analysed at the configured cadence.",
    )
    behind_s: float = Field(
        default=0.25, gt=0, le=30,
        description="How far behind its camera (seconds, by the camera's own timestamps) the hub may read a "
        "frame before it sheds detector runs on that camera. Keep it under half of `analysis.max_lag_s`, "
        "where frames start being withheld for lag.",
    )
    calm_s: float = Field(
        default=10.0, ge=0, le=600,
        description="Seconds (stream time) the hub must read the camera's frames less than half of "
        "`behind_s` behind before it runs the detectors at their configured cadence again.",
    )
    object_every_n_frames: int = Field(
        default=10, ge=1, le=300,
        description="The object detector's interval under load, in frames (never shorter than "
        "`objects.every_n_frames`). `max_detection_age_s` still forces a run once a result is half that old.",
    )


class PrivateRoomConfig(StrictModel):
    object_margin_rel: float = Field(
        default=0.4, ge=0, le=2,
        description="On a private-room camera, each side of a private object's box grows by at least "
        "this fraction of its width/height (the whole fixture and what is around it).",
    )


class DetectionConfig(StrictModel):
    enabled: bool = Field(
        default=True,
        description="Master switch for on-device detection. Off: no face, person or private-object "
        "protection at all (only drawn zones); logged as a warning.",
    )
    faces: FaceDetectionConfig = Field(default_factory=FaceDetectionConfig, description="Face detector.")
    objects: ObjectDetectionConfig = Field(
        default_factory=ObjectDetectionConfig, description="Object detector (persons, private objects)."
    )
    persons: PersonRuleConfig = Field(default_factory=PersonRuleConfig, description="What a detected person does.")
    private_objects: PrivateObjectsConfig = Field(
        default_factory=PrivateObjectsConfig, description="What a detected private object does."
    )
    thresholds: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS),
        description="Minimum detector score per label (face, person, bed, ...). Labels not listed use "
        f"{FALLBACK_THRESHOLD}. Lower values mask more.",
    )
    max_detection_age_s: float = Field(
        default=1.0, gt=0, le=30,
        description="A frame is withheld when the oldest detector result used for it is older than this.",
    )
    grow_rel_per_s: float = Field(
        default=0.1, ge=0, le=2,
        description="Carried-forward boxes grow on each side by this fraction of the frame per second "
        "since their detection, to cover movement between detector runs.",
    )
    on_model_missing: Literal["withhold", "refuse_start"] = Field(
        default="withhold",
        description="A missing or corrupt model: `withhold` every frame of the camera and raise an event "
        "(retrying the load every `model_retry_s`), or `refuse_start`.",
    )
    model_retry_s: float = Field(
        default=30.0, gt=0, description="Seconds between attempts to load a missing model while withholding."
    )
    model_cache: str | None = Field(
        default=None,
        description="Model cache directory (relative paths are relative to the config file). "
        "Default: $EPA_MODEL_CACHE, else ~/.cache/edge-privacy-agent/models.",
    )
    onnxruntime: OnnxRuntimeConfig = Field(
        default_factory=OnnxRuntimeConfig, description="ONNX Runtime session options shared by all detectors."
    )
    foreground: ForegroundConfig = Field(
        default_factory=ForegroundConfig,
        description="The unexplained-foreground layer: what the detectors miss, the empty-scene model masks.",
    )
    scene_cut: SceneCutConfig = Field(default_factory=SceneCutConfig, description="Scene-cut detection.")
    private_rooms: PrivateRoomConfig = Field(
        default_factory=PrivateRoomConfig, description="Settings for cameras in a private room (`privacy_room`)."
    )
    under_load: UnderLoadConfig = Field(
        default_factory=UnderLoadConfig,
        description="What a live camera's detectors do while the hub is behind it (fewer runs, never fewer masks).",
    )

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: dict[str, float]) -> dict[str, float]:
        out = {}
        for k, s in v.items():
            if not 0.0 < s < 1.0:
                raise ValueError(f"threshold for {k!r} must be between 0 and 1 (exclusive), got {s}")
            out[k.strip().lower().replace(" ", "_")] = float(s)
        # Listing one label must not silently drop the defaults of the others.
        return {**DEFAULT_THRESHOLDS, **out}

    @model_validator(mode="after")
    def _warn_off(self) -> DetectionConfig:
        for what in protections_off(self):
            log.warning("detection: %s is turned off by config; those areas are not protected", what)
        return self

    def threshold(self, label: str) -> float:
        return self.thresholds.get(label, FALLBACK_THRESHOLD)

    @property
    def faces_active(self) -> bool:
        return self.enabled and self.faces.enabled

    @property
    def objects_active(self) -> bool:
        return self.enabled and self.objects.enabled and (
            self.persons.enabled or (self.private_objects.enabled and bool(self.private_objects.labels))
        )

    @property
    def foreground_active(self) -> bool:
        return self.enabled and self.foreground.enabled

    def object_labels(self) -> frozenset[str]:
        """Labels the object detector must report: those rules need, the harmless classes that
        explain foreground, and the fixtures that make a room private (`privacy_room: auto`)."""
        out: set[str] = set()
        if self.persons.enabled:
            out.add("person")
        if self.private_objects.enabled:
            out.update(self.private_objects.labels)
        if self.foreground_active:
            out.update(self.foreground.harmless_labels)
        out.update(ROOM_LABELS)
        return frozenset(out)


class CameraDetectionConfig(StrictModel):
    """Per-camera overrides of `detection`; unset fields inherit the hub-wide value."""

    enabled: bool | None = Field(default=None, description="Override `detection.enabled` for this camera.")
    faces_enabled: bool | None = Field(default=None, description="Override `detection.faces.enabled`.")
    persons_enabled: bool | None = Field(default=None, description="Override `detection.persons.enabled`.")
    persons_action: ZoneAction | None = Field(default=None, description="Override `detection.persons.action`.")
    private_objects_enabled: bool | None = Field(
        default=None, description="Override `detection.private_objects.enabled`."
    )
    private_labels: list[str] | None = Field(default=None, description="Override `detection.private_objects.labels`.")
    private_action: ZoneAction | None = Field(default=None, description="Override `detection.private_objects.action`.")
    object_every_n_frames: int | None = Field(
        default=None, ge=1, le=300, description="Override `detection.objects.every_n_frames`."
    )


def protections_off(cfg: DetectionConfig) -> list[str]:
    """Human-readable list of protections the config turns off (for warnings and check-config)."""
    if not cfg.enabled:
        return ["all detection (detection.enabled: false)"]
    off = []
    if not cfg.faces.enabled:
        off.append("face masking (detection.faces.enabled: false)")
    if not cfg.objects.enabled:
        off.append("the object detector (detection.objects.enabled: false), so persons and private objects")
    else:
        if not cfg.persons.enabled:
            off.append("person protection (detection.persons.enabled: false)")
        if not cfg.private_objects.enabled:
            off.append("private-object protection (detection.private_objects.enabled: false)")
        elif not cfg.private_objects.labels:
            off.append("private-object protection (detection.private_objects.labels is empty)")
    if not cfg.foreground.enabled:
        off.append("unexplained-foreground masking (detection.foreground.enabled: false)")
    if not cfg.scene_cut.enabled:
        off.append("scene-cut detection (detection.scene_cut.enabled: false)")
    return off


def effective_detection(cfg: DetectionConfig, cam: CameraDetectionConfig | None) -> DetectionConfig:
    """The hub-wide config with one camera's overrides applied (validated again, so warnings log)."""
    if cam is None:
        return cfg
    data: dict[str, Any] = cfg.model_dump()
    if cam.enabled is not None:
        data["enabled"] = cam.enabled
    if cam.faces_enabled is not None:
        data["faces"]["enabled"] = cam.faces_enabled
    if cam.persons_enabled is not None:
        data["persons"]["enabled"] = cam.persons_enabled
    if cam.persons_action is not None:
        data["persons"]["action"] = cam.persons_action
    if cam.private_objects_enabled is not None:
        data["private_objects"]["enabled"] = cam.private_objects_enabled
    if cam.private_labels is not None:
        data["private_objects"]["labels"] = cam.private_labels
    if cam.private_action is not None:
        data["private_objects"]["action"] = cam.private_action
    if cam.object_every_n_frames is not None:
        data["objects"]["every_n_frames"] = cam.object_every_n_frames
    return DetectionConfig.model_validate(data)


def _action(a: ZoneAction) -> Action:
    return Action.WITHHOLD if a == ZoneAction.WITHHOLD else Action.MASK


def detection_rules(cfg: DetectionConfig) -> list[dict[str, Any]]:
    """One dict per policy rule with keys label, action, min_score, margin_rel, style.

    Only protections that are active get a rule; the analyzer reports only
    those labels, so a rule never exists without a detector feeding it.
    """
    rules: list[dict[str, Any]] = []
    if cfg.faces_active:
        rules.append({
            "label": "face", "action": Action.MASK, "min_score": cfg.threshold("face"),
            "margin_rel": cfg.faces.margin_rel, "style": cfg.faces.style,
        })
    if cfg.objects_active:
        if cfg.persons.enabled:
            rules.append({
                "label": "person", "action": _action(cfg.persons.action), "min_score": cfg.threshold("person"),
                "margin_rel": cfg.persons.margin_rel, "style": cfg.persons.style,
            })
        if cfg.private_objects.enabled:
            po = cfg.private_objects
            for label in po.labels:
                rules.append({
                    "label": label, "action": _action(po.action), "min_score": cfg.threshold(label),
                    "margin_rel": po.margin_rel, "style": po.style,
                })
    return rules
