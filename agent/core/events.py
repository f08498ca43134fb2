"""Event recording: a JSON-lines file, the log, and subscribers (MQTT, the audit log).

Invariants:
- Events carry no image data, keys or tokens; `Event.details` is for counts, reasons and names.
- Memory is bounded: only the most recent events are kept in memory (`keep`), with a total and
  a count per kind; a hub that runs for months does not grow with its event history.
- No loss is silent. When the event file cannot be written (a full disk), every event that
  could not be written is counted; the file is tried again at every event, and the first line
  that gets through is preceded by an `events_lost` event with the count, which subscribers
  receive too. A line cut short by the failure is cut off before anything is appended.
- The file is bounded: when the next write would take it past `max_bytes` it is rotated to
  `events.jsonl.1` (and `.1` to `.2`, ..., the oldest beyond `backups` dropped), so a hub that
  runs for years keeps at most `(backups + 1) * max_bytes` of events. Each step is one atomic
  rename, so a crash mid-rotation leaves at worst a gap in the numbering, never a lost or torn
  line; a rotation that fails is logged and the event is written to the current file anyway
  (an event is never dropped for the sake of the bound). Rotated files keep their 0600 mode.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

from agent.core.datatypes import Event
from agent.fsutil import open_private_append

log = logging.getLogger(__name__)

EventCallback = Callable[[Event], None]


def emit_safely(on_event: EventCallback | None, ev: Event) -> None:
    """Hand `ev` to a subscriber. A subscriber that fails is logged, never raised: reporting must
    not stop a camera (its frames still fail closed by their own rules)."""
    if on_event is None:
        return
    try:
        on_event(ev)
    except Exception as e:  # noqa: BLE001 - the reporting boundary
        log.error("camera %s: event sink failed for %s (the event could not be delivered): %s", ev.camera_id, ev.kind, e)

# Expected in normal operation: logged at INFO (they are all in the event file anyway).
_ROUTINE = {"info", "source_ended", "segment_written", "released", "withheld", "clip_sealed", "clip_uploaded",
            "clip_stream_started", "encoder_selected",
            "decode_recovered", "mode_changed"}

#: Events kept in memory by default (about 300 bytes each).
DEFAULT_KEEP = 2000

#: Size at which events.jsonl is rotated, and how many rotated files are kept: 8 MiB is some
#: 25,000 events (weeks of a busy camera), and 4 files in all stay small next to the clips on an
#: SD card while keeping months of history for `verify` and the installer.
DEFAULT_MAX_BYTES = 8 << 20
DEFAULT_BACKUPS = 3


class EventLog:
    """Keeps recent events in memory, appends every event to a file, and fans out to subscribers."""

    def __init__(self, path: Path | None = None, *, keep: int = DEFAULT_KEEP, max_bytes: int = DEFAULT_MAX_BYTES,
                 backups: int = DEFAULT_BACKUPS) -> None:
        if max_bytes <= 0 or backups < 1:
            raise ValueError("max_bytes must be positive and backups at least 1")
        self.events: deque[Event] = deque(maxlen=keep)
        self._max_bytes = max_bytes
        self._backups = backups
        self.total = 0
        self.counts: Counter[str] = Counter()
        self._path = path
        self._lock = threading.Lock()
        self._subscribers: list[EventCallback] = []
        self._unwritten = 0  # events that could not be written to the file since the last success
        # Size of the file after the last complete write: a failed write may leave part of a line
        # behind, which is cut off before the next write so every line stays valid JSON.
        self._good_size: int | None = None
        if path is not None:
            try:
                self._good_size = path.stat().st_size
            except OSError:
                self._good_size = 0 if not path.exists() else None

    def subscribe(self, cb: EventCallback) -> None:
        self._subscribers.append(cb)

    def __call__(self, ev: Event) -> None:
        level = logging.INFO if ev.kind in _ROUTINE else logging.WARNING
        log.log(level, "[%s] %s: %s", ev.camera_id or "-", ev.kind, ev.message)
        with self._lock:
            self._remember(ev)
            lost = self._append(ev) if self._path is not None else None
        for cb in self._subscribers:
            cb(ev)
        if lost is not None:
            # After the event itself, so subscribers see the outage reported once, in order.
            for cb in self._subscribers:
                cb(lost)

    def _remember(self, ev: Event) -> None:
        self.events.append(ev)
        self.total += 1
        self.counts[ev.kind] += 1

    def _append(self, ev: Event) -> Event | None:
        """Write one event; returns the `events_lost` event when this write ended an outage."""
        assert self._path is not None
        lost: Event | None = None
        lines = []
        if self._unwritten:
            lost = Event("events_lost", None,
                         f"{self._unwritten} event(s) could not be written to {self._path} (disk full or "
                         "unwritable); the event log resumed", ev.monotonic_s, {"count": self._unwritten})
            lines.append(json.dumps(lost.to_json()))
        lines.append(json.dumps(ev.to_json()))
        data = "\n".join(lines) + "\n"
        self._rotate_if_full(len(data.encode()))
        try:
            with open_private_append(self._path) as f:  # 0600: events name cameras, zones and times
                if self._unwritten and self._good_size is not None and f.tell() > self._good_size:
                    f.truncate(self._good_size)
                f.write(data)
                f.flush()
                self._good_size = f.tell()
        except OSError as e:
            if not self._unwritten:
                log.error("cannot write event log %s: %s; counting the events until it works again", self._path, e)
            self._unwritten += 1
            return None
        if lost is not None:
            log.warning("event log %s works again; %d event(s) were lost meanwhile", self._path, self._unwritten)
            self._remember(lost)
        self._unwritten = 0
        return lost

    def _rotate_if_full(self, adding: int) -> None:
        """Rotate before a write that would take the file past `max_bytes` (never an empty file:
        one line larger than the bound still goes in, alone)."""
        assert self._path is not None
        try:
            # The file's own size, not the one remembered: another writer may have cut it.
            size = self._path.stat().st_size
        except OSError:
            return  # the write below fails or creates it; either way there is nothing to rotate
        if size == 0 or size + adding <= self._max_bytes:
            return
        try:
            # Oldest first: each rename is atomic, so a crash between two leaves a gap, never a loss.
            for i in range(self._backups - 1, 0, -1):
                older = self._rotated(i)
                if older.exists():
                    os.replace(older, self._rotated(i + 1))
            if self._unwritten and self._good_size is not None:
                # Cut a line torn by the failed write off before the file is closed for good.
                os.truncate(self._path, self._good_size)
            os.replace(self._path, self._rotated(1))
        except OSError as e:
            log.error("cannot rotate event log %s (%s); writing on into it", self._path, e)
            return
        self._good_size = 0

    def _rotated(self, i: int) -> Path:
        assert self._path is not None
        return self._path.with_name(f"{self._path.name}.{i}")

    def kinds(self) -> list[str]:
        """Kinds of the events kept in memory, oldest first."""
        return [e.kind for e in self.events]

