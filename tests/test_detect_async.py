"""Asynchronous object detection: frames never wait, results are aged from their own frame, fail closed."""

from __future__ import annotations

import threading

import numpy as np
from detect_support import FakeDetector, det

from agent.analysis.factory import build_detection_analyzer
from agent.clock import FakeClock
from agent.config import DetectionConfig
from agent.core.datatypes import Event, Frame
from agent.detect.base import Detector

IMG = np.zeros((48, 64, 3), np.uint8)
FACE = det("face", 0.4, 0.1, 0.5, 0.3)
BED = det("bed", 0.0, 0.5, 0.6, 1.0)
FPS = 10.0


class Gate:
    """Holds the object detector inside detect() until released, to play a slow model."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, _img: np.ndarray) -> None:
        self.entered.set()
        assert self.release.wait(10)


def rig() -> tuple:  # type: ignore[type-arg]
    clock = FakeClock()
    events: list[Event] = []
    faces = FakeDetector("yunet_s_dynamic", frozenset({"face"}), (FACE,))
    objects = FakeDetector("yolox_nano", frozenset({"bed"}), (BED,))
    cfg = DetectionConfig.model_validate({"objects": {"asynchronous": True, "every_n_frames": 3}})

    def load(role: str, model: str) -> Detector:
        return faces if role == "faces" else objects  # type: ignore[return-value]

    a = build_detection_analyzer(cfg, "cam", clock, events.append, loader=load)
    frames = iter(range(1000))

    def step(size: tuple[int, int] = (64, 48)):  # type: ignore[no-untyped-def]
        i = next(frames)
        out = a.analyze(Frame("cam", i, i / FPS, clock.monotonic(), np.zeros((size[1], size[0], 3), np.uint8)))
        clock.advance(1 / FPS)
        return out

    return a, objects, step, events


def wait_done(a) -> None:  # type: ignore[no-untyped-def]
    job = next(s for s in a.slots if s.role == "objects").pending
    if job is not None:
        assert job.done.wait(10)


def test_first_frame_runs_in_line_then_frames_do_not_wait() -> None:
    a, objects, step, _ = rig()
    out = step()
    assert {d.label for d in out.detections} == {"face", "bed"} and out.detections_age_s == 0.0
    gate = Gate()
    objects.on_call = gate
    outs = [step() for _ in range(4)]  # a run starts on frame 3 and hangs; nobody waits for it
    assert gate.entered.wait(10)
    assert all("bed" in {d.label for d in o.detections} for o in outs)  # carried forward meanwhile
    assert outs[-1].detections_age_s is not None and outs[-1].detections_age_s >= 0.39
    gate.release.set()
    wait_done(a)
    out = step()
    # The new result is aged from the frame it was computed on (frame 3), not from now.
    assert out.detections_age_s is not None and abs(out.detections_age_s - 0.2) < 1e-6


def test_hung_object_detector_shows_as_a_growing_age() -> None:
    a, objects, step, _ = rig()
    step()
    gate = Gate()
    objects.on_call = gate
    ages = [step().detections_age_s for _ in range(15)]
    assert ages[-1] is not None and ages[-1] > DetectionConfig().max_detection_age_s  # the policy withholds
    gate.release.set()


def test_a_failed_run_is_a_fault_and_an_event() -> None:
    a, objects, step, events = rig()
    step()
    objects.fail = RuntimeError("boom")
    step()
    step()
    step()  # due (every 3rd frame): the failing run starts
    wait_done(a)
    out = step()
    assert "detector_error:yolox_nano" in out.faults
    assert [e.kind for e in events] == ["detector_error"]


def test_a_result_from_before_a_source_change_is_discarded() -> None:
    a, objects, step, _ = rig()
    step()
    gate = Gate()
    objects.on_call = gate
    step()
    step()
    step()  # due: a run starts on the old source
    assert gate.entered.wait(10)
    objects.on_call = None
    step(size=(32, 32))  # new geometry: carried and pending results are dropped, a fresh run in line
    gate.release.set()
    out = step(size=(32, 32))
    assert out.detections_age_s is not None and out.detections_age_s < 0.2 + 1e-6
