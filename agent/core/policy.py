"""Policy: a pure function from (camera policy, frame metadata, analysis, mode) to a Decision.

Invariants:
- `decide` never touches pixels and has no side effects; the same inputs
  always give the same decision.
- Anything uncertain withholds: `privacy` mode, a per-mode `withhold_all`,
  any analysis fault, a withhold zone whose occupancy is unknown, and
  detections older than `max_detection_age_s` (or missing when detection
  rules exist).
- Mask regions only ever add: a mode override can turn a `mask` zone into a
  `withhold` zone, and detections add regions; nothing here removes a
  homeowner's zone.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config import (
    AgentConfig,
    CameraConfig,
    LoadedConfig,
    detection_rules,
    effective_detection,
)
from agent.core.datatypes import Analysis, Decision, Frame, MaskRegion, ZoneActivity
from agent.geometry import BoxRel, PointRel, validate_polygon
from agent.vocab import Action, Mode, Style, ZoneAction


@dataclass(frozen=True, slots=True)
class ZonePolicy:
    name: str
    points: tuple[PointRel, ...]
    action: ZoneAction
    style: Style
    hold_s: float


@dataclass(frozen=True, slots=True)
class DetectionRule:
    """What to do with a detected label: mask its (expanded) box, or withhold the frame."""

    label: str
    action: Action
    min_score: float
    margin_rel: float = 0.0
    style: Style = Style.SOLID


@dataclass(frozen=True, slots=True)
class ModeOverride:
    withhold_all: bool = False
    zone_actions: tuple[tuple[str, ZoneAction], ...] = ()


@dataclass(frozen=True, slots=True)
class CameraPolicy:
    camera_id: str
    zones: tuple[ZonePolicy, ...] = ()
    mode_overrides: tuple[tuple[Mode, ModeOverride], ...] = ()
    detection_rules: tuple[DetectionRule, ...] = ()
    max_detection_age_s: float = 1.0

    def override(self, mode: Mode) -> ModeOverride:
        for m, o in self.mode_overrides:
            if m is mode:
                return o
        return ModeOverride()

    def zones_for(self, mode: Mode) -> tuple[ZonePolicy, ...]:
        actions = dict(self.override(mode).zone_actions)
        return tuple(
            ZonePolicy(z.name, z.points, actions.get(z.name, z.action), z.style, z.hold_s) for z in self.zones
        )

    def withhold_capable_zones(self) -> tuple[ZonePolicy, ...]:
        """Zones that are `withhold` in at least one mode (the analysis must track their occupancy)."""
        names = {z.name for z in self.zones if z.action is ZoneAction.WITHHOLD}
        for _, o in self.mode_overrides:
            names |= {n for n, a in o.zone_actions if a is ZoneAction.WITHHOLD}
        return tuple(z for z in self.zones if z.name in names)


def compile_policy(cam: CameraConfig, cfg: AgentConfig, detection_rules: tuple[DetectionRule, ...] = (),
                   max_detection_age_s: float = 1.0) -> CameraPolicy:
    hold_default = cfg.analysis.motion.hold_s
    zones = tuple(
        ZonePolicy(
            z.name,
            validate_polygon(z.points),
            z.action,
            z.style,
            z.hold_s if z.hold_s is not None else hold_default,
        )
        for z in cam.zones
    )
    overrides = tuple(
        (mode, ModeOverride(mc.withhold_all, tuple(sorted(mc.zones.items())))) for mode, mc in cam.modes.items()
    )
    return CameraPolicy(cam.id, zones, overrides, detection_rules, max_detection_age_s)


def _point_in_polygon(x: float, y: float, pts: tuple[PointRel, ...]) -> bool:
    inside = False
    n = len(pts)
    for i in range(n):
        a, b = pts[i], pts[(i + 1) % n]
        if (a.y_rel > y) != (b.y_rel > y):
            xi = a.x_rel + (y - a.y_rel) * (b.x_rel - a.x_rel) / (b.y_rel - a.y_rel)
            if x < xi:
                inside = not inside
    return inside


def box_touches_polygon(box: BoxRel, pts: tuple[PointRel, ...], samples: int = 5) -> bool:
    """Conservative-enough overlap test: a grid of points in the box, or a polygon vertex in the box."""
    for p in pts:
        if box.x0_rel <= p.x_rel <= box.x1_rel and box.y0_rel <= p.y_rel <= box.y1_rel:
            return True
    for i in range(samples):
        for j in range(samples):
            x = box.x0_rel + box.width_rel * i / (samples - 1)
            y = box.y0_rel + box.height_rel * j / (samples - 1)
            if _point_in_polygon(x, y, pts):
                return True
    return False


def decide(policy: CameraPolicy, frame: Frame, analysis: Analysis, mode: Mode) -> Decision:
    """The verdict for one frame. Pure: reads only frame metadata, never pixels."""

    def withhold(*reasons: str) -> Decision:
        return Decision(policy.camera_id, frame.index, frame.t_s, Action.WITHHOLD, tuple(reasons))

    if frame.camera_id != policy.camera_id:
        return withhold(f"policy_mismatch:{frame.camera_id}")
    if mode is Mode.PRIVACY:
        # Privacy mode is absolute: no per-camera override can weaken it.
        return withhold("mode:privacy")
    if policy.override(mode).withhold_all:
        return withhold(f"mode:{mode}:withhold_all")
    if analysis.faults:
        return withhold(*analysis.faults)
    if policy.detection_rules:
        age = analysis.detections_age_s
        if age is None:
            return withhold("detections_missing")
        if age > policy.max_detection_age_s:
            return withhold(f"detections_stale:{age:.2f}s")

    zones = policy.zones_for(mode)
    occupancy = {za.zone: za for za in analysis.zone_activity}
    reasons: list[str] = []
    withheld: list[str] = []
    regions: list[MaskRegion] = []

    rules = {r.label: r for r in policy.detection_rules}
    person_boxes = [
        d.box for d in analysis.detections if d.label == "person" and d.score >= rules.get(
            "person", DetectionRule("person", Action.MASK, 0.0)).min_score
    ]
    for z in zones:
        if z.action is ZoneAction.WITHHOLD:
            za = occupancy.get(z.name)
            if za is None:
                withheld.append(f"zone:{z.name}:unknown")
            elif za.occupied:
                withheld.append(f"zone:{z.name}:{za.reason or 'occupied'}")
            elif any(box_touches_polygon(b, z.points) for b in person_boxes):
                withheld.append(f"zone:{z.name}:person")
        else:
            regions.append(MaskRegion(z.name, "zone", z.points, z.style))
            reasons.append(f"zone:{z.name}")

    for d in analysis.detections:
        rule = rules.get(d.label)
        if rule is None or d.score < rule.min_score:
            continue
        if rule.action is Action.WITHHOLD:
            withheld.append(f"detection:{d.label}")
            continue
        # A degenerate (zero-area) box is still drawn: zone_mask outlines and dilates it.
        box = d.box.expanded(rule.margin_rel) if rule.margin_rel > 0 else d.box
        regions.append(MaskRegion(d.label, "detection", box.to_points(), rule.style))
        reasons.append(f"detection:{d.label}")

    if withheld:
        return withhold(*withheld)
    if regions:
        # De-duplicate reasons while keeping order, for readable decision logs.
        return Decision(policy.camera_id, frame.index, frame.t_s, Action.MASK, tuple(dict.fromkeys(reasons)),
                        tuple(regions))
    return Decision(policy.camera_id, frame.index, frame.t_s, Action.PASS)


def decide_zones_only(policy: CameraPolicy, frame: Frame, mode: Mode) -> Decision:
    """What the homeowner's zones alone do to `frame` in `mode`: `decide` itself, given an
    analysis in which every withhold zone is empty and the detectors ran and found nothing.

    For previews: the mask zones come back as the very regions the pipeline redacts (so the
    picture's pixels in them are the ones that leave the hub), and a mode that withholds every
    frame (`privacy`, `withhold_all`) still withholds. Detections add regions at run time; a
    preview cannot know them.
    """
    return decide_preview(policy, frame, mode, None)


def decide_preview(policy: CameraPolicy, frame: Frame, mode: Mode, detected: Analysis | None) -> Decision:
    """`decide_zones_only`, plus what the camera's detectors found on this very frame (`detected`:
    their merged analysis, faults included): the faces, people and private objects they find are
    masked in the preview exactly as at run time, and a detector that cannot run withholds the
    frame, as it would in the pipeline. Withhold zones are still taken as empty (one frame cannot
    learn their empty state)."""
    zones = tuple(ZoneActivity(z.name, False) for z in policy.withhold_capable_zones())
    if detected is None:
        analysis = Analysis(zone_activity=zones, detections_age_s=0.0)
    else:
        analysis = Analysis(detections=detected.detections, zone_activity=zones, faults=detected.faults,
                            detections_age_s=0.0 if detected.detections_age_s is None else detected.detections_age_s)
    return decide(policy, frame, analysis, mode)


def camera_policy(loaded: LoadedConfig, cam: CameraConfig) -> CameraPolicy:
    """One camera's compiled policy. Its detection rules come from the same effective detection
    config as the camera's detectors (`agent.analysis.build`), so a rule never lacks a detector."""
    eff = effective_detection(loaded.config.detection, cam.detection)
    rules = tuple(DetectionRule(**r) for r in detection_rules(eff)) if eff.enabled else ()
    return compile_policy(cam, loaded.config, rules, eff.max_detection_age_s)
