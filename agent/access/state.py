"""The hub's access state on disk: the last counter seen from every owner device.

The counters are what keeps a recorded decision or mode change from replaying, also after a
restart. Losing them would silently re-open every old message, so:
- the file is created when the first roster is installed (`init_state`), before the roster;
- once a roster is installed, a missing or unreadable file is a fail-closed refusal to start
  (`AccessStateError`), never "no counters";
- the one way back is `privacy-agent keys reset-access-state`, which sets a FLOOR of the current
  time in milliseconds: owner tools use `max(last + 1, now_ms)` as their counter, so every message
  signed before the reset stays refused and every new one passes. The reset is audited.
Writes are atomic and fsynced, mode 0600, and happen before the change they allow is applied
(record, then act).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from agent.errors import AccessStateError
from agent.fsutil import atomic_write
from agent.jsonlimits import loads_bounded

STATE_DIRNAME = "mqtt"
STATE_FILE = "access-state.json"
_FORMAT = "epa1-access-state"
_MAX_BYTES = 1 << 20


def state_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / STATE_DIRNAME / STATE_FILE


@dataclass(frozen=True, slots=True)
class Counters:
    by_device: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    floor: int = 0


def load_state(path: Path, *, roster_installed: bool) -> Counters:
    """The stored counters. Missing: empty only while no roster is installed (nothing to replay)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if not roster_installed:
            return Counters()
        raise AccessStateError(
            f"access state {path} is missing although a roster is installed: the counters that stop old "
            "decisions and mode changes from replaying are lost. Refusing to start. If you know why it "
            f"is gone, run: privacy-agent keys reset-access-state --data {path.parent.parent}"
        ) from None
    except OSError as e:
        raise AccessStateError(f"access state {path} is unreadable ({e.strerror}); refusing to start") from None
    try:
        doc = loads_bounded(raw, max_bytes=_MAX_BYTES, max_depth=4, what=str(path))
        if not isinstance(doc, dict) or doc.get("format", _FORMAT) != _FORMAT:
            raise ValueError("not an access state file")
        counters = doc["counters"]
        floor = doc.get("floor", 0)
        if not isinstance(counters, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in counters.items()
        ):
            raise ValueError("counters must map key ids to integers")
        if not isinstance(floor, int) or isinstance(floor, bool) or floor < 0:
            raise ValueError("floor must be a non-negative integer")
    except (ValueError, KeyError, TypeError) as e:
        raise AccessStateError(
            f"access state {path} is unreadable ({e}); refusing to start (losing the counters would let "
            f"old decisions replay). See: privacy-agent keys reset-access-state --data {path.parent.parent}"
        ) from None
    return Counters(MappingProxyType(dict(counters)), floor)


def save_state(path: Path, counters: Counters) -> None:
    doc = {"format": _FORMAT, "counters": dict(sorted(counters.by_device.items())), "floor": counters.floor}
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, json.dumps(doc, sort_keys=True).encode() + b"\n", 0o600)
    except OSError as e:
        raise AccessStateError(f"cannot write access state {path}: {e.strerror}") from None


def init_state(data_dir: str | Path) -> bool:
    """Create an empty state file if there is none (before the first roster is installed)."""
    p = state_path(data_dir)
    if p.exists():
        return False
    save_state(p, Counters())
    return True


def reset_state(data_dir: str | Path, now_ms: int) -> Counters:
    """Replace lost or damaged counters by a floor of `now_ms` (see the module docstring)."""
    c = Counters(MappingProxyType({}), now_ms)
    save_state(state_path(data_dir), c)
    return c
