"""Household mode: the physical privacy switch, a manual override and the schedule.

Invariants:
- The mode is runtime state, so it lives in `data_dir/state/`, never in the config: the
  override in `mode.json`, the physical privacy switch in `privacy-switch.json` (its own
  file, written only by the firmware hook).
- The privacy switch wins over every other source: while it is on, the mode is `privacy`
  whatever the override or the schedule say, and `write_override` refuses any other mode
  (`PrivacySwitchOn`), from the CLI and MQTT alike. Turning it off hands the mode back to the
  override, or the schedule, exactly as they stood.
- A manual override wins over the schedule until it is cleared (`auto`).
- An unreadable or malformed state file means `privacy` (fail closed) and a
  warning, not a crash and not the permissive default. For the switch file that
  includes `switch_engaged`, which never raises.
- `scheduled_mode` is pure; `ModeController` reads the state files at most
  once per second on the injected clock.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from agent.clock import Clock, SystemClock
from agent.config import ModesConfig
from agent.errors import AgentError, JsonLimitError, PrivacySwitchOn
from agent.fsutil import PRIVATE_FILE_MODE, atomic_write, make_private_dirs
from agent.jsonlimits import loads_bounded
from agent.vocab import Mode

log = logging.getLogger(__name__)

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def scheduled_mode(cfg: ModesConfig, now: dt.datetime) -> Mode:
    """The mode the schedule picks at local time `now` (first matching window wins)."""
    minute = now.hour * 60 + now.minute
    today = _DAYS[now.weekday()]
    yesterday = _DAYS[(now.weekday() - 1) % 7]
    for e in cfg.schedule:
        start, end = _minutes(e.start), _minutes(e.end)
        if start <= end:
            if today in e.days and start <= minute < end:
                return e.mode
        else:  # spans midnight: the part after midnight belongs to the previous day's window
            if (today in e.days and minute >= start) or (yesterday in e.days and minute < end):
                return e.mode
    return cfg.default


#: Who wrote an override before the switch had its own file: `write_switch(False)` clears such a
#: leftover, so a hub upgraded with its switch on does not stay in privacy once it is turned off.
SWITCH_BY = "privacy-switch"

# The state files are a few dozen bytes of our own JSON; anything bigger is not ours.
_STATE_MAX_BYTES = 4096


def state_file(data_dir: Path) -> Path:
    return data_dir / "state" / "mode.json"


def switch_file(data_dir: Path) -> Path:
    return data_dir / "state" / "privacy-switch.json"


def _read_state(f: Path, what: str) -> object | None:
    """The JSON in a state file; None if there is none. Raises AgentError if it is unreadable."""
    try:
        raw = f.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise AgentError(f"cannot read {what} {f}: {e.strerror or e}") from e
    try:
        return loads_bounded(raw, max_bytes=_STATE_MAX_BYTES, max_depth=4, what=f"{what} {f}")
    except JsonLimitError as e:
        raise AgentError(str(e)) from e
    except ValueError as e:
        raise AgentError(f"{what} {f} is malformed: {e}") from e


def write_switch(data_dir: Path, engaged: bool, wall_s: float) -> None:
    """Record the physical privacy switch's position (atomic replace, 0600).

    Only the switch's own hook calls this. Turning it off leaves the override alone (it applies
    again), except an override the switch itself wrote before it had this file.
    """
    f = switch_file(data_dir)
    try:
        make_private_dirs(f.parent)
        atomic_write(f, json.dumps({"engaged": engaged, "by": SWITCH_BY, "set_at_wall_s": wall_s}).encode(),
                     PRIVATE_FILE_MODE)
    except OSError as e:
        raise AgentError(f"cannot write privacy switch state {f}: {e.strerror or e}") from e
    if not engaged:
        try:
            doc = _read_state(state_file(data_dir), "mode state")
        except AgentError:
            return  # an unreadable override means privacy anyway; `mode set` replaces it
        if isinstance(doc, dict) and doc.get("by") == SWITCH_BY:
            state_file(data_dir).unlink(missing_ok=True)


def read_switch(data_dir: Path) -> bool:
    """Whether the privacy switch is on (no file: off). Raises AgentError if the file is unreadable."""
    f = switch_file(data_dir)
    doc = _read_state(f, "privacy switch state")
    if doc is None:
        return False
    if not isinstance(doc, dict) or not isinstance(doc.get("engaged"), bool):
        raise AgentError(f'privacy switch state {f} is malformed: expected {{"engaged": true|false}}')
    return bool(doc["engaged"])


def switch_engaged(data_dir: Path) -> bool:
    """Whether the privacy switch holds the hub in privacy mode. Never raises: a switch state
    that cannot be read counts as on (fail closed)."""
    try:
        return read_switch(data_dir)
    except AgentError as e:  # read_switch turns every OSError and ValueError into one
        log.warning("%s; treating the privacy switch as on", e)
        return True


def write_override(data_dir: Path, mode: Mode | None, by: str, wall_s: float) -> None:
    """Set (or with None, clear) the manual mode override. Atomic replace.

    Raises `PrivacySwitchOn` (exit code REFUSED) for anything but `privacy` while the physical
    privacy switch is on: the switch wins, and a refused change is not kept for later.
    """
    if mode is not Mode.PRIVACY and switch_engaged(data_dir):
        asked = "auto (the schedule)" if mode is None else str(mode)
        raise PrivacySwitchOn(
            f"the physical privacy switch is on: the hub stays in privacy mode; mode {asked} "
            f"requested by {by} was refused (turn the switch off first)"
        )
    f = state_file(data_dir)
    try:
        make_private_dirs(f.parent)
        if mode is None:
            f.unlink(missing_ok=True)
            return
        atomic_write(f, json.dumps({"mode": str(mode), "by": by, "set_at_wall_s": wall_s}).encode(),
                     PRIVATE_FILE_MODE)
    except OSError as e:
        raise AgentError(f"cannot write mode state {f}: {e}") from e


def read_override(data_dir: Path) -> Mode | None:
    """The manual override, None if none. Raises AgentError if the file is unreadable."""
    f = state_file(data_dir)
    doc = _read_state(f, "mode state")
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise AgentError(f"mode state {f} is malformed: not a JSON object")
    try:
        return Mode(doc["mode"])
    except (ValueError, KeyError, TypeError) as e:
        raise AgentError(f"mode state {f} is malformed: {e}") from e


class ModeController:
    """Current mode for the pipeline; thread-safe; `set` is the small runtime interface MQTT drives later."""

    def __init__(self, cfg: ModesConfig, data_dir: Path | None, clock: Clock | None = None,
                 fixed: Mode | None = None, on_change: Callable[[Mode, str], None] | None = None) -> None:
        self._cfg = cfg
        self._data_dir = data_dir
        self._clock = clock or SystemClock()
        self._fixed = fixed
        self._lock = threading.Lock()
        self._cached: Mode | None = None
        self._checked_at: float | None = None
        self._override: Mode | None = None
        self._on_change = on_change

    def set(self, mode: Mode | None, by: str = "local") -> None:
        if self._data_dir is not None:
            write_override(self._data_dir, mode, by, self._clock.wall())
        with self._lock:
            self._override = mode
            self._checked_at = None
        log.info("mode override set to %s by %s", mode, by)

    def current(self) -> Mode:
        if self._fixed is not None:
            return self._fixed
        with self._lock:
            now = self._clock.monotonic()
            if self._checked_at is None or now - self._checked_at >= 1.0:
                self._checked_at = now
                switch = False
                if self._data_dir is not None:
                    switch = switch_engaged(self._data_dir)
                    try:
                        self._override = read_override(self._data_dir)
                    except AgentError as e:
                        log.warning("%s; using privacy mode until it is fixed", e)
                        self._override = Mode.PRIVACY
                before = self._cached
                if switch:
                    # The physical switch wins over the override and the schedule.
                    self._cached, why = Mode.PRIVACY, "privacy-switch"
                elif self._override is not None:
                    self._cached, why = self._override, "override"
                else:
                    local = dt.datetime.fromtimestamp(self._clock.wall())
                    self._cached, why = scheduled_mode(self._cfg, local), "schedule"
                if self._cached is not before and self._on_change is not None:
                    # Reported (and audited) on every change, the first decision included.
                    self._on_change(self._cached, why)
            assert self._cached is not None
            return self._cached
