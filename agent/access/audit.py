"""Tamper-evident audit log: an append-only hash chain with hub-signed checkpoints.

Who viewed or released what is the record Ring never kept. Every clip, access request,
challenge, approval, denial, grant, expiry, mode change, config change, boot, model fault and
tamper event is appended here (`AuditLog.append(kind, fields)`).

Format (docs/access-protocol.md, "Audit log"):
- `DATA/audit/log.jsonl`: one canonical-JSON object per line,
  `{"fields","hash","kind","prev","seq","wall_ms"}`. `seq` starts at 1; `prev` is the previous
  entry's `hash` (64 zero hex digits for the first); `hash` is
  BLAKE2b-256(person="epa1-audit-entry", canonical_json(entry without "hash")).
- The log is also a Merkle tree (RFC 6962 hashing over the entry lines, `agent.access.merkle`).
  A checkpoint is the hub's signed note in the C2SP tlog-checkpoint format (origin, size, root,
  `agent.access.checkpoint`), written after every append to `DATA/audit/checkpoint`, re-signed
  periodically (freshness), and published retained on `P/audit/checkpoint`.

What verification catches, and against what:
- an edited entry (its hash no longer matches), a removed or reordered entry (`seq` or `prev`
  breaks), a torn or garbage line: from the log alone;
- an edited log re-chained and re-hashed: against the hub's signed checkpoint (verification
  requires one: an unsigned log proves nothing);
- truncation, or a rewritten history re-signed with the hub key: only against a checkpoint
  somebody else pinned (an owner device, `privacy-agent audit pin`). Each new pin must come with
  a consistency proof that it extends the last one, so a fork is reported as a fork, and a pin
  never goes backwards (a retained message from the broker is untrusted).

Invariants: entries are never rewritten in place (the file is opened O_APPEND; the only repair
is dropping a torn final line without a newline, which is reported and itself logged as
`audit_repair`); fields carry ids, counts and reasons, never keys, frames or tokens.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.encoding
import nacl.hash

from agent.access import merkle
from agent.access.checkpoint import Checkpoint
from agent.clock import Clock, SystemClock
from agent.crypto.keys import HubIdentity, HubPublic, canonical_json
from agent.errors import AuditError
from agent.fsutil import atomic_write
from agent.jsonlimits import loads_bounded

log = logging.getLogger(__name__)

AUDIT_DIRNAME = "audit"
LOG_FILE = "log.jsonl"
#: The hub's latest signed checkpoint (a C2SP note, not JSON).
CHECKPOINT_FILE = "checkpoint"
ENTRY_PERSON = b"epa1-audit-entry"
ZERO_HASH_HEX = "0" * 64

#: What the audit log records (kind names are part of the format).
KINDS: frozenset[str] = frozenset(
    {
        "boot",
        # The firmware hooks (firmware_hooks/CONTRACT.md): a clean power-off, and a factory reset
        # (the last entry of a hub's log: its final checkpoint covers it, then the log is wiped).
        "shutdown",
        "factory_reset",
        "config_change",
        "mode_change",
        "clip_created",
        "clip_uploaded",
        "clip_deleted",
        "access_request",
        "access_challenge",
        "access_approval",
        "access_denial",
        "access_grant",
        "access_expiry",
        "access_refused",
        "model_fault",
        "tamper",
        # The owner said a moved camera's new view is right (`camera relearn`, or a signed
        # `relearn` over MQTT): recorded before the camera learns its view again.
        "camera_relearned",
        "audit_repair",
        "events_lost",
        "clip_vanished",
        # The first clip of a camera's clip chain: a chain whose recorded head is missing from
        # the clips an owner holds had its first clips deleted.
        "clip_stream_start",
        # The per-device counter state was lost and reset (with a floor): owners should know.
        "access_state_reset",
        # A household device's signed epoch key list was installed, or refused (with the reason).
        "epochs_installed",
        "epochs_refused",
        # An owner device's signed request to delete clips (recorded before anything is deleted).
        "delete_request",
        # Clips deleted on purpose (agent.storage.deletion), each recorded before any file goes:
        # by retention (`clips_expired`), to make room (`clips_evicted`), or on request
        # (`clips_deleted`, also the outcome of every deletion). Ids, seqs, streams, never content.
        "clips_expired",
        "clips_evicted",
        "clips_deleted",
    }
)


_ENTRY_KEYS = frozenset({"seq", "kind", "wall_ms", "fields", "prev", "hash"})


def audit_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / AUDIT_DIRNAME


def entry_hash(seq: int, kind: str, wall_ms: int, fields: Mapping[str, Any], prev: str) -> str:
    body = canonical_json({"seq": seq, "kind": kind, "wall_ms": wall_ms, "fields": dict(fields), "prev": prev})
    return nacl.hash.blake2b(body, digest_size=32, person=ENTRY_PERSON, encoder=nacl.encoding.HexEncoder).decode()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    kind: str
    wall_ms: int
    fields: Mapping[str, Any]
    prev: str
    hash: str

    def line(self) -> bytes:
        return canonical_json(
            {"seq": self.seq, "kind": self.kind, "wall_ms": self.wall_ms, "fields": dict(self.fields),
             "prev": self.prev, "hash": self.hash}
        ) + b"\n"


class AuditLog:
    """The hub's audit log. Thread-safe; every append is fsynced before it returns."""

    def __init__(
        self,
        directory: Path,
        clock: Clock | None = None,
        hub: HubIdentity | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
        fsync: bool = True,
    ) -> None:
        self.dir = Path(directory)
        self.path = self.dir / LOG_FILE
        self._clock = clock or SystemClock()
        self._hub = hub
        self.on_checkpoint = on_checkpoint  # may be set later (the MQTT side publishes it)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._leaves: list[bytes] = []
        self._frontier: list[tuple[int, bytes]] = []
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            repaired = self._repair_torn_tail()
            self._size, self._head = self._read_tail()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as e:
            raise AuditError(f"cannot open audit log {self.path}: {e.strerror}") from None
        if repaired:
            self.append("audit_repair", {"dropped_bytes": repaired, "reason": "torn final line"})

    # --- opening ---------------------------------------------------------------

    def _repair_torn_tail(self) -> int:
        """A crash mid-write leaves a final line without newline: drop it (it was never acknowledged)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        if size == 0:
            return 0
        with open(self.path, "rb+") as f:
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return 0
            # find the last newline
            pos = size
            block = 4096
            cut = 0
            while pos > 0:
                start = max(0, pos - block)
                f.seek(start)
                chunk = f.read(pos - start)
                i = chunk.rfind(b"\n")
                if i >= 0:
                    cut = start + i + 1
                    break
                pos = start
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
        log.warning("audit log %s: dropped a torn final line (%d bytes)", self.path, size - cut)
        return size - cut

    def _read_tail(self) -> tuple[int, str]:
        """Size and head of the log, and every leaf hash (for the Merkle root and proofs)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return 0, ZERO_HASH_HEX
        lines = raw.split(b"\n")[:-1] if raw else []
        for ln in lines:
            self._add_leaf(merkle.leaf_hash(ln))
        if not lines:
            return 0, ZERO_HASH_HEX
        try:
            doc = json.loads(lines[-1])
            return int(doc["seq"]), str(doc["hash"])
        except (ValueError, KeyError, TypeError):
            raise AuditError(
                f"audit log {self.path}: the last entry is unreadable; run `privacy-agent audit verify`"
            ) from None

    def _add_leaf(self, h: bytes) -> None:
        # The frontier holds the roots of the perfect subtrees the tree is made of (sizes are the
        # binary digits of the leaf count), so the root costs O(log n) per append.
        self._leaves.append(h)
        self._frontier.append((1, h))
        while len(self._frontier) > 1 and self._frontier[-1][0] == self._frontier[-2][0]:
            (n, right), (_, left) = self._frontier.pop(), self._frontier.pop()
            self._frontier.append((2 * n, merkle.node_hash(left, right)))

    def _root(self) -> bytes:
        if not self._frontier:
            return merkle.EMPTY_ROOT
        acc = self._frontier[-1][1]
        for _, h in reversed(self._frontier[:-1]):
            acc = merkle.node_hash(h, acc)
        return acc

    @property
    def root(self) -> str:
        with self._lock:
            return self._root().hex()

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """Proof that the tree of `new_size` entries extends the one of `old_size` (RFC 9162)."""
        with self._lock:
            if not 0 <= old_size <= new_size <= len(self._leaves):
                raise AuditError(f"no consistency proof from size {old_size} to {new_size}: "
                                 f"the log has {len(self._leaves)} entries")
            leaves = self._leaves[:new_size]
        return merkle.consistency_proof(leaves, old_size)

    # --- writing ---------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def head(self) -> str:
        return self._head

    def append(self, kind: str, fields: Mapping[str, Any] | None = None) -> AuditEntry:
        """Append one entry (fsynced) and, with a hub identity, sign a fresh checkpoint."""
        if kind not in KINDS:
            raise AuditError(f"unknown audit kind {kind!r} (known: {', '.join(sorted(KINDS))})")
        flds = dict(fields or {})
        try:
            canonical_json(flds)
        except (TypeError, ValueError) as e:
            raise AuditError(f"audit fields for {kind!r} are not JSON: {e}") from None
        wall_ms = int(self._clock.wall() * 1000)
        with self._lock:
            seq = self._size + 1
            h = entry_hash(seq, kind, wall_ms, flds, self._head)
            entry = AuditEntry(seq, kind, wall_ms, flds, self._head, h)
            data = entry.line()
            try:
                n = os.write(self._fd, data)
                if n != len(data):
                    raise OSError(28, "short write")
                if self._fsync:
                    os.fsync(self._fd)
            except OSError as e:
                raise AuditError(f"cannot append to audit log {self.path}: {e.strerror}") from None
            self._size, self._head = seq, h
            self._add_leaf(merkle.leaf_hash(data[:-1]))
            cp = self._checkpoint_locked() if self._hub is not None else None
        if cp is not None and self.on_checkpoint is not None:
            self.on_checkpoint(cp)
        return entry

    def checkpoint(self) -> Checkpoint:
        """Sign (and store) a checkpoint for the current tree: also done periodically, so that an
        owner can tell a live hub from a broker replaying an old checkpoint."""
        if self._hub is None:
            raise AuditError("this audit log has no hub identity to sign checkpoints")
        with self._lock:
            cp = self._checkpoint_locked()
        if self.on_checkpoint is not None:
            self.on_checkpoint(cp)
        return cp

    def _checkpoint_locked(self) -> Checkpoint:
        assert self._hub is not None
        cp = Checkpoint.sign(self._hub, self._size, self._root().hex(), int(self._clock.wall() * 1000))
        try:
            # fsynced before the rename: a power cut must not leave a torn checkpoint.
            atomic_write(self.dir / CHECKPOINT_FILE, cp.encode(), 0o600)
        except OSError as e:
            raise AuditError(f"cannot write audit checkpoint in {self.dir}: {e.strerror}") from None
        return cp

    def latest_checkpoint(self) -> Checkpoint | None:
        if self._hub is None:
            return None
        try:
            data = (self.dir / CHECKPOINT_FILE).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise AuditError(f"cannot read audit checkpoint: {e.strerror}") from None
        return Checkpoint.decode(data, self._hub.public)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


# --- verification ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyReport:
    entries: int
    head: str
    root: str
    problems: tuple[str, ...]
    checked: int
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def pinned_checked(self) -> int:
        return self.checked


def read_entries(path: Path) -> tuple[list[AuditEntry], list[str]]:
    """Parse the log. Returns entries and problems (edits, gaps, reordering, garbage)."""
    problems: list[str] = []
    entries: list[AuditEntry] = []
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AuditError(f"audit log {path} does not exist") from None
    except IsADirectoryError:
        raise AuditError(f"audit log {path} is a directory; give the log file or --data DIR") from None
    except OSError as e:
        raise AuditError(f"cannot read audit log {path}: {e.strerror}") from None
    if raw and not raw.endswith(b"\n"):
        torn_line = raw.count(b"\n") + 1
        problems.append(f"line {torn_line}: torn final line (no newline)")
    prev = ZERO_HASH_HEX
    for lineno, line in enumerate(raw.split(b"\n")[:-1] if raw else [], start=1):
        expect = len(entries) + 1
        try:
            doc = loads_bounded(line, max_bytes=1 << 20, max_depth=16, what=f"audit log line {lineno}")
        except (ValueError, UnicodeDecodeError):
            problems.append(f"line {lineno}: not JSON (edited or corrupted)")
            continue
        if not isinstance(doc, dict) or set(doc) != _ENTRY_KEYS:
            problems.append(f"line {lineno}: not an audit entry")
            continue
        seq, kind, wall_ms, flds, p, h = (doc[k] for k in ("seq", "kind", "wall_ms", "fields", "prev", "hash"))
        if not (isinstance(seq, int) and isinstance(kind, str) and isinstance(wall_ms, int)
                and isinstance(flds, dict) and isinstance(p, str) and isinstance(h, str)):
            problems.append(f"line {lineno}: malformed entry")
            continue
        entry = AuditEntry(seq, kind, wall_ms, flds, p, h)
        if entry_hash(seq, kind, wall_ms, flds, p) != h:
            problems.append(f"line {lineno} (seq {seq}): entry was edited (hash does not match its content)")
        elif line + b"\n" != entry.line():
            problems.append(f"line {lineno} (seq {seq}): entry is not in canonical form (edited)")
        if seq != expect:
            what = "removed" if seq > expect else "reordered or duplicated"
            problems.append(f"line {lineno}: seq {seq} where {expect} was expected (entry {what})")
        if p != prev:
            problems.append(f"line {lineno} (seq {seq}): does not chain to the previous entry "
                            "(an entry before it was removed, reordered or edited)")
        prev = h
        entries.append(entry)
    return entries, problems


def leaves_of(entries: list[AuditEntry]) -> list[bytes]:
    return [merkle.leaf_hash(e.line()[:-1]) for e in entries]


def verify_log(path: Path, hub: HubPublic, checkpoints: Iterable[Checkpoint] = (), *,
               require_signed: bool = True) -> VerifyReport:
    """Check the chain, and the Merkle root at the size of every hub-signed checkpoint given (the
    hub's own and the owner's pins). Without a signed checkpoint the result is a failure: a log
    can be edited and re-chained by anyone who can write the file."""
    entries, problems = read_entries(path)
    leaves = leaves_of(entries)
    warnings: list[str] = []
    cps = list(checkpoints)
    if require_signed and not cps:
        problems.append("no signed checkpoint to check the log against: an unsigned log proves nothing "
                        "(give the hub's data directory with its checkpoint, --checkpoint FILE or --pins FILE)")
    for cp in cps:
        if cp.hub != hub.key_id:
            problems.append(f"checkpoint of size {cp.size} is from hub {cp.hub}, not {hub.key_id}")
            continue
        if cp.size > len(entries):
            problems.append(f"log truncated: it has {len(entries)} entries but a signed checkpoint says {cp.size}")
            continue
        if merkle.root(leaves[:cp.size]).hex() != cp.root:
            problems.append(
                f"log diverges from the signed checkpoint at size {cp.size} "
                "(history rewritten, edited or entries removed before that point)"
            )
    if cps:
        newest = max(c.size for c in cps)
        if len(entries) > newest:
            warnings.append(f"{len(entries) - newest} entr{'y' if len(entries) - newest == 1 else 'ies'} after "
                            f"the newest signed checkpoint (size {newest}) are not covered by a signature")
    head = entries[-1].hash if entries else ZERO_HASH_HEX
    return VerifyReport(len(entries), head, merkle.root(leaves).hex(), tuple(problems), len(cps), tuple(warnings))


def verify_with_checkpoint(path: Path, hub: HubPublic, own_checkpoint: Path | None,
                           pins: Iterable[Checkpoint] = ()) -> VerifyReport:
    """`verify_log` against the hub's own signed checkpoint file (when given) and the owner's pins.

    The one verdict `owner audit verify` prints and the hub's page shows. A missing or bad checkpoint
    file is one of the report's problems, not an exception: the log is still checked against the
    pins, and the owner sees both findings (a deleted checkpoint is itself a sign of tampering).
    """
    signed: list[Checkpoint] = []
    problems: list[str] = []
    if own_checkpoint is not None:
        try:
            signed.append(Checkpoint.decode(own_checkpoint.read_bytes(), hub, str(own_checkpoint)))
        except FileNotFoundError:
            problems.append(f"the hub's signed checkpoint {own_checkpoint} is missing")
        except OSError as e:
            problems.append(f"the hub's signed checkpoint {own_checkpoint} cannot be read ({e.strerror})")
        except AuditError as e:
            problems.append(f"hub checkpoint: {e}")
    report = verify_log(path, hub, [*signed, *pins])
    return dataclasses.replace(report, problems=tuple(problems) + report.problems)


# --- owner-side pins -----------------------------------------------------------------

#: A pin older than this (by the hub's own signing time) gets a warning: the hub may be offline,
#: or the broker keeps showing an old checkpoint.
STALE_AFTER_S = 86_400


def read_pins(path: Path, hub: HubPublic) -> list[Checkpoint]:
    """Every checkpoint the owner pinned (one JSON line `{"note": ...}` each), verified under `hub`."""
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise AuditError(f"cannot read pinned checkpoints {path}: {e}") from None
    out = []
    for i, ln in enumerate(lines, start=1):
        try:
            doc = loads_bounded(ln, max_bytes=8192, max_depth=4, what=f"{path}:{i}")
        except ValueError as e:
            raise AuditError(f"{path}:{i}: not a pinned checkpoint ({e})") from None
        if not isinstance(doc, dict) or set(doc) != {"note"} or not isinstance(doc["note"], str):
            raise AuditError(f"{path}:{i}: not a pinned checkpoint (expected {{\"note\": ...}})")
        out.append(Checkpoint.decode(doc["note"], hub, f"{path}:{i}"))
    return out


def check_extends(pinned: Checkpoint, cp: Checkpoint, proof: list[bytes] | None) -> None:
    """Raise AuditError unless `cp` extends `pinned` (same tree, or a proven extension of it)."""
    if cp.size < pinned.size:
        raise AuditError(
            f"checkpoint of size {cp.size} is smaller than the pinned size {pinned.size}: a rollback "
            "(the broker replays an old checkpoint, or the hub's log was cut back); refusing it"
        )
    if cp.size == pinned.size:
        if cp.root != pinned.root:
            raise AuditError(f"FORK: the hub signed two different logs of size {cp.size}")
        return
    if proof is None:
        raise AuditError("no consistency proof: cannot show that the new checkpoint extends the pinned one")
    if not merkle.verify_consistency(pinned.size, cp.size, bytes.fromhex(pinned.root), bytes.fromhex(cp.root), proof):
        raise AuditError(
            f"FORK: the checkpoint of size {cp.size} does not extend the pinned one of size {pinned.size} "
            "(the consistency proof fails: the hub's history was rewritten)"
        )


def pin_checkpoint(path: Path, cp: Checkpoint, hub: HubPublic,
                   proof_for: Callable[[int, int], list[bytes]] | None = None) -> bool:
    """Add `cp` to the pin file after proving it extends the last pin (`proof_for(old, new)` gives
    the consistency proof). Refuses a rollback and a fork. Returns False if already pinned."""
    pins = read_pins(path, hub)
    if pins:
        last = pins[-1]
        proof = proof_for(last.size, cp.size) if (proof_for is not None and cp.size > last.size) else None
        check_extends(last, cp, proof)
        if cp.size == last.size:
            return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, canonical_json({"note": cp.encode().decode()}) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise AuditError(f"cannot write pinned checkpoints {path}: {e.strerror}") from None
    return True


def stream_heads(entries: Iterable[AuditEntry]) -> dict[str, str]:
    """Clip chain starts recorded in the log (`clip_stream_start`): stream id hex -> first clip id.
    A chain re-started later (a new head for the same stream) keeps the newest record."""
    heads: dict[str, str] = {}
    for e in entries:
        if e.kind == "clip_stream_start":
            s, c = e.fields.get("stream"), e.fields.get("clip_id")
            if isinstance(s, str) and isinstance(c, str):
                heads[s] = c
    return heads
