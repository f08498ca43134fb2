"""The hub's own index of the clips it sealed, and where each one was delivered.

`clip_index` keeps one row per clip (camera, stream, sequence, size, sealed/start/end times) and
`placements` one per destination the clip reached, both kept after the queue rows are gone (until
the clip is deleted: `agent.storage.deletion` removes both, and keeps `pending_deletions` until
every place has let it go). The outbox writes them in the same transactions as the queue; this
module holds their schema, the upgrade of an older database and the read-only listing behind
`privacy-agent clips list`.
Camera names and times come from here, never from a destination.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import SinkError
from agent.storage.queue import SqliteQueue

log = logging.getLogger(__name__)

#: The file name ending of a sealed clip, in the outbox, the quarantine and every destination.
CLIP_SUFFIX = ".epaclip"

# The one naming rule for clip files. In a destination: `<stream id>/<seq, 12 digits>-<clip id>.epaclip`
# (opaque: no camera name, no time; sorted by sequence). In the outbox and the quarantine:
# `<clip id>.epaclip`. Every reader finds clips by `clip_id_of`, never by its own pattern.
_CLIP_NAME_RE = re.compile(r"^(?:(?P<seq>[0-9]{1,20})-)?(?P<clip>[0-9a-f]{32})" + re.escape(CLIP_SUFFIX) + "$")


def object_name(stream_hex: str, seq: int, clip_id_hex: str) -> str:
    """A clip's name in a destination (directory sink, NAS, S3 key)."""
    return f"{stream_hex}/{seq:012d}-{clip_id_hex}{CLIP_SUFFIX}"


def local_name(clip_id_hex: str) -> str:
    """A clip's file name in the outbox and the quarantine."""
    return clip_id_hex + CLIP_SUFFIX


def clip_id_of(file_name: str) -> str | None:
    """The clip id a clip file's name carries (either form), or None if it is not a clip file."""
    m = _CLIP_NAME_RE.match(file_name)
    return m.group("clip") if m else None

INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS clip_index (
    clip_id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    camera_id TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sealed_wall_s REAL NOT NULL,
    start_wall_s REAL,
    end_wall_s REAL
);
CREATE TABLE IF NOT EXISTS placements (
    clip_id TEXT NOT NULL,
    dest TEXT NOT NULL,
    object_name TEXT NOT NULL,
    delivered_wall_s REAL NOT NULL,
    vanished_wall_s REAL,
    PRIMARY KEY (clip_id, dest)
);
"""

# Deletions not yet finished everywhere (`agent.storage.deletion`): one row per clip and place, the
# hub's own files being the place ''. Written, with the clip's index and queue rows removed, in
# one transaction before any file is touched; a row goes only once its place no longer has the
# clip, so a destination that cannot be reached gets the deletion on a later pass. It keeps what
# a report needs (camera, stream, seq, times) because the clip's index row is already gone.
DELETIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending_deletions (
    clip_id TEXT NOT NULL,
    dest TEXT NOT NULL,
    object_name TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    start_wall_s REAL,
    end_wall_s REAL,
    reason TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_wall_s REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (clip_id, dest)
)
"""

# Columns added to `clip_index` after its first release: (name, SQL type). Nullable, so rows of
# an older version stay valid and its database only needs the columns added.
CLIP_INDEX_ADDED = (("start_wall_s", "REAL"), ("end_wall_s", "REAL"))


@dataclass(frozen=True, slots=True)
class Placement:
    """One destination a clip was delivered to, and when it was found gone from there."""

    dest: str
    delivered_wall_s: float
    vanished_wall_s: float | None


@dataclass(frozen=True, slots=True)
class IndexedClip:
    """One clip this hub sealed or still holds, from its own index (never from a destination)."""

    clip_id: str
    camera_id: str
    stream: str
    seq: int
    size_bytes: int
    #: None for a clip queued by a version without the index (it has only its queue row).
    sealed_wall_s: float | None
    #: None for clips indexed by a version that did not record them.
    start_wall_s: float | None
    end_wall_s: float | None
    #: Destinations still waiting for it.
    queued_for: tuple[str, ...]
    placements: tuple[Placement, ...]
    #: Refused by the pre-upload gate (its file is in the quarantine directory).
    quarantined: bool

    @property
    def uploaded_to(self) -> tuple[str, ...]:
        return tuple(p.dest for p in self.placements if p.vanished_wall_s is None)

    @property
    def vanished_from(self) -> tuple[str, ...]:
        return tuple(p.dest for p in self.placements if p.vanished_wall_s is not None)

    @property
    def state(self) -> str:
        """A short phrase: queued for, uploaded to, vanished from, quarantined; `;`-joined."""
        parts = []
        if self.queued_for:
            parts.append("queued for " + ", ".join(self.queued_for))
        if self.uploaded_to:
            parts.append("uploaded to " + ", ".join(self.uploaded_to))
        if self.vanished_from:
            parts.append("vanished from " + ", ".join(self.vanished_from))
        if self.quarantined:
            parts.append("quarantined")
        # Neither queued nor delivered nor quarantined: only a quarantine cleaned up by hand.
        return "; ".join(parts) or "not queued and never delivered"


def index_columns(q: SqliteQueue) -> set[str]:
    return {str(r[1]) for r in q.rows("PRAGMA table_info(clip_index)")}

def add_missing_columns(q: SqliteQueue) -> None:
    """Add the columns and tables a database from an older version lacks (a writer does this at open)."""
    q.execute(DELETIONS_SCHEMA)
    have = index_columns(q)
    for name, sql_type in CLIP_INDEX_ADDED:
        if name not in have:
            q.execute(f"ALTER TABLE clip_index ADD COLUMN {name} {sql_type}")
            log.info("outbox: added column clip_index.%s (database from an older version)", name)


def list_clips(q: SqliteQueue, quarantine_dir: Path) -> list[IndexedClip]:
    """Every clip in the index (and any queued without an index row), oldest first."""
    cols = index_columns(q)
    times = ", ".join(n if n in cols else f"NULL AS {n}" for n, _ in CLIP_INDEX_ADDED)
    with q.lock:  # one snapshot's worth of reads, not interleaved with our own writes
        rows = q.rows(
            f"SELECT clip_id, camera_id, stream, seq, size_bytes, sealed_wall_s, {times} FROM clip_index "
            "UNION ALL SELECT clip_id, camera_id, stream, seq, size_bytes, NULL, NULL, NULL FROM clips "
            "WHERE clip_id NOT IN (SELECT clip_id FROM clip_index)"
        )
        queued: dict[str, list[str]] = {}
        for cid, dest in q.rows("SELECT clip_id, dest FROM deliveries ORDER BY dest"):
            queued.setdefault(cid, []).append(dest)
        placed: dict[str, list[Placement]] = {}
        for cid, dest, delivered, vanished in q.rows(
            "SELECT clip_id, dest, delivered_wall_s, vanished_wall_s FROM placements ORDER BY dest"
        ):
            placed.setdefault(cid, []).append(
                Placement(str(dest), float(delivered), None if vanished is None else float(vanished))
            )

    def opt(v: object) -> float | None:
        return None if v is None else float(v)  # type: ignore[arg-type]

    out = [
        IndexedClip(
            clip_id=str(cid), camera_id=str(cam), stream=str(stream), seq=int(seq), size_bytes=int(size),
            sealed_wall_s=opt(sealed), start_wall_s=opt(start), end_wall_s=opt(end),
            queued_for=tuple(queued.get(cid, ())), placements=tuple(placed.get(cid, ())),
            quarantined=(quarantine_dir / local_name(str(cid))).exists(),
        )
        for cid, cam, stream, seq, size, sealed, start, end in rows
    ]
    out.sort(key=lambda c: (c.sealed_wall_s is not None, c.sealed_wall_s or 0.0, c.stream, c.seq))
    return out


@dataclass(frozen=True, slots=True)
class ClipSpan:
    """What the access flow needs of a clip: its camera and when it starts and ends (wall s)."""

    clip_id: str
    camera_id: str
    start_wall_s: float
    end_wall_s: float


def lookup_spans(db_path: Path, clip_ids: Sequence[str]) -> dict[str, ClipSpan]:
    """The index entries of `clip_ids`, read-only (beside a running hub). A clip without recorded
    times is left out: the access flow refuses what it cannot place in time (fail closed)."""
    ids = [c for c in clip_ids if isinstance(c, str)][:1024]
    if not ids or not db_path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as e:
        raise SinkError(f"cannot open the clip index {db_path}: {e}") from e
    try:
        marks = ",".join("?" * len(ids))
        rows = db.execute(
            f"SELECT clip_id, camera_id, start_wall_s, end_wall_s FROM clip_index WHERE clip_id IN ({marks})", ids
        ).fetchall()
    except sqlite3.Error as e:
        raise SinkError(f"cannot read the clip index {db_path}: {e}") from e
    finally:
        db.close()
    return {str(c): ClipSpan(str(c), str(cam), float(s), float(e)) for c, cam, s, e in rows
            if s is not None and e is not None}
