"""Reports about clips: written in the outbox's own transactions, handed to the event log after.

What happens to a clip (sealed, uploaded, rejected, vanished) is inserted into `reports` in the
same transaction as the change itself, then handed to `on_event` (and so to `events.jsonl` and
the audit log) and deleted. A report whose process died before handing it on is handed on by
the next process that opens the outbox with an `on_event`, so every path that seals or delivers
a clip records it, a later `outbox flush` included. Delivery is at least once.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from typing import Any

from agent.clock import Clock
from agent.core.datatypes import Event
from agent.core.events import EventCallback
from agent.storage.queue import SqliteQueue

log = logging.getLogger(__name__)

REPORTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    camera_id TEXT,
    message TEXT NOT NULL,
    details TEXT NOT NULL
);
"""

# One hand-over at a time in this process: several outboxes (one per clip sink) share the
# database, and a report must reach `on_event` once per hand-over.
_hand_over_lock = threading.Lock()


def queue_report(db: sqlite3.Connection, kind: str, camera_id: str | None, message: str, **details: Any) -> None:
    """Queue an event about a clip inside the caller's transaction (handed on after commit)."""
    db.execute(
        "INSERT INTO reports(kind, camera_id, message, details) VALUES (?,?,?,?)",
        (kind, camera_id, message, json.dumps(details, sort_keys=True)),
    )


def hand_over(q: SqliteQueue, on_event: EventCallback | None, clock: Clock) -> int:
    """Give queued reports to `on_event`, oldest first, and forget them. Returns how many.

    Without an `on_event` they wait for a process that has one (at least once: a report
    handed over just before a crash may be handed over again).
    """
    if on_event is None:
        return 0
    n = 0
    with _hand_over_lock:
        try:
            rows = q.rows("SELECT id, kind, camera_id, message, details FROM reports ORDER BY id")
        except sqlite3.Error as e:
            log.error("outbox: cannot read queued clip reports: %s", e)
            return 0
        for rid, kind, camera_id, message, details in rows:
            try:
                fields = json.loads(details)
            except ValueError:
                fields = {}
            on_event(Event(str(kind), camera_id, str(message), clock.monotonic(), fields))
            try:
                q.execute("DELETE FROM reports WHERE id=?", (rid,))
            except sqlite3.Error as e:
                # It stays queued and is handed over again later: at least once.
                log.error("outbox: cannot clear a handed-over clip report: %s", e)
                break
            n += 1
    return n
