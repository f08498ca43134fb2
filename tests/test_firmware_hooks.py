"""Firmware hooks: the privacy switch forces privacy mode; an unreadable switch fails closed."""

from __future__ import annotations

from pathlib import Path

from agent.clock import FakeClock
from agent.config import ModesConfig
from agent.core.modes import ModeController
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
