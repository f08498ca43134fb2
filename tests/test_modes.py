"""Modes: schedule windows, manual override in the data dir, fail closed on a bad state file."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from agent.clock import FakeClock
from agent.config import ModesConfig, ScheduleEntry
from agent.core.modes import (
    ModeController,
    read_override,
    read_switch,
    scheduled_mode,
    state_file,
    switch_engaged,
    switch_file,
    write_override,
    write_switch,
)
from agent.errors import AgentError, ExitCode, PrivacySwitchOn
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


# --- the physical privacy switch wins -------------------------------------------------------

ALWAYS_HOME = ModesConfig(default=Mode.HOME, schedule=[
    ScheduleEntry(mode=Mode.HOME, days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start="00:00", end="23:59"),
])


def test_switch_wins_over_override_and_schedule_and_off_restores_them(tmp_path: Path) -> None:
    clock = FakeClock()
    write_override(tmp_path, Mode.AWAY, "cli", clock.wall())
    seen: list[tuple[Mode, str]] = []
    mc = ModeController(ALWAYS_HOME, tmp_path, clock, on_change=lambda m, why: seen.append((m, why)))
    assert mc.current() is Mode.AWAY
    write_switch(tmp_path, True, clock.wall())
    assert stat.S_IMODE(switch_file(tmp_path).stat().st_mode) == 0o600
    assert switch_engaged(tmp_path) is True
    clock.advance(1.0)
    assert mc.current() is Mode.PRIVACY
    assert read_override(tmp_path) is Mode.AWAY  # the override is kept, not overwritten by the switch
    write_switch(tmp_path, False, clock.wall())
    clock.advance(1.0)
    assert mc.current() is Mode.AWAY  # back to the override
    write_override(tmp_path, None, "cli", clock.wall())
    clock.advance(1.0)
    assert mc.current() is Mode.HOME  # and with no override, to the schedule
    assert seen == [(Mode.AWAY, "override"), (Mode.PRIVACY, "privacy-switch"), (Mode.AWAY, "override"),
                    (Mode.HOME, "schedule")]


def test_no_other_source_takes_the_hub_out_of_privacy_while_the_switch_is_on(tmp_path: Path) -> None:
    clock = FakeClock()
    write_switch(tmp_path, True, clock.wall())
    mc = ModeController(ALWAYS_HOME, tmp_path, clock)
    assert mc.current() is Mode.PRIVACY  # the schedule says home
    for mode in (Mode.HOME, Mode.AWAY, None):
        with pytest.raises(PrivacySwitchOn, match="privacy switch is on") as e:
            write_override(tmp_path, mode, "owner device abc", clock.wall())  # what MQTT calls
        assert e.value.exit_code == ExitCode.REFUSED
        with pytest.raises(PrivacySwitchOn):
            mc.set(mode, by="local")
    assert not state_file(tmp_path).exists()  # a refused change is not kept for later
    write_override(tmp_path, Mode.PRIVACY, "cli", clock.wall())  # privacy itself stays allowed
    clock.advance(1.0)
    assert mc.current() is Mode.PRIVACY
    # Even an override written behind write_override's back does not win.
    state_file(tmp_path).write_text('{"mode": "home"}')
    clock.advance(1.0)
    assert mc.current() is Mode.PRIVACY


@pytest.mark.parametrize("content", ["{not json", '{"engaged": "no"}', "[]", '{"engaged": 0}', "[" * 5000])
def test_unreadable_switch_state_means_privacy(tmp_path: Path, content: str) -> None:
    f = switch_file(tmp_path)
    f.parent.mkdir(parents=True)
    f.write_text(content)
    assert switch_engaged(tmp_path) is True
    assert ModeController(ALWAYS_HOME, tmp_path, FakeClock()).current() is Mode.PRIVACY
    with pytest.raises(PrivacySwitchOn):
        write_override(tmp_path, Mode.HOME, "cli", 0.0)
    with pytest.raises(AgentError):
        read_switch(tmp_path)  # `mode get` reports it


def test_no_switch_file_means_off(tmp_path: Path) -> None:
    assert switch_engaged(tmp_path) is False
    write_switch(tmp_path, False, 0.0)
    assert switch_engaged(tmp_path) is False
    write_override(tmp_path, Mode.HOME, "cli", 0.0)


def test_switch_off_clears_an_override_the_old_switch_wrote(tmp_path: Path) -> None:
    # Before the switch had its own file it wrote the override; a hub upgraded with the switch
    # on must not stay in privacy once it is turned off.
    f = state_file(tmp_path)
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps({"mode": "privacy", "by": "privacy-switch", "set_at_wall_s": 1.0}))
    write_switch(tmp_path, False, 2.0)
    assert read_override(tmp_path) is None
    write_override(tmp_path, Mode.PRIVACY, "cli", 3.0)  # somebody else's override is left alone
    write_switch(tmp_path, False, 4.0)
    assert read_override(tmp_path) is Mode.PRIVACY
