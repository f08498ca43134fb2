"""Pipeline fails closed: analysis/policy/redaction failures, hangs, lag and sink faults withhold."""

from __future__ import annotations

import gc
import sys
import threading
import time
import weakref
from collections.abc import Callable

import numpy as np
import pytest

from agent.clock import FakeClock
from agent.core import pipeline as pl
from agent.core.datatypes import Analysis, Frame, ZoneActivity
from agent.core.events import EventLog
from agent.core.pipeline import CameraPipeline
from agent.core.policy import CameraPolicy, ZonePolicy
from agent.core.ports import SourceInfo
from agent.core.redact import RedactedFrame
from agent.errors import SinkError, SourceError
from agent.geometry import validate_polygon
from agent.vocab import Action, Mode, Style, ZoneAction

ZONE = ZonePolicy("left", validate_polygon([[0, 0], [0.5, 0], [0.5, 1], [0, 1]]), ZoneAction.MASK, Style.SOLID, 1.0)


class ListSource:
    def __init__(self, n: int, live: bool = False, on_read: Callable[[int], None] | None = None,
                 fail_after: int | None = None) -> None:
        self.info = SourceInfo("list", live, 10.0, n)
        self._n = n
        self._i = 0
        self._on_read = on_read
        self._fail_after = fail_after

    def read(self) -> np.ndarray | None:
        if self._fail_after is not None and self._i >= self._fail_after:
            raise SourceError("stream stopped")
        if self._i >= self._n:
            return None
        if self._on_read:
            self._on_read(self._i)
        self._i += 1
        img = np.full((24, 32, 3), 77, np.uint8)
        img[:, :, 0] = np.arange(32, dtype=np.uint8)[None, :] * 7  # texture so nothing looks "covered"
        return img

    def close(self) -> None:
        pass


class RecordingSink:
    plaintext = True

    def __init__(self, fail: bool = False) -> None:
        self.name = "rec"
        self.frames: list[RedactedFrame] = []
        self.withheld_count = 0
        self.fail = fail
        self.closed = False

    def write(self, frame: RedactedFrame) -> None:
        assert isinstance(frame, RedactedFrame)
        if self.fail:
            raise SinkError("disk full")
        self.frames.append(frame)

    def withheld(self, camera_id: str, index: int, t_s: float) -> None:
        self.withheld_count += 1

    def close(self) -> None:
        self.closed = True


class OkAnalyzer:
    name = "ok"

    def analyze(self, frame: Frame) -> Analysis:
        return Analysis()


class BoomAnalyzer:
    """Raises on the frames in `fail`."""

    name = "boom"

    def __init__(self, fail: tuple[int, ...]) -> None:
        self.fail = fail

    def analyze(self, frame: Frame) -> Analysis:
        if frame.index in self.fail:
            raise RuntimeError("model exploded")
        return Analysis()


def make(analyzers: list, sinks: list, clock: FakeClock | None = None, timeout_s: float = 5.0,
         policy: CameraPolicy | None = None) -> tuple[CameraPipeline, EventLog, list]:
    events = EventLog()
    decisions: list = []
    p = CameraPipeline(
        policy or CameraPolicy("cam", (ZONE,)), analyzers, sinks, lambda: Mode.HOME, events,
        clock=clock or FakeClock(), analysis_timeout_s=timeout_s,
        on_decision=lambda d, i: decisions.append((d, i)),
    )
    return p, events, decisions


def test_happy_path_masks_every_frame_and_closes_sinks() -> None:
    sink = RecordingSink()
    p, _, decisions = make([OkAnalyzer()], [sink])
    stats = p.run(lambda: ListSource(5))
    assert stats.frames_in == 5 and stats.masked == 5 and len(sink.frames) == 5 and sink.closed
    assert [i for _, i in decisions] == [0, 1, 2, 3, 4]
    assert all((f.image[:, :16] == 0).all() for f in sink.frames)


def test_analysis_exception_withholds_with_event() -> None:
    sink = RecordingSink()
    p, events, decisions = make([BoomAnalyzer(fail=(3,))], [sink])
    stats = p.run(lambda: ListSource(6))
    # Frame 3's analysis failed; frame 2 waited for its judgement and is withheld with it.
    assert stats.withheld == 2 and [f.index for f in sink.frames] == [0, 1, 4, 5]
    assert decisions[3][0].reasons == ("analysis_error:RuntimeError",) and decisions[3][1] is None
    assert decisions[2][0].reasons == ("ahead:analysis_error:RuntimeError",)
    assert "analysis_fault" in events.kinds()


def _until_lanes_recover(p: CameraPipeline) -> Callable[[int], None]:
    """A source hook for frame 20: wait until no lane waits on a hung call any more. The frames come
    as fast as they are read, and on a loaded machine all of them could be read before the
    released call's thread runs again, which would say nothing about recovery."""
    def hook(i: int) -> None:
        if i != 20:
            return
        deadline = time.monotonic() + 10
        while any(lane.stuck is not None and not lane.stuck.done() for lane in p._runner._lanes):
            assert time.monotonic() < deadline, "the released call never returned"
            time.sleep(0.005)
    return hook


def test_hung_analyzer_times_out_then_recovers() -> None:
    release = threading.Event()

    class Hang:
        name = "hang"

        def analyze(self, frame: Frame) -> Analysis:
            if frame.index == 0:
                release.wait(10)
            return Analysis()

    sink = RecordingSink()
    events = EventLog()
    decisions: list = []

    def on_decision(d: object, i: object) -> None:
        decisions.append((d, i))
        if len(decisions) == 4:
            release.set()  # the analyzer comes back after three more frames

    p = CameraPipeline(CameraPolicy("cam", (ZONE,)), [Hang()], [sink], lambda: Mode.HOME, events,
                       clock=FakeClock(), analysis_timeout_s=0.05, on_decision=on_decision)
    p.run(lambda: ListSource(40, on_read=_until_lanes_recover(p)))
    reasons = [d.reasons for d, _ in decisions]
    assert reasons[0] == ("analysis_timeout",)
    assert ("analysis_busy",) in reasons[1:4]
    assert decisions[-1][0].action is Action.MASK, "analysis must recover once the analyzer returns"
    assert all(f.index != 0 for f in sink.frames)
    assert "analysis_fault" in events.kinds()


def test_policy_exception_withholds(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*a: object) -> None:
        raise ValueError("bad policy")

    monkeypatch.setattr(pl, "decide", broken)
    sink = RecordingSink()
    p, events, _ = make([OkAnalyzer()], [sink])
    stats = p.run(lambda: ListSource(3))
    assert stats.withheld == 3 and not sink.frames and "policy_fault" in events.kinds()


def test_redaction_exception_withholds(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*a: object) -> None:
        raise MemoryError("no memory")

    monkeypatch.setattr(pl.redact, "apply", broken)
    sink = RecordingSink()
    p, events, _ = make([OkAnalyzer()], [sink])
    assert p.run(lambda: ListSource(2)).withheld == 2 and not sink.frames and "redact_fault" in events.kinds()


def test_live_lag_withholds() -> None:
    clock = FakeClock()
    p, _, _ = make([OkAnalyzer()], [], clock=clock)
    old = Frame("cam", 0, 0.0, clock.monotonic(), np.zeros((4, 4, 3), np.uint8))
    clock.advance(5.0)
    d, out = p.process(old, live=True)
    assert d.action is Action.WITHHOLD and d.reasons[0].startswith("lag:") and out is None
    d, out = p.process(old, live=False)  # replays are not real time
    assert d.action is Action.MASK and out is not None


def test_failing_sink_is_reported_and_skipped_without_losing_other_sinks() -> None:
    bad, good = RecordingSink(fail=True), RecordingSink()
    p, events, _ = make([OkAnalyzer()], [bad, good])
    stats = p.run(lambda: ListSource(4))
    assert stats.sink_errors == 1 and len(good.frames) == 4 and not bad.frames
    assert events.kinds().count("sink_error") == 1


def test_failed_sink_is_retried_with_backoff_and_recovers() -> None:
    clock = FakeClock()

    class Flaky(RecordingSink):
        calls = 0

        def write(self, frame: RedactedFrame) -> None:
            self.calls += 1
            if self.calls <= 2:
                raise SinkError("disk full")  # the first two attempts fail, then space comes back
            self.frames.append(frame)

    flaky = Flaky()
    p, events, _ = make([OkAnalyzer()], [flaky], clock=clock)
    src = ListSource(12)
    for i in range(12):
        img = src.read()
        assert img is not None
        _, out = p.process(Frame("cam", i, i * 0.5, clock.monotonic(), img), live=False)
        assert out is not None
        p._write(out)  # the sink stage, driven directly so the fake clock is exact
        clock.advance(0.5)
    p._close_sinks()
    assert events.kinds().count("sink_error") == 2 and events.kinds().count("sink_recovered") == 1
    # Fails at frame 0 (retry after 1 s), fails at frame 2 (retry after 2 s), works from frame 6 on.
    assert [f.index for f in flaky.frames] == [6, 7, 8, 9, 10, 11]
    assert flaky.closed


def test_withhold_events_are_per_change_not_per_frame() -> None:
    class Occupied:
        name = "occ"

        def analyze(self, frame: Frame) -> Analysis:
            return Analysis(zone_activity=(ZoneActivity("door", frame.index < 5, "presence"),))

    door = ZonePolicy("door", validate_polygon([[0.6, 0], [1, 0], [1, 1]]), ZoneAction.WITHHOLD, Style.SOLID, 0)
    p, events, _ = make([Occupied()], [], policy=CameraPolicy("cam", (door,)))
    p.run(lambda: ListSource(10))
    assert events.kinds().count("withheld") == 1 and events.kinds().count("released") == 1


def test_live_source_reconnects_with_backoff() -> None:
    clock = FakeClock()
    sink = RecordingSink()
    calls = {"n": 0}
    p, events, _ = make([OkAnalyzer()], [sink], clock=clock)

    def opener() -> ListSource:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise SourceError("rtsp://cam: connection refused")
        if calls["n"] == 3:
            return ListSource(100, live=True, fail_after=3)
        p.stop()
        raise SourceError("rtsp://cam: connection refused")

    opener.live = True  # type: ignore[attr-defined]
    t0 = clock.monotonic()
    stats = p.run(opener)
    kinds = events.kinds()
    assert kinds.count("source_error") == 3 and "source_lost" in kinds
    # Every frame got a decision (with the fake clock jumping during backoff
    # some may be withheld as lagging, which is the fail-closed outcome).
    assert stats.frames_in == 3
    # Backoff 1 s, 2 s; reset once frames flowed: 1 s, 2 s. No real sleeping.
    assert clock.monotonic() - t0 == pytest.approx(1 + 2 + 1 + 2)


class BrokenSource(ListSource):
    """A source whose library raises something of its own (not a SourceError) after `after` frames,
    with the camera's URL and password in the message, as FFmpeg's errors do."""

    def __init__(self, after: int, live: bool) -> None:
        super().__init__(100, live=live)
        self.info = SourceInfo("rtsp://cam.local/stream", live, 10.0, None)
        self._after = after

    def read(self) -> np.ndarray | None:
        if self._i >= self._after:
            raise RuntimeError("decoder blew up on rtsp://admin:hunter2@cam.local/stream")
        return super().read()


@pytest.fixture
def thread_crashes(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """Exceptions that escaped any thread (each would print a traceback to the user)."""
    seen: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


def test_a_live_source_that_raises_something_unexpected_is_lost_and_reconnected(
        thread_crashes: list[BaseException | None]) -> None:
    clock = FakeClock()
    sink = RecordingSink()
    p, events, _ = make([OkAnalyzer()], [sink], clock=clock)
    opened = {"n": 0}

    def opener() -> ListSource:
        opened["n"] += 1
        if opened["n"] == 2:
            raise ValueError("cannot connect to rtsp://admin:hunter2@cam.local/stream")
        if opened["n"] > 3:
            p.stop()
        return BrokenSource(after=2, live=True)

    opener.live = True  # type: ignore[attr-defined]
    stats = p.run(opener)
    assert thread_crashes == []
    kinds = events.kinds()
    assert kinds.count("source_lost") >= 2 and kinds.count("source_error") == 1
    assert opened["n"] >= 3 and stats.frames_in >= 4  # it kept reconnecting and reading
    texts = [e.message for e in events.events if e.kind in ("source_lost", "source_error")]
    assert all("hunter2" not in t for t in texts)  # a library's message never carries the password out
    assert "source rtsp://cam.local/stream: reading failed unexpectedly (RuntimeError)" in texts
    assert "camera cam's source: opening failed unexpectedly (ValueError)" in texts


def test_a_file_source_that_raises_something_unexpected_ends_the_camera_cleanly(
        thread_crashes: list[BaseException | None]) -> None:
    p, events, _ = make([OkAnalyzer()], [])
    stats = p.run(lambda: BrokenSource(after=3, live=False))
    assert thread_crashes == [] and stats.frames_in == 3
    assert events.kinds()[-1] == "source_lost"


def test_a_failure_of_the_readers_own_work_is_not_called_a_lost_source(
        thread_crashes: list[BaseException | None]) -> None:
    sink = RecordingSink()
    p, events, _ = make([OkAnalyzer()], [sink])
    submit = p._runner.submit
    calls = {"n": 0}

    def failing_submit(frame: Frame):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("analysis hand-off broke")
        return submit(frame)

    p._runner.submit = failing_submit  # type: ignore[method-assign]
    stats = p.run(lambda: ListSource(10, live=True))
    assert thread_crashes == []
    kinds = events.kinds()
    assert "source_lost" not in kinds and kinds[-1] == "reader_failed"
    assert "RuntimeError" in events.events[-1].message
    assert stats.frames_in == 2 and len(sink.frames) == 2  # nothing after the failure is released


def test_file_source_error_ends_without_crash_loop() -> None:
    p, events, _ = make([OkAnalyzer()], [])

    def opener() -> ListSource:
        raise SourceError("video.mp4: file does not exist")

    stats = p.run(opener)
    assert stats.frames_in == 0 and events.kinds() == ["source_error"]


# --- analysis lanes -------------------------------------------------------------------------------


class Recording:
    """Records the frames it sees, in order, from whichever thread runs it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[int] = []

    def analyze(self, frame: Frame) -> Analysis:
        self.seen.append(frame.index)
        return Analysis()


def test_lanes_let_one_analyzer_work_ahead_of_another() -> None:
    """Frame 0's slow analyzer waits until the other one has reached frame 2: only possible
    if each analyzer has its own lane and frames are analysed ahead of the one being decided."""
    ahead = threading.Event()

    class Slow(Recording):
        def analyze(self, frame: Frame) -> Analysis:
            if frame.index == 0:
                assert ahead.wait(5), "the other lane never got ahead"
            return super().analyze(frame)

    class Fast(Recording):
        def analyze(self, frame: Frame) -> Analysis:
            if frame.index == 2:
                ahead.set()
            return super().analyze(frame)

    slow, fast = Slow("slow"), Fast("fast")
    sink = RecordingSink()
    p, events, decisions = make([slow, fast], [sink], timeout_s=10.0)
    stats = p.run(lambda: ListSource(8))
    assert stats.masked == 8 and [f.index for f in sink.frames] == list(range(8))
    assert slow.seen == fast.seen == list(range(8)), "each lane sees every frame, in order"
    assert [i for _, i in decisions] == list(range(8)) and "analysis_fault" not in events.kinds()


def test_a_hung_lane_withholds_its_queued_frames_and_recovers_while_other_lanes_keep_order() -> None:
    release = threading.Event()

    class Hang(Recording):
        def analyze(self, frame: Frame) -> Analysis:
            if frame.index == 0:
                release.wait(10)
            return super().analyze(frame)

    hang, other = Hang("hang"), Recording("other")
    decisions: list = []

    def on_decision(d: object, i: object) -> None:
        decisions.append((d, i))
        if len(decisions) == 6:
            release.set()

    events = EventLog()
    # 0.5 s: long enough that the trivial lane never times out on a loaded CI machine.
    p = CameraPipeline(CameraPolicy("cam", (ZONE,)), [hang, other], [RecordingSink()], lambda: Mode.HOME, events,
                       clock=FakeClock(), analysis_timeout_s=0.5, on_decision=on_decision)
    p.run(lambda: ListSource(40, on_read=_until_lanes_recover(p)))
    reasons = [d.reasons for d, _ in decisions]
    assert reasons[0] == ("analysis_timeout",)
    # Frames queued behind the hung call are not analysed by it later: they are withheld as busy.
    assert all(r == ("analysis_busy",) for r in reasons[1:6])
    assert decisions[-1][0].action is Action.MASK
    assert 1 not in hang.seen and hang.seen == sorted(hang.seen)
    assert other.seen == sorted(other.seen) and len(other.seen) >= 30
    assert [e for e in events.events if e.kind == "analysis_fault"][0].message.startswith("analyzer hang took longer")


def test_a_failing_lane_withholds_only_its_frames() -> None:
    ok = Recording("ok")
    sink = RecordingSink()
    p, _, decisions = make([BoomAnalyzer(fail=(3,)), ok], [sink])
    stats = p.run(lambda: ListSource(6))
    assert stats.withheld == 2 and [f.index for f in sink.frames] == [0, 1, 4, 5]
    assert decisions[3][0].reasons == ("analysis_error:RuntimeError",)
    assert ok.seen == list(range(6))


def test_no_stage_holds_a_frame_it_has_handed_on() -> None:
    """While the camera is awaited, the pipeline holds none of the frames it is done with: not the
    raw picture (the reader, the deciding loop) nor its redacted copy (the sink stage). Each is a
    whole picture (2.6 MiB at 720p), and a camera is awaited most of the time. The one frame it
    is not done with is the last one read: it waits for the next frame's decision (look-ahead)."""
    raws: list[weakref.ref[np.ndarray]] = []
    outs: list[weakref.ref[np.ndarray]] = []
    gate, written = threading.Event(), threading.Event()

    class SlowCamera(ListSource):
        def read(self) -> np.ndarray | None:
            if self._i >= 3:
                gate.wait(10)  # the next frame is slow to come: the pipeline waits here
                return None
            img = super().read()
            assert img is not None
            raws.append(weakref.ref(img))
            return img

    class ForgetfulSink(RecordingSink):
        def write(self, frame: RedactedFrame) -> None:
            outs.append(weakref.ref(frame.image))
            if len(outs) == 2:
                written.set()

    p, _events, _decisions = make([OkAnalyzer()], [ForgetfulSink()])
    runner = threading.Thread(target=p.run, args=(lambda: SlowCamera(5),), daemon=True)
    runner.start()
    try:
        assert written.wait(10)
        alive: list[str] = []
        for _ in range(200):  # each stage lets go as soon as it has handed its frame on
            gc.collect()
            alive = [f"raw {i}" for i, r in enumerate(raws) if r() is not None]
            alive += [f"redacted {i}" for i, r in enumerate(outs) if r() is not None]
            if alive == ["raw 2"]:
                break
            time.sleep(0.01)
        assert alive == ["raw 2"], f"held while the camera is awaited: {alive}"
    finally:
        gate.set()
        runner.join(10)
    assert not runner.is_alive()
    assert len(outs) == 3  # the source ended: the last frame went out on its own decision


def test_tune_process_turns_off_opencv_threads_and_is_idempotent() -> None:
    import cv2

    from agent.core.process import SWITCH_INTERVAL_S, tune_process

    tune_process()
    tune_process()
    assert cv2.getNumThreads() == 1
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)


def test_heap_trimmer_trims_on_its_interval_and_stops() -> None:
    """`run` keeps a trimmer going: it calls malloc_trim on its interval, a trim that fails turns it
    off (memory merely stays cached), and on glibc the real malloc_trim is found and callable."""
    import platform

    from agent.core.process import HeapTrimmer, glibc_trim

    calls: list[int] = []
    t = HeapTrimmer(lambda: calls.append(1), every_s=0.01).start()
    deadline = threading.Event()
    deadline.wait(0.3)
    t.stop()
    n = len(calls)
    assert n >= 3 and t.trims == n
    deadline.wait(0.05)
    assert len(calls) == n  # stopped

    def boom() -> None:
        raise OSError("no")

    bad = HeapTrimmer(boom, every_s=10)
    bad.tick()
    bad.tick()
    assert bad.trims == 0 and not bad.active

    if platform.libc_ver()[0] == "glibc":
        real = glibc_trim()
        assert real is not None
        real()  # returns pages malloc holds as free; nothing in use is touched
        assert HeapTrimmer().active
