"""Explaining the gaps in a clip chain: DELETED (a recorded deletion or expiry) or MISSING.

Each camera's clips form a hash chain, so a clip that is gone leaves a gap in the sequence numbers
(and deleted FIRST clips show against the chain start the audit log records). A gap is not always
tampering: retention and the owner's right to delete remove clips on purpose, and they record
each one in the audit log before anything is deleted (`agent.storage.deletion`). `explain_gaps`
matches every missing (stream, seq) against those records: found, it is DELETED (by whom, when,
why, which entry); not found, it is MISSING, which only tampering or loss explains.

Pure: it takes the verified clips (`ClipInfo`) and the audit log's entries (anything with `kind`,
`wall_ms`, `seq` and `fields`), so it imports neither the access package nor any key. The
entries it reads: `clips_expired`, `clips_evicted` and `clips_deleted` with `phase: "planned"`,
whose `clips` list carries `{clip_id, stream, seq, ...}`, and `clip_stream_start` (`stream`,
`clip_id`) for the start of each chain. Callers check the log itself first (`audit verify`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from agent.crypto.envelope import ClipInfo

#: Audit kinds whose `clips` list names clips removed on purpose.
DELETION_KINDS = frozenset({"clips_expired", "clips_evicted", "clips_deleted"})


class EntryLike(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def kind(self) -> str: ...

    @property
    def wall_ms(self) -> int: ...

    @property
    def fields(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Removal:
    """One recorded removal of a clip: which entry, when, why and by whom."""

    entry_seq: int
    kind: str
    wall_ms: int
    reason: str
    by: str
    clip_id: str


@dataclass(frozen=True, slots=True)
class GapRange:
    """Consecutive sequence numbers of one stream that are not among the clips checked."""

    stream: str
    first_seq: int
    last_seq: int
    status: Literal["DELETED", "MISSING"]
    #: For DELETED: the record (one entry covers the whole range).
    removal: Removal | None = None

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1

    def describe(self) -> str:
        what = f"clip {self.first_seq}" if self.count == 1 else f"clips {self.first_seq}..{self.last_seq}"
        head = f"stream {self.stream[:8]}: {what} {self.status}"
        r = self.removal
        if r is None:
            return head + " (no deletion recorded in the audit log)"
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.wall_ms / 1000))
        return f"{head} ({r.reason} by {r.by} at {when}, audit entry {r.entry_seq} {r.kind})"


@dataclass(frozen=True, slots=True)
class GapReport:
    gaps: tuple[GapRange, ...]
    #: Streams among the clips whose start the audit log does not record.
    unstarted: tuple[str, ...]
    #: Streams whose clip with seq 0 here is not the first clip the audit log records.
    foreign_heads: tuple[str, ...] = ()

    @property
    def deleted(self) -> tuple[GapRange, ...]:
        return tuple(g for g in self.gaps if g.status == "DELETED")

    @property
    def missing(self) -> tuple[GapRange, ...]:
        return tuple(g for g in self.gaps if g.status == "MISSING")


def removals(entries: Iterable[EntryLike]) -> tuple[dict[tuple[str, int], Removal], dict[str, str]]:
    """(stream, seq) -> its recorded removal (the first), and stream -> first clip id (the newest
    `clip_stream_start`)."""
    out: dict[tuple[str, int], Removal] = {}
    heads: dict[str, str] = {}
    for e in entries:
        f = e.fields
        if e.kind == "clip_stream_start":
            s, c = f.get("stream"), f.get("clip_id")
            if isinstance(s, str) and isinstance(c, str):
                heads[s] = c
            continue
        if e.kind not in DELETION_KINDS or (e.kind == "clips_deleted" and f.get("phase") != "planned"):
            continue
        clips = f.get("clips")
        if not isinstance(clips, list):
            continue
        reason, by = str(f.get("reason", e.kind)), str(f.get("by", "?"))
        for c in clips:
            if not isinstance(c, dict):
                continue
            s, q, cid = c.get("stream"), c.get("seq"), c.get("clip_id")
            if isinstance(s, str) and isinstance(q, int) and not isinstance(q, bool) and isinstance(cid, str):
                out.setdefault((s, q), Removal(e.seq, e.kind, e.wall_ms, reason, by, cid))
    return out, heads


def _ranges(stream: str, lo: int, hi: int, removed: Mapping[int, Removal]) -> list[GapRange]:
    """[lo, hi] (all absent) as DELETED runs (one per entry) and MISSING runs between them."""
    out: list[GapRange] = []
    cur = lo
    for s in sorted(q for q in removed if lo <= q <= hi):
        if s > cur:
            out.append(GapRange(stream, cur, s - 1, "MISSING"))
        r = removed[s]
        last = out[-1] if out else None
        if last is not None and last.status == "DELETED" and last.last_seq == s - 1 and last.removal is not None \
                and last.removal.entry_seq == r.entry_seq:
            out[-1] = GapRange(stream, last.first_seq, s, "DELETED", last.removal)
        else:
            out.append(GapRange(stream, s, s, "DELETED", r))
        cur = s + 1
    if cur <= hi:
        out.append(GapRange(stream, cur, hi, "MISSING"))
    return out


def explain_gaps(infos: Sequence[ClipInfo], audit_entries: Iterable[EntryLike]) -> GapReport:
    """Every gap in the chains of `infos` (and before their first clip, when the log records the
    chain's start), each DELETED or MISSING; deletions recorded after the newest clip held are
    listed as DELETED too. Two clips with one sequence number, or a broken link, are not gaps:
    `check_chain` reports those."""
    removed, heads = removals(audit_entries)
    per_stream: dict[str, dict[int, Removal]] = {}
    for (s, q), r in removed.items():
        per_stream.setdefault(s, {})[q] = r
    streams: dict[str, list[ClipInfo]] = {}
    for c in infos:
        streams.setdefault(c.header.stream_id.hex(), []).append(c)
    gaps: list[GapRange] = []
    unstarted: list[str] = []
    foreign: list[str] = []
    for sid, items in sorted(streams.items()):
        seqs = sorted({c.header.seq for c in items})
        rem = per_stream.get(sid, {})
        head = heads.get(sid)
        if head is None:
            unstarted.append(sid)
        elif all(c.clip_id_hex != head for c in items):
            if seqs[0] > 0:
                gaps += _ranges(sid, 0, seqs[0] - 1, rem)
            else:
                foreign.append(sid)
        for a, b in zip(seqs, seqs[1:], strict=False):
            if b > a + 1:
                gaps += _ranges(sid, a + 1, b - 1, rem)
        after = [q for q in rem if q > seqs[-1]]
        if after:
            gaps += [g for g in _ranges(sid, seqs[-1] + 1, max(after), rem) if g.status == "DELETED"]
    return GapReport(tuple(gaps), tuple(unstarted), tuple(foreign))
