"""The pipeline's side of the page: the frame tap and the live policy swap, and `run` serving the page."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import PushSource, free_port

from agent.cli.main import main
from agent.config import load_config
from agent.core.datatypes import Decision, Frame
from agent.core.pipeline import CameraPipeline
from agent.core.policy import CameraPolicy, ModeOverride, ZonePolicy
from agent.core.redact import RedactedFrame
from agent.errors import PrivacyViolation
from agent.geometry import PointRel
from agent.vocab import Action, Mode, Style, ZoneAction
from agent.web.auth import web_dir
from agent.web.board import FrameBoard
from agent.web.tls import CERT_FILE, fingerprint

SQUARE = (PointRel(0.1, 0.1), PointRel(0.4, 0.1), PointRel(0.4, 0.4), PointRel(0.1, 0.4))


def _zone(name: str, action: ZoneAction = ZoneAction.MASK) -> ZonePolicy:
    return ZonePolicy(name, SQUARE, action, Style.SOLID, 0.0)


class Taps:
    def __init__(self) -> None:
        self.items: list[RedactedFrame | Decision] = []
        self.cond = threading.Condition()

    def __call__(self, item: RedactedFrame | Decision) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def next(self, src: PushSource) -> RedactedFrame | Decision:
        """The outcome of a new frame (pushed now, with the one after it that lets it out)."""
        index = src.push_next()

        def index_of(item: RedactedFrame | Decision) -> int:
            return item.index if isinstance(item, RedactedFrame) else item.frame_index

        with self.cond:
            assert self.cond.wait_for(lambda: any(index_of(i) == index for i in self.items), timeout=20)
            return next(i for i in self.items if index_of(i) == index)


@pytest.fixture
def running() -> tuple[CameraPipeline, PushSource, Taps, Callable[[], None]]:
    img = np.full((60, 80, 3), 200, np.uint8)
    src = PushSource(img)
    pipe = CameraPipeline(CameraPolicy("cam"), [], [], lambda: Mode.HOME, lambda _e: None)
    taps = Taps()
    pipe.set_frame_tap(taps)
    t = threading.Thread(target=pipe.run, args=(lambda: src,), daemon=True)
    t.start()

    def stop() -> None:
        src.end()
        pipe.stop()
        t.join(10)

    yield pipe, src, taps, stop
    stop()


def test_a_swapped_policy_decides_the_next_frame(running) -> None:  # type: ignore[no-untyped-def]
    pipe, src, taps, _ = running
    first = taps.next(src)
    assert isinstance(first, RedactedFrame) and first.decision.action is Action.PASS
    assert pipe.swap_policy(CameraPolicy("cam", (_zone("desk"),)))
    second = taps.next(src)
    assert isinstance(second, RedactedFrame) and second.decision.reasons == ("zone:desk",)
    assert (second.image[10:20, 10:30] == 0).all() and (second.image[40:, 40:] == 200).all()


def test_new_withhold_zones_withhold_until_restart(running) -> None:  # type: ignore[no-untyped-def]
    pipe, src, taps, _ = running
    # The analyzers were built without this withhold zone: nothing watches it, so nothing passes.
    assert not pipe.swap_policy(CameraPolicy("cam", (_zone("bed", ZoneAction.WITHHOLD),)))
    assert pipe.restart_needed
    out = taps.next(src)
    assert isinstance(out, Decision) and out.action is Action.WITHHOLD and out.reasons == ("restart_needed",)
    # Moving a mask zone is pure policy; the old analysis basis is back, so frames flow again.
    assert pipe.swap_policy(CameraPolicy("cam", (_zone("desk"),)))
    assert not pipe.restart_needed
    assert isinstance(taps.next(src), RedactedFrame)


def test_a_policy_for_another_camera_is_refused(running) -> None:  # type: ignore[no-untyped-def]
    pipe, *_ = running
    with pytest.raises(ValueError, match="cannot replace"):
        pipe.swap_policy(CameraPolicy("other"))
    with pytest.raises(ValueError):
        pipe.swap_policy("cam")  # type: ignore[arg-type]


def test_a_failing_tap_never_stops_the_pipeline(running) -> None:  # type: ignore[no-untyped-def]
    pipe, src, taps, _ = running

    def boom(_item: object) -> None:
        raise RuntimeError("viewer bug")

    pipe.set_frame_tap(boom)
    src.push(3)
    pipe.set_frame_tap(taps)
    assert isinstance(taps.next(src), RedactedFrame)


def test_the_board_keeps_only_redacted_frames() -> None:
    board = FrameBoard()
    raw = np.zeros((4, 4, 3), np.uint8)
    for bad in (raw, Frame("cam", 0, 0.0, 0.0, raw)):
        with pytest.raises(PrivacyViolation):
            board.post("cam", bad)  # type: ignore[arg-type]
    board.post("cam", Decision("cam", 3, 0.3, Action.WITHHOLD, ("mode:privacy",)))
    latest = board.latest("cam")
    assert latest is not None and latest.withheld == ("mode:privacy",) and latest.frame is None
    assert board.png("cam") is None


def test_a_withheld_camera_keeps_no_picture(running) -> None:  # type: ignore[no-untyped-def]
    pipe, src, taps, _ = running
    board = FrameBoard()
    pipe.set_frame_tap(board.tap("cam"))
    pipe.set_frame_tap(lambda item: (board.post("cam", item), taps(item)))
    assert isinstance(taps.next(src), RedactedFrame)
    assert board.png("cam") is not None
    pipe.swap_policy(CameraPolicy("cam", mode_overrides=((Mode.HOME, ModeOverride(withhold_all=True)),)))
    assert isinstance(taps.next(src), Decision)
    latest = board.latest("cam")
    assert latest is not None and latest.frame is None and latest.png is None and latest.size_px == (80, 60)
    assert board.png("cam") is None


def test_a_camera_gone_quiet_keeps_no_picture(running) -> None:  # type: ignore[no-untyped-def]
    """A lost source gives no decision at all: after `stale_s` the last picture is dropped, not shown as live."""
    from agent.clock import FakeClock

    pipe, src, taps, _ = running
    clock = FakeClock()
    board = FrameBoard(clock, stale_s=5.0)
    pipe.set_frame_tap(lambda item: (board.post("cam", item), taps(item)))
    assert isinstance(taps.next(src), RedactedFrame)
    clock.advance(4.0)
    assert board.png("cam") is not None
    clock.advance(2.0)
    latest = board.latest("cam")
    assert latest is not None and latest.frame is None and latest.withheld == ("no_recent_frame",)
    assert latest.size_px == (80, 60) and board.png("cam") is None
    assert isinstance(taps.next(src), RedactedFrame)  # the camera is back: so is its picture
    assert board.png("cam") is not None


def test_run_serves_the_page_and_prints_the_fingerprint(scenario_dir: Callable[[str], Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    fx = tmp_path / "fx"
    shutil.copytree(scenario_dir("canary"), fx)
    cfg = fx / "config.yaml"
    port = free_port()
    cfg.write_text(cfg.read_text() + f"detection: {{enabled: false}}\nweb: {{enabled: true, port: {port}}}\n")
    assert main(["run", "--config", str(cfg)]) == 0
    err = capsys.readouterr().err
    cert = web_dir(load_config(cfg).data_dir) / CERT_FILE
    assert f"homeowner's page: https://127.0.0.1:{port}/" in err
    assert f"certificate SHA-256 fingerprint: {fingerprint(cert.read_bytes())}" in err
    assert "no password set yet" in err
    import socket
    with socket.socket() as s:  # stopped with the run: the port is free again
        s.bind(("127.0.0.1", port))
