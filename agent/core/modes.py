"""Household mode: schedule plus a manual override kept in the data directory.

Invariants:
- The mode is runtime state, so it lives in `data_dir/state/mode.json`,
  never in the config.
- A manual override wins over the schedule until it is cleared (`auto`).
- An unreadable or malformed state file means `privacy` (fail closed) and a
  warning, not a crash and not the permissive default.
- `scheduled_mode` is pure; `ModeController` reads the state file at most
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
from agent.errors import AgentError
from agent.fsutil import atomic_write
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


def state_file(data_dir: Path) -> Path:
    return data_dir / "state" / "mode.json"


def write_override(data_dir: Path, mode: Mode | None, by: str, wall_s: float) -> None:
    """Set (or with None, clear) the manual mode override. Atomic replace."""
    f = state_file(data_dir)
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        if mode is None:
            f.unlink(missing_ok=True)
            return
        atomic_write(f, json.dumps({"mode": str(mode), "by": by, "set_at_wall_s": wall_s}).encode(), 0o644)
    except OSError as e:
        raise AgentError(f"cannot write mode state {f}: {e}") from e


def read_override(data_dir: Path) -> Mode | None:
    """The manual override, None if none. Raises AgentError if the file is unreadable."""
    f = state_file(data_dir)
    try:
        raw = f.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise AgentError(f"cannot read mode state {f}: {e}") from e
    try:
        return Mode(json.loads(raw)["mode"])
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
                if self._data_dir is not None:
                    try:
                        self._override = read_override(self._data_dir)
                    except AgentError as e:
                        log.warning("%s; using privacy mode until it is fixed", e)
                        self._override = Mode.PRIVACY
                before = self._cached
                if self._override is not None:
                    self._cached, why = self._override, "override"
                else:
                    local = dt.datetime.fromtimestamp(self._clock.wall())
                    self._cached, why = scheduled_mode(self._cfg, local), "schedule"
                if self._cached is not before and self._on_change is not None:
                    # Reported (and audited) on every change, the first decision included.
                    self._on_change(self._cached, why)
            assert self._cached is not None
            return self._cached
