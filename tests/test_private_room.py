"""Private rooms, both ways: a person in a bathroom withholds the whole frame; an empty bathroom is
released with its fixtures masked with a wide margin. `auto` latches on a fixture; `none` opts out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from detect_support import model_cache, photo

from agent.analysis.build import build_analyzers
from agent.clock import FakeClock
from agent.config import load_config, parse_config_text
from agent.core.datatypes import Analysis, Decision, Detection, ForegroundBlob, Frame
from agent.core.policy import (
    CameraPolicy,
    DetectionRule,
    ForegroundPolicy,
    camera_policy,
    decide,
    room_state,
)
from agent.core.ports import merge
from agent.geometry import BoxRel
from agent.lab.scenarios import sprite_image
from agent.vocab import Action, Mode

BATHROOM = "coco_val2017_000000006213.jpg"  # bathtub, shower curtain, two sinks; nobody in it
FRAME = Frame("cam", 1, 0.1, 0.0, np.zeros((4, 4, 3), np.uint8))
RULES = (DetectionRule("person", Action.MASK, 0.35, 0.1), DetectionRule("face", Action.MASK, 0.5, 0.25),
         DetectionRule("sink", Action.MASK, 0.2, 0.25))
SINK = Detection("sink", 0.8, BoxRel(0.5, 0.5, 0.7, 0.6), "fake")
PERSON = Detection("person", 0.8, BoxRel(0.1, 0.1, 0.3, 0.9), "fake")


def pol(room: str) -> CameraPolicy:
    return CameraPolicy("cam", detection_rules=RULES, foreground=ForegroundPolicy(frozenset({"cat"})),
                        privacy_room=room, room_object_margin_rel=0.4)


def an(*dets: Detection, room: str | None = None, blobs: tuple[ForegroundBlob, ...] = ()) -> Analysis:
    return Analysis(detections=dets, detections_age_s=0.0, foreground=blobs, room=room)


def test_room_state() -> None:
    assert room_state(pol("bathroom"), an()) == "bathroom"
    assert room_state(pol("auto"), an()) is None
    assert room_state(pol("auto"), an(room="bedroom")) == "bedroom"
    assert room_state(pol("none"), an(room="bathroom")) is None


def test_a_person_in_a_private_room_withholds_the_frame() -> None:
    d = decide(pol("auto"), FRAME, an(SINK, PERSON, room="bathroom"), Mode.HOME)
    assert d.action is Action.WITHHOLD and d.reasons == ("room:bathroom", "room:bathroom:person")
    # Unexplained foreground alone is a person the detector missed.
    b = BoxRel(0.4, 0.9, 0.5, 1.0)
    d = decide(pol("bedroom"), FRAME, an(blobs=(ForegroundBlob(b, b.to_points(), 0.01),)), Mode.HOME)
    assert d.reasons == ("room:bedroom", "room:bedroom:person")
    # A face too.
    face = Detection("face", 0.9, BoxRel(0.4, 0.1, 0.45, 0.2), "fake")
    assert decide(pol("bathroom"), FRAME, an(face), Mode.HOME).action is Action.WITHHOLD


def test_an_empty_private_room_is_released_with_fixtures_masked_wide() -> None:
    d = decide(pol("auto"), FRAME, an(SINK, room="bathroom"), Mode.HOME)
    assert d.action is Action.MASK and d.reasons == ("room:bathroom", "detection:sink")
    (r,) = d.regions
    assert (r.points[0].x_rel, r.points[0].y_rel) == pytest.approx((0.42, 0.46))  # margin 0.4, not 0.25
    # A cat's foreground in an empty bathroom stays visible and does not withhold.
    cat = Detection("cat", 0.8, BoxRel(0.1, 0.7, 0.3, 0.95), "fake")
    b = BoxRel(0.12, 0.72, 0.28, 0.93)
    d = decide(pol("bathroom"), FRAME, an(cat, blobs=(ForegroundBlob(b, b.to_points(), 0.02),)), Mode.HOME)
    assert d.action is Action.PASS and d.reasons == ("room:bathroom",)


def test_outside_a_private_room_a_person_is_masked() -> None:
    for p, a in ((pol("none"), an(SINK, PERSON, room="bathroom")), (pol("auto"), an(PERSON))):
        d = decide(p, FRAME, a, Mode.HOME)
        assert d.action is Action.MASK and "detection:person" in d.reasons


def test_config(caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_config_text("cameras:\n  - id: a\n    source: a.mp4\n  - id: b\n    source: b.mp4\n"
                            "    privacy_room: none\n  - id: c\n    source: c.mp4\n    privacy_room: bedroom\n")
    assert [c.privacy_room for c in cfg.cameras] == ["auto", "none", "bedroom"]
    assert "camera b: privacy_room: none" in caplog.text
    with pytest.raises(Exception, match="privacy_room"):
        parse_config_text("cameras:\n  - id: a\n    source: a.mp4\n    privacy_room: kitchen\n")


def paste(img: np.ndarray, sprite: np.ndarray, x: int, y: int) -> np.ndarray:
    out = img.copy()
    out[y:y + sprite.shape[0], x:x + sprite.shape[1]] = sprite
    return out


def run(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, frames: list[np.ndarray]) -> list[Decision]:
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(f"data_dir: {tmp_path / 'data'}\ndetection:\n  model_cache: {model_cache(tmp_path_factory)}\n"
                        "cameras:\n  - id: bath\n    source: x.mp4\n")
    loaded = load_config(cfg_path)
    cam = loaded.config.camera("bath")
    policy = camera_policy(loaded, cam)
    clock = FakeClock()
    analyzers = build_analyzers(loaded, cam, policy, clock, lambda e: None)
    out = []
    for i, img in enumerate(frames):
        f = Frame("bath", i, i / 10, clock.monotonic(), img)
        out.append(decide(policy, f, merge([a.analyze(f) for a in analyzers]), Mode.HOME))
        clock.advance(0.1)
    return out


def test_real_models_both_ways(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    empty = photo(BATHROOM)
    h, w = empty.shape[:2]
    sp = sprite_image("boy_white", int(h * 0.6))
    with_person = paste(empty, sp, w // 2, h - sp.shape[0])
    ds = run(tmp_path, tmp_path_factory, [empty] * 8 + [with_person] * 3 + [empty] * 8)
    assert all("foreground:learning" in d.reasons for d in ds[:4])  # the empty scene is being learned
    for d in ds[5:8]:  # the empty bathroom: released, the sinks masked, the state in the reasons
        assert d.action is Action.MASK, d.reasons
        assert d.reasons[0] == "room:bathroom" and "detection:sink" in d.reasons
    for d in ds[8:11]:  # someone walks in: the whole frame is withheld
        assert d.action is Action.WITHHOLD and "room:bathroom:person" in d.reasons, d.reasons
    for d in ds[16:]:  # gone again (once the carried person box has been replaced by a new run)
        assert d.action is Action.MASK and "room:bathroom:person" not in d.reasons, d.reasons


def test_a_preview_of_a_private_room_withholds_a_person_as_run_time_does() -> None:
    # `zones preview` draws what `decide_preview` returns: under `auto`, the room the detectors
    # saw on the preview frame must count, or the picture would show a person in a bathroom
    # masked only by a box where the frame itself is withheld.
    from agent.core.policy import decide_preview

    d = decide_preview(pol("auto"), FRAME, Mode.HOME, an(SINK, PERSON, room="bathroom"))
    assert d.action is Action.WITHHOLD and "room:bathroom:person" in d.reasons
    d = decide_preview(pol("auto"), FRAME, Mode.HOME, an(SINK, room="bathroom"))
    assert d.action is Action.MASK and d.reasons[0] == "room:bathroom"


def test_the_latched_room_survives_a_restart_until_relearn(tmp_path: Path) -> None:
    # A bathroom whose sink is behind a towel after a power cycle is still a bathroom: under
    # `auto` the latch is kept in the camera's scene store (as `moved` is), and only the owner's
    # relearn forgets it.
    from detect_support import FakeDetector

    from agent.analysis.factory import build_detection_analyzer
    from agent.analysis.scenestore import SceneStore
    from agent.config import DetectionConfig
    from agent.detect.base import Detector

    class Fixtures(FakeDetector):
        def __init__(self) -> None:
            super().__init__("yolox_nano", frozenset({"sink"}))
            self.found: tuple[Detection, ...] = (SINK,)

        def detect(self, image_bgr: np.ndarray, half_bgr: np.ndarray | None = None) -> tuple[Detection, ...]:
            return self.found

    objects = Fixtures()

    def load(role: str, model: str) -> Detector:
        return objects  # type: ignore[return-value]

    def analyzer(store: SceneStore | None):  # type: ignore[no-untyped-def]
        return build_detection_analyzer(DetectionConfig(), "cam", FakeClock(), lambda _e: None, loader=load,
                                        roles=("objects",), store=store)

    frame = Frame("cam", 0, 0.0, 0.0, np.zeros((90, 160, 3), np.uint8))
    store = SceneStore(tmp_path, "cam")
    assert analyzer(store).analyze(frame).room == "bathroom"
    objects.found = ()  # the sink is out of view after the restart
    assert analyzer(store).analyze(frame).room == "bathroom"
    assert analyzer(None).analyze(frame).room is None  # a replay stores and keeps nothing
    again = analyzer(store)
    again.relearn()
    assert again.analyze(frame).room is None and store.room is None
    # An unreadable record counts as the strictest room.
    (store.dir / "room").write_text("garbage")
    assert analyzer(store).analyze(frame).room == "bathroom"


def test_the_pipeline_forgets_a_private_room_once_relearn_unlatches_it() -> None:
    """Health and the page read `private_room`: it follows the latch down as well as up."""
    from agent.core.events import EventLog
    from agent.core.pipeline import CameraPipeline
    from agent.core.ports import SourceInfo

    state = {"room": "bathroom"}

    class Latch:
        name = "latch"

        def analyze(self, frame: Frame) -> Analysis:
            if frame.index == 3:
                state["room"] = None  # the owner's relearn un-latched the room
            return an(SINK, room=state["room"])

    class Src:
        info = SourceInfo("s", False, 10.0, 6)
        n = 0

        def read(self) -> np.ndarray | None:
            self.n += 1
            return np.full((40, 40, 3), 90, np.uint8) if self.n <= 6 else None

        def close(self) -> None:
            pass

    seen: list[str | None] = []
    p = CameraPipeline(pol("auto"), [Latch()], [], lambda: Mode.HOME, EventLog(), clock=FakeClock(),
                       on_decision=lambda d, i: seen.append(p.private_room))
    p.run(Src)
    assert seen[:3] == ["bathroom"] * 3 and seen[-1] is None and p.private_room is None
