"""Which key each recipient device gets for a clip: its EPOCH key for the clip's start time.

`EpochKeyring` (one per camera) reads the epoch lists installed on the hub
(`DATA/keys/epochs/`, verified against the installed roster by `load_epoch_lists`), reloading
them when the files change, and maps each recipient device to
`EpochRecipient(device, epoch, key)` for a wall time.

A device without an epoch key for that time (its list ran out, or it never published one)
follows `retention.missing_epoch_key`:
- `longterm`: the clip key is wrapped to the device's long-term key (`EpochRecipient(device)`),
  with an `epoch_key_missing` event once per camera and device per run: such clips cannot be made
  unopenable by shredding an epoch key;
- `withhold` (fail closed): nothing is sealed. `hold_reason()` tells the pipeline to withhold the
  camera's frames (reason `epoch_key_missing`), and `recipients()` raises `EpochKeyMissing` (a
  SinkError) should a frame get through anyway; an `epoch_key_missing` event each time a device
  starts lacking a key. Frames flow again once a list with a key for now is installed.

`epoch_horizon_near` (device, days left) warns when a recipient's list runs out within
`retention.epoch_warn_days`: checked at each segment start, at most once an hour per device.

Thread safety: the pipeline's main thread asks `hold_reason()` for every frame, the sink thread
calls `recipients()` at a segment start; both run under one lock, and the files are stat()ed at
most every `recheck_s` seconds for `hold_reason()`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.clock import Clock
from agent.config import EpochKeySettings, MissingEpochKey
from agent.core.datatypes import Event
from agent.core.events import EventCallback, emit_safely
from agent.crypto.keys import (
    ROSTER_FILE,
    DevicePublic,
    EpochList,
    EpochRecipient,
    Roster,
    days_left,
    epochs_dir,
    keys_dir,
    load_epoch_lists,
    load_roster,
)
from agent.errors import AgentError, SinkError

log = logging.getLogger(__name__)

HOLD_REASON = "epoch_key_missing"
#: Seconds between two `epoch_horizon_near` events for one device.
HORIZON_EVENT_EVERY_S = 3600.0
DAY_S = 86_400.0


class EpochKeyMissing(SinkError):
    """`retention.missing_epoch_key: withhold` and a recipient has no epoch key for a clip."""


class EpochKeyring:
    def __init__(
        self,
        data_dir: Path,
        camera_id: str,
        settings: EpochKeySettings,
        clock: Clock,
        on_event: EventCallback | None = None,
        *,
        roster_loader: Callable[[], Roster | None] | None = None,
        recheck_s: float = 2.0,
    ) -> None:
        self._data_dir = Path(data_dir)
        self._camera_id = camera_id
        self.missing: MissingEpochKey = settings.missing_epoch_key
        self._warn_s = settings.epoch_warn_days * DAY_S
        self._clock = clock
        self._on_event = on_event
        self._roster_loader = roster_loader or (lambda: load_roster(self._data_dir))
        self._recheck_s = recheck_s
        self._lock = threading.Lock()
        self._stamp: tuple[object, ...] | None = None
        self._lists: dict[str, EpochList] = {}
        self._checked_mono: float | None = None
        self._hold: str | None = None
        self._hold_wall_s: float | None = None
        self._reported_longterm: set[str] = set()
        self._withholding: set[str] = set()
        self._horizon_warned: dict[str, float] = {}

    # --- the installed lists ------------------------------------------------------------

    def _file_stamp(self) -> tuple[object, ...]:
        """What changes when a list or the roster is installed (atomic renames: new inode)."""
        out: list[object] = []
        paths = [keys_dir(self._data_dir) / ROSTER_FILE]
        try:
            paths += sorted(epochs_dir(self._data_dir).glob("*.json"))
        except OSError:
            pass
        for p in paths:
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((p.name, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _refresh(self) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            roster = self._roster_loader()
        except AgentError as e:
            # Fail towards the setting: no verified list means no epoch key.
            log.error("camera %s: cannot read the roster for epoch keys: %s", self._camera_id, e)
            roster = None
        self._lists = load_epoch_lists(self._data_dir, roster)
        self._stamp = stamp

    def lists(self) -> dict[str, EpochList]:
        with self._lock:
            self._refresh()
            return dict(self._lists)

    # --- events -------------------------------------------------------------------------

    def _event(self, kind: str, message: str, **details: object) -> None:
        emit_safely(self._on_event, Event(kind, self._camera_id, message, self._clock.monotonic(), details))

    def _missing(self, device: DevicePublic, wall_s: float) -> None:
        lst = self._lists.get(device.key_id)
        if lst is None:
            why = "has no installed epoch key list"
        elif wall_s >= lst.horizon_end_s:
            why = f"has no epoch key for now: its list ran out {-(days_left(lst, wall_s) or 0.0):.1f} days ago"
        else:
            why = "has no epoch key for now: its list starts later"
        if self.missing == "longterm":
            if device.key_id in self._reported_longterm:
                return
            self._reported_longterm.add(device.key_id)
            self._event("epoch_key_missing",
                        f"device {device.key_id} ({device.name}) {why}: clips are sealed to its long-term key and "
                        "cannot be made unopenable by `owner shred`; publish a new list "
                        "(`privacy-agent owner epochs publish`)", device=device.key_id, policy="longterm")
        elif device.key_id not in self._withholding:
            self._withholding.add(device.key_id)
            self._event("epoch_key_missing",
                        f"device {device.key_id} ({device.name}) {why}: frames are withheld "
                        "(retention.missing_epoch_key: withhold) until it publishes a new list "
                        "(`privacy-agent owner epochs publish`)", device=device.key_id, policy="withhold")

    def _horizon(self, device: DevicePublic, lst: EpochList, wall_s: float) -> None:
        left = lst.horizon_end_s - wall_s
        if self._warn_s <= 0 or left > self._warn_s:
            return
        now = self._clock.monotonic()
        last = self._horizon_warned.get(device.key_id)
        if last is not None and now - last < HORIZON_EVENT_EVERY_S:
            return
        self._horizon_warned[device.key_id] = now
        days = round(left / DAY_S, 2)
        self._event("epoch_horizon_near",
                    f"the epoch keys of device {device.key_id} ({device.name}) run out in {days:g} days; "
                    "publish a new list (`privacy-agent owner epochs generate` and `publish`)",
                    device=device.key_id, days_left=days)

    # --- what the sink and the pipeline ask ----------------------------------------------

    def recipients(self, devices: Sequence[DevicePublic], wall_s: float) -> tuple[EpochRecipient, ...]:
        """The recipients of a clip starting at `wall_s`. Raises EpochKeyMissing (withhold)."""
        with self._lock:
            self._refresh()
            out: list[EpochRecipient] = []
            lacking: list[str] = []
            for d in devices:
                lst = self._lists.get(d.key_id)
                found = lst.key_for(wall_s) if lst is not None else None
                if found is None:
                    self._missing(d, wall_s)
                    lacking.append(d.key_id)
                    out.append(EpochRecipient(d))
                    continue
                self._withholding.discard(d.key_id)
                assert lst is not None
                self._horizon(d, lst, wall_s)
                out.append(EpochRecipient(d, found[0], found[1]))
            if lacking and self.missing == "withhold":
                raise EpochKeyMissing(f"camera {self._camera_id}: no epoch key for device(s) {', '.join(lacking)} "
                                      "at this time and retention.missing_epoch_key is withhold: nothing is sealed")
            return tuple(out)

    def hold_reason(self, devices: Sequence[DevicePublic]) -> str | None:
        """`epoch_key_missing` while frames must be withheld (setting `withhold` and a device
        without a key for now), else None. Cheap: rechecked every `recheck_s` seconds."""
        if self.missing != "withhold":
            return None
        with self._lock:
            now = self._clock.monotonic()
            wall = self._clock.wall()
            if (self._checked_mono is not None and now - self._checked_mono < self._recheck_s
                    and self._hold_wall_s is not None and abs(wall - self._hold_wall_s) < self._recheck_s):
                return self._hold
            self._checked_mono, self._hold_wall_s = now, wall
            try:
                self._refresh()
            except AgentError as e:  # fail closed: lists we cannot read are no keys
                log.error("camera %s: cannot read the epoch lists: %s", self._camera_id, e)
                self._lists = {}
            hold = None
            for d in devices:
                lst = self._lists.get(d.key_id)
                if lst is None or lst.key_for(wall) is None:
                    self._missing(d, wall)
                    hold = HOLD_REASON
                else:
                    self._withholding.discard(d.key_id)
            self._hold = hold
            return hold
