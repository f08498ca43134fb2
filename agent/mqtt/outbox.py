"""Durable, ordered event outbox for MQTT (SQLite).

An event is committed to `DATA/mqtt/outbox.sqlite` before `put` returns, so
it survives a broker outage and an agent restart (kill -9 included: SQLite
WAL with `synchronous=NORMAL` loses nothing on a process crash; on power loss
the last few events may be lost but the file stays consistent).

Delivery:
- One pump thread publishes rows in `seq` order at QoS 1 and deletes a row
  only after the broker's PUBACK. paho keeps unacknowledged messages across
  reconnects and resends them in order; after a restart the pump starts again
  from the oldest row. So delivery is at-least-once and in order.
- Every event carries `id = "<stream>:<seq>"`, `stream` and `seq`. `stream` is
  random per outbox file and `seq` strictly increases (SQLite AUTOINCREMENT
  never reuses a number), so a consumer drops duplicates by remembering the
  highest `seq` per `stream` (`Deduper`).
- The outbox is bounded (`max_rows`). When full, the oldest rows are dropped
  and the next delivered event says how many (`dropped_total`), so a loss is
  never silent.

Deleting a clip (`purge_clip_events`) removes the events still queued that name it.

Invariant: event fields are JSON scalars, lists and objects: counts, names,
reasons. Never images, frames, keys or tokens.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agent.clock import Clock, SystemClock
from agent.errors import MqttError
from agent.fsutil import make_private_dirs
from agent.mqtt.client import MqttClient
from agent.storage.queue import SqliteQueue

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    body TEXT NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0
);
"""


class Outbox:
    """Durable FIFO of events. `put` from any thread; `attach` a client to start delivering."""

    def __init__(
        self,
        path: Path,
        clock: Clock | None = None,
        *,
        max_rows: int = 200_000,
        window: int = 100,
        retry_s: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self._clock = clock or SystemClock()
        self._max_rows = max_rows
        self._window = window
        self._retry_s = retry_s
        try:
            make_private_dirs(self.path.parent)
            # NORMAL: nothing is lost on a process crash; on power loss at most the last events.
            self._q = SqliteQueue(self.path, _SCHEMA, synchronous="NORMAL", sleep=self._clock.sleep)
            self.stream = self._q.meta_get("stream") or self._new_stream()
            self._dropped_total = int(self._q.meta_get("dropped_total") or 0)
            # Messages that could not be committed since the last one that could (disk full).
            self._unqueued = 0
            #: Such losses already counted in `dropped_total`, for the caller to record (audit).
            self.recovered_loss = 0
            self._rows = int(self._q.scalar("SELECT COUNT(*) FROM outbox"))
        except (OSError, sqlite3.Error) as e:
            raise MqttError(f"cannot open MQTT outbox {self.path}: {e}") from None
        self._cond = threading.Condition()
        self._acks: list[tuple[int, bool]] = []
        self._inflight: dict[int, int] = {}  # paho mid -> seq
        self._last_sent = 0
        self._sent_epoch = -1  # client.connect_count when the in-flight messages were sent
        self._closing = False
        self._client: MqttClient | None = None
        self._thread: threading.Thread | None = None
        self.delivered = 0

    # --- storage --------------------------------------------------------------

    def _new_stream(self) -> str:
        s = os.urandom(8).hex()
        self._q.meta_set("stream", s)
        return s

    def put(self, topic: str, body: Mapping[str, Any], retain: bool = False) -> str:
        """Commit one message; returns its id `<stream>:<seq>`. Safe from any thread.

        Raises MqttError when the database cannot take it (a full disk): the message is counted
        as lost and the count joins `dropped_total` with the next message that gets in, so the
        loss reaches every consumer as soon as space returns.
        """
        text = json.dumps(dict(body), sort_keys=True, separators=(",", ":"), allow_nan=False)

        def record(db: sqlite3.Connection) -> tuple[int, int, int]:
            # Retried as a whole by the queue core: in-memory counters change only after it commits.
            cur = db.execute("INSERT INTO outbox(topic, body, retain) VALUES(?, ?, ?)", (topic, text, int(retain)))
            seq = int(cur.lastrowid or 0)
            # Rows delivered meanwhile are deleted by the pump; this count is an upper bound
            # kept in memory (COUNT(*) on every put would scan the table).
            rows = self._rows + 1
            if rows > self._max_rows:
                rows = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            drop = max(0, rows - self._max_rows)
            if drop:
                db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (drop,))
            if drop or self._unqueued:
                self._q.meta_set("dropped_total", str(self._dropped_total + drop + self._unqueued))
            return seq, rows - drop, drop

        with self._q.lock:
            try:
                seq, self._rows, drop = self._q.write(record)
            except sqlite3.Error as e:
                self._unqueued += 1
                raise MqttError(f"cannot write MQTT outbox {self.path}: {e}") from None
            self._dropped_total += drop + self._unqueued
            if self._unqueued:
                log.warning("MQTT outbox %s works again; %d event(s) could not be queued meanwhile",
                            self.path, self._unqueued)
                self.recovered_loss += self._unqueued
                self._unqueued = 0
        if drop:
            log.error("MQTT outbox full (%d rows): dropped the %d oldest events", self._max_rows, drop)
        with self._cond:
            self._cond.notify_all()
        return f"{self.stream}:{seq}"

    def put_event(self, topic: str, kind: str, camera_id: str | None = None, **fields: Any) -> str:
        """An event for `P/events`: kind, camera, wall time and fields (no images, no keys)."""
        return self.put(
            topic,
            {"kind": kind, "camera": camera_id, "wall_s": round(self._clock.wall(), 3), "fields": fields},
        )

    def pending(self) -> int:
        return int(self._q.scalar("SELECT COUNT(*) FROM outbox"))

    def purge_clip_events(self, clip_ids: Iterable[str]) -> int:
        """Delete the events not yet delivered that name any of `clip_ids` (clips being deleted:
        retention, the owner's right to delete). Returns how many. Events already with the broker
        are not recalled. Raises MqttError when the database fails."""
        ids = [c for c in clip_ids if isinstance(c, str) and c]
        if not ids:
            return 0

        def purge(db: sqlite3.Connection) -> int:
            # Clip ids are 32 hex digits: a substring of the JSON body names exactly that clip.
            return sum(db.execute("DELETE FROM outbox WHERE instr(body, ?) > 0", (cid,)).rowcount for cid in ids)

        with self._q.lock:
            try:
                n = int(self._q.write(purge))
            except sqlite3.Error as e:
                raise MqttError(f"cannot remove deleted clips' events from MQTT outbox {self.path}: {e}") from None
            self._rows = max(0, self._rows - n)
        return n

    def _payload(self, seq: int, body_text: str) -> bytes:
        body = json.loads(body_text)
        body.update({"id": f"{self.stream}:{seq}", "stream": self.stream, "seq": seq})
        if self._dropped_total:
            body["dropped_total"] = self._dropped_total
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    # --- delivery -------------------------------------------------------------

    def attach(self, client: MqttClient) -> None:
        """Start delivering through `client` (its own reconnects are handled by paho)."""
        if self._thread is not None:
            raise MqttError("outbox is already attached to a client")
        self._client = client
        client.add_ack_listener(self._on_ack)
        client.add_connect_hook(self._wake)
        self._thread = threading.Thread(target=self._pump, name="mqtt-outbox", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _on_ack(self, mid: int, refused: bool) -> None:
        # paho's network thread: only record and wake the pump, never block here.
        with self._cond:
            self._acks.append((mid, refused))
            self._cond.notify_all()

    def _pump(self) -> None:
        # The delivery thread must outlive a full disk: a database error is logged and retried,
        # never allowed to end the thread (nothing would be delivered for the rest of the run).
        while True:
            try:
                self._pump_until_closed()
                return
            except sqlite3.Error as e:
                log.error("MQTT outbox %s: %s; retrying in %.1f s", self.path, e, self._retry_s)
                with self._cond:
                    self._cond.wait(self._retry_s)

    def _pump_until_closed(self) -> None:
        client = self._client
        assert client is not None
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return
                    acks, self._acks = self._acks, []
                    if acks:
                        break
                    if self._may_send(client) and self._has_unsent():
                        break
                    self._cond.wait(0.5)
            if acks:
                self._handle_acks(acks)
            if self._may_send(client):
                self._send_some(client)

    def _may_send(self, client: MqttClient) -> bool:
        if not client.connected or len(self._inflight) >= self._window:
            return False
        # After a reconnect paho first resends what was in flight. A new message published
        # before those are acknowledged could overtake them, so wait until they are.
        return not (self._inflight and client.connect_count != self._sent_epoch)

    def _has_unsent(self) -> bool:
        return self._q.scalar("SELECT 1 FROM outbox WHERE seq > ? LIMIT 1", (self._last_sent,)) is not None

    def _send_some(self, client: MqttClient) -> None:
        room = self._window - len(self._inflight)
        rows = self._q.rows(
            "SELECT seq, topic, body, retain FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (self._last_sent, room)
        )
        for seq, topic, body, retain in rows:
            try:
                info = client.publish(topic, self._payload(int(seq), str(body)), qos=1, retain=bool(retain))
            except MqttError as e:
                log.error("outbox: %s; will retry", e)
                with self._cond:
                    self._cond.wait(self._retry_s)
                return
            self._inflight[info.mid] = int(seq)
            self._last_sent = int(seq)
            self._sent_epoch = client.connect_count

    def _handle_acks(self, acks: list[tuple[int, bool]]) -> None:
        done: list[int] = []
        refused_seq: int | None = None
        for mid, refused in acks:
            seq = self._inflight.pop(mid, None)
            if seq is None:
                continue  # not ours (another publisher on the same client)
            if refused:
                refused_seq = seq if refused_seq is None else min(refused_seq, seq)
            else:
                done.append(seq)
        if done:
            # If this fails the rows stay and are delivered again after a restart (at least once).
            self._q.write(lambda db: db.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for s in done]))
            self.delivered += len(done)
            with self._q.lock:
                self._rows = max(0, self._rows - len(done))
        if refused_seq is not None:
            # Keep the row and send again from it later: a refusal (ACL) is a setup error the
            # installer must see, not a reason to lose the event.
            log.error("outbox: broker refused event seq %d; retrying in %.1f s", refused_seq, self._retry_s)
            self._last_sent = min(self._last_sent, refused_seq - 1)
            with self._cond:
                self._cond.wait(self._retry_s)
        with self._cond:
            self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Wait (real time) until every committed event was acknowledged. True if empty."""
        import time

        deadline = time.monotonic() + timeout_s
        while self.pending() > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._cond:
                self._cond.wait(min(left, 0.05))
        return True

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._q.close()


class Deduper:
    """Consumer side: accept each event once, using `stream` and `seq`."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def accept(self, event: Mapping[str, Any]) -> bool:
        stream, seq = event.get("stream"), event.get("seq")
        if not isinstance(stream, str) or not isinstance(seq, int):
            return False
        if seq <= self._last.get(stream, 0):
            return False
        self._last[stream] = seq
        return True
