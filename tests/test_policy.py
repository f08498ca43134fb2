"""Policy is pure and fails closed."""

from __future__ import annotations

import numpy as np
import pytest

from agent.core.datatypes import Analysis, Detection, Frame, ZoneActivity
from agent.core.policy import CameraPolicy, DetectionRule, ModeOverride, ZonePolicy, decide
from agent.geometry import BoxRel, validate_polygon
from agent.vocab import Action, Mode, Style, ZoneAction

LEFT = validate_polygon([[0, 0], [0.5, 0], [0.5, 1], [0, 1]])
RIGHT = validate_polygon([[0.6, 0], [1, 0], [1, 1], [0.6, 1]])
FRAME = Frame("cam", 7, 0.7, 0.0, np.zeros((4, 4, 3), np.uint8))


def pol(**kw: object) -> CameraPolicy:
    base: dict[str, object] = {
        "camera_id": "cam",
        "zones": (
            ZonePolicy("left", LEFT, ZoneAction.MASK, Style.SOLID, 3.0),
            ZonePolicy("door", RIGHT, ZoneAction.WITHHOLD, Style.SOLID, 3.0),
        ),
    }
    base.update(kw)
    return CameraPolicy(**base)  # type: ignore[arg-type]


EMPTY = Analysis(zone_activity=(ZoneActivity("door", False),))


def test_mask_zone_becomes_region() -> None:
    d = decide(pol(), FRAME, EMPTY, Mode.HOME)
    assert d.action is Action.MASK and d.regions[0].name == "left" and d.frame_index == 7


def test_privacy_mode_withholds_everything_and_cannot_be_overridden() -> None:
    p = pol(mode_overrides=((Mode.PRIVACY, ModeOverride(False)),))
    assert decide(p, FRAME, EMPTY, Mode.PRIVACY).action is Action.WITHHOLD


def test_withhold_all_override() -> None:
    p = pol(mode_overrides=((Mode.AWAY, ModeOverride(True)),))
    assert decide(p, FRAME, EMPTY, Mode.AWAY).reasons == ("mode:away:withhold_all",)
    assert decide(p, FRAME, EMPTY, Mode.HOME).action is Action.MASK


def test_mode_can_turn_mask_zone_into_withhold_zone() -> None:
    p = pol(mode_overrides=((Mode.HOME, ModeOverride(False, (("left", ZoneAction.WITHHOLD),))),))
    # No occupancy known for "left" in home mode: unknown means withhold.
    d = decide(p, FRAME, EMPTY, Mode.HOME)
    assert d.action is Action.WITHHOLD and "zone:left:unknown" in d.reasons
    assert p.withhold_capable_zones()[0].name == "left"


def test_occupied_withhold_zone() -> None:
    a = Analysis(zone_activity=(ZoneActivity("door", True, "presence"),))
    assert decide(pol(), FRAME, a, Mode.HOME).reasons == ("zone:door:presence",)


def test_unknown_occupancy_withholds() -> None:
    assert decide(pol(), FRAME, Analysis(), Mode.HOME).reasons == ("zone:door:unknown",)


def test_faults_withhold() -> None:
    a = Analysis(zone_activity=EMPTY.zone_activity, faults=("tamper:covered",))
    assert decide(pol(), FRAME, a, Mode.HOME).reasons == ("tamper:covered",)


RULES = (
    DetectionRule("face", Action.MASK, 0.5, 0.25),
    DetectionRule("person", Action.MASK, 0.4),
    DetectionRule("toilet", Action.WITHHOLD, 0.4),
)


def test_detections_masked_with_margin_and_thresholds() -> None:
    a = Analysis(
        detections=(Detection("face", 0.9, BoxRel(0.4, 0.4, 0.5, 0.5)), Detection("face", 0.3, BoxRel(0, 0, 0.1, 0.1))),
        zone_activity=EMPTY.zone_activity,
        detections_age_s=0.0,
    )
    d = decide(pol(detection_rules=RULES), FRAME, a, Mode.HOME)
    faces = [r for r in d.regions if r.kind == "detection"]
    assert len(faces) == 1
    xs = [p.x_rel for p in faces[0].points]
    assert min(xs) == pytest.approx(0.375) and max(xs) == pytest.approx(0.525)


def test_private_object_can_withhold() -> None:
    a = Analysis(detections=(Detection("toilet", 0.8, BoxRel(0.1, 0.1, 0.2, 0.2)),),
                 zone_activity=EMPTY.zone_activity, detections_age_s=0.1)
    assert decide(pol(detection_rules=RULES), FRAME, a, Mode.HOME).reasons == ("detection:toilet",)


def test_person_in_withhold_zone_counts_as_occupied() -> None:
    a = Analysis(detections=(Detection("person", 0.9, BoxRel(0.7, 0.2, 0.8, 0.9)),),
                 zone_activity=EMPTY.zone_activity, detections_age_s=0.0)
    assert decide(pol(detection_rules=RULES), FRAME, a, Mode.HOME).reasons == ("zone:door:person",)


def test_stale_or_missing_detections_withhold() -> None:
    p = pol(detection_rules=RULES, max_detection_age_s=0.5)
    assert decide(p, FRAME, EMPTY, Mode.HOME).reasons == ("detections_missing",)
    a = Analysis(zone_activity=EMPTY.zone_activity, detections_age_s=0.9)
    assert decide(p, FRAME, a, Mode.HOME).reasons[0].startswith("detections_stale")


def test_no_zones_no_rules_passes() -> None:
    assert decide(CameraPolicy("cam"), FRAME, Analysis(), Mode.HOME).action is Action.PASS


def test_policy_for_other_camera_withholds() -> None:
    assert decide(CameraPolicy("other"), FRAME, Analysis(), Mode.HOME).action is Action.WITHHOLD
