"""Modes: schedule windows, manual override in the data dir, fail closed on a bad state file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from agent.clock import FakeClock
from agent.config import ModesConfig, ScheduleEntry
from agent.core.modes import ModeController, scheduled_mode, state_file, write_override
from agent.vocab import Mode

CFG = ModesConfig(
    default=Mode.HOME,
    schedule=[
        ScheduleEntry(mode=Mode.AWAY, days=["mon", "tue", "wed", "thu", "fri"], start="09:00", end="17:00"),
        ScheduleEntry(mode=Mode.PRIVACY, days=["fri"], start="23:00", end="06:30"),
    ],
)


def test_schedule_windows() -> None:
    mon = dt.datetime(2026, 11, 23, 10, 0)  # a Monday
    assert scheduled_mode(CFG, mon) is Mode.AWAY
    assert scheduled_mode(CFG, mon.replace(hour=17)) is Mode.HOME
    assert scheduled_mode(CFG, dt.datetime(2026, 11, 28, 10, 0)) is Mode.HOME  # Saturday
    # Friday 23:00 to Saturday 06:30 spans midnight.
    assert scheduled_mode(CFG, dt.datetime(2026, 11, 27, 23, 30)) is Mode.PRIVACY
    assert scheduled_mode(CFG, dt.datetime(2026, 11, 28, 6, 0)) is Mode.PRIVACY
    assert scheduled_mode(CFG, dt.datetime(2026, 11, 29, 6, 0)) is Mode.HOME


def test_override_wins_and_is_runtime_state(tmp_path: Path) -> None:
    clock = FakeClock()
    mc = ModeController(ModesConfig(), tmp_path, clock)
    assert mc.current() is Mode.HOME
    mc.set(Mode.PRIVACY, by="test")
    assert state_file(tmp_path).exists()
    assert mc.current() is Mode.PRIVACY
    write_override(tmp_path, None, "test", clock.wall())  # cleared by another process
    assert mc.current() is Mode.PRIVACY  # re-read at most once a second
    clock.advance(1.0)
    assert mc.current() is Mode.HOME


def test_malformed_state_file_means_privacy(tmp_path: Path) -> None:
    f = state_file(tmp_path)
    f.parent.mkdir(parents=True)
    f.write_text("{not json")
    assert ModeController(ModesConfig(), tmp_path, FakeClock()).current() is Mode.PRIVACY
    f.write_text('{"mode": "party"}')
    assert ModeController(ModesConfig(), tmp_path, FakeClock()).current() is Mode.PRIVACY


def test_mode_changes_are_reported_once_each(tmp_path: Path) -> None:
    clock = FakeClock()
    seen: list[tuple[Mode, str]] = []
    mc = ModeController(ModesConfig(), tmp_path, clock, on_change=lambda m, why: seen.append((m, why)))
    mc.current()
    mc.current()
    mc.set(Mode.AWAY, by="test")
    mc.current()
    assert seen == [(Mode.HOME, "schedule"), (Mode.AWAY, "override")]
