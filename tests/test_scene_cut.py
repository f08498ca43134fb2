"""Scene cuts: the object detector runs on the cut frame itself; the previous scene's boxes never
reach the new one (in line and asynchronous objects), and ordinary change is not a cut."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from detect_support import FakeDetector, det

from agent.analysis.detection import DetectionAnalyzer
from agent.analysis.factory import build_detection_analyzer
from agent.clock import FakeClock
from agent.config import DetectionConfig
from agent.core.datatypes import Analysis, Detection, Event, Frame
from agent.detect.base import Detector
from agent.lab.scenarios import resized, sprite_image

W, H = 640, 360
FPS = 10.0
BED = det("bed", 0.0, 0.5, 0.6, 1.0)
TOILET = det("toilet", 0.6, 0.4, 0.9, 0.9)


@pytest.fixture(scope="module")
def rooms() -> tuple[np.ndarray, np.ndarray]:
    """A bedroom and a bathroom: the two scenes of the cut."""
    return resized("coco_val2017_000000000632.jpg", W, H), resized("coco_val2017_000000006213.jpg", W, H)


class SceneDetector(FakeDetector):
    """Reports the bed in the bedroom and the toilet in the bathroom: what it finds follows its input."""

    def __init__(self, bedroom: np.ndarray, gate: threading.Event | None = None) -> None:
        super().__init__("yolox_nano", frozenset({"bed", "toilet"}))
        self.bedroom = bedroom
        self.gate = gate
        self.seen: list[str] = []

    def detect(self, image_bgr: np.ndarray, half_bgr: np.ndarray | None = None) -> tuple[Detection, ...]:
        self.calls += 1
        scene = "bedroom" if np.array_equal(image_bgr, self.bedroom) else "bathroom"
        self.seen.append(scene)
        if self.gate is not None:
            assert self.gate.wait(10)
        return (BED,) if scene == "bedroom" else (TOILET,)


def rig(bedroom: np.ndarray, cfg: dict[str, object], gate: threading.Event | None = None) -> tuple:  # type: ignore[type-arg]
    clock = FakeClock()
    events: list[Event] = []
    objects = SceneDetector(bedroom, gate)
    faces = FakeDetector("yunet_s_dynamic", frozenset({"face"}))

    def load(role: str, model: str) -> Detector:
        return faces if role == "faces" else objects  # type: ignore[return-value]

    a = build_detection_analyzer(DetectionConfig.model_validate(cfg), "cam", clock, events.append, loader=load,
                                 roles=("objects",))
    n = iter(range(10_000))

    def step(img: np.ndarray) -> Analysis:
        i = next(n)
        out = a.analyze(Frame("cam", i, i / FPS, clock.monotonic(), img))
        clock.advance(1 / FPS)
        return out

    return a, objects, step


def labels(r: Analysis) -> set[str]:
    return {d.label for d in r.detections}


def test_in_line_objects_run_on_the_cut_frame(rooms: tuple[np.ndarray, np.ndarray]) -> None:
    bedroom, bathroom = rooms
    a, objects, step = rig(bedroom, {"objects": {"every_n_frames": 10}, "max_detection_age_s": 10})
    for _ in range(7):
        assert labels(step(bedroom)) == {"bed"}
    assert objects.calls == 1  # the cadence: the bed box is carried
    r = step(bathroom)  # the cut, three frames before the next scheduled run
    assert objects.calls == 2 and objects.seen[-1] == "bathroom"
    assert labels(r) == {"toilet"} and r.detections_age_s == 0.0 and not r.faults
    assert r.room == "bathroom"
    assert a.scene_cuts == 1
    for _ in range(5):
        assert labels(step(bathroom)) == {"toilet"}
    assert objects.calls == 2  # no further cut: the cadence resumes


def test_asynchronous_objects_withhold_the_cut_until_its_own_result(rooms: tuple[np.ndarray, np.ndarray]) -> None:
    bedroom, bathroom = rooms
    gate = threading.Event()
    gate.set()
    a, objects, step = rig(bedroom, {"objects": {"every_n_frames": 10, "asynchronous": True}}, gate)
    assert labels(step(bedroom)) == {"bed"}  # the very first frame waits for its run
    for _ in range(3):
        step(bedroom)
    gate.clear()  # the run started on the cut is slow
    r = step(bathroom)
    assert "scene_cut:pending" in r.faults and r.detections == ()
    slot = next(s for s in a.slots if s.role == "objects")
    assert slot.pending is not None
    r2 = step(bathroom)
    assert "scene_cut:pending" in r2.faults and r2.detections == ()  # never the bed of the old scene
    gate.set()
    assert slot.pending.done.wait(10)
    r3 = step(bathroom)
    assert not r3.faults and labels(r3) == {"toilet"}
    assert objects.seen[-1] == "bathroom"


def test_a_person_walking_in_and_the_lights_dimming_are_not_cuts(rooms: tuple[np.ndarray, np.ndarray]) -> None:
    bedroom, _ = rooms
    a, objects, step = rig(bedroom, {"objects": {"every_n_frames": 50}})
    step(bedroom)
    sp = sprite_image("boy_red", 330)
    for k in range(20):
        img = bedroom.copy()
        x = 20 + 15 * k
        img[20:20 + sp.shape[0], x:x + sp.shape[1]] = sp
        step(img)
    for k in range(20):
        step(np.clip(bedroom.astype(np.float32) * (1 - 0.025 * k), 0, 255).astype(np.uint8))
    assert a.scene_cuts == 0


def test_cut_detection_can_be_turned_off_and_warns(rooms: tuple[np.ndarray, np.ndarray],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    bedroom, bathroom = rooms
    a, objects, step = rig(bedroom, {"objects": {"every_n_frames": 10}, "scene_cut": {"enabled": False}})
    assert "scene-cut detection (detection.scene_cut.enabled: false)" in caplog.text
    step(bedroom)
    assert labels(step(bathroom)) == {"bed"}  # what the switch gives up: the carried box
    assert isinstance(a, DetectionAnalyzer) and a.scene_cuts == 0
