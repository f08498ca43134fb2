"""Deletion that is real: a clip removed from the hub's outbox, from every destination it reached,
and from the hub's own derived data, with a record first and nothing silently left behind.

API (expiry and the owner-signed deletion use the same calls; `agent.storage.retention` wires
expiry to the config for `run` and `privacy-agent clips expire`):

    find_clips(outbox, camera=None, from_s=None, to_s=None, clip_ids=()) -> list[IndexedClip]
    delete_clips(outbox, uploaders, clip_ids, *, reason, by, now_s, audit, events=None) -> DeletionReport
    retry_pending(outbox, uploaders, *, now_s, audit) -> DeletionReport
    expire(outbox, uploaders, retention_for_camera, now_s, audit, *, events=None, dry_run=False) -> ExpiryResult
    explain_gaps(infos, audit_entries) -> GapReport          (in agent.storage.gaps, re-exported here)

An owner-signed deletion (wired to MQTT by `agent.mqtt.hub`): `clips = find_clips(ob, camera=cam,
from_s=t0, to_s=t1)` (or `clip_ids=...`), then `delete_clips(ob, uploaders, [c.clip_id for c in
clips], reason="owner", by=<device key id>, now_s=clock.wall(), audit=audit_log.append,
events=mqtt_outbox)`; `report.receipt_entries()` gives the receipt's `deleted` and `pending` lists.
`audit` is any `(kind, fields)` callable; `events` anything with `purge_clip_events(ids) -> int`.

What one deletion does, in this order (record, then act):
1. `audit(kind, fields)` with the plan: `clips_expired` for reason "expired", `clips_evicted` for
   "evicted", else `clips_deleted`; `phase: "planned"`, reason, by, and per clip its id, camera,
   stream, seq, start/end (wall s) and places. If it raises, nothing is deleted.
2. One transaction in the outbox database: a `pending_deletions` row per place (every destination
   in `placements` or `deliveries`, and '' for the hub's own files), and the clip's `clips`,
   `deliveries`, `clip_index` and `placements` rows go. The stream's `chain` head stays: the next
   clip still chains, and a verifier explains the gap from the audit log (`explain_gaps`).
3. The hub's files (the queued envelope, a quarantined one; directories fsynced), and events
   still queued in the MQTT outbox that name the clip.
4. Every destination: `uploader.delete(object_name)`. Deleted and already absent both finish a
   place; a failure (unreachable, unmounted, not configured) keeps its pending row and is
   retried by `retry_pending` (every expiry pass), so a deletion is never silently lost. A
   destination that fails once in a pass is not tried again for the other clips of that pass.
5. `audit("clips_deleted", {phase: "done" | "retried", counts, per clip its places' outcomes})`.

Audit fields carry ids, seqs, streams, cameras, times, destination names, counts and failure
reasons, never content. Needs an outbox opened for writing (the data-dir lock); a delivery in
flight in this process is kept out by `Outbox.delivery_lock` (held for steps 2 and 3).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from agent.errors import AgentError, SinkError
from agent.fsutil import fsync_dir
from agent.storage import index
from agent.storage.gaps import GapRange, GapReport, explain_gaps
from agent.storage.index import IndexedClip
from agent.storage.outbox import PART_SUFFIX, Outbox, Uploader

log = logging.getLogger(__name__)

__all__ = [
    "ClipDeletion", "DeletionReport", "ExpiryResult", "GapRange", "GapReport", "PlaceResult", "delete_clips",
    "due_for_expiry", "expire", "explain_gaps", "find_clips", "pending_deletions", "retry_pending",
]

#: The place name of the hub's own files (outbox and quarantine) in `pending_deletions`.
HUB_PLACE = ""
#: At most this many clips per audit entry (an entry line must stay far below the reader's 1 MiB);
#: expiry deletes at most this many per run and the next run takes the rest.
MAX_CLIPS_PER_ENTRY = 1000
SECONDS_PER_DAY = 86_400.0

AuditFn = Callable[[str, Mapping[str, Any]], object]
Outcome = Literal["deleted", "absent", "failed"]
_CLIP_ID_RE = re.compile(r"^[0-9a-f]{32}$")


class EventPurger(Protocol):
    """The MQTT event outbox (`agent.mqtt.outbox.Outbox`), seen from below."""

    def purge_clip_events(self, clip_ids: Iterable[str]) -> int: ...


@dataclass(frozen=True, slots=True)
class PlaceResult:
    """One place a clip was deleted from: a destination name, or '' for the hub's own files."""

    dest: str
    outcome: Outcome
    error: str | None = None

    @property
    def label(self) -> str:
        return self.dest or "hub"


@dataclass(frozen=True, slots=True)
class ClipDeletion:
    clip_id: str
    camera_id: str
    stream: str
    seq: int
    start_wall_s: float | None
    end_wall_s: float | None
    reason: str
    by: str
    places: tuple[PlaceResult, ...]

    @property
    def complete(self) -> bool:
        return all(p.outcome != "failed" for p in self.places)


@dataclass(frozen=True, slots=True)
class DeletionReport:
    reason: str
    by: str
    clips: tuple[ClipDeletion, ...] = ()
    #: Requested ids this hub has no record of (never sealed here, or deleted long ago).
    unknown: tuple[str, ...] = ()
    events_removed: int = 0

    def count(self, outcome: Outcome) -> int:
        return sum(1 for c in self.clips for p in c.places if p.outcome == outcome)

    @property
    def pending(self) -> tuple[ClipDeletion, ...]:
        """Clips with a place still to delete from (retried later)."""
        return tuple(c for c in self.clips if not c.complete)

    def receipt_entries(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(deleted, pending) in the shape of a `delete_receipt` (`agent.access.deletion`)."""
        def ms(v: float | None) -> int | None:
            return None if v is None else int(v * 1000)

        deleted = [{"clip": c.clip_id, "camera": c.camera_id, "stream": c.stream, "seq": c.seq,
                    "start_ms": ms(c.start_wall_s), "end_ms": ms(c.end_wall_s),
                    "places": [p.label for p in c.places]}
                   for c in self.clips if c.complete]
        pending = [{"clip": c.clip_id, "places": [p.label for p in c.places if p.outcome == "failed"]}
                   for c in self.pending]
        return deleted, pending

    def audit_fields(self, phase: str) -> dict[str, Any]:
        return {
            "phase": phase, "reason": self.reason, "by": self.by, "count": len(self.clips),
            "deleted": self.count("deleted"), "absent": self.count("absent"), "failed": self.count("failed"),
            "pending": [c.clip_id for c in self.pending], "unknown": list(self.unknown[:100]),
            "events_removed": self.events_removed,
            "clips": [{"clip_id": c.clip_id, "stream": c.stream, "seq": c.seq, "camera": c.camera_id,
                       "places": {p.label: p.outcome if p.error is None else f"{p.outcome}: {p.error[:200]}"
                                  for p in c.places}}
                      for c in self.clips],
        }


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    #: The clips past their camera's retention that this run deleted (or, dry, would delete).
    expired: tuple[IndexedClip, ...]
    #: This run's deletion; None on a dry run or when nothing expired.
    report: DeletionReport | None
    #: Earlier deletions finished (or tried again) in this run; None on a dry run.
    retried: DeletionReport | None
    #: More clips are past retention than one run takes (the next run continues).
    more: bool = False


# --- finding ---------------------------------------------------------------------------------


def _span(c: IndexedClip) -> tuple[float, float] | None:
    start = c.start_wall_s if c.start_wall_s is not None else c.sealed_wall_s
    end = c.end_wall_s if c.end_wall_s is not None else c.sealed_wall_s
    return None if start is None or end is None else (start, end)


def find_clips(outbox: Outbox, camera: str | None = None, from_s: float | None = None, to_s: float | None = None,
               clip_ids: Iterable[str] = ()) -> list[IndexedClip]:
    """Clips of the hub's own index, oldest first: of `camera` (None: any), overlapping the wall-time
    window [from_s, to_s] (either end open), and among `clip_ids` when any are given. A clip with
    no recorded time is left out of a time window (what cannot be placed in time is not assumed
    to be inside it)."""
    wanted = set(clip_ids)
    out = []
    for c in outbox.list_clips():
        if camera is not None and c.camera_id != camera:
            continue
        if wanted and c.clip_id not in wanted:
            continue
        if from_s is not None or to_s is not None:
            span = _span(c)
            if span is None or (from_s is not None and span[1] < from_s) or (to_s is not None and span[0] > to_s):
                continue
        out.append(c)
    return out


def due_for_expiry(clips: Iterable[IndexedClip], retention_for_camera: Callable[[str], float | None],
                   now_s: float) -> list[IndexedClip]:
    """The clips whose end is older than their camera's retention (days; None keeps for ever),
    oldest end first. A clip with no recorded time never expires (it cannot be dated)."""
    due = []
    for c in clips:
        days = retention_for_camera(c.camera_id)
        span = _span(c)
        if days is not None and span is not None and span[1] <= now_s - days * SECONDS_PER_DAY:
            due.append((span[1], c))
    due.sort(key=lambda t: (t[0], t[1].stream, t[1].seq))
    return [c for _, c in due]


# --- deleting --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Planned:
    clip_id: str
    camera_id: str
    stream: str
    seq: int
    start_wall_s: float | None
    end_wall_s: float | None
    places: tuple[tuple[str, str], ...]  # (dest, object name); the hub's own files first

    def audit(self) -> dict[str, Any]:
        return {"clip_id": self.clip_id, "camera": self.camera_id, "stream": self.stream, "seq": self.seq,
                "start_s": self.start_wall_s, "end_s": self.end_wall_s,
                "places": [d or "hub" for d, _ in self.places]}


def _plan(outbox: Outbox, clip_ids: Sequence[str], hub_only: bool = False) -> list[_Planned]:
    q = outbox.queue
    marks = ",".join("?" * len(clip_ids))
    rows = q.rows(
        f"SELECT clip_id, camera_id, stream, seq, start_wall_s, end_wall_s FROM clip_index WHERE clip_id IN ({marks}) "
        f"UNION ALL SELECT clip_id, camera_id, stream, seq, NULL, NULL FROM clips WHERE clip_id IN ({marks}) "
        "AND clip_id NOT IN (SELECT clip_id FROM clip_index)", [*clip_ids, *clip_ids])
    places: dict[str, dict[str, str]] = {}
    for cid, dest, obj in q.rows(
        f"SELECT clip_id, dest, object_name FROM placements WHERE clip_id IN ({marks}) UNION ALL "
        f"SELECT d.clip_id, d.dest, c.object_name FROM deliveries d JOIN clips c USING(clip_id) "
        f"WHERE d.clip_id IN ({marks})", [*clip_ids, *clip_ids]):
        places.setdefault(str(cid), {})[str(dest)] = str(obj)
    out = []
    for cid, cam, stream, seq, start, end in rows:
        cid = str(cid)
        own = index.object_name(str(stream), int(seq), cid)
        dests = [] if hub_only else sorted(places.get(cid, {}).items())
        out.append(_Planned(cid, str(cam), str(stream), int(seq), None if start is None else float(start),
                            None if end is None else float(end), ((HUB_PLACE, own), *dests)))
    out.sort(key=lambda p: (p.stream, p.seq))
    return out


def _record(outbox: Outbox, planned: Sequence[_Planned], reason: str, by: str, now_s: float,
            hub_only: bool = False) -> None:
    # Hub-only (eviction on a full disk): the copies already delivered stay where they are, and
    # the index keeps knowing them; only the hub's own copy and its queue rows go.
    tables = ("deliveries", "clips") if hub_only else ("deliveries", "clips", "clip_index", "placements")

    def write(db: sqlite3.Connection) -> None:
        for p in planned:
            db.executemany(
                "INSERT OR IGNORE INTO pending_deletions(clip_id, dest, object_name, camera_id, stream, seq, "
                "start_wall_s, end_wall_s, reason, requested_by, requested_wall_s) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(p.clip_id, d, obj, p.camera_id, p.stream, p.seq, p.start_wall_s, p.end_wall_s, reason, by, now_s)
                 for d, obj in p.places])
            for table in tables:
                db.execute(f"DELETE FROM {table} WHERE clip_id=?", (p.clip_id,))
            if hub_only:
                # A clip that never reached any destination exists nowhere any more: the index
                # forgets it too (the audit entry keeps the fact).
                db.execute("DELETE FROM clip_index WHERE clip_id=? AND NOT EXISTS "
                           "(SELECT 1 FROM placements WHERE clip_id=?)", (p.clip_id, p.clip_id))

    outbox.queue.write(write)


def _delete_local(outbox: Outbox, stream: str, clip_id: str) -> bool:
    """The hub's own copies: queued envelope, unfinished `.part`, quarantined envelope."""
    name = index.local_name(clip_id)
    d = outbox.stream_dir(stream)
    found = False
    for p in (d / name, d / (clip_id + PART_SUFFIX), outbox.quarantine_dir / name):
        try:
            p.unlink()
        except FileNotFoundError:
            continue
        found = True
        fsync_dir(p.parent)
    return found


def _attempt(outbox: Outbox, uploaders: Mapping[str, Uploader], clip_ids: Sequence[str] | None,
             down: dict[str, str]) -> list[ClipDeletion]:
    """Try every pending place of `clip_ids` (None: of every pending deletion) once."""
    sql = ("SELECT clip_id, dest, object_name, camera_id, stream, seq, start_wall_s, end_wall_s, reason, "
           "requested_by FROM pending_deletions")
    args: list[str] = []
    if clip_ids is not None:
        sql += f" WHERE clip_id IN ({','.join('?' * len(clip_ids))})"
        args = list(clip_ids)
    rows = outbox.queue.rows(sql + " ORDER BY stream, seq, clip_id, dest", args)
    results: dict[str, list[PlaceResult]] = {}
    meta: dict[str, tuple[Any, ...]] = {}
    for cid, dest, obj, cam, stream, seq, start, end, reason, by in rows:
        meta.setdefault(cid, (cam, stream, int(seq), start, end, reason, by))
        res = _delete_at(outbox, uploaders, str(dest), str(obj), str(stream), str(cid), down)
        if res.outcome == "failed":
            outbox.queue.execute(
                "UPDATE pending_deletions SET attempts=attempts+1, last_error=? WHERE clip_id=? AND dest=?",
                ((res.error or "")[:500], cid, dest))
        else:
            outbox.queue.execute("DELETE FROM pending_deletions WHERE clip_id=? AND dest=?", (cid, dest))
        results.setdefault(cid, []).append(res)
    return [ClipDeletion(cid, str(m[0]), str(m[1]), m[2], m[3], m[4], str(m[5]), str(m[6]), tuple(results[cid]))
            for cid, m in meta.items()]


def _delete_at(outbox: Outbox, uploaders: Mapping[str, Uploader], dest: str, obj: str, stream: str, clip_id: str,
               down: dict[str, str]) -> PlaceResult:
    if dest == HUB_PLACE:
        try:
            with outbox.delivery_lock:
                return PlaceResult(dest, "deleted" if _delete_local(outbox, stream, clip_id) else "absent")
        except OSError as e:
            return PlaceResult(dest, "failed", f"cannot delete the hub's copy: {e.strerror or e}")
    if dest in down:
        return PlaceResult(dest, "failed", f"not tried: {dest} failed earlier in this pass ({down[dest]})"[:300])
    up = uploaders.get(dest)
    delete = getattr(up, "delete", None)
    if up is None or not callable(delete):
        why = f"destination {dest} is not configured" if up is None else f"destination {dest} cannot delete"
        return PlaceResult(dest, "failed", why)
    try:
        existed = bool(delete(obj))
    except (SinkError, OSError) as e:
        down[dest] = str(e)[:200]
        log.warning("deletion of clip %s from %s failed (retried later): %s", clip_id, dest, e)
        return PlaceResult(dest, "failed", str(e)[:300])
    return PlaceResult(dest, "deleted" if existed else "absent")


def _plan_kind(reason: str) -> str:
    return {"expired": "clips_expired", "evicted": "clips_evicted"}.get(reason, "clips_deleted")


def delete_clips(outbox: Outbox, uploaders: Mapping[str, Uploader], clip_ids: Iterable[str], *, reason: str,
                 by: str, now_s: float, audit: AuditFn, events: EventPurger | None = None,
                 plan_fields: Mapping[str, Any] | None = None, hub_only: bool = False) -> DeletionReport:
    """Delete `clip_ids` everywhere (see the module docstring). `reason`: "expired", "owner",
    "evicted", ...; `by`: who asked (a device key id, "retention"); `now_s`: wall time;
    `plan_fields`: extra fields for the planned entry (counts, periods); `hub_only`: only the
    hub's own copy (a full disk: copies already delivered are kept). Raises SinkError when the
    outbox database fails and whatever `audit` raises (then nothing was deleted)."""
    outbox.require_exclusive("delete clips")
    ids = list(dict.fromkeys(clip_ids))
    valid = [c for c in ids if isinstance(c, str) and _CLIP_ID_RE.match(c)]
    clips: list[ClipDeletion] = []
    unknown: list[str] = [c for c in ids if c not in valid]
    removed = 0
    down: dict[str, str] = {}
    for i in range(0, len(valid), MAX_CLIPS_PER_ENTRY):
        chunk = valid[i:i + MAX_CLIPS_PER_ENTRY]
        try:
            planned = _plan(outbox, chunk, hub_only)
            already = {str(r[0]) for r in outbox.queue.rows(
                f"SELECT DISTINCT clip_id FROM pending_deletions WHERE clip_id IN ({','.join('?' * len(chunk))})",
                chunk)}
        except sqlite3.Error as e:
            raise SinkError(f"cannot read the clip index in {outbox.root}: {e}") from e
        known = {p.clip_id for p in planned}
        unknown += [c for c in chunk if c not in known and c not in already]
        if planned:
            # Record, then act: the entry describing the deletion is durable before any file goes.
            audit(_plan_kind(reason), {"phase": "planned", "reason": reason, "by": by, "at_s": round(now_s, 3),
                                       "count": len(planned), **(plan_fields or {}),
                                       "clips": [p.audit() for p in planned]})
        try:
            if planned:
                with outbox.delivery_lock:
                    _record(outbox, planned, reason, by, now_s, hub_only)
            targets = [c for c in chunk if c in known or c in already]
            if events is not None and targets:
                try:
                    removed += events.purge_clip_events(targets)
                except AgentError as e:
                    log.error("cannot remove queued events of deleted clips: %s", e)
            clips += _attempt(outbox, uploaders, targets, down) if targets else []
        except sqlite3.Error as e:
            raise SinkError(f"the outbox database in {outbox.root} failed during a deletion: {e}; "
                            "recorded deletions finish on a later pass") from e
    report = DeletionReport(reason, by, tuple(clips), tuple(unknown), removed)
    if clips:
        audit("clips_deleted", report.audit_fields("done"))
    _log(report)
    return report


def retry_pending(outbox: Outbox, uploaders: Mapping[str, Uploader], *, now_s: float,
                  audit: AuditFn) -> DeletionReport:
    """Try every place of an earlier deletion that is not finished yet. A `clips_deleted` entry
    (`phase: retried`) is written when a place finished; failures alone are only logged (the
    deletion was recorded when it was planned, and retries every pass would fill the log)."""
    outbox.require_exclusive("delete clips")
    try:
        clips = _attempt(outbox, uploaders, None, {})
    except sqlite3.Error as e:
        raise SinkError(f"the outbox database in {outbox.root} failed while finishing deletions: {e}") from e
    report = DeletionReport("retry", "hub", tuple(clips))  # each clip keeps its own reason and requester
    if report.count("deleted") or report.count("absent"):
        audit("clips_deleted", {**report.audit_fields("retried"), "at_s": round(now_s, 3)})
    _log(report)
    return report


def expire(outbox: Outbox, uploaders: Mapping[str, Uploader], retention_for_camera: Callable[[str], float | None],
           now_s: float, audit: AuditFn, *, events: EventPurger | None = None, dry_run: bool = False,
           limit: int = MAX_CLIPS_PER_ENTRY) -> ExpiryResult:
    """Delete the clips whose end is older than their camera's retention (`retention_for_camera`:
    days, None keeps for ever), at most `limit` per run, first finishing earlier deletions. One
    `clips_expired` entry per run that expires anything, with the counts and every clip's id,
    stream and seq (a verifier explains chain gaps from it). `dry_run`: only find them."""
    limit = max(1, min(limit, MAX_CLIPS_PER_ENTRY))
    retried = None if dry_run else retry_pending(outbox, uploaders, now_s=now_s, audit=audit)
    due = due_for_expiry(outbox.list_clips(), retention_for_camera, now_s)
    batch = tuple(due[:limit])
    if dry_run or not batch:
        return ExpiryResult(batch, None, retried, len(due) > len(batch))
    per_camera: dict[str, int] = {}
    for c in batch:
        per_camera[c.camera_id] = per_camera.get(c.camera_id, 0) + 1
    days = {cam: retention_for_camera(cam) for cam in per_camera}
    report = delete_clips(outbox, uploaders, [c.clip_id for c in batch], reason="expired", by="retention",
                          now_s=now_s, audit=audit, events=events,
                          plan_fields={"per_camera": per_camera, "retention_days": days,
                                       "more_due": len(due) - len(batch)})
    return ExpiryResult(batch, report, retried, len(due) > len(batch))


def _log(report: DeletionReport) -> None:
    if not report.clips:
        return
    log.info("deletion (%s by %s): %d clip(s); places: %d deleted, %d already absent, %d failed",
             report.reason, report.by, len(report.clips), report.count("deleted"), report.count("absent"),
             report.count("failed"))
    if report.pending:
        log.warning("%d clip deletion(s) wait for a destination and are retried on the next pass",
                    len(report.pending))


def pending_deletions(outbox: Outbox) -> list[tuple[str, str, int, str | None]]:
    """(clip id, place, attempts, last error) of every unfinished deletion; [] on an older database."""
    try:
        rows = outbox.queue.rows("SELECT clip_id, dest, attempts, last_error FROM pending_deletions "
                                 "ORDER BY requested_wall_s, clip_id, dest")
    except sqlite3.Error:
        return []  # a read-only open of a database from before deletions: nothing pending there
    return [(str(c), str(d) or "hub", int(a), None if e is None else str(e)) for c, d, a, e in rows]

