"""The durable outbox: sealed clips wait here until every destination has them.

Layout under `DATA/outbox/`: `outbox.db` (SQLite, WAL, synchronous=FULL) and `clips/<stream>/`
holding sealed envelopes. Only envelopes (ciphertext) are ever stored here.

Crash safety (kill -9 at any instant loses nothing and duplicates nothing):
1. The sink streams the envelope into `clips/<stream>/<clip_id>.epaclip.part` and fsyncs it.
2. One transaction records the clip, one delivery row per destination, and the new chain head.
3. The `.part` file is renamed to `<clip_id>.epaclip` (and the directory fsynced).
Recovery on open: a `.part` with a row was complete (step 2 happened after its fsync), so it is
renamed; a `.part` without a row is an unfinished segment and is deleted (it is ciphertext);
an `.epaclip` without a row is a delivered clip whose unlink was cut short and is deleted.
Uploads are idempotent (same object name, same bytes), so a delivery repeated after a crash
between upload and bookkeeping leaves exactly one copy at the destination.

Retry: a failed delivery is retried with exponential backoff on the injected monotonic clock.
Monotonic time does not survive a restart, so recovery makes every pending delivery due again.
Before any upload the uploader's gate re-verifies the envelope against this hub's key; a clip that
fails is quarantined (`DATA/outbox/quarantine/`), never uploaded, and reported as an event. Only
a verdict on the clip's own bytes (`EnvelopeError`) quarantines: any failure at the destination
(a full disk, a missing NAS, a network error) is a delivery failure, retried.

The index: every clip this hub sealed keeps a row in `clip_index` (camera, sequence, size, when)
and one row per destination in `placements` once delivered there, after the queue rows are gone.
From it `check_placements` notices clips that were delivered and have since vanished from a
destination that can say so (a directory sink whose files were deleted) and reports each once,
and `list_clips` answers `clips list`. `start_wall_s`/`end_wall_s` (the clip's first frame and its
sealing, from the clip sink) came later: they are nullable, an older database gets them with
`ALTER TABLE ... ADD COLUMN` when opened for writing, and its older rows simply have no times.

Deletion (`agent.storage.deletion`: retention, the owner's right to delete) removes a clip's rows
and files here and at every destination; `delivery_lock` keeps a delivery in flight from
uploading a clip again after its deletion passed that destination.

One process at a time: an outbox opened for writing holds the data directory's lock
(`agent.storage.lock`) until it is closed, because recovery deletes `.part` files that have no
row, which is only safe when nobody else can be writing one. `exclusive=False` opens it read-only
(`outbox status` next to a running hub).

Reports: what happens to a clip (sealed, uploaded, rejected) is written to the `reports` table in
the same transaction as the change itself, then handed to `on_event` (and so to the event log and
the audit log) and deleted. A report whose process died before handing it on is handed on by the
next process that opens the outbox with an `on_event`, so every path that seals or delivers a
clip records it, a later `outbox flush` included. Delivery of reports is at least once.

Bookkeeping writes go through `SqliteQueue.write` (retried); when they still fail (disk full),
the caller gets a `SinkError`, never a raw database error, and the connection stays usable.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from agent.clock import Clock
from agent.core.datatypes import Event
from agent.core.events import EventCallback
from agent.crypto.envelope import ZERO_HASH, ClipInfo
from agent.errors import EnvelopeError, SinkError
from agent.fsutil import create_private, fsync_dir, make_private_dirs
from agent.storage import index, lock
from agent.storage.index import CLIP_SUFFIX, INDEX_SCHEMA, IndexedClip
from agent.storage.queue import SqliteQueue, backoff_s
from agent.storage.reports import REPORTS_SCHEMA, hand_over, queue_report

log = logging.getLogger(__name__)

OUTBOX_DIRNAME = "outbox"
#: Seconds between checks that delivered clips are still at their destination (a final flush
#: always checks).
PLACEMENT_CHECK_S = 300.0
PART_SUFFIX = CLIP_SUFFIX + ".part"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (
    clip_id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    object_name TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    camera_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    clip_id TEXT NOT NULL REFERENCES clips(clip_id),
    dest TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_due_mono REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (clip_id, dest)
);
CREATE TABLE IF NOT EXISTS chain (
    stream TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    clip_hash BLOB NOT NULL
);
""" + INDEX_SCHEMA + """
""" + REPORTS_SCHEMA



class Uploader(Protocol):
    """A destination. `put` must be idempotent and must gate (verify) the envelope first.

    A destination may also offer `present(object_names) -> set[str] | None` (which delivered clips
    are still there; None when it cannot tell right now), which lets the outbox notice vanished
    clips, and `delete(object_name) -> bool` (True: removed, False: already gone; SinkError when it
    cannot tell), which `agent.storage.deletion` needs to delete a clip there.
    """

    name: str

    def put(self, object_name: str, path: Path) -> None:
        """Store the file under `object_name`. Raises SinkError (retry) or EnvelopeError (refuse)."""


class ClipNotRecorded(SinkError):
    """The transaction that queues a sealed clip failed: the clip is not in the outbox."""


@dataclass(frozen=True, slots=True)
class DrainResult:
    uploaded: int
    failed: int
    rejected: int
    remaining: int


def object_name_for(info: ClipInfo) -> str:
    """Destination name: opaque stream id + sequence + clip id. No camera name, no time."""
    h = info.header
    return index.object_name(h.stream_id.hex(), h.seq, h.clip_id.hex())


# One lock per data directory in this process, shared by every Outbox on it: a delivery (upload
# and bookkeeping) and the local part of a deletion never interleave, so a clip being deleted is
# never uploaded again after its deletion passed that destination.
_delivery_locks: dict[Path, threading.RLock] = {}
_delivery_locks_guard = threading.Lock()


def _delivery_lock(data_dir: Path) -> threading.RLock:
    with _delivery_locks_guard:
        return _delivery_locks.setdefault(Path(data_dir).resolve(), threading.RLock())


class Outbox:
    """One connection to the outbox database. Thread-safe; one per clip sink is fine (WAL)."""

    def __init__(
        self,
        data_dir: Path,
        clock: Clock,
        on_event: EventCallback | None = None,
        *,
        backoff_base_s: float = 2.0,
        backoff_max_s: float = 600.0,
        exclusive: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / OUTBOX_DIRNAME
        self.clips_dir = self.root / "clips"
        self.quarantine_dir = self.root / "quarantine"
        self._clock = clock
        self._on_event = on_event
        self._base = backoff_base_s
        self._max = backoff_max_s
        self.exclusive = exclusive
        if exclusive:
            lock.acquire(self.data_dir, "outbox")  # raises DataDirBusy, naming the holder
        try:
            make_private_dirs(self.clips_dir)  # and DATA/outbox: mkdir(parents=True) left it 0755
            # FULL: a row stands for a sealed clip on disk, which must survive power loss.
            self._q = SqliteQueue(self.root / "outbox.db", _SCHEMA, synchronous="FULL", sleep=clock.sleep)
        except (OSError, sqlite3.Error) as e:
            if exclusive:
                lock.release(self.data_dir)
            raise SinkError(f"cannot open the outbox in {self.root}: {e}") from e
        if exclusive:
            # Only a writer migrates: a read-only `clips list` beside an older running hub must
            # not change the schema under it (`list_clips` copes with the columns missing).
            try:
                index.add_missing_columns(self._q)
            except sqlite3.Error as e:
                self._q.close()
                lock.release(self.data_dir)
                raise SinkError(f"cannot upgrade the outbox database in {self.root}: {e}") from e
        self._recovered: set[str] = set()
        #: Held around each delivery and by `agent.storage.deletion` while it removes a clip here.
        self.delivery_lock = _delivery_lock(self.data_dir)
        self._closed = False
        self._placements_checked_mono: float | None = None

    # --- events -----------------------------------------------------------------

    def _event(self, kind: str, camera_id: str | None, message: str, **details: object) -> None:
        if self._on_event is not None:
            self._on_event(Event(kind, camera_id, message, self._clock.monotonic(), details))

    def hand_over_reports(self) -> int:
        """Give queued reports to `on_event` (see `agent.storage.reports`). Returns how many."""
        return hand_over(self._q, self._on_event, self._clock)

    def _require_exclusive(self, what: str) -> None:
        # Recovery deletes files and every writer moves the chain: both need the data-dir lock.
        if not self.exclusive:
            raise SinkError(f"the outbox in {self.root} is open read-only: cannot {what}")

    def require_exclusive(self, what: str) -> None:
        """Raise SinkError unless this outbox holds the data-dir lock (deletion needs it too)."""
        self._require_exclusive(what)

    @property
    def queue(self) -> SqliteQueue:
        """The outbox database, for `agent.storage.deletion`, which writes in its transactions."""
        return self._q

    # --- sealing side -------------------------------------------------------------

    def stream_dir(self, stream: str) -> Path:
        return self.clips_dir / stream

    def chain_head(self, stream: str) -> tuple[int, bytes]:
        """(next sequence number, previous clip hash) for a stream; (0, zeros) for a new chain."""
        rows = self._q.rows("SELECT seq, clip_hash FROM chain WHERE stream=?", (stream,))
        row = rows[0] if rows else None
        if row is None:
            return 0, ZERO_HASH
        return int(row[0]) + 1, bytes(row[1])

    def open_part(self, stream: str, clip_id_hex: str) -> tuple[BinaryIO, Path]:
        self._require_exclusive("start a clip")
        d = self.stream_dir(stream)
        self.recover(stream)
        part = d / (clip_id_hex + PART_SUFFIX)
        try:
            make_private_dirs(d)
            fh = create_private(part)  # 0600, never over an existing file
        except OSError as e:
            raise SinkError(f"cannot create {part} in the outbox: {e.strerror or e}") from e
        return fh, part

    def discard_part(self, fh: BinaryIO, part: Path) -> None:
        try:
            fh.close()
        except OSError:
            pass  # the file is being thrown away; a close error changes nothing
        part.unlink(missing_ok=True)

    def commit(self, fh: BinaryIO, part: Path, info: ClipInfo, camera_id: str, dests: list[str], *,
               start_wall_s: float | None = None, end_wall_s: float | None = None, **details: Any) -> Path:
        """Make a finished envelope durable and queue it for every destination.

        `start_wall_s`/`end_wall_s` (wall time of the clip's first frame and of its end) go into
        the index for `clips list`. The `clip_sealed` report (with `details`) commits in the same
        transaction as the clip. `seal_part` then `record_part`; a clip that could not be
        recorded leaves no `.part` behind.
        """
        self.seal_part(fh, part, info.clip_id_hex)
        return self.record_part(part, info, camera_id, dests, start_wall_s=start_wall_s, end_wall_s=end_wall_s,
                                **details)

    def seal_part(self, fh: BinaryIO, part: Path, clip_id: str) -> None:
        """Flush, fsync and close a finished `.part`; on failure it is removed (SinkError)."""
        self._require_exclusive("commit a clip")
        try:
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        except OSError as e:
            self.discard_part(fh, part)
            raise SinkError(f"cannot write clip {clip_id} to the outbox ({part}): {e.strerror or e}") from e

    def record_part(self, part: Path, info: ClipInfo, camera_id: str, dests: list[str], *,
                    start_wall_s: float | None = None, end_wall_s: float | None = None,
                    keep_unrecorded: bool = False, **details: Any) -> Path:
        """Queue a sealed `.part` (one transaction), then rename it. `ClipNotRecorded` when the
        transaction failed: the `.part` is removed, or kept with `keep_unrecorded` (the clip sink
        makes room on a full disk and tries again). Any later failure is a plain SinkError and the
        `.part` must stay: its row is committed and recovery renames it."""
        self._require_exclusive("commit a clip")
        stream = info.header.stream_id.hex()
        clip_id = info.clip_id_hex
        final = part.with_name(index.local_name(clip_id))

        def record(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO clips(clip_id, stream, seq, object_name, size_bytes, camera_id) "
                "VALUES (?,?,?,?,?,?)",
                (clip_id, stream, info.header.seq, object_name_for(info), info.size_bytes, camera_id),
            )
            db.executemany("INSERT INTO deliveries(clip_id, dest) VALUES (?,?)", [(clip_id, d) for d in dests])
            db.execute(
                "INSERT INTO chain(stream, seq, clip_hash) VALUES (?,?,?) "
                "ON CONFLICT(stream) DO UPDATE SET seq=excluded.seq, clip_hash=excluded.clip_hash",
                (stream, info.header.seq, info.clip_hash),
            )
            db.execute(
                "INSERT OR IGNORE INTO clip_index(clip_id, stream, seq, camera_id, size_bytes, sealed_wall_s, "
                "start_wall_s, end_wall_s) VALUES (?,?,?,?,?,?,?,?)",
                (clip_id, stream, info.header.seq, camera_id, info.size_bytes, self._clock.wall(),
                 start_wall_s, end_wall_s),
            )
            queue_report(db, "clip_sealed", camera_id, "encrypted clip queued for upload",
                         clip_id=clip_id, seq=info.header.seq, bytes=info.size_bytes, **details)
            if info.header.seq == 0:
                # The head of a new clip chain goes into the audit log, so that deleting the
                # first clips of a chain (which no later clip can reveal) is detectable.
                queue_report(db, "clip_stream_started", camera_id, "a new clip chain starts",
                             clip_id=clip_id, seq=0, stream=stream)

        try:
            self._q.write(record)
        except sqlite3.Error as e:
            if not keep_unrecorded:
                part.unlink(missing_ok=True)
            raise ClipNotRecorded(f"cannot record clip {clip_id} in the outbox database: {e}") from e
        try:
            os.replace(part, final)
        except OSError as e:
            # The row is committed and the .part complete: recovery renames it on next start.
            raise SinkError(f"cannot rename {part} in the outbox: {e.strerror or e}") from e
        fsync_dir(final.parent)
        self.hand_over_reports()
        return final

    # --- recovery --------------------------------------------------------------------

    def recover(self, stream: str | None = None) -> None:
        """Finish or clean up what a crash left (see the module docstring). Once per stream.

        Raises SinkError when the outbox's disk or database fails meanwhile.
        """
        self._require_exclusive("recover")
        try:
            self._recover(stream)
        except (OSError, sqlite3.Error) as e:
            raise SinkError(f"cannot recover the outbox in {self.root}: {e}") from e
        self.hand_over_reports()

    def _recover(self, stream: str | None) -> None:
        with self._q.lock:
            dirs = [self.stream_dir(stream)] if stream else [p for p in self.clips_dir.iterdir() if p.is_dir()]
            for d in dirs:
                if d.name in self._recovered or not d.is_dir():
                    continue
                self._recovered.add(d.name)
                known = {r[0] for r in self._q.rows("SELECT clip_id FROM clips WHERE stream=?", (d.name,))}
                for p in sorted(d.iterdir()):
                    if p.name.endswith(PART_SUFFIX):
                        cid = p.name[: -len(PART_SUFFIX)]
                        if cid in known:
                            os.replace(p, p.with_name(index.local_name(cid)))
                            log.info("outbox: finished committing clip %s after a restart", cid)
                        else:
                            p.unlink()
                            log.info("outbox: removed unfinished segment %s after a restart", cid)
                    elif p.name.endswith(CLIP_SUFFIX) and p.name[: -len(CLIP_SUFFIX)] not in known:
                        p.unlink()
                fsync_dir(d)
                # Backoff deadlines are monotonic times of a previous process: make them due.
                self._q.execute(
                    "UPDATE deliveries SET next_due_mono=0 WHERE clip_id IN (SELECT clip_id FROM clips WHERE stream=?)",
                    (d.name,),
                )

    # --- the index ---------------------------------------------------------------------

    def list_clips(self) -> list[IndexedClip]:
        """Every clip this hub sealed or still holds, oldest first, with where it went.

        Read-only (works on an outbox opened with `exclusive=False`). A clip queued by a version
        without the index appears from its queue row alone, without times.
        """
        try:
            return index.list_clips(self._q, self.quarantine_dir)
        except sqlite3.Error as e:
            raise SinkError(f"cannot read the clip index in {self.root}: {e}") from e

    # --- delivery --------------------------------------------------------------------

    def pending_count(self, stream: str | None = None) -> int:
        if stream is None:
            return int(self._q.scalar("SELECT COUNT(*) FROM deliveries"))
        return int(
            self._q.scalar("SELECT COUNT(*) FROM deliveries d JOIN clips c USING(clip_id) WHERE c.stream=?", (stream,))
        )

    def pending(self, stream: str | None = None) -> list[tuple[str, str, int]]:
        """(clip_id, dest, attempts) of every queued delivery, oldest first."""
        q = "SELECT d.clip_id, d.dest, d.attempts FROM deliveries d JOIN clips c USING(clip_id)"
        args: tuple[str, ...] = ()
        if stream is not None:
            q += " WHERE c.stream=?"
            args = (stream,)
        return [(r[0], r[1], int(r[2])) for r in self._q.rows(q + " ORDER BY c.stream, c.seq, d.dest", args)]

    def drain(
        self, uploaders: Mapping[str, Uploader], stream: str | None = None, *, force: bool = False
    ) -> DrainResult:
        """Attempt every due delivery once. `force` ignores backoff deadlines (final flush).

        Recovery runs only for the given stream: another sink may be writing a `.part` in
        another stream right now. A standalone flush calls `recover()` itself first.
        Raises SinkError when the outbox's own database fails (the clips stay queued).
        """
        self._require_exclusive("deliver clips")
        if stream is not None:
            self.recover(stream)
        now = self._clock.monotonic()
        q = (
            "SELECT d.clip_id, d.dest, d.attempts, c.stream, c.object_name, c.camera_id "
            "FROM deliveries d JOIN clips c USING(clip_id)"
        )
        conds: list[str] = []
        args: list[object] = []
        if stream is not None:
            conds.append("c.stream=?")
            args.append(stream)
        if not force:
            conds.append("d.next_due_mono<=?")
            args.append(now)
        if conds:
            q += " WHERE " + " AND ".join(conds)
        q += " ORDER BY c.stream, c.seq, d.dest"
        if force:
            self.check_placements(uploaders)
        else:
            self.check_placements(uploaders, every_s=PLACEMENT_CHECK_S)
        try:
            rows = self._q.rows(q, args)
            uploaded = failed = rejected = 0
            for clip_id, dest, attempts, strm, obj, camera_id in rows:
                path = self.stream_dir(strm) / index.local_name(clip_id)
                up = uploaders.get(dest)
                if up is None:
                    # A destination removed from the config: keep the clip, report it.
                    failed += 1
                    self._retry_later(clip_id, dest, attempts, f"destination {dest} is not configured", camera_id)
                    continue
                if not path.exists() and (self.quarantine_dir / path.name).exists():
                    # A quarantine cut short by a crash (the file moved, the rows not yet gone).
                    rejected += 1
                    self._quarantine(clip_id, strm, path, camera_id, "rejected before a restart")
                    continue
                with self.delivery_lock:
                    # A deletion may have taken the clip since the rows were read: never upload it again.
                    if self._q.scalar("SELECT 1 FROM deliveries WHERE clip_id=? AND dest=?", (clip_id, dest)) is None:
                        continue
                    try:
                        up.put(obj, path)
                    except EnvelopeError as e:
                        # A verdict on the clip's own bytes: never uploaded anywhere.
                        rejected += 1
                        self._quarantine(clip_id, strm, path, camera_id, str(e))
                        continue
                    except (SinkError, OSError) as e:
                        # The destination (or the way to it) failed, not the clip: retry later.
                        failed += 1
                        self._retry_later(clip_id, dest, attempts, str(e), camera_id)
                        continue
                    uploaded += 1
                    self._delivered(clip_id, dest, path, camera_id, obj)
            remaining = self.pending_count(stream)
        except sqlite3.Error as e:
            raise SinkError(f"the outbox database in {self.root} failed: {e}; queued clips stay queued") from e
        self.hand_over_reports()
        return DrainResult(uploaded, failed, rejected, remaining)

    def _retry_later(self, clip_id: str, dest: str, attempts: int, error: str, camera_id: str) -> None:
        n = attempts + 1
        delay = backoff_s(n, self._base, self._max)
        self._q.execute(
            "UPDATE deliveries SET attempts=?, next_due_mono=?, last_error=? WHERE clip_id=? AND dest=?",
            (n, self._clock.monotonic() + delay, error[:500], clip_id, dest),
        )
        log.warning("upload of clip %s to %s failed (attempt %d, retry in %.0f s): %s", clip_id, dest, n, delay, error)
        self._event(
            "upload_failed", camera_id, f"upload to {dest} failed; the clip stays in the outbox",
            clip_id=clip_id, dest=dest, attempts=n, retry_in_s=delay, error=error[:200],
        )

    def _delivered(self, clip_id: str, dest: str, path: Path, camera_id: str, obj: str) -> None:
        def record(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM deliveries WHERE clip_id=? AND dest=?", (clip_id, dest))
            left = int(db.execute("SELECT COUNT(*) FROM deliveries WHERE clip_id=?", (clip_id,)).fetchone()[0])
            if left == 0:
                db.execute("DELETE FROM clips WHERE clip_id=?", (clip_id,))
            db.execute(
                "INSERT INTO placements(clip_id, dest, object_name, delivered_wall_s) VALUES (?,?,?,?) "
                "ON CONFLICT(clip_id, dest) DO UPDATE SET delivered_wall_s=excluded.delivered_wall_s, "
                "vanished_wall_s=NULL",
                (clip_id, dest, obj, self._clock.wall()),
            )
            queue_report(db, "clip_uploaded", camera_id, f"clip uploaded to {dest}",
                         clip_id=clip_id, dest=dest, object=obj)
            return left

        if self._q.write(record) == 0:
            path.unlink(missing_ok=True)

    def _quarantine(self, clip_id: str, stream: str, path: Path, camera_id: str, error: str) -> None:
        make_private_dirs(self.quarantine_dir)
        target = self.quarantine_dir / path.name

        def record(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM deliveries WHERE clip_id=?", (clip_id,))
            db.execute("DELETE FROM clips WHERE clip_id=?", (clip_id,))
            queue_report(db, "clip_rejected", camera_id,
                         "a clip failed verification before upload and was quarantined",
                         clip_id=clip_id, error=error[:200])

        # The file moves first: if the process dies between the two steps, the row still points
        # at the clip (the next drain finds it missing and reports it) instead of recovery
        # deleting a rejected clip as an already delivered one.
        if path.exists():
            os.replace(path, target)
        self._q.write(record)
        log.error("outbox: clip %s failed the pre-upload gate and was quarantined: %s", clip_id, error)

    def check_placements(self, uploaders: Mapping[str, Uploader], *, every_s: float | None = None) -> int:
        """Report delivered clips that have vanished from their destination; returns how many.

        Only destinations that can tell (`Uploader.present`, None while the destination itself
        cannot be checked, e.g. a NAS that is not mounted) are checked. With `every_s`, at most
        that often: a check stats every clip ever delivered there.
        """
        self._require_exclusive("check destinations")
        now = self._clock.monotonic()
        if every_s is not None and self._placements_checked_mono is not None \
                and now - self._placements_checked_mono < every_s:
            return 0
        self._placements_checked_mono = now
        found = 0
        for dest, up in uploaders.items():
            present = getattr(up, "present", None)
            if not callable(present):
                continue
            try:
                rows = self._q.rows(
                    "SELECT p.clip_id, p.object_name, i.camera_id, i.seq FROM placements p "
                    "LEFT JOIN clip_index i USING(clip_id) WHERE p.dest=? AND p.vanished_wall_s IS NULL",
                    (dest,),
                )
                still = present([r[1] for r in rows]) if rows else None
                gone = [] if still is None else [r for r in rows if r[1] not in still]
                for clip_id, obj, camera_id, seq in gone:
                    self._q.write(partial(self._mark_vanished, dest=dest, clip_id=clip_id, obj=obj,
                                          camera_id=camera_id, seq=seq))
            except sqlite3.Error as e:
                raise SinkError(f"the outbox database in {self.root} failed: {e}") from e
            found += len(gone)
        if found:
            log.error("outbox: %d delivered clip(s) vanished from their destination", found)
        self.hand_over_reports()
        return found

    def _mark_vanished(self, db: sqlite3.Connection, dest: str, clip_id: str, obj: str,
                       camera_id: str | None, seq: int | None) -> None:
        db.execute("UPDATE placements SET vanished_wall_s=? WHERE clip_id=? AND dest=?",
                   (self._clock.wall(), clip_id, dest))
        queue_report(db, "clip_vanished", camera_id, f"a delivered clip is no longer at {dest}",
                     clip_id=clip_id, dest=dest, object=obj, seq=seq)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.close()
        if self.exclusive:
            lock.release(self.data_dir)
