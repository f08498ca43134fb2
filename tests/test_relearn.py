"""A learned scene survives restarts; only the owner's `camera relearn` learns a new one.

The tamper reference lives in `DATA/state/scene/<camera>/` (0600, atomic, checksummed): a camera
turned while the agent was off is withheld from its first frame after the restart and stays
withheld, across further restarts, until `camera relearn` (local: a request file `run` picks up
between frames, or honours at its next start; the audit entry comes first). A corrupt stored
scene withholds and `doctor` names the fix. The same view at another resolution still matches.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from videokit import write_video

from agent.access.audit import LOG_FILE, audit_dir, read_entries
from agent.analysis.scenestore import (
    MAX_SCENE_BYTES,
    RelearnWatcher,
    SceneStore,
    read_request,
    scene_dir,
    scene_findings,
    stored_scene_state,
    write_request,
)
from agent.analysis.tamper import TamperAnalyzer
from agent.cli.doctor import check_scenes
from agent.cli.main import main
from agent.config import TamperConfig, load_config
from agent.core.datatypes import Event, Frame
from agent.core.pipeline import CameraPipeline
from agent.core.policy import camera_policy
from agent.crypto.keys import init_hub
from agent.errors import SceneStateError
from agent.lab.shared_data import shared_file
from agent.vocab import Action, Mode

W, H = 320, 240


_ROOMS = ("skimage_coffee.png", "skimage_chelsea.png", "skimage_astronaut.png", "skimage_camera.png")


def room(which: int, n: int) -> list[np.ndarray]:
    """A static view of a real scene with a small object moving through it."""
    img = cv2.imread(str(shared_file("fixtures", _ROOMS[which])), cv2.IMREAD_COLOR)
    assert img is not None
    bg = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(n):
        f = bg.copy()
        x = 10 + (i * 4) % (W - 40)
        cv2.rectangle(f, (x, H // 2), (x + 16, H // 2 + 30), (40, 200, 240), -1)
        out.append(f)
    return out


def frames(imgs: list[np.ndarray], start: int = 0, fps: float = 10.0) -> list[Frame]:
    return [Frame("cam", i, i / fps, 0.0, img) for i, img in enumerate(imgs, start)]


def faults(a: TamperAnalyzer, imgs: list[np.ndarray]) -> list[tuple[str, ...]]:
    return [a.analyze(f).faults for f in frames(imgs)]


def test_the_store_is_private_atomic_checksummed_and_bounded(tmp_path: Path) -> None:
    store = SceneStore(tmp_path, "cam")
    assert store.load("tamper", (120, 160), "float32") is None  # first start: nothing stored
    ref = np.random.default_rng(1).random((120, 160)).astype(np.float32)
    store.save("tamper", ref)
    path = scene_dir(tmp_path, "cam") / "tamper.scene"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not list(path.parent.glob("*.tmp"))
    loaded = store.load("tamper", (120, 160), "float32")
    assert loaded is not None and np.array_equal(loaded, ref)
    with pytest.raises(SceneStateError, match="not float32"):
        store.load("tamper", (60, 80), "float32")
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(SceneStateError, match="checksum.*camera relearn cam"):
        store.load("tamper", (120, 160), "float32")
    path.write_bytes(b"x" * (MAX_SCENE_BYTES + 1))
    with pytest.raises(SceneStateError, match="larger than"):
        store.load("tamper", (120, 160), "float32")


def test_a_restart_on_a_turned_camera_stays_withheld_until_relearned(tmp_path: Path) -> None:
    a_room, b_room = room(0, 40), room(1, 40)
    first = TamperAnalyzer(TamperConfig(), SceneStore(tmp_path, "cam"))
    assert not any(faults(first, a_room))  # first install: learns the view and stores it
    assert SceneStore(tmp_path, "cam").load("tamper", (120, 160), "float32") is not None

    # Restart, camera turned meanwhile: withheld from the very first frame, then latched as moved.
    second = TamperAnalyzer(TamperConfig(), SceneStore(tmp_path, "cam"))
    got = faults(second, b_room)
    assert all(f for f in got), "a turned camera must never be released after a restart"
    assert got[0] == ("tamper:unverified",)
    assert all("tamper:moved" in f for f in got[11:])
    assert SceneStore(tmp_path, "cam").moved and stored_scene_state(tmp_path, "cam") == "moved"

    # Another restart, even with the old view back: still moved until the owner says so.
    third = TamperAnalyzer(TamperConfig(), SceneStore(tmp_path, "cam"))
    assert all("tamper:moved" in f for f in faults(third, a_room))
    third.relearn()
    assert not any(faults(third, b_room))
    assert not SceneStore(tmp_path, "cam").moved

    # The relearned view is the one kept: a fourth start on it releases at once.
    fourth = TamperAnalyzer(TamperConfig(), SceneStore(tmp_path, "cam"))
    assert not any(faults(fourth, b_room))


def test_a_moved_camera_whose_stored_view_is_lost_stays_moved_until_relearned(tmp_path: Path) -> None:
    """The move is latched on disk but the reference is gone (a save that failed, a deleted file): the
    camera learns a new reference and still withholds as moved, across restarts, until relearn."""
    store = SceneStore(tmp_path, "cam")
    store.set_moved(True, {"persistence": 0.9})
    again = TamperAnalyzer(TamperConfig(), SceneStore(tmp_path, "cam"))
    assert all("tamper:moved" in f for f in faults(again, room(0, 40)))
    assert SceneStore(tmp_path, "cam").moved
    later = TamperAnalyzer(TamperConfig(), SceneStore(tmp_path, "cam"))
    assert all("tamper:moved" in f for f in faults(later, room(0, 40)))
    later.relearn()
    assert not any(faults(later, room(0, 40))) and not SceneStore(tmp_path, "cam").moved


def test_a_resolution_change_with_the_same_view_does_not_need_relearn(tmp_path: Path) -> None:
    view = room(2, 30)
    learn = TamperAnalyzer(TamperConfig(), SceneStore(tmp_path, "cam"))
    assert not any(faults(learn, [cv2.resize(f, (640, 480)) for f in view]))
    again = TamperAnalyzer(TamperConfig(), SceneStore(tmp_path, "cam"))
    assert not any(faults(again, view)), "the same view at another resolution must still match"
    other = TamperAnalyzer(TamperConfig(), SceneStore(tmp_path, "cam"))
    assert all(faults(other, room(3, 30))), "another view at another resolution must not"


def test_a_corrupt_stored_scene_withholds_and_doctor_names_the_fix(tmp_path: Path) -> None:
    store = SceneStore(tmp_path, "cam")
    faults(TamperAnalyzer(TamperConfig(), store), room(0, 6))  # learns and stores the view
    path = store.dir / "tamper.scene"
    path.write_bytes(path.read_bytes()[:-10])
    a = TamperAnalyzer(TamperConfig(), SceneStore(tmp_path, "cam"))
    assert all("tamper:scene_unreadable" in f for f in faults(a, room(0, 10)))
    [problem] = _lines(tmp_path)
    assert "unreadable or corrupt" in problem and "privacy-agent camera relearn cam" in problem
    assert "it is corrupt (checksum)" in problem, "doctor names the cause, not just the verdict"
    a.relearn()
    assert not any(faults(a, room(0, 10)))
    assert _lines(tmp_path) == []


class _Collect:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, e: Event) -> None:
        self.events.append(e)


def _pipeline(tmp_path: Path, store: SceneStore, events: _Collect) -> CameraPipeline:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("data_dir: data\ndetection: {enabled: false}\ncameras:\n  - id: cam\n    source: v.mp4\n")
    loaded = load_config(cfg)
    policy = camera_policy(loaded, loaded.config.camera("cam"))
    return CameraPipeline(policy, [TamperAnalyzer(TamperConfig(), store)], [], lambda: Mode.HOME, events)


def test_relearn_while_running_is_honoured_between_frames(tmp_path: Path) -> None:
    store = SceneStore(tmp_path / "data", "cam")
    events = _Collect()
    pipe = _pipeline(tmp_path, store, events)
    for f in frames(room(0, 10)):
        assert pipe.process(f, False)[0].action is not Action.WITHHOLD
    moved = [pipe.process(f, False)[0] for f in frames(room(1, 30), 10)]
    assert all(d.action is Action.WITHHOLD for d in moved[11:])  # after moved_hold_s (1 s)
    assert "tamper:moved" in moved[-1].reasons and pipe.scene_state == "moved"

    # `camera relearn` while `run` runs: a request file the watcher hands to the pipeline, after
    # the audit entry (record, then act).
    assert main(["camera", "relearn", "cam", "--config", str(tmp_path / "config.yaml")]) == 0
    req = read_request(tmp_path / "data", "cam")
    assert req is not None and req.by == "local" and not req.recorded
    assert stat.S_IMODE((scene_dir(tmp_path / "data", "cam") / "relearn").stat().st_mode) == 0o600
    recorded: list[tuple[str, dict[str, Any]]] = []
    watcher = RelearnWatcher(tmp_path / "data", {"cam": pipe}, lambda k, f: recorded.append((k, dict(f))))
    assert [r.request_id for r in watcher.poll_once()] == [req.request_id]
    assert recorded == [("camera_relearned", {"camera": "cam", "by": "local", "via": "local",
                                              "request_id": req.request_id})]
    assert read_request(tmp_path / "data", "cam") is None
    after = [pipe.process(f, False)[0] for f in frames(room(1, 20), 40)]
    assert all(d.action is not Action.WITHHOLD for d in after), [d.reasons for d in after if d.reasons]
    assert pipe.scene_state is None
    assert [e for e in events.events if e.kind == "scene_relearn"]


def test_a_request_that_cannot_be_recorded_is_not_acted_on(tmp_path: Path) -> None:
    class Pipe:
        camera_id = "cam"
        asked = 0

        def request_relearn(self) -> None:
            self.asked += 1

    def broken(kind: str, fields: object) -> None:
        raise OSError("disk full")

    pipe = Pipe()
    problems: list[str] = []
    write_request(tmp_path, "cam", "local", 1, recorded=False)
    watcher = RelearnWatcher(tmp_path, {"cam": pipe}, broken, lambda cam, msg: problems.append(msg))
    assert watcher.poll_once() == [] and pipe.asked == 0
    assert read_request(tmp_path, "cam") is not None and "not honoured" in problems[0]
    # Recorded already (an owner's signed MQTT request): acted on without a second entry.
    write_request(tmp_path, "cam", "0123456789abcdef", 2, recorded=True)
    assert len(watcher.poll_once()) == 1 and pipe.asked == 1


def test_doctor_tells_a_corrupt_scene_from_a_moved_camera_whatever_the_path_says(tmp_path: Path) -> None:

    data = tmp_path / "removed-moved"  # a path that says "moved" must not make a fault a warning
    store = SceneStore(data, "cam")
    store.save("tamper", np.zeros((120, 160), np.float32))
    path = store.dir / "tamper.scene"
    path.write_bytes(path.read_bytes()[:-10])
    [corrupt] = scene_findings(data, ["cam"])
    assert not corrupt.moved and "unreadable or corrupt" in str(corrupt)
    path.unlink()
    store.set_moved(True, {})
    [moved] = scene_findings(data, ["cam"])
    assert moved.moved and str(moved).startswith("camera cam: moved")


@pytest.mark.parametrize(("damage", "cause"), [
    (lambda p: p.write_bytes(b"not a scene at all"), "is not a scene file"),
    (lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1])), "is corrupt (checksum)"),
    (lambda p: (p.unlink(), p.mkdir()), "cannot be read"),
])
def test_doctor_names_why_a_stored_scene_is_refused(tmp_path: Path, damage: Callable[[Path], object],
                                                    cause: str) -> None:
    store = SceneStore(tmp_path, "cam")
    store.save("tamper", np.zeros((120, 160), np.float32))
    path = store.dir / "tamper.scene"
    damage(path)
    [finding] = scene_findings(tmp_path, ["cam"])
    assert f"stored scene {path} is unreadable or corrupt: it {cause}" in str(finding)
    with pytest.raises(SceneStateError, match="camera relearn cam"):
        SceneStore(tmp_path, "cam").load("tamper", (120, 160), "float32")


def test_a_malformed_request_is_named_not_acted_on(tmp_path: Path) -> None:
    d = scene_dir(tmp_path, "cam")
    d.mkdir(parents=True)
    (d / "relearn").write_text('{"id": [[[[]]]]}')
    with pytest.raises(SceneStateError, match="malformed"):
        read_request(tmp_path, "cam")
    assert any("malformed" in p for p in _lines(tmp_path))


CONFIG = """\
data_dir: data
detection: {enabled: false}
cameras:
  - id: cam
    source: v.mp4
"""


def _summary(out: str) -> tuple[int, int]:
    line = next(x for x in out.splitlines() if x.startswith("cam: "))
    frames_in = int(line.split("cam: ")[1].split(" frames in")[0])
    withheld = int(line.split(" masked, ")[1].split(" withheld")[0])
    return frames_in, withheld


def test_run_twice_on_a_turned_camera_then_relearn_offline(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A real `run` on one room, then on another with the same data dir: the second is withheld
    whole; `camera relearn` with no `run` running is honoured (and audited) by the next start."""
    monkeypatch.chdir(tmp_path)
    init_hub(tmp_path / "data")  # the hub's audit log records the relearn
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG)
    write_video(tmp_path / "v.mp4", room(0, 30))
    assert main(["run", "--config", str(cfg)]) == 0
    n, withheld = _summary(capsys.readouterr().out)
    assert n == 30 and withheld == 0

    write_video(tmp_path / "v.mp4", room(1, 30))
    main(["run", "--config", str(cfg)])
    out = capsys.readouterr().out
    n, withheld = _summary(out)
    assert n == 30 and withheld == 30, out
    assert "tamper:moved" in out

    assert check_scenes(load_config(cfg))[0].status == "warn"
    assert main(["camera", "relearn", "cam", "--config", str(cfg)]) == 0
    assert "next start relearns" in capsys.readouterr().out
    assert main(["run", "--config", str(cfg)]) == 0
    n, withheld = _summary(capsys.readouterr().out)
    assert n == 30 and withheld == 0
    entries, problems = read_entries(audit_dir(tmp_path / "data") / LOG_FILE)
    assert not problems
    [e] = [e for e in entries if e.kind == "camera_relearned"]
    assert e.fields["camera"] == "cam" and e.fields["by"] == "local"
    assert check_scenes(load_config(cfg))[0].status == "ok"


def test_camera_relearn_refuses_an_unknown_camera(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG)
    assert main(["camera", "relearn", "nope", "--config", str(cfg)]) != 0
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "data" / "state").exists()


def test_health_and_preview_say_moved_and_the_room() -> None:
    from agent.core.health import CameraSample, HealthTracker
    from agent.media.preview import camera_notes
    from agent.mqtt.health import camera_document

    h = HealthTracker(0.0, 1000.0).observe([CameraSample("cam", True, 10, 10, {"tamper:moved": 10},
                                                         scene="moved", private_room="bathroom")], 1.0)
    doc = camera_document(h.cameras[0])
    assert doc["scene"] == "moved" and "camera relearn cam" in doc["scene_note"]
    assert doc["private_room"] == "bathroom"
    assert h.cameras[0].healthy  # withheld on purpose: no watchdog restart
    assert "waiting for relearn" in h.summary()
    assert camera_notes("cam", scene="moved", private_room="bathroom") == [
        "private room: bathroom (people withhold the frame)", "moved: run privacy-agent camera relearn cam"]
    assert json.dumps(doc)


def _lines(data_dir: Path) -> list[str]:
    """`doctor`'s stored-scene findings for camera `cam`, as text."""
    return [str(p) for p in scene_findings(data_dir, ["cam"])]
