"""Event recording: a JSON-lines file plus the log (and, later, MQTT).

Invariant: events carry no image data, keys or tokens; `Event.details` is
for counts, reasons and names only.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from agent.core.datatypes import Event

log = logging.getLogger(__name__)

EventCallback = Callable[[Event], None]

# Expected in normal operation: logged at INFO (they are all in the event file anyway).
_ROUTINE = {"info", "source_ended", "segment_written", "released", "withheld", "clip_sealed", "clip_uploaded"}


class EventLog:
    """Collects events in memory, appends them to a file, and fans out to subscribers."""

    def __init__(self, path: Path | None = None) -> None:
        self.events: list[Event] = []
        self._path = path
        self._lock = threading.Lock()
        self._subscribers: list[EventCallback] = []
        self._file_failed = False

    def subscribe(self, cb: EventCallback) -> None:
        self._subscribers.append(cb)

    def __call__(self, ev: Event) -> None:
        level = logging.INFO if ev.kind in _ROUTINE else logging.WARNING
        log.log(level, "[%s] %s: %s", ev.camera_id or "-", ev.kind, ev.message)
        with self._lock:
            self.events.append(ev)
            if self._path is not None and not self._file_failed:
                try:
                    with self._path.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(ev.to_json()) + "\n")
                except OSError as e:
                    self._file_failed = True
                    log.error("cannot write event log %s: %s", self._path, e)
        for cb in self._subscribers:
            cb(ev)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]
