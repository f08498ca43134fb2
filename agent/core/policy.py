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
- Layered masking: with the foreground layer on, a region that differs from
  the learned empty scene is masked unless it lies inside the box of a
  harmless class (and touches no person box); a region a person box touches
  is masked beside the box (an arm reaching out of it). While the empty scene
  is being learned the frame is withheld (`foreground:learning`).
- Private rooms (`room_state`): on a bathroom or bedroom camera any sign of a
  person (a person or face detection, or foreground no harmless box explains)
  withholds the whole frame (`room:<kind>:person`); an empty room is released
  with its private objects masked with a wide margin, its reasons carrying
  `room:<kind>`.
- Look-ahead (`look_ahead`): a frame is released only once the next frame is
  decided, and it is masked wherever the next frame masks foreground, a person
  or a face too, or withheld whenever the next frame is withheld (for what it
  shows, or unjudged: then nothing says this one is clear).
  Someone entering first shows a sliver (one row of hair at an edge, a hand
  round a door) that no layer can tell from noise on its own frame, but that is
  plain one frame later; the trail covers the other direction, where someone
  just was.
- Under load (`UNDER_LOAD`): a frame whose face run was skipped because the
  hub is behind a live camera carries the reason `under_load`, and
  `look_ahead` releases it only when the next frame was judged with a face
  run of its own (and takes that frame's faces too); otherwise it is withheld
  (`under_load:unconfirmed`).
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
from agent.core.datatypes import Analysis, Decision, ForegroundBlob, Frame, MaskRegion, ZoneActivity
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
class ForegroundPolicy:
    """The unexplained-foreground layer: which detected classes leave a foreground region visible."""

    harmless_labels: frozenset[str] = frozenset()
    style: Style = Style.SOLID
    #: How far (relative to the frame) the layer grows a region beyond the pixels that differ
    #: (its dilation, and the trail's joining distance). A harmless box is given the same slack
    #: before the "inside" test; otherwise a narrow object (a cat seen side-on) never fits inside
    #: its own box once dilated, and a pet is masked as unexplained.
    slack_rel: float = 0.0


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
    #: None: the foreground layer is off for this camera (an explicit, logged config choice).
    foreground: ForegroundPolicy | None = None
    #: `auto` | `bathroom` | `bedroom` | `none` (`cameras[].privacy_room`).
    privacy_room: str = "none"
    room_object_margin_rel: float = 0.4

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
                   max_detection_age_s: float = 1.0, foreground: ForegroundPolicy | None = None,
                   room_object_margin_rel: float = 0.4) -> CameraPolicy:
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
    return CameraPolicy(cam.id, zones, overrides, detection_rules, max_detection_age_s, foreground,
                        cam.privacy_room, room_object_margin_rel)


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


def room_state(policy: CameraPolicy, analysis: Analysis) -> str | None:
    """The camera's private-room kind for this frame (`bathroom`, `bedroom`) or None: the configured
    kind, or under `auto` the kind the object detector has seen on this camera (`Analysis.room`)."""
    if policy.privacy_room in ("bathroom", "bedroom"):
        return policy.privacy_room
    if policy.privacy_room == "auto":
        return analysis.room
    return None


# A foreground region counts as inside a harmless box when this share of its bounds is inside the
# box grown by `_HARMLESS_MARGIN_REL`: a person beside a dog makes one region reaching out of it.
_HARMLESS_INSIDE_REL = 0.9
_HARMLESS_MARGIN_REL = 0.1


def _inside_share(inner: BoxRel, outer: BoxRel) -> float:
    ix = max(0.0, min(inner.x1_rel, outer.x1_rel) - max(inner.x0_rel, outer.x0_rel))
    iy = max(0.0, min(inner.y1_rel, outer.y1_rel) - max(inner.y0_rel, outer.y0_rel))
    if inner.area_rel <= 0:
        return 1.0 if (ix > 0 or inner.width_rel == 0) and (iy > 0 or inner.height_rel == 0) else 0.0
    return ix * iy / inner.area_rel


def _overlaps(a: BoxRel, b: BoxRel) -> bool:
    return a.x0_rel <= b.x1_rel and b.x0_rel <= a.x1_rel and a.y0_rel <= b.y1_rel and b.y0_rel <= a.y1_rel


def explain_blob(blob: ForegroundBlob, person_boxes: list[BoxRel], harmless_boxes: list[BoxRel],
                 slack_rel: float = 0.0) -> str:
    """`person` (a person box touches it: masked with the box), `harmless` (inside a harmless
    class's box, touching no person: visible) or `unexplained` (masked)."""
    return _kind(blob, person_boxes, harmless_reach(harmless_boxes, slack_rel))


def harmless_reach(harmless_boxes: list[BoxRel], slack_rel: float = 0.0) -> list[BoxRel]:
    """Each harmless box as far as it explains a blob: its margin, then the layer's slack."""
    return [h.expanded(_HARMLESS_MARGIN_REL).grown_abs(slack_rel) for h in harmless_boxes]


def _kind(blob: ForegroundBlob, person_boxes: list[BoxRel], reach: list[BoxRel]) -> str:
    if any(_overlaps(blob.box, p) for p in person_boxes):
        return "person"
    if any(_inside_share(blob.box, h) >= _HARMLESS_INSIDE_REL for h in reach):
        return "harmless"
    return "unexplained"


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
    if policy.foreground is not None and not analysis.foreground_ready:
        return withhold("foreground:learning")

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

    room = room_state(policy, analysis)
    if room is not None:
        reasons.insert(0, f"room:{room}")
    fg = policy.foreground
    blob_kinds: list[tuple[ForegroundBlob, str]] = []
    if fg is not None:
        # Grown once per frame, not once per blob.
        reach = harmless_reach([d.box for d in analysis.detections if d.label in fg.harmless_labels], fg.slack_rel)
        blob_kinds = [(b, _kind(b, person_boxes, reach)) for b in analysis.foreground]
    if room is not None:
        face_rule = rules.get("face")
        faces = face_rule is not None and any(
            d.label == "face" and d.score >= face_rule.min_score for d in analysis.detections)
        # In a private room a mask's edge still shows limbs: any sign of a person withholds the frame.
        if person_boxes or faces or any(kind != "harmless" for _, kind in blob_kinds):
            withheld.append(f"room:{room}:person")

    for d in analysis.detections:
        rule = rules.get(d.label)
        if rule is None or d.score < rule.min_score:
            continue
        if rule.action is Action.WITHHOLD:
            withheld.append(f"detection:{d.label}")
            continue
        margin = rule.margin_rel
        if room is not None and d.label not in ("face", "person"):
            margin = max(margin, policy.room_object_margin_rel)
        # A degenerate (zero-area) box is still drawn: zone_mask outlines and dilates it.
        box = d.box.expanded(margin) if margin > 0 else d.box
        regions.append(MaskRegion(d.label, "detection", box.to_points(), rule.style))
        reasons.append(f"detection:{d.label}")

    if fg is not None:
        for blob, kind in blob_kinds:
            if kind == "harmless":
                continue
            regions.append(MaskRegion(f"foreground:{kind}", "foreground", blob.points, fg.style))
            reasons.append(f"foreground:{kind}")

    if withheld:
        return withhold(*([f"room:{room}"] if room is not None else []), *withheld)
    if analysis.under_load:
        reasons.append(UNDER_LOAD)
    # De-duplicate reasons while keeping order, for readable decision logs.
    if regions:
        return Decision(policy.camera_id, frame.index, frame.t_s, Action.MASK, tuple(dict.fromkeys(reasons)),
                        tuple(regions))
    return Decision(policy.camera_id, frame.index, frame.t_s, Action.PASS, tuple(dict.fromkeys(reasons)))


#: Marks a reason a frame has for what the next frame showed (`look_ahead`).
AHEAD = "ahead:"
#: The reason of a frame whose face run was skipped under load (`Analysis.under_load`).
UNDER_LOAD = "under_load"
#: Its withhold reason when the next frame cannot vouch for its faces (`look_ahead`).
UNDER_LOAD_UNCONFIRMED = "under_load:unconfirmed"


def own_reason(reason: str) -> str:
    """`reason` as the frame that found it gives it: without the `AHEAD` mark."""
    return reason.removeprefix(AHEAD)


#: Reasons that carry a measurement (`lag:2.31s`): the same kind of withholding on every frame.
_MEASURED = ("lag:", "detections_stale:")


def reason_key(reason: str) -> str:
    """`reason` to count by: a measured one without its figure (`lag`, `ahead:lag`), which varies
    from frame to frame; any other as it is."""
    own = own_reason(reason)
    if not own.startswith(_MEASURED):
        return reason
    return (AHEAD if reason.startswith(AHEAD) else "") + own.split(":", 1)[0]


def _moves(region: MaskRegion) -> bool:
    """A region of someone who may have just come into view: foreground, a person, a face. A
    homeowner's zone is the same on both frames, and a private object does not walk in: the next
    frame's box of it is the same bed with a box a few pixels off, masked twice for nothing."""
    return region.kind == "foreground" or (region.kind == "detection" and region.name in ("face", "person"))


def look_ahead(current: Decision, following: Decision | None) -> Decision:
    """`current`, given the decision of the frame after it (`following`, as `decide` made it;
    None when there is none to wait for: the source ended or went quiet).

    Only ever adds: `current` is masked wherever `following` masks someone who may have just come
    into view (its foreground, person and face regions, under their own names, reasons
    `ahead:<name>`), and withheld whenever `following` is withheld (its reasons then `following`'s,
    each as `ahead:<reason>`). Someone entering first shows a sliver too thin to tell from noise
    on its own frame (a row of hair at an edge); one frame later it is a region, and a person
    moves little in one frame. So a frame goes out only once the next one has been seen and
    judged:
    - withheld for what it shows (a person in a private room, an occupied withhold zone, a
      withhold rule) or by a mode: that was most likely there a frame earlier, and the privacy
      switch, once on, lets out no frame decided just before it;
    - withheld unseen or unjudged (lag, a decode error, an analysis fault, learning, a scene cut
      waiting for its objects): nothing says the sliver is not on `current`, so it is not let
      out either (fail closed). That costs one more withheld frame per withheld stretch.

    A frame whose face run was skipped under load (reason `UNDER_LOAD`) has only the faces of the
    frame before it, carried. It goes out only with the next frame's own faces added: when there
    is no next frame, or the next one skipped its face run too, it is withheld
    (`UNDER_LOAD_UNCONFIRMED`). A face that shows on the frame between two runs was, a fifteenth of
    a second either side, on one of them.
    """
    if current.action is Action.WITHHOLD:
        return current
    if UNDER_LOAD in current.reasons and (
            following is None or (following.action is not Action.WITHHOLD and UNDER_LOAD in following.reasons)):
        return Decision(current.camera_id, current.frame_index, current.t_s, Action.WITHHOLD,
                        (UNDER_LOAD_UNCONFIRMED,))
    if following is None:
        return current
    if following.action is Action.WITHHOLD:
        # All of the next frame's reasons, marked: the log reads as one stretch withheld for them.
        return Decision(current.camera_id, current.frame_index, current.t_s, Action.WITHHOLD,
                        tuple(AHEAD + r for r in following.reasons))
    have = set(current.regions)
    added = tuple(r for r in dict.fromkeys(following.regions) if _moves(r) and r not in have)
    if not added:
        return current
    reasons = tuple(dict.fromkeys((*current.reasons, *(AHEAD + r.name for r in added))))
    return Decision(current.camera_id, current.frame_index, current.t_s, Action.MASK, reasons,
                    current.regions + added)


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
        # The room the detectors saw on this frame too: in a private room a person withholds the
        # whole preview, as the frame would be withheld at run time.
        analysis = Analysis(detections=detected.detections, zone_activity=zones, faults=detected.faults,
                            detections_age_s=0.0 if detected.detections_age_s is None else detected.detections_age_s,
                            room=detected.room)
    return decide(policy, frame, analysis, mode)


def camera_policy(loaded: LoadedConfig, cam: CameraConfig) -> CameraPolicy:
    """One camera's compiled policy. Its detection rules come from the same effective detection
    config as the camera's detectors (`agent.analysis.build`), so a rule never lacks a detector."""
    eff = effective_detection(loaded.config.detection, cam.detection)
    rules = tuple(DetectionRule(**r) for r in detection_rules(eff)) if eff.enabled else ()
    # The slack: the dilation (a share of the width, so up to twice that of a 16:9 frame's height),
    # plus the trail's few work pixels (at ~320 px wide).
    fg = (ForegroundPolicy(frozenset(eff.foreground.harmless_labels), eff.foreground.style,
                           slack_rel=2 * eff.foreground.dilate_rel + 4 / 320)
          if eff.foreground_active else None)
    return compile_policy(cam, loaded.config, rules, eff.max_detection_age_s, fg,
                          eff.private_rooms.object_margin_rel)
