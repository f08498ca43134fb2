"""Firmware hooks: the privacy switch forces privacy mode; an unreadable switch fails closed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli.main import main as cli_main
from agent.clock import FakeClock
from agent.config import ModesConfig
from agent.core.modes import (
    ModeController,
    read_override,
    switch_engaged,
    switch_file,
    write_override,
)
from agent.errors import ExitCode, PrivacySwitchOn
from agent.vocab import Mode
from firmware_hooks.hooks import SysfsGpioLine, main, watch


def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: data\ncameras: [{id: cam, source: x.mp4}]\n")
    return cfg


def test_privacy_switch_hook(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    mc = ModeController(ModesConfig(), tmp_path / "data", FakeClock())
    assert main(["privacy-switch", "on", "--config", str(cfg)]) == 0
    assert mc.current() is Mode.PRIVACY
    assert main(["privacy-switch", "off", "--config", str(cfg)]) == 0
    assert ModeController(ModesConfig(), tmp_path / "data", FakeClock()).current() is Mode.HOME


class ScriptedLine:
    """Stand-in for a GPIO line, behind the same interface as SysfsGpioLine."""

    def __init__(self, values: list[bool | None]) -> None:
        self.values = values
        self.i = 0

    def read(self) -> bool:
        v = self.values[min(self.i, len(self.values) - 1)]
        self.i += 1
        if v is None:
            raise OSError("line busy")
        return v


def test_watch_applies_changes_and_fails_closed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    clock = FakeClock()
    line = ScriptedLine([False, False, True, True, False, None])
    mc = ModeController(ModesConfig(), data, clock)
    changes = watch(line, data, clock, poll_s=1.0, max_polls=6)
    assert changes == 4  # off, on, off, then unreadable -> privacy
    assert mc.current() is Mode.PRIVACY


def test_sysfs_line(tmp_path: Path) -> None:
    f = tmp_path / "value"
    f.write_text("1\n")
    assert SysfsGpioLine(f).read() is True
    assert SysfsGpioLine(f, active_low=True).read() is False
    f.write_text("x")
    try:
        SysfsGpioLine(f).read()
    except OSError as e:
        assert "expected 0 or 1" in str(e)
    else:
        raise AssertionError("garbage must not read as a switch position")


def test_boot_check_reports_problems(tmp_path: Path) -> None:
    assert main(["boot-check", "--config", str(config(tmp_path))]) == 1  # x.mp4 does not exist


def test_switch_wins_over_cli_mqtt_and_schedule_until_turned_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path)
    data = tmp_path / "data"
    clock = FakeClock()
    assert cli_main(["mode", "set", "away", "--config", str(cfg)]) == 0
    assert main(["privacy-switch", "on", "--config", str(cfg)]) == 0
    assert switch_file(data).exists() and read_override(data) is Mode.AWAY  # separate files
    assert ModeController(ModesConfig(), data, clock).current() is Mode.PRIVACY
    capsys.readouterr()
    # The CLI is refused, says why, and exits REFUSED.
    assert cli_main(["mode", "set", "home", "--config", str(cfg)]) == ExitCode.REFUSED
    err = capsys.readouterr().err
    assert "privacy switch is on" in err and "Traceback" not in err
    assert cli_main(["mode", "set", "auto", "--config", str(cfg)]) == ExitCode.REFUSED
    # What the MQTT hub calls for an owner-signed mode change raises the same typed error.
    with pytest.raises(PrivacySwitchOn):
        write_override(data, Mode.HOME, "owner device 0123456789abcdef", clock.wall())
    capsys.readouterr()
    assert cli_main(["mode", "get", "--config", str(cfg)]) == 0
    out = capsys.readouterr()
    got = json.loads(out.out.splitlines()[-1])
    assert got == {"mode": "privacy", "override": "away", "privacy_switch": True}
    assert "privacy switch is on" in out.err
    # Off: the override that was there before applies again.
    assert main(["privacy-switch", "off", "--config", str(cfg)]) == 0
    assert ModeController(ModesConfig(), data, clock).current() is Mode.AWAY
    assert cli_main(["mode", "set", "home", "--config", str(cfg)]) == 0


def test_watch_writes_the_switch_file_not_the_override(tmp_path: Path) -> None:
    data = tmp_path / "data"
    clock = FakeClock()
    write_override(data, Mode.AWAY, "cli", clock.wall())
    assert watch(ScriptedLine([True]), data, clock, poll_s=1.0, max_polls=2) == 1
    assert switch_engaged(data) and read_override(data) is Mode.AWAY
    assert ModeController(ModesConfig(), data, clock).current() is Mode.PRIVACY
    assert watch(ScriptedLine([False]), data, clock, poll_s=1.0, max_polls=1) == 1
    assert not switch_engaged(data)
    assert ModeController(ModesConfig(), data, clock).current() is Mode.AWAY
