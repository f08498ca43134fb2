"""The hub's own disk filling up: make room by evicting the oldest queued ciphertext, or withhold.

`SpaceGuard` serves one clip sink (one camera stream) and watches the filesystem that holds the
outbox (`DATA/outbox/clips/`). Its rules:
- Before a segment starts (`ready`): the disk must have `retention.min_free_mb` (at least
  `RESERVE_BYTES`, for the hub's own records) free plus the size of one segment (estimated from this stream's last clips). When it has not, the OLDEST queued
  clips the hub holds in its outbox (any camera; oldest sealed first, then stream and sequence)
  are evicted until that much is free plus one more segment (the margin), and no more.
- A write or a commit that fails for lack of space (ENOSPC, EDQUOT, SQLite's "disk is full";
  `failed`) drops the segment (its `.part` is removed by the sink), evicts the same way and tells
  the sink to try again. A failure the filesystem does not confirm (it still has room: a quota,
  the database alone) is not a full disk and stays an ordinary SinkError.
- Eviction goes only through `agent.storage.deletion.delete_clips(reason="evicted",
  by="full-disk")`: recorded first in the audit log (`clips_evicted`, phase planned), then the
  clip is removed everywhere with its derived data, like every deletion; then a `clips_evicted`
  event (count, bytes freed, clip ids). Without an audit log nothing is evicted (record, then act).
- Only ciphertext is ever evicted, and only from the outbox: the segment being written has no row
  yet, so it is never a candidate; quarantined clips (tamper evidence) and plaintext directory
  sinks are never touched, and nothing plaintext is ever written to make room.
- When evicting cannot make room (no queued ciphertext, or all of it would not be enough: the disk
  is full of other things) nothing is evicted: the guard holds `storage_full` (`hold_reason`, which
  the pipeline asks for every frame: the camera's frames are withheld) with one `storage_full`
  event per episode. A read-only (or otherwise unwritable) outbox holds `storage_read_only` the
  same way. The hold is rechecked at most every `recheck_s`; when space (or write access) is back,
  a `storage_recovered` event and recording resumes on its own.

Thread safety: the pipeline's main thread asks `hold_reason()`, the sink thread calls the rest;
the hold state is under a lock, and evictions of one data directory never run concurrently.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.clock import Clock
from agent.core.datatypes import Event
from agent.core.events import EventCallback, emit_safely
from agent.errors import AgentError
from agent.storage import index
from agent.storage.deletion import AuditFn, EventPurger, delete_clips
from agent.storage.outbox import Outbox, Uploader

log = logging.getLogger(__name__)

MIB = 1024 * 1024
STORAGE_FULL = "storage_full"
STORAGE_READ_ONLY = "storage_read_only"
#: Always kept free for the hub's own records (outbox database, audit log, events), whatever
#: `retention.min_free_mb` says: a record torn by a full disk is worse than an evicted clip.
RESERVE_BYTES = 256 * 1024
#: The segment size assumed before a stream has sealed any clip.
DEFAULT_SEGMENT_BYTES = 1 * MIB
#: Seconds between two checks of a held camera's storage.
RECHECK_S = 2.0
#: Eviction rounds for one shortage at most (each round re-measures what was freed).
_EVICT_ROUNDS = 3
#: How many recent clip sizes the estimate of the next segment looks at.
_SIZES_KEPT = 4

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
_NO_SPACE_TEXT = ("no space left", "disk quota exceeded", "disk is full")

_evict_locks: dict[Path, threading.Lock] = {}
_evict_locks_guard = threading.Lock()


def _evict_lock(data_dir: Path) -> threading.Lock:
    with _evict_locks_guard:
        return _evict_locks.setdefault(Path(data_dir).resolve(), threading.Lock())


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _errnos(exc: BaseException) -> set[int]:
    # OSError and PyAV's FFmpegError both carry `errno`.
    return {n for e in _chain(exc) if isinstance(n := getattr(e, "errno", None), int)}


def is_no_space(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the disk or the quota is full."""
    if _errnos(exc) & _NO_SPACE:
        return True
    for e in _chain(exc):
        if isinstance(e, sqlite3.Error) and getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if any(t in str(e).lower() for t in _NO_SPACE_TEXT):
            return True
    return False


def is_not_writable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the filesystem is read-only or refuses writes."""
    return bool(_errnos(exc) & _NOT_WRITABLE)


def _why(exc: BaseException) -> str:
    """What the operating system said (`Read-only file system`), else the error's own text."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
    return str(exc)[:200]


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def writable(path: Path) -> bool:
    """`path` is on a filesystem mounted read-write and this process may write there (root ignores
    modes but not a read-only mount, hence the flag)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return not st.f_flag & os.ST_RDONLY and os.access(path, os.W_OK)


@dataclass(frozen=True, slots=True)
class _Held:
    clip_id: str
    stream: str
    seq: int
    bytes: int


class SpaceGuard:
    """Room for one clip stream's next segment on the hub's own disk (see the module docstring)."""

    def __init__(self, outbox: Outbox, uploaders: Mapping[str, Uploader], *, camera_id: str, stream: str,
                 clock: Clock, min_free_bytes: int = 0, audit: AuditFn | None = None,
                 purger: Callable[[], EventPurger | None] = lambda: None, on_event: EventCallback | None = None,
                 recheck_s: float = RECHECK_S) -> None:
        self._outbox = outbox
        self._uploaders = uploaders
        self._camera_id = camera_id
        self._stream = stream
        self._clock = clock
        self.min_free_bytes = max(RESERVE_BYTES, int(min_free_bytes))
        self._audit = audit
        self._purger = purger
        self._on_event = on_event
        self._recheck_s = recheck_s
        self._lock = threading.Lock()
        self._hold: str | None = None
        self._hold_need = 0
        self._checked_mono = 0.0
        self._sizes = self._recent_sizes()

    # --- the estimate of the next segment ---------------------------------------------------

    def _recent_sizes(self) -> list[int]:
        try:
            rows = self._outbox.queue.rows(
                "SELECT size_bytes FROM clip_index WHERE stream=? ORDER BY seq DESC LIMIT ?",
                (self._stream, _SIZES_KEPT))
        except sqlite3.Error:
            return []
        return [int(r[0]) for r in rows]

    def estimate(self) -> int:
        return max(self._sizes) if self._sizes else DEFAULT_SEGMENT_BYTES

    def note_clip(self, size: int) -> None:
        """A clip of `size` bytes was committed."""
        self._sizes = [size, *self._sizes][:_SIZES_KEPT]

    def note_partial(self, size: int) -> None:
        """A segment was cut short at `size` bytes: the next one is at least that large."""
        if size > self.estimate():
            self._sizes = [size, *self._sizes][:_SIZES_KEPT]

    @property
    def _dir(self) -> Path:
        # The nearest directory that exists (a removed clips directory is made again on open).
        d = self._outbox.stream_dir(self._stream)
        while not d.is_dir() and d != d.parent:
            d = d.parent
        return d

    # --- the sink's calls ---------------------------------------------------------------------

    def ready(self) -> bool:
        """Room for one more segment, evicting if needed. False: nothing may start (held)."""
        est = self.estimate()
        need = self.min_free_bytes + est
        try:
            free = free_bytes(self._dir)
        except OSError:
            return True  # cannot tell: opening the segment will say what is wrong
        if free >= need or self._make_room(free, need, need + est, "low_space"):
            return True
        self._set_hold(STORAGE_FULL, need, free)
        return False

    def failed(self, exc: BaseException) -> bool | None:
        """A write or commit of the stream failed with `exc` (its segment already dropped).
        True: room was made, try again; False: the camera is held (drop the frame); None: not a
        storage fault this guard handles (the caller raises as before)."""
        if is_not_writable(exc) or not writable(self._dir):
            self._set_hold(STORAGE_READ_ONLY, 0, None, error=_why(exc))
            return False
        if not is_no_space(exc):
            return None
        est = self.estimate()
        need = self.min_free_bytes + 2 * est
        try:
            free = free_bytes(self._dir)
        except OSError:
            return None
        if free >= need:
            return None  # the filesystem has room: a quota or the database alone, not a full disk
        if self._make_room(free, need, need + est, "no_space"):
            return True
        self._set_hold(STORAGE_FULL, need, free)
        return False

    def hold_reason(self) -> str | None:
        """`storage_full` / `storage_read_only` while the camera's frames must be withheld."""
        now = self._clock.monotonic()
        with self._lock:
            hold, need = self._hold, self._hold_need
            if hold is None or now - self._checked_mono < self._recheck_s:
                return hold
            self._checked_mono = now
        if not self._recovered(hold, need):
            return hold
        with self._lock:
            if self._hold != hold:
                return self._hold
            self._hold = None
        log.info("camera %s: the hub's storage works again; recording resumes", self._camera_id)
        self._event("storage_recovered", "the hub's storage has room again: recording resumes",
                    after=hold, free_bytes=self._free_or_none())
        return None

    # --- internals -----------------------------------------------------------------------------

    def _free_or_none(self) -> int | None:
        try:
            return free_bytes(self._dir)
        except OSError:
            return None

    def _recovered(self, hold: str, need: int) -> bool:
        if not writable(self._dir):
            return False
        if hold == STORAGE_READ_ONLY:
            return True
        free = self._free_or_none()
        if free is None:
            return False
        return free >= need or (self._audit is not None and free + self._reclaimable() >= need)

    def _set_hold(self, reason: str, need: int, free: int | None, **details: object) -> None:
        with self._lock:
            first = self._hold != reason
            self._hold, self._hold_need = reason, need
            self._checked_mono = self._clock.monotonic()
        if not first:
            return
        if reason == STORAGE_READ_ONLY:
            log.error("camera %s: the hub's outbox %s cannot be written: frames are withheld until it can",
                      self._camera_id, self._outbox.clips_dir)
            self._event(STORAGE_READ_ONLY, f"the hub's outbox {self._outbox.clips_dir} cannot be written "
                        f"({details.get('error', 'read-only')}): frames are withheld until it can",
                        path=str(self._outbox.clips_dir), **details)
            return
        why = ("no audit log to record an eviction" if self._audit is None
               else "no queued clip can be evicted to make room")
        log.error("camera %s: the hub's disk is full (%s bytes free, %d needed) and %s: frames are withheld",
                  self._camera_id, free, need, why)
        self._event(STORAGE_FULL, f"the hub's disk is full and {why}: frames are withheld until space returns",
                    free_bytes=free, needed_bytes=need, min_free_bytes=self.min_free_bytes,
                    reclaimable_bytes=self._reclaimable(), **details)

    def _held_clips(self) -> list[_Held]:
        """Queued clips whose envelope is in the outbox, oldest first. Only rows: a `.part` (the
        segment being written, by this sink or another) has none, so it is never a candidate."""
        try:
            rows = self._outbox.queue.rows(
                "SELECT c.clip_id, c.stream, c.seq, i.sealed_wall_s FROM clips c LEFT JOIN clip_index i "
                "USING(clip_id) ORDER BY COALESCE(i.sealed_wall_s, 0), c.stream, c.seq")
        except sqlite3.Error as e:
            log.error("cannot read the outbox to make room: %s", e)
            return []
        out = []
        for cid, stream, seq, _ in rows:
            p = self._outbox.stream_dir(str(stream)) / index.local_name(str(cid))
            try:
                st = p.stat()
            except OSError:
                continue  # not held here (delivered meanwhile, or a rename cut short)
            out.append(_Held(str(cid), str(stream), int(seq), max(st.st_size, st.st_blocks * 512)))
        return out

    def _reclaimable(self) -> int:
        return sum(h.bytes for h in self._held_clips())

    def _make_room(self, free: int, need: int, target: int, trigger: str) -> bool:
        """Evict the oldest held clips until `target` bytes are free; only when that reaches at
        least `need` (evicting what cannot help would lose clips for nothing). The space a clip
        frees is only estimated (the records of its deletion take some), so a short round evicts
        again, a few times at most."""
        if self._audit is None:
            return False
        with _evict_lock(self._outbox.data_dir):
            for _ in range(_EVICT_ROUNDS):
                held = self._held_clips()
                if not held or free + sum(h.bytes for h in held) < need:
                    return False
                pick: list[_Held] = []
                got = 0
                for h in held:
                    if free + got >= target:
                        break
                    pick.append(h)
                    got += h.bytes
                if not self._evict(pick, free, need, trigger):
                    return False
                after = self._free_or_none()
                if after is None:
                    return False
                if after >= need:
                    return True
                free = after
        return False

    def _evict(self, pick: list[_Held], free: int, need: int, trigger: str) -> bool:
        try:
            report = delete_clips(
                self._outbox, self._uploaders, [h.clip_id for h in pick], reason="evicted", by="full-disk",
                now_s=self._clock.wall(), audit=self._audit or (lambda kind, fields: None),
                events=self._purger(),
                plan_fields={"camera": self._camera_id, "trigger": trigger, "free_bytes": free,
                             "needed_bytes": need, "min_free_bytes": self.min_free_bytes, "hub_only": True},
                # Only the hub's own copy: what already reached a destination stays there.
                hub_only=True)
        except (AgentError, OSError, sqlite3.Error) as e:
            log.error("camera %s: cannot evict clips to make room: %s", self._camera_id, e)
            return False
        gone = {c.clip_id for c in report.clips
                if any(p.dest == "" and p.outcome != "failed" for p in c.places)}
        evicted = [h for h in pick if h.clip_id in gone]
        freed = sum(h.bytes for h in evicted)
        log.warning("camera %s: the hub's disk is full: evicted the %d oldest queued clip(s) (%d bytes)",
                    self._camera_id, len(evicted), freed)
        self._event("clips_evicted", f"the hub's disk is full: the {len(evicted)} oldest queued clip(s) were "
                    "deleted to keep recording", count=len(evicted), bytes_freed=freed, trigger=trigger,
                    clip_ids=[h.clip_id for h in evicted], seqs=[h.seq for h in evicted],
                    free_bytes=self._free_or_none(), pending_places=len(report.pending))
        return bool(evicted)

    def _event(self, kind: str, message: str, **details: object) -> None:
        emit_safely(self._on_event, Event(kind, self._camera_id, message, self._clock.monotonic(), details))
