"""The hub's health snapshot, the sd_notify client and the watchdog fed from the pipelines.

A real AF_UNIX datagram socket stands in for systemd's notify socket; the clock is injected, so a
stall of minutes is a clock step, never a sleep.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from agent.clock import FakeClock
from agent.core.datatypes import Analysis, Event, Frame
from agent.core.events import EventLog
from agent.core.health import RECONNECT_GRACE_S, CameraSample, HealthTracker
from agent.core.monitor import ServiceMonitor
from agent.core.pipeline import CameraPipeline, PipelineStats
from agent.core.policy import CameraPolicy
from agent.core.ports import SourceInfo
from agent.core.sdnotify import Notifier
from agent.vocab import Mode

WATCHDOG_S = 120.0  # the unit's WatchdogSec: stall bound 60 s, a ping every 30 s


# -- the snapshot ---------------------------------------------------------------------------

def _s(frames: int, *, alive: bool = True, reasons: dict[str, int] | None = None, lag: float | None = 0.1,
       queued: int = 0, cam: str = "porch") -> CameraSample:
    r = reasons or {}
    return CameraSample(cam, alive, frames, sum(r.values()), r, lag, queued)


def test_snapshot_fps_reasons_lag_queue_and_hub_fields() -> None:
    t = HealthTracker(100.0, 1_790_000_000.0, stall_s=60.0)
    first = t.observe([_s(0)], 100.0)
    assert first.cameras[0].fps is None and first.healthy and first.uptime_s == 0
    t.observe([_s(50)], 105.0)
    h = t.observe([_s(100, reasons={"zone:door": 7, "mode:privacy": 30}, lag=0.25, queued=3)], 110.0,
                  queued_clips=4, disk_free_bytes=12_000_000_000, encoder="h264_v4l2m2m")
    c = h.cameras[0]
    assert c.fps == 10.0  # 100 frames over the 10 s window
    assert c.withheld_by_reason == (("mode:privacy", 30), ("zone:door", 7))  # largest first
    assert c.withheld == 37 and c.analysis_lag_s == 0.25 and c.queued_frames == 3
    assert h.queued_clips == 4 and h.disk_free_bytes == 12_000_000_000 and h.encoder == "h264_v4l2m2m"
    assert h.wall_s == 1_790_000_010.0 and h.uptime_s == 10.0
    assert h.healthy and h.summary() == "porch 10.0 fps, withholding: mode:privacy"
    # The window slides: only the last 10 s count.
    t.observe([_s(100)], 115.0)
    assert t.observe([_s(120)], 120.0).cameras[0].fps == 2.0


def test_withheld_frames_are_progress_but_a_silent_camera_is_stalled() -> None:
    t = HealthTracker(0.0, 0.0, stall_s=60.0)
    t.observe([_s(0)], 0.0)
    # Withheld is the pipeline failing closed: healthy.
    assert t.observe([_s(40, reasons={"tamper:covered": 40})], 30.0).healthy
    assert t.observe([_s(40)], 90.0).healthy  # 60 s since the last decision: still within the bound
    h = t.observe([_s(40)], 91.0)
    assert not h.healthy and h.problems == ("porch: no decision for 61 s",)
    assert "STALLED" in h.summary()
    assert t.observe([_s(41)], 92.0).healthy  # one decision: it recovered


def test_a_hung_analyzer_is_a_stall_even_though_frames_are_withheld() -> None:
    t = HealthTracker(0.0, 0.0, stall_s=60.0)
    t.observe([_s(10)], 0.0)
    for now in (20.0, 40.0, 60.0):
        h = t.observe([_s(10 + int(now), reasons={"analysis_busy": int(now) - 1, "analysis_timeout": 1})], now)
    assert h.healthy
    h = t.observe([_s(80, reasons={"analysis_busy": 69, "analysis_timeout": 1})], 61.0)
    assert not h.healthy and h.cameras[0].problem == "analysis has not returned for 61 s"


def test_a_dead_thread_is_unhealthy_at_once() -> None:
    t = HealthTracker(0.0, 0.0)
    h = t.observe([_s(5), _s(5, alive=False, cam="bedroom")], 1.0)
    assert not h.healthy and h.problems == ("bedroom: its pipeline thread has stopped",)


def test_a_camera_being_reconnected_is_not_stalled() -> None:
    t = HealthTracker(0.0, 0.0, stall_s=60.0)
    t.observe([_s(10)], 0.0)
    t.source_retry("porch", 50.0)  # source_lost: the reader backs off and tries again
    assert t.observe([_s(10)], 50.0 + RECONNECT_GRACE_S + 60.0).healthy
    t.source_retry("porch", 150.0)  # the next attempt failed too
    assert t.observe([_s(10)], 200.0).healthy
    assert not t.observe([_s(10)], 150.0 + RECONNECT_GRACE_S + 61.0).healthy  # the reader went quiet


# -- sd_notify ------------------------------------------------------------------------------

@dataclass
class FakeSystemd:
    """systemd's side of the notify socket: a bound datagram socket."""

    sock: socket.socket
    env: dict[str, str]
    got: list[str] = field(default_factory=list)

    def read(self) -> list[str]:
        while True:
            try:
                self.got.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.got

    def keys(self) -> list[str]:
        return [line for msg in self.read() for line in msg.splitlines()]


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.setblocking(False)
    yield FakeSystemd(s, {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6)),
                          "WATCHDOG_PID": str(os.getpid())})
    s.close()


def test_notifier_sends_datagrams_and_abstract_sockets_work() -> None:
    name = f"epa-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.enabled and n.watchdog_s is None
        assert n.ready("two cameras\nrunning")
        assert s.recv(4096) == b"READY=1\nSTATUS=two cameras running"  # a newline cannot start a key
        n.close()
    finally:
        s.close()


def test_notifier_without_socket_is_a_no_op_and_honours_watchdog_pid() -> None:
    n = Notifier({})
    assert not n.enabled and not n.watchdog() and not n.ready("x") and not n.stopping()
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "60000000"}).watchdog_s == 60.0
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "junk"}).watchdog_s is None


def test_notifier_never_raises_when_systemd_is_gone(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert not n.watchdog() and not n.watchdog()  # logged once, never raised


# -- the monitor ----------------------------------------------------------------------------

class FakePipe:
    def __init__(self, cam: str) -> None:
        self.camera_id = cam
        self.stats = PipelineStats()
        self.analysis_lag_s: float | None = None
        self.queued_frames = 0
        self.scene_state: str | None = None
        self.private_room: str | None = None


class FakeThread:
    def __init__(self) -> None:
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive


def _watchdogs(sd: FakeSystemd) -> int:
    return sd.keys().count("WATCHDOG=1")


def test_healthy_pipelines_feed_the_watchdog_and_a_stall_stops_it(systemd: FakeSystemd) -> None:
    clock = FakeClock()
    porch, bedroom = FakePipe("porch"), FakePipe("bedroom")
    reports: list[object] = []
    m = ServiceMonitor([(porch, FakeThread()), (bedroom, FakeThread())], clock, notifier=Notifier(systemd.env),
                       publish=reports.append, disk_free=lambda: 5_000_000, health_interval_s=30)
    assert m.ping_every_s == 30.0 and m.tracker.stall_s == 60.0
    m.start()
    try:
        keys = systemd.keys()
        assert "READY=1" in keys and keys.count("WATCHDOG=1") == 1
        assert any(k.startswith("STATUS=porch starting; bedroom starting") for k in keys)
        for _ in range(4):  # two minutes of healthy cameras: one ping every 30 s
            clock.advance(30.0)
            porch.stats.frames_in += 300
            bedroom.stats.frames_in += 300
            bedroom.stats.withheld += 300  # withheld all along: still healthy
            m.tick()
        assert _watchdogs(systemd) == 5
        # The porch camera's read hangs: its counters stop. No ping once the bound has passed.
        for _ in range(4):
            clock.advance(30.0)
            bedroom.stats.frames_in += 300
            m.tick()
        assert _watchdogs(systemd) == 7  # at +30 s and +60 s (the bound itself), none after
        assert any("porch STALLED (no decision for" in k for k in systemd.keys())
        # It recovers: pings again.
        clock.advance(30.0)
        porch.stats.frames_in += 1
        bedroom.stats.frames_in += 300
        m.tick()
        assert _watchdogs(systemd) == 8
    finally:
        m.stop()
    assert "STOPPING=1" in systemd.keys()
    assert len(reports) >= 5  # at start and every 30 s


def test_a_dead_camera_thread_stops_the_pings(systemd: FakeSystemd) -> None:
    clock = FakeClock()
    pipe, thread = FakePipe("porch"), FakeThread()
    m = ServiceMonitor([(pipe, thread)], clock, notifier=Notifier(systemd.env))
    m.tick()
    assert _watchdogs(systemd) == 1
    thread.alive = False
    clock.advance(30.0)
    pipe.stats.frames_in += 10
    m.tick()
    assert _watchdogs(systemd) == 1


def test_a_file_camera_that_ended_is_done_not_stalled(systemd: FakeSystemd) -> None:
    clock = FakeClock()
    live, file_cam = FakePipe("porch"), FakePipe("replay")
    done = FakeThread()
    m = ServiceMonitor([(live, FakeThread()), (file_cam, done)], clock, notifier=Notifier(systemd.env),
                       file_cameras=["replay"])
    m.tick()
    done.alive = False  # its file ended
    for _ in range(3):
        clock.advance(30.0)
        live.stats.frames_in += 300
        h = m.tick()
    assert h.healthy and _watchdogs(systemd) == 4


def test_source_retry_events_keep_a_reconnecting_camera_alive(systemd: FakeSystemd) -> None:
    clock = FakeClock()
    pipe = FakePipe("porch")
    events = EventLog()
    m = ServiceMonitor([(pipe, FakeThread())], clock, notifier=Notifier(systemd.env))
    events.subscribe(m.on_event)
    m.tick()
    for _ in range(6):  # three minutes offline, one failed reopen a minute
        clock.advance(30.0)
        if _ % 2:
            events(Event("source_error", "porch", "cannot open rtsp://cam", clock.monotonic()))
        m.tick()
    assert _watchdogs(systemd) == 7


def test_without_systemd_the_monitor_still_reports_health() -> None:
    reports: list[object] = []
    m = ServiceMonitor([(FakePipe("porch"), FakeThread())], FakeClock(), notifier=Notifier({}),
                       publish=reports.append)
    assert m.ping_every_s is None and m.tracker.stall_s == 60.0
    m.tick()
    assert m.pings == 0 and len(reports) == 1


# -- a real pipeline whose camera read hangs ----------------------------------------------

class HangingSource:
    """A live camera that gives `n` frames, then blocks in `read` until released."""

    def __init__(self, n: int, clock: FakeClock) -> None:
        self.info = SourceInfo("hanging", True, 10.0, None)
        self._n, self._i, self._clock = n, 0, clock
        self.release = threading.Event()

    def read(self) -> np.ndarray | None:
        if self._i >= self._n:
            self.release.wait(10)
            return None
        self._i += 1
        return np.full((24, 32, 3), 77, np.uint8)

    def close(self) -> None:
        pass


class OkAnalyzer:
    name = "ok"

    def analyze(self, frame: Frame) -> Analysis:
        return Analysis()


def test_a_real_pipeline_stuck_in_a_read_stops_the_pings(systemd: FakeSystemd) -> None:
    clock = FakeClock()
    decided = threading.Event()
    # Six frames: the sixth is held for the next frame's decision (look-ahead), which never comes.
    src = HangingSource(6, clock)

    def on_decision(_d: object, _i: object) -> None:
        if p.stats.frames_in == 5:
            decided.set()

    p = CameraPipeline(CameraPolicy("porch", ()), [OkAnalyzer()], [], lambda: Mode.HOME, EventLog(), clock=clock,
                       max_lag_s=1e9, on_decision=on_decision)
    t = threading.Thread(target=p.run, args=(lambda: src,), daemon=True)
    m = ServiceMonitor([(p, t)], clock, notifier=Notifier(systemd.env))
    t.start()
    try:
        m.start()
        assert decided.wait(10), "the pipeline never decided its frames"
        clock.advance(30.0)
        h = m.tick()
        assert h.healthy and h.cameras[0].frames_in == 5 and h.cameras[0].analysis_lag_s is not None
        assert _watchdogs(systemd) == 2
        clock.advance(61.0)  # the read still hangs
        h = m.tick()
        # 61 s since the tick that saw the five decisions: at +30, or at 0 when the monitor's own
        # first tick came after them (its thread races the pipeline's).
        assert not h.healthy and h.cameras[0].problem in ("no decision for 61 s", "no decision for 91 s")
        clock.advance(30.0)
        m.tick()
        assert _watchdogs(systemd) == 2
    finally:
        m.stop()
        p.stop()
        src.release.set()
        t.join(10)
    assert "STOPPING=1" in systemd.keys()
