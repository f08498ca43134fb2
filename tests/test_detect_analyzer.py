"""DetectionAnalyzer: cadence, carried masks, detection age, fail-closed faults; detection config and rules."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from detect_support import TOILET_PERSON, FakeDetector, det, model_cache, photo

from agent.analysis.build import build_analyzers
from agent.analysis.detection import DetectionAnalyzer
from agent.analysis.factory import build_detection_analyzer
from agent.clock import FakeClock
from agent.config import (
    DEFAULT_HARMLESS_LABELS,
    CameraDetectionConfig,
    DetectionConfig,
    detection_rules,
    effective_detection,
    load_config,
    parse_config_text,
    protections_off,
)
from agent.core.datatypes import Event, Frame
from agent.core.policy import camera_policy
from agent.core.ports import merge
from agent.detect.base import Detector
from agent.errors import AnalysisError, ModelError
from agent.vocab import Action, Style, ZoneAction

IMG = np.zeros((48, 64, 3), np.uint8)
FACE = det("face", 0.4, 0.1, 0.5, 0.3)
BED = det("bed", 0.0, 0.5, 0.6, 1.0)


class Rig:
    """An analyzer with scripted detectors, a fake clock and an event list."""

    def __init__(self, cfg: DetectionConfig | None = None, fps: float = 10.0, missing: set[str] | None = None) -> None:
        self.cfg = cfg or DetectionConfig()
        self.clock = FakeClock()
        self.events: list[Event] = []
        self.fps = fps
        self.missing = missing if missing is not None else set()
        self.faces = FakeDetector("yunet_s_dynamic", frozenset({"face"}), (FACE,), self.clock)
        self.objects = FakeDetector("yolox_nano", frozenset({"bed"}), (BED,), self.clock)
        self.loads: list[str] = []
        self.analyzer = build_detection_analyzer(self.cfg, "cam", self.clock, self.events.append, loader=self.load)
        self.i = 0

    def load(self, role: str, model: str) -> Detector:
        self.loads.append(role)
        if role in self.missing:
            raise ModelError(f"model {model!r} is not installed")
        return self.faces if role == "faces" else self.objects

    def step(self, image: np.ndarray = IMG, t_s: float | None = None):  # type: ignore[no-untyped-def]
        t = self.i / self.fps if t_s is None else t_s
        frame = Frame("cam", self.i, t, self.clock.monotonic(), image.copy())
        self.i += 1
        out = self.analyzer.analyze(frame)
        self.clock.advance(1 / self.fps)
        return out


def test_default_cadence_faces_every_frame_objects_every_fifth() -> None:
    rig = Rig(fps=30)
    outs = [rig.step() for _ in range(11)]
    assert rig.faces.calls == 11
    assert rig.objects.calls == 3  # frames 0, 5, 10
    assert all(not o.faults for o in outs)
    assert outs[0].detections_age_s == 0.0 and outs[5].detections_age_s == 0.0
    # Oldest result used: the object result, 4 frames old on frame 4.
    assert outs[4].detections_age_s == pytest.approx(4 / 30)
    assert {d.label for d in outs[3].detections} == {"face", "bed"}


def test_carried_boxes_grow_with_age() -> None:
    cfg = DetectionConfig(grow_rel_per_s=0.3, objects={"every_n_frames": 5})
    rig = Rig(cfg, fps=30)
    outs = [rig.step() for _ in range(4)]
    beds = [next(d for d in o.detections if d.label == "bed") for o in outs]
    assert beds[0].box == BED.box
    for k in (1, 2, 3):
        want = BED.box.grown_abs(0.3 * k / 30)
        got = beds[k].box
        assert (got.x0_rel, got.y0_rel, got.x1_rel, got.y1_rel) == pytest.approx(
            (want.x0_rel, want.y0_rel, want.x1_rel, want.y1_rel))
    assert beds[3].box.area_rel > beds[1].box.area_rel > beds[0].box.area_rel
    faces = [next(d for d in o.detections if d.label == "face") for o in outs]
    assert all(f.box == FACE.box for f in faces)  # faces ran on every frame


def test_low_frame_rate_forces_runs_before_results_get_old() -> None:
    # At 2 fps, every 5th frame would mean 2.5 s old masks; the analyzer runs when half of max age is reached.
    cfg = DetectionConfig(max_detection_age_s=1.0)
    rig = Rig(cfg, fps=2)
    outs = [rig.step() for _ in range(6)]
    assert rig.objects.calls == 6
    assert max(o.detections_age_s or 0 for o in outs) <= cfg.max_detection_age_s


def test_age_counts_the_clock_when_the_stream_time_stalls() -> None:
    rig = Rig(DetectionConfig(objects={"every_n_frames": 10}), fps=10)
    rig.step()
    rig.clock.advance(0.3)  # the hub stalls; stream time still says 0.1 s later
    out = rig.step()
    assert out.detections_age_s == pytest.approx(0.4)


def test_adaptive_cadence_follows_inference_time() -> None:
    cfg = DetectionConfig(objects={"adaptive": True, "budget_rel": 0.5, "max_every_n_frames": 30},
                          max_detection_age_s=10)
    rig = Rig(cfg, fps=10)
    rig.objects.takes_s = 0.2  # 0.2 s per run; budget 0.05 s per 0.1 s frame -> every 4th frame
    for _ in range(30):
        rig.step()
    assert 7 <= rig.objects.calls <= 9
    st = rig.analyzer.stats()["objects"]
    assert st["interval_frames"] == 4 and st["infer_ms"] == pytest.approx(200) and st["runs"] == rig.objects.calls


def test_missing_model_withholds_every_frame_and_recovers() -> None:
    cfg = DetectionConfig(model_retry_s=5)
    rig = Rig(cfg, missing={"objects"})
    assert [e.kind for e in rig.events] == ["model_missing"]
    assert rig.events[0].details["model"] == "yolox_nano"
    outs = [rig.step() for _ in range(10)]
    assert all(o.faults == ("model_missing:yolox_nano",) for o in outs)
    assert rig.loads.count("objects") == 1  # no retry before model_retry_s
    assert len(rig.events) == 1  # one event, not one per frame
    rig.missing.clear()
    rig.clock.advance(5)
    out = rig.step()
    assert out.faults == ()
    assert [e.kind for e in rig.events] == ["model_missing", "model_loaded"]
    assert {d.label for d in out.detections} == {"face", "bed"}


def test_refuse_start_raises_at_build() -> None:
    with pytest.raises(ModelError, match="refusing to start.*not installed"):
        Rig(DetectionConfig(on_model_missing="refuse_start"), missing={"faces"})


def test_default_loader_with_an_empty_cache_fails_closed(tmp_path: Path) -> None:
    events: list[Event] = []
    a = build_detection_analyzer(DetectionConfig(model_cache=str(tmp_path)), "cam", FakeClock(), events.append)
    out = a.analyze(Frame("cam", 0, 0.0, 0.0, IMG.copy()))
    assert out.faults == ("model_missing:yunet_s_dynamic", "model_missing:yolox_nano")
    assert out.detections == ()
    assert [e.kind for e in events] == ["model_missing", "model_missing"]
    assert "models install yunet_s_dynamic" in str(events[0].details["error"])


def test_relative_model_cache_is_relative_to_the_config(tmp_path: Path) -> None:
    from agent.analysis.factory import model_cache_path

    assert model_cache_path(DetectionConfig()) is None
    assert model_cache_path(DetectionConfig(model_cache="m"), tmp_path) == tmp_path / "m"
    assert model_cache_path(DetectionConfig(model_cache="/abs/m"), tmp_path) == Path("/abs/m")


def test_detector_error_is_a_fault_with_one_event_and_recovery() -> None:
    rig = Rig()
    rig.step()
    rig.faces.fail = AnalysisError("boom")
    outs = [rig.step() for _ in range(3)]
    assert all("detector_error:yunet_s_dynamic" in o.faults for o in outs)
    assert all(not any(d.label == "face" for d in o.detections) for o in outs)  # no stale faces reused
    assert [e.kind for e in rig.events] == ["detector_error"]
    assert "AnalysisError: boom" in str(rig.events[0].details["error"])
    rig.faces.fail = None
    out = rig.step()
    assert out.faults == () and [e.kind for e in rig.events] == ["detector_error", "detector_recovered"]


def test_broken_event_sink_does_not_stop_fail_closed(caplog: pytest.LogCaptureFixture) -> None:
    def sink(e: Event) -> None:
        raise RuntimeError("mqtt down")

    a = DetectionAnalyzer(DetectionConfig(), "cam", FakeClock(), sink,
                          loader=lambda role, model: (_ for _ in ()).throw(ModelError("gone")))
    out = a.analyze(Frame("cam", 0, 0.0, 0.0, IMG.copy()))
    assert out.faults == ("model_missing:yunet_s_dynamic", "model_missing:yolox_nano")
    assert "event sink failed" in caplog.text


def test_new_source_drops_carried_results() -> None:
    rig = Rig(DetectionConfig(objects={"every_n_frames": 100}, max_detection_age_s=30))
    rig.step()
    rig.step()
    assert rig.objects.calls == 1
    rig.step(t_s=0.0)  # stream time went backwards: a new file or a restarted camera
    assert rig.objects.calls == 2
    rig.step(image=np.zeros((20, 20, 3), np.uint8))  # resolution change
    assert rig.objects.calls == 3


def test_detection_off_reports_nothing_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        cfg = DetectionConfig(enabled=False)
    assert "all detection" in caplog.text
    rig = Rig(cfg)
    out = rig.step()
    assert out.detections == () and out.faults == () and out.detections_age_s is None
    assert rig.loads == []


def test_faces_off_runs_only_objects(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        cfg = DetectionConfig(faces={"enabled": False})
    assert "face masking" in caplog.text
    rig = Rig(cfg)
    rig.step()
    assert rig.loads == ["objects"] and rig.faces.calls == 0


# --- config and rules ------------------------------------------------------------------


def test_defaults_protect_a_camera_without_zones() -> None:
    cfg = parse_config_text("cameras:\n  - id: hall\n    source: hall.mp4\n")
    d = cfg.detection
    assert d.faces_active and d.objects_active and protections_off(d) == []
    assert (d.faces.model, d.objects.model) == ("yunet_s_dynamic", "yolox_nano")
    rules = {r["label"]: r for r in detection_rules(d)}
    assert set(rules) == {"face", "person", "bed", "toilet", "sink"}
    assert rules["face"] == {"label": "face", "action": Action.MASK, "min_score": 0.5, "margin_rel": 0.25,
                             "style": Style.SOLID}
    assert all(r["action"] == Action.MASK for r in rules.values())
    assert all(set(r) == {"label", "action", "min_score", "margin_rel", "style"} for r in rules.values())
    # The rules' labels, the harmless classes that explain foreground, and the private-room fixtures.
    assert d.object_labels() == frozenset({"person", "bed", "toilet", "sink", "bathtub", *DEFAULT_HARMLESS_LABELS})


def test_rules_follow_config() -> None:
    d = DetectionConfig(
        persons={"action": "withhold"},
        private_objects={"labels": ["bed", "Dining Table"], "action": "withhold", "margin_rel": 0.3},
        thresholds={"bed": 0.6},
    )
    rules = {r["label"]: r for r in detection_rules(d)}
    assert rules["person"]["action"] == Action.WITHHOLD
    assert rules["dining_table"]["action"] == Action.WITHHOLD and rules["dining_table"]["margin_rel"] == 0.3
    assert rules["bed"]["min_score"] == 0.6 and rules["person"]["min_score"] == 0.35  # other defaults kept
    assert "toilet" not in rules
    assert [r["label"] for r in detection_rules(DetectionConfig(objects={"enabled": False}))] == ["face"]
    assert detection_rules(DetectionConfig(enabled=False)) == []


def test_config_errors_name_the_key() -> None:
    from agent.errors import ConfigError

    base = "cameras:\n  - id: a\n    source: a.mp4\n"
    with pytest.raises(ConfigError, match=r"detection.faces.colour: unknown key 'colour' \(config.yaml:\d+\)"):
        parse_config_text(base + "detection:\n  faces:\n    colour: red\n")
    with pytest.raises(ConfigError, match="detection.thresholds: .*between 0 and 1"):
        parse_config_text(base + "detection:\n  thresholds: {face: 1.5}\n")
    with pytest.raises(ConfigError, match="detection.faces.input_size: .*multiples of 32"):
        parse_config_text(base + "detection:\n  faces: {input_size: [100, 100]}\n")
    with pytest.raises(ConfigError, match="own settings"):
        parse_config_text(base + "detection:\n  private_objects: {labels: [person]}\n")


def test_camera_override(caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_config_text(
        "cameras:\n  - id: bath\n    source: b.mp4\n    detection:\n      persons_action: withhold\n"
        "      private_labels: [toilet]\n      object_every_n_frames: 2\n"
    )
    cam = cfg.camera("bath").detection
    assert isinstance(cam, CameraDetectionConfig)
    eff = effective_detection(cfg.detection, cam)
    assert eff.persons.action == ZoneAction.WITHHOLD and eff.private_objects.labels == ["toilet"]
    assert eff.objects.every_n_frames == 2 and cfg.detection.objects.every_n_frames == 5
    assert effective_detection(cfg.detection, None) is cfg.detection
    with caplog.at_level(logging.WARNING):
        effective_detection(cfg.detection, CameraDetectionConfig(faces_enabled=False))
    assert "face masking" in caplog.text


# --- the real thing -------------------------------------------------------------------------


def test_real_models_through_the_factory(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = model_cache(tmp_path_factory)
    events: list[Event] = []
    clock = FakeClock()
    a = build_detection_analyzer(DetectionConfig(model_cache=str(cache)), "bath", clock, events.append)
    img = photo(TOILET_PERSON)
    outs = []
    for i in range(3):
        outs.append(a.analyze(Frame("bath", i, i / 10, clock.monotonic(), img.copy())))
        clock.advance(0.1)
    assert events == [] and all(o.faults == () for o in outs)
    assert {"face", "person", "toilet"} <= {d.label for d in outs[0].detections}
    assert outs[2].detections_age_s == pytest.approx(0.2)


def test_one_analyzer_per_role_gives_the_same_results_as_one_with_both() -> None:
    """The pipeline runs faces and objects on separate lanes; splitting them changes no result."""
    both = Rig(fps=15)
    split = Rig(fps=15)
    faces = build_detection_analyzer(split.cfg, "cam", split.clock, split.events.append, loader=split.load,
                                     roles=("faces",))
    objects = build_detection_analyzer(split.cfg, "cam", split.clock, split.events.append, loader=split.load,
                                       roles=("objects",))
    assert (faces.name, objects.name) == ("detection:faces", "detection:objects")
    for i in range(12):
        frame = Frame("cam", i, i / 15, split.clock.monotonic(), IMG.copy())
        merged = merge([faces.analyze(frame), objects.analyze(frame)])
        split.clock.advance(1 / 15)
        assert merged == both.step(), i
    with pytest.raises(AnalysisError, match="unknown detection roles"):
        build_detection_analyzer(split.cfg, "cam", split.clock, split.events.append, loader=split.load,
                                 roles=("plates",))


def test_runtime_builds_one_detection_lane_per_enabled_role(tmp_path: Path) -> None:
    text = f"data_dir: {tmp_path}\ncameras:\n  - id: a\n    source: x.mp4\n  - id: b\n    source: x.mp4\n" \
           "    detection: {faces_enabled: false}\n"
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(text)
    loaded = load_config(cfg_path)
    for cam_id, want in (("a", ["detection:faces", "detection:objects"]), ("b", ["detection:objects"])):
        cam = loaded.config.camera(cam_id)
        names = [a.name for a in build_analyzers(loaded, cam, camera_policy(loaded, cam), FakeClock(), lambda e: None)]
        assert [n for n in names if n.startswith("detection")] == want
