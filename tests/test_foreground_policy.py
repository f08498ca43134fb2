"""The policy's foreground layer (pure): which blobs stay visible, which are masked, and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.config import DEFAULT_HARMLESS_LABELS, LoadedConfig, parse_config_text
from agent.core.datatypes import Analysis, Detection, ForegroundBlob, Frame
from agent.core.policy import (
    CameraPolicy,
    DetectionRule,
    ForegroundPolicy,
    camera_policy,
    decide,
    explain_blob,
)
from agent.geometry import BoxRel
from agent.vocab import Action, Mode, Style

FRAME = Frame("cam", 3, 0.3, 0.0, np.zeros((4, 4, 3), np.uint8))
RULES = (DetectionRule("person", Action.MASK, 0.35, 0.1), DetectionRule("face", Action.MASK, 0.5, 0.25))
POL = CameraPolicy("cam", detection_rules=RULES,
                   foreground=ForegroundPolicy(frozenset(DEFAULT_HARMLESS_LABELS), Style.PIXELATE))


def blob(x0: float, y0: float, x1: float, y1: float) -> ForegroundBlob:
    b = BoxRel(x0, y0, x1, y1)
    return ForegroundBlob(b, b.to_points(), b.area_rel)


def det(label: str, x0: float, y0: float, x1: float, y1: float, score: float = 0.9) -> Detection:
    return Detection(label, score, BoxRel(x0, y0, x1, y1), "fake")


def analysis(*blobs: ForegroundBlob, dets: tuple[Detection, ...] = (), ready: bool = True) -> Analysis:
    return Analysis(detections=dets, detections_age_s=0.0, foreground=blobs, foreground_ready=ready)


def test_an_unexplained_blob_is_masked_in_the_layers_style() -> None:
    d = decide(POL, FRAME, analysis(blob(0.4, 0.9, 0.5, 1.0)), Mode.HOME)  # a head-top at the bottom edge
    assert d.action is Action.MASK and d.reasons == ("foreground:unexplained",)
    (r,) = d.regions
    assert (r.kind, r.style, r.points) == ("foreground", Style.PIXELATE, blob(0.4, 0.9, 0.5, 1.0).points)


def test_a_blob_inside_a_harmless_box_stays_visible() -> None:
    d = decide(POL, FRAME, analysis(blob(0.22, 0.52, 0.38, 0.7), dets=(det("dog", 0.2, 0.5, 0.4, 0.72),)),
               Mode.HOME)
    assert d.action is Action.PASS and d.regions == ()


def test_a_blob_reaching_out_of_a_harmless_box_is_masked() -> None:
    # A person beside the dog makes one region much larger than the dog's box.
    d = decide(POL, FRAME, analysis(blob(0.2, 0.1, 0.6, 0.72), dets=(det("dog", 0.2, 0.5, 0.4, 0.72),)), Mode.HOME)
    assert d.reasons == ("foreground:unexplained",)


def test_a_blob_touching_a_person_box_is_masked_beside_the_box() -> None:
    # An arm reaching out of the person's box: the box and the whole region are masked.
    a = analysis(blob(0.3, 0.4, 0.7, 0.5), dets=(det("person", 0.2, 0.2, 0.4, 0.9),))
    d = decide(POL, FRAME, a, Mode.HOME)
    assert d.action is Action.MASK
    assert d.reasons == ("detection:person", "foreground:person")
    assert [r.kind for r in d.regions] == ["detection", "foreground"]


def test_a_person_touching_a_harmless_blob_makes_it_masked() -> None:
    a = analysis(blob(0.22, 0.52, 0.38, 0.7), dets=(det("dog", 0.2, 0.5, 0.4, 0.72), det("person", 0.3, 0.1, 0.5, 0.9)))
    assert "foreground:person" in decide(POL, FRAME, a, Mode.HOME).reasons


def test_learning_withholds() -> None:
    assert decide(POL, FRAME, analysis(ready=False), Mode.HOME).reasons == ("foreground:learning",)


def test_layer_off_ignores_blobs() -> None:
    off = CameraPolicy("cam", detection_rules=RULES)
    d = decide(off, FRAME, analysis(blob(0.4, 0.9, 0.5, 1.0), ready=False), Mode.HOME)
    assert d.action is Action.PASS


@pytest.mark.parametrize(("box", "kind"), [
    ((0.0, 0.0, 0.1, 0.1), "unexplained"),
    ((0.21, 0.51, 0.39, 0.71), "harmless"),
    ((0.35, 0.45, 0.45, 0.55), "person"),
])
def test_explain_blob(box: tuple[float, float, float, float], kind: str) -> None:
    assert explain_blob(blob(*box), [BoxRel(0.4, 0.4, 0.6, 0.9)], [BoxRel(0.2, 0.5, 0.4, 0.72)]) == kind


def test_config_switch_is_explicit_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    on = parse_config_text("cameras:\n  - id: hall\n    source: hall.mp4\n")
    pol_on = camera_policy(LoadedConfig(config=on, path=Path("/x/c.yaml"), sha256=""), on.cameras[0])
    assert pol_on.foreground is not None and "cat" in pol_on.foreground.harmless_labels
    assert pol_on.privacy_room == "auto"
    caplog.clear()
    off = parse_config_text("detection:\n  foreground:\n    enabled: false\ncameras:\n  - id: hall\n    source: hall.mp4\n")
    assert "unexplained-foreground masking (detection.foreground.enabled: false)" in caplog.text
    pol_off = camera_policy(LoadedConfig(config=off, path=Path("/x/c.yaml"), sha256=""), off.cameras[0])
    assert pol_off.foreground is None


def test_a_narrow_harmless_object_fits_inside_its_box_once_dilated() -> None:
    # A cat seen side-on at 720p: its box is 0.06 wide; the layer dilates its region by 2% of the
    # width on each side, which alone is more than the box's own 10% margin. The policy gives a
    # harmless box the layer's slack, so the dilated region still counts as inside it.
    cat = det("cat", 0.50, 0.60, 0.56, 0.75)
    dilated = blob(0.48, 0.56, 0.58, 0.79)
    with_slack = CameraPolicy("cam", detection_rules=RULES, foreground=ForegroundPolicy(
        frozenset(DEFAULT_HARMLESS_LABELS), Style.PIXELATE, slack_rel=2 * 0.02 + 4 / 320))
    assert decide(POL, FRAME, analysis(dilated, dets=(cat,)), Mode.HOME).reasons == ("foreground:unexplained",)
    assert decide(with_slack, FRAME, analysis(dilated, dets=(cat,)), Mode.HOME).action is Action.PASS
    # The slack is a few percent of the frame, not a licence: a person beside the cat is masked.
    person_beside = blob(0.40, 0.30, 0.58, 0.79)
    assert decide(with_slack, FRAME, analysis(person_beside, dets=(cat,)), Mode.HOME).reasons == (
        "foreground:unexplained",)


def test_camera_policy_gives_the_layer_its_slack() -> None:
    cfg = parse_config_text("cameras: [{id: cam, source: v.mp4}]\n")
    fg = camera_policy(LoadedConfig(config=cfg, path=Path("/x/c.yaml"), sha256=""), cfg.cameras[0]).foreground
    assert fg is not None and fg.slack_rel == pytest.approx(2 * 0.02 + 4 / 320)
