"""The privacy LED: lit whenever frames are recorded or streamed, or a grant is active; off
otherwise; never dark when it cannot tell; a line that cannot be driven is reported, and recording
goes on. Driven through a simulated line behind the same interface as the libgpiod one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from agent.clock import FakeClock
from agent.config import HardwareConfig, parse_config_text
from agent.core.datatypes import Event
from agent.core.events import EventLog
from agent.core.indicator import (
    RECORDING_WINDOW_S,
    PrivacyIndicator,
    indicator_state,
    recording_provider,
    start_indicator,
)
from agent.core.pipeline import CameraPipeline
from agent.core.policy import CameraPolicy
from agent.core.ports import SourceInfo
from agent.core.redact import RedactedFrame
from agent.errors import ConfigError
from agent.gpio import GpiodInputLine, GpiodOutputLine, SimulatedLine
from agent.vocab import Mode


class Pipe:
    """What the LED reads of a pipeline."""

    def __init__(self) -> None:
        self.last_release_s: float | None = None


class Grants:
    def __init__(self) -> None:
        self.until_wall_s = 0.0

    def grant_active(self, now_wall_s: float) -> bool:
        return now_wall_s < self.until_wall_s


def _led(clock: FakeClock, pipes: list[Pipe], grants: Grants, line: SimulatedLine,
         events: list[Event] | None = None) -> PrivacyIndicator:
    return PrivacyIndicator(line, clock, recording=recording_provider(pipes, clock),
                            grant_active=lambda: grants.grant_active(clock.wall()),
                            on_event=events.append if events is not None else None)


def test_the_rule() -> None:
    assert indicator_state(False, False, False) is False
    for args in ((True, False, False), (False, True, False), (False, False, True), (True, True, True)):
        assert indicator_state(*args) is True


def test_led_follows_recording_and_grants() -> None:
    clock, pipe, grants, line = FakeClock(), Pipe(), Grants(), SimulatedLine()
    led = _led(clock, [Pipe(), pipe], grants, line)
    assert led.tick() is False and line.value is False  # idle: off
    pipe.last_release_s = clock.monotonic()  # a frame went to a sink
    assert led.tick() is True and line.value is True
    clock.advance(RECORDING_WINDOW_S - 0.1)  # still within the window: the camera is recording
    assert led.tick() is True
    clock.advance(0.2)  # recording stopped
    assert led.tick() is False and line.value is False
    grants.until_wall_s = clock.wall() + 60  # a grant, with no recording
    assert led.tick() is True and line.value is True
    clock.advance(59)
    assert led.tick() is True
    clock.advance(1)  # the grant expired
    assert led.tick() is False and line.value is False
    assert line.history == [False, True, True, False, True, True, False]  # set on every tick


def test_streaming_lights_it() -> None:
    clock, line = FakeClock(), SimulatedLine()
    streaming = [False]
    led = PrivacyIndicator(line, clock, recording=lambda: False, streaming=lambda: streaming[0])
    assert led.tick() is False
    streaming[0] = True
    assert led.tick() is True and line.value is True


def test_a_provider_that_fails_lights_it() -> None:
    def broken() -> bool:
        raise RuntimeError("state unreadable")

    line = SimulatedLine()
    assert PrivacyIndicator(line, FakeClock(), recording=lambda: False, grant_active=broken).tick() is True
    assert line.value is True


def test_a_line_that_cannot_be_driven_is_reported_once_and_retried() -> None:
    clock, pipe, grants, line = FakeClock(), Pipe(), Grants(), SimulatedLine()
    events: list[Event] = []
    led = _led(clock, [pipe], grants, line, events)
    pipe.last_release_s = clock.monotonic()
    line.failing = True
    for _ in range(3):
        assert led.tick() is True  # it still wants the LED on: it never decides "off" while recording
        clock.advance(0.2)
        pipe.last_release_s = clock.monotonic()
    assert [e.kind for e in events] == ["indicator_fault"] and led.faulty and led.lit is None
    assert events[0].details["wanted"] == "on" and "cannot be driven" in events[0].message
    line.failing = False
    assert led.tick() is True and line.value is True and not led.faulty and led.lit is True
    assert [e.kind for e in events] == ["indicator_fault", "indicator_recovered"]


def test_start_and_stop_switch_it_off(tmp_path: Path) -> None:
    clock, pipe, line = FakeClock(), Pipe(), SimulatedLine()
    pipe.last_release_s = clock.monotonic()
    cfg = parse_config_text("data_dir: d\ncameras: [{id: c, source: x.mp4}]\nhardware:\n"
                            "  indicator_led: {chip: /dev/gpiochip0, line: 27}\n").hardware
    led = start_indicator(cfg, [pipe], None, lambda ev: None, clock, line=line)
    assert led is not None and line.value is True  # lit at start, before any thread tick
    led.stop()
    assert line.value is False and line.closed
    assert start_indicator(HardwareConfig(), [pipe], None, lambda ev: None, clock) is None  # no LED configured


class ThreeFrames:
    """A file source of three grey frames."""

    info = SourceInfo("three", False, 10.0, 3)

    def __init__(self) -> None:
        self.n = 0

    def read(self) -> np.ndarray | None:
        self.n += 1
        return np.full((24, 32, 3), 77, np.uint8) if self.n <= 3 else None

    def close(self) -> None:
        pass


def test_the_pipeline_says_when_it_last_released_a_frame() -> None:
    class Sink:
        name = "s"
        plaintext = True

        def write(self, frame: RedactedFrame) -> None:
            pass

        def withheld(self, camera_id: str, index: int, t_s: float) -> None:
            pass

        def close(self) -> None:
            pass

    clock = FakeClock()
    released = CameraPipeline(CameraPolicy("cam", ()), [], [Sink()], lambda: Mode.HOME, EventLog(), clock=clock)
    withheld = CameraPipeline(CameraPolicy("cam", ()), [], [Sink()], lambda: Mode.PRIVACY, EventLog(), clock=clock)
    assert released.last_release_s is None
    released.run(ThreeFrames)
    withheld.run(ThreeFrames)
    assert released.last_release_s == clock.monotonic() and withheld.last_release_s is None
    recording = recording_provider([withheld, released], clock)
    assert recording()
    clock.advance(RECORDING_WINDOW_S + 0.1)
    assert not recording()


def test_grant_active_follows_the_hubs_grants(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent / "mqtt"))
    from access_world import ALICE, PLUMBER, T0_WALL_MS, request
    from test_hub_service import T, _challenge, _msg, _service

    from agent import access as A

    s, c, _ = _service(tmp_path)
    clock = s.clock
    assert isinstance(clock, FakeClock)
    assert not s.grant_active(clock.wall())
    s._on_request(_msg(T.access_request("x"), request(PLUMBER, n=1)))
    assert not s.grant_active(clock.wall())  # challenged, not granted
    s._on_decision(_msg(T.access_decision("x"), A.make_decision(ALICE, _challenge(c), "approve", 10, 1, T0_WALL_MS)))
    assert s.results[-1].status == "granted"
    assert s.grant_active(clock.wall())
    clock.advance(s.policy.grant_ttl_s - 1)
    assert s.grant_active(clock.wall())
    # A restart does not end it: the service finds the grant in the audit log.
    s.audit.close()
    s2, _, _ = _service(tmp_path)
    assert s2.grant_active(clock.wall())
    clock.advance(1)
    assert not s.grant_active(clock.wall()) and not s2.grant_active(clock.wall())


def test_hardware_config() -> None:
    base = "data_dir: d\ncameras: [{id: c, source: x.mp4}]\n"
    cfg = parse_config_text(base).hardware
    assert cfg.indicator_led is None and cfg.privacy_switch is None
    cfg = parse_config_text(base + "hardware:\n  privacy_switch: {line: 17, active_low: true}\n").hardware
    assert cfg.privacy_switch is not None and cfg.privacy_switch.chip == "/dev/gpiochip0"
    for bad in ("  indicator_led: {chip: /dev/gpiochip0}\n", "  indicator_led: {line: -1}\n",
                "  indicator_led: {line: 3, colour: red}\n", "  buzzer: {line: 3}\n"):
        with pytest.raises(ConfigError, match="hardware"):
            parse_config_text(base + "hardware:\n" + bad)


def test_the_libgpiod_lines_report_a_missing_chip_as_oserror(tmp_path: Path) -> None:
    """The real libgpiod bindings, on a chip that does not exist here: an OSError naming the line,
    raised again on the next call (the line is requested again, not given up on)."""
    out = GpiodOutputLine(tmp_path / "gpiochip9", 27)
    for _ in range(2):
        with pytest.raises(OSError, match=r"GPIO line 27 on .*gpiochip9"):
            out.set(True)
    with pytest.raises(OSError, match="GPIO line 17"):
        GpiodInputLine("/dev/null", 17).read()  # not a GPIO chip
    out.close()


def test_run_with_an_led_that_cannot_be_driven_records_anyway(tmp_path: Path) -> None:
    """`run` with `hardware.indicator_led` on a chip that is not there: the frames still reach the
    sink, and the fault is an event, once."""
    import json

    sys.path.insert(0, str(Path(__file__).parent))
    from videokit import walker_frames, write_video

    from agent.cli.main import main as cli_main

    write_video(tmp_path / "v.mp4", walker_frames(20))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""\
data_dir: data
detection: {{enabled: false}}
cameras: [{{id: cam, source: v.mp4}}]
sinks: [{{type: directory, path: out, plaintext: true, segment_s: 10}}]
hardware:
  indicator_led: {{chip: {tmp_path / 'gpiochip5'}, line: 27}}
""")
    (tmp_path / "out").mkdir()
    assert cli_main(["sink", "init", str(tmp_path / "out")]) == 0
    assert cli_main(["run", "--config", str(cfg)]) == 0
    kinds = [json.loads(ln)["kind"] for ln in (tmp_path / "data" / "events.jsonl").read_text().splitlines()]
    assert kinds.count("indicator_fault") == 1
    assert list((tmp_path / "out").rglob("*.mp4"))


def test_a_camera_without_sinks_still_lights_the_led_when_frames_are_released() -> None:
    """The page shows released frames of a camera that stores nothing: that is watching, and lit."""
    clock = FakeClock()
    shown: list[object] = []
    pipe = CameraPipeline(CameraPolicy("cam", ()), [], [], lambda: Mode.HOME, EventLog(), clock=clock)
    pipe.set_frame_tap(shown.append)
    pipe.run(ThreeFrames)
    assert any(isinstance(x, RedactedFrame) for x in shown)
    assert pipe.last_release_s == clock.monotonic()
    assert recording_provider([pipe], clock)()
