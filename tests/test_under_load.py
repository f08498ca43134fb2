"""A live camera the hub is behind: fewer detector runs, never fewer masks (`detection.under_load`).

The analyzer sheds face runs to every second frame and object runs to `object_every_n_frames` once a
frame was read `behind_s` behind its camera, and runs them at their configured cadence again after
`calm_s` of frames read close to it. A frame whose face run was skipped is marked; the policy
releases it only with the next frame's own faces (look-ahead), and the pipeline's real `run` does
so end to end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from detect_support import FakeDetector, det

from agent.analysis.detection import ROLES
from agent.analysis.factory import build_detection_analyzer
from agent.clock import FakeClock
from agent.config import DetectionConfig, LoadedConfig, parse_config_text
from agent.core.datatypes import Analysis, Decision, Event, Frame
from agent.core.health import HealthTracker
from agent.core.monitor import sample
from agent.core.pipeline import CameraPipeline
from agent.core.policy import UNDER_LOAD, UNDER_LOAD_UNCONFIRMED, camera_policy, decide, look_ahead
from agent.core.ports import SourceInfo, merge
from agent.core.redact import RedactedFrame
from agent.detect.base import Detector
from agent.mqtt.health import camera_document
from agent.vocab import Action, Mode

IMG = np.zeros((48, 64, 3), np.uint8)
FACE = det("face", 0.4, 0.1, 0.5, 0.3)
PERSON = det("person", 0.3, 0.05, 0.6, 0.9)
FPS = 15.0


class Rig:
    """One camera's detection analyzer with scripted detectors, fed frames read `behind_s` behind."""

    def __init__(self, cfg: DetectionConfig | None = None, roles: tuple[str, ...] | None = None) -> None:
        self.cfg = cfg or DetectionConfig()
        self.clock = FakeClock()
        self.events: list[Event] = []
        self.faces = FakeDetector("yunet_s_dynamic", frozenset({"face"}), (FACE,), self.clock)
        self.objects = FakeDetector("yolox_nano", frozenset({"person"}), (PERSON,), self.clock)
        self.analyzer = build_detection_analyzer(self.cfg, "cam", self.clock, self.events.append,
                                                 loader=self.load, roles=roles or ROLES)
        self.i = 0
        self.face_runs: list[int] = []
        self.object_runs: list[int] = []

    def load(self, role: str, model: str) -> Detector:
        return self.faces if role == "faces" else self.objects

    def step(self, behind_s: float) -> Analysis:
        faces, objects = self.faces.calls, self.objects.calls
        frame = Frame("cam", self.i, self.i / FPS, self.clock.monotonic() - behind_s, IMG.copy(), behind_s)
        out = self.analyzer.analyze(frame)
        if self.faces.calls > faces:
            self.face_runs.append(self.i)
        if self.objects.calls > objects:
            self.object_runs.append(self.i)
        self.i += 1
        self.clock.advance(1 / FPS)
        return out

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events if e.kind in ("under_load", "load_eased")]


def test_a_camera_the_hub_keeps_up_with_runs_every_face() -> None:
    rig = Rig()
    outs = [rig.step(0.1) for _ in range(30)]
    assert rig.faces.calls == 30
    assert not any(o.under_load for o in outs)
    assert rig.kinds() == []


def test_behind_the_camera_faces_run_on_every_second_frame_and_objects_less_often() -> None:
    rig = Rig()
    for _ in range(5):
        rig.step(0.0)
    outs = [rig.step(0.4) for _ in range(40)]
    # Frame 5 enters the state. Frame 4 ran its faces, so 5 is the first skipped, and from then on
    # every second frame runs: each skipped frame has a run on either side.
    assert [i for i in rig.face_runs if i >= 5] == list(range(6, 45, 2))
    assert [5 + k for k, o in enumerate(outs) if o.under_load] == list(range(5, 45, 2))
    # Every frame still has its faces: carried on the skipped ones.
    assert all(any(d.label == "face" for d in o.detections) for o in outs)
    assert all(not o.faults for o in outs)
    # Objects every 10 frames, but `max_detection_age_s` (1 s) still forces a run once a result is
    # half a second old: at 15 fps, on the 8th frame.
    assert rig.objects.calls == len(rig.object_runs)
    assert rig.object_runs == [0, 8, 16, 24, 32, 40]
    assert rig.kinds() == ["under_load"]
    ev = next(e for e in rig.events if e.kind == "under_load")
    assert ev.details["behind_s"] == pytest.approx(0.4)
    assert "every second frame" in ev.message


def test_caught_up_for_calm_s_the_cadence_comes_back_and_a_wobble_restarts_the_wait() -> None:
    cfg = DetectionConfig.model_validate({"under_load": {"calm_s": 2.0}})
    rig = Rig(cfg)
    rig.step(0.5)  # enters
    # 1.5 s close to the camera, then one frame at 0.2 s (over half of behind_s): the wait starts again.
    for _ in range(int(1.5 * FPS)):
        rig.step(0.05)
    rig.step(0.2)
    assert rig.kinds() == ["under_load"]
    for _ in range(int(2.0 * FPS)):
        rig.step(0.05)
    assert rig.kinds() == ["under_load"]
    rig.step(0.05)
    assert rig.kinds() == ["under_load", "load_eased"]
    start = rig.faces.calls
    outs = [rig.step(0.05) for _ in range(10)]
    assert rig.faces.calls == start + 10
    assert not any(o.under_load for o in outs)


def test_turned_off_or_on_a_file_nothing_is_shed() -> None:
    off = Rig(DetectionConfig.model_validate({"under_load": {"enabled": False}}))
    assert not any(off.step(5.0).under_load for _ in range(20))
    assert off.faces.calls == 20 and off.kinds() == []
    files = Rig()
    assert not any(files.step(0.0).under_load for _ in range(20))
    assert files.faces.calls == 20


def test_a_configured_sparse_face_cadence_is_not_marked_as_shed() -> None:
    # The homeowner's own every_n_frames: 2 skips frames by choice, carried as always; only a run
    # skipped for the load is marked (and then needs the next frame's faces).
    rig = Rig(DetectionConfig.model_validate({"faces": {"every_n_frames": 2}}))
    outs = [rig.step(1.0) for _ in range(20)]
    assert rig.faces.calls == 10
    assert not any(o.under_load for o in outs)


def test_both_lanes_of_a_camera_agree_and_only_one_tells() -> None:
    faces, objects = Rig(roles=("faces",)), Rig(roles=("objects",))
    objects.events = faces.events  # one camera's event list
    objects.analyzer.on_event = faces.events.append
    merged = [merge([faces.step(b), objects.step(b)]) for b in [0.0] * 3 + [0.6] * 20]
    # Frames 3, 5, ..., 21 skipped their face runs; the merged analysis says so.
    assert [i for i, m in enumerate(merged) if m.under_load] == list(range(3, 23, 2))
    assert faces.kinds() == ["under_load"]
    assert faces.analyzer.stats()["faces"]["under_load"] is True
    assert objects.analyzer.stats()["objects"]["under_load"] is True
    assert faces.analyzer.stats()["faces"]["shed_frames"] == 10


def test_a_scene_cut_under_load_runs_the_faces_on_the_cut_frame() -> None:
    rig = Rig()
    rig.step(0.5)
    rig.step(0.5)  # shed (frame 0 ran)
    assert rig.face_runs == [0]
    rig.step(0.5)
    cut = np.full((48, 64, 3), 200, np.uint8)
    cut[:, :32] = 0
    before = rig.faces.calls
    frame = Frame("cam", rig.i, rig.i / FPS, rig.clock.monotonic() - 0.5, cut, 0.5)
    out = rig.analyzer.analyze(frame)
    assert rig.faces.calls == before + 1 and not out.under_load


# --- the policy: a skipped frame goes out only with the next frame's own faces ---------------------

def _policy():
    cfg = parse_config_text("cameras:\n  - id: cam\n    source: x.mp4\n"
                            "detection: {foreground: {enabled: false}}\n")
    return camera_policy(LoadedConfig(config=cfg, path=Path("/x/c.yaml"), sha256=""), cfg.cameras[0])


def _decide(i: int, under_load: bool, faces: tuple = (FACE,)) -> Decision:
    frame = Frame("cam", i, i / FPS, 0.0, IMG)
    return decide(_policy(), frame, Analysis(detections=faces, detections_age_s=0.0, under_load=under_load),
                  Mode.HOME)


def test_a_skipped_frame_is_released_with_the_next_frames_faces() -> None:
    moved = det("face", 0.6, 0.1, 0.7, 0.3)
    current, following = _decide(1, True), _decide(2, False, (moved,))
    assert UNDER_LOAD in current.reasons and current.action is Action.MASK
    out = look_ahead(current, following)
    assert out.action is Action.MASK
    assert len([r for r in out.regions if r.name == "face"]) == 2  # carried and next frame's
    assert UNDER_LOAD in out.reasons


def test_a_skipped_frame_without_a_judged_face_run_after_it_is_withheld() -> None:
    current = _decide(1, True)
    assert look_ahead(current, None).reasons == (UNDER_LOAD_UNCONFIRMED,)
    assert look_ahead(current, None).action is Action.WITHHOLD
    assert look_ahead(current, _decide(2, True)).reasons == (UNDER_LOAD_UNCONFIRMED,)
    withheld = Decision("cam", 2, 2 / FPS, Action.WITHHOLD, ("lag:1.20s",))
    assert look_ahead(current, withheld).reasons == ("ahead:lag:1.20s",)
    # A frame that ran its faces is released on its own when the source ends, as before.
    assert look_ahead(_decide(1, False), None).action is Action.MASK


def test_a_skipped_frame_with_no_face_anywhere_passes() -> None:
    out = look_ahead(_decide(1, True, ()), _decide(2, False, ()))
    assert out.action is Action.PASS and out.reasons == (UNDER_LOAD,)


# --- end to end: the pipeline's own run, a live source the hub reads behind its camera -------------

class BehindSource:
    """A live source whose frames come `behind_s` behind the camera (its `backlog_s`), a face on
    each of them: the one part the test fakes is the camera, behind the source's own interface."""

    def __init__(self, frames: int, behind_s: float) -> None:
        self.info = SourceInfo("fake live camera", True, FPS, None)
        self.left = frames
        self.behind = behind_s

    def read(self):
        if self.left == 0:
            return None
        self.left -= 1
        time.sleep(1 / FPS)  # the camera's pace: a reader flooded faster than that backs up the sinks
        return IMG.copy()

    def backlog_s(self) -> float:
        return self.behind

    def close(self) -> None:
        pass


class Collect:
    name = "collect"
    plaintext = False

    def __init__(self) -> None:
        self.frames: list[RedactedFrame] = []

    def write(self, frame: RedactedFrame) -> None:
        self.frames.append(frame)

    def withheld(self, camera_id: str, index: int, t_s: float) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_pipeline_sheds_under_load_and_every_released_frame_has_its_face_masked() -> None:
    rig = Rig()
    sink = Collect()
    decisions: list[Decision] = []
    pipe = CameraPipeline(_policy(), [rig.analyzer], [sink], lambda: Mode.HOME, lambda e: None,
                          on_decision=lambda d, _out: decisions.append(d))
    sources: Iterator[BehindSource] = iter([BehindSource(30, 0.4)])
    done = threading.Event()

    def run() -> None:
        pipe.run(lambda: next(sources))
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert done.wait(60)
    released = [d for d in decisions if d.action is not Action.WITHHOLD]
    # Behind from the first frame: faces run on frames 0, 2, ..., 28; 1, 3, ..., 29 are skipped.
    assert rig.faces.calls == 15
    shed = [d.frame_index for d in released if UNDER_LOAD in d.reasons]
    assert len(shed) >= 12 and all(i % 2 == 1 for i in shed)
    # Every released frame masks the face. The last frame, skipped with no frame after it, is
    # withheld rather than released on the carried faces alone.
    assert all(any(r.name == "face" for r in d.regions) for d in released)
    assert [f.index for f in sink.frames] == [d.frame_index for d in released]
    assert len(released) >= 26
    assert decisions[-1].frame_index == 29 and decisions[-1].reasons == (UNDER_LOAD_UNCONFIRMED,)
    # The health report counts them, for the homeowner and the broker.
    assert pipe.stats.under_load == len(shed)
    health = HealthTracker(0.0, 0.0).observe([sample(pipe, t)], 1.0).cameras[0]
    assert health.under_load_frames == len(shed)
    assert camera_document(health)["under_load_frames"] == len(shed)


def test_a_single_frame_skipped_under_load_has_no_next_frame_and_is_withheld() -> None:
    rig = Rig()
    pipe = CameraPipeline(_policy(), [rig.analyzer], [Collect()], lambda: Mode.HOME, lambda e: None,
                          clock=rig.clock)
    first, _ = pipe.process(Frame("cam", 0, 0.0, rig.clock.monotonic() - 0.5, IMG.copy(), 0.5), live=True)
    rig.clock.advance(1 / FPS)
    second, out = pipe.process(Frame("cam", 1, 1 / FPS, rig.clock.monotonic() - 0.5, IMG.copy(), 0.5), live=True)
    assert first.action is Action.MASK
    assert second.reasons == (UNDER_LOAD_UNCONFIRMED,) and out is None
