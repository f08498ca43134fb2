"""Tamper-evident audit log: an append-only hash chain with hub-signed checkpoints.

Who viewed or released what is the record Ring never kept. Every clip, access request,
challenge, approval, denial, grant, expiry, mode change, config change, boot, model fault and
tamper event is appended here (`AuditLog.append(kind, fields)`).

Format (docs/access-protocol.md, "Audit log"):
- `DATA/audit/log.jsonl`: one canonical-JSON object per line,
  `{"fields","hash","kind","prev","seq","wall_ms"}`. `seq` starts at 1; `prev` is the previous
  entry's `hash` (64 zero hex digits for the first); `hash` is
  BLAKE2b-256(person="epa1-audit-entry", canonical_json(entry without "hash")).
- A checkpoint `{"format":"epa1-audit-checkpoint","head","hub","size","wall_ms"}` names the
  number of entries and the hash of the last one. The hub signs
  `b"epa/v1/audit-checkpoint\\0" || canonical_json(body)` with its Ed25519 key (its own domain,
  so no other signed message can pass as a checkpoint) and publishes it retained on
  `P/audit/checkpoint`. The latest is also kept in `DATA/audit/checkpoint.json`.

What verification catches, and against what:
- an edited entry (its hash no longer matches), a removed or reordered entry (`seq` or `prev`
  breaks), a torn or garbage line: from the log alone;
- truncation, or a rewritten history re-chained from some point on: only against a checkpoint
  somebody else pinned (an owner device, `privacy-agent audit pin`), because whoever holds the
  hub key can re-sign a shortened or rewritten log. The pin file keeps every checkpoint pinned,
  and a pin never goes backwards (a retained message from the broker is untrusted).

Invariants: entries are never rewritten in place (the file is opened O_APPEND; the only repair
is dropping a torn final line without a newline, which is reported and itself logged as
`audit_repair`); fields carry ids, counts and reasons, never keys, frames or tokens.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.encoding
import nacl.exceptions
import nacl.hash

from agent.clock import Clock, SystemClock
from agent.crypto.keys import HubIdentity, HubPublic, b64url_decode, b64url_encode, canonical_json
from agent.errors import AuditError, InvalidKey
from agent.fsutil import atomic_write

log = logging.getLogger(__name__)

AUDIT_DIRNAME = "audit"
LOG_FILE = "log.jsonl"
CHECKPOINT_FILE = "checkpoint.json"
CHECKPOINT_FORMAT = "epa1-audit-checkpoint"
CHECKPOINT_SIG_DOMAIN = b"epa/v1/audit-checkpoint\x00"
ENTRY_PERSON = b"epa1-audit-entry"
ZERO_HASH_HEX = "0" * 64

#: What the audit log records (kind names are part of the format).
KINDS: frozenset[str] = frozenset(
    {
        "boot",
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
        "audit_repair",
        "events_lost",
        "clip_vanished",
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


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A hub-signed statement: the log had `size` entries and the last one hashed to `head`."""

    hub: str
    size: int
    head: str
    wall_ms: int
    signature: bytes = field(repr=False)

    def body(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "hub": self.hub, "size": self.size, "head": self.head,
                "wall_ms": self.wall_ms}

    def encode(self) -> bytes:
        return canonical_json({"checkpoint": self.body(), "signature": b64url_encode(self.signature)})

    @staticmethod
    def sign(hub: HubIdentity, size: int, head: str, wall_ms: int) -> Checkpoint:
        unsigned = Checkpoint(hub.key_id, size, head, wall_ms, b"")
        sig = hub.signing_key.sign(CHECKPOINT_SIG_DOMAIN + canonical_json(unsigned.body())).signature
        return Checkpoint(hub.key_id, size, head, wall_ms, sig)

    @staticmethod
    def decode(data: bytes | str, hub: HubPublic, what: str = "checkpoint") -> Checkpoint:
        """Parse and verify under `hub`. Raises AuditError naming what is wrong."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise AuditError(f"{what}: not JSON") from None
        if not isinstance(doc, dict) or set(doc) != {"checkpoint", "signature"}:
            raise AuditError(f"{what}: expected exactly the keys 'checkpoint' and 'signature'")
        body, sig_s = doc["checkpoint"], doc["signature"]
        if not isinstance(body, dict) or set(body) != {"format", "hub", "size", "head", "wall_ms"}:
            raise AuditError(f"{what}: malformed body")
        if body["format"] != CHECKPOINT_FORMAT:
            raise AuditError(f"{what}: unknown format {body['format']!r}")
        size, head, wall_ms, hub_id = body["size"], body["head"], body["wall_ms"], body["hub"]
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
            raise AuditError(f"{what}: size must be a non-negative integer")
        if not (isinstance(head, str) and len(head) == 64 and all(c in "0123456789abcdef" for c in head)):
            raise AuditError(f"{what}: head must be 64 lower-case hex digits")
        if not (isinstance(wall_ms, int) and not isinstance(wall_ms, bool)):
            raise AuditError(f"{what}: wall_ms must be an integer")
        if hub_id != hub.key_id:
            raise AuditError(f"{what}: signed by hub {hub_id!r}, expected {hub.key_id}")
        if not isinstance(sig_s, str):
            raise AuditError(f"{what}: signature must be a string")
        try:
            sig = b64url_decode(sig_s, f"{what}: signature")
        except InvalidKey as e:
            raise AuditError(str(e)) from None
        cp = Checkpoint(hub_id, size, head, wall_ms, sig)
        if canonical_json(cp.body()) != canonical_json(body) or len(sig) != 64:
            raise AuditError(f"{what}: malformed")
        try:
            hub.verify_key.verify(CHECKPOINT_SIG_DOMAIN + canonical_json(cp.body()), sig)
        except nacl.exceptions.BadSignatureError:
            raise AuditError(f"{what}: the hub signature does not verify") from None
        return cp


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
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                end = f.tell()
                if end == 0:
                    return 0, ZERO_HASH_HEX
                f.seek(max(0, end - 65536))
                last = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        except FileNotFoundError:
            return 0, ZERO_HASH_HEX
        try:
            doc = json.loads(last)
            return int(doc["seq"]), str(doc["hash"])
        except (ValueError, KeyError, TypeError):
            raise AuditError(
                f"audit log {self.path}: the last entry is unreadable; run `privacy-agent audit verify`"
            ) from None

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
            cp = self._checkpoint_locked() if self._hub is not None else None
        if cp is not None and self.on_checkpoint is not None:
            self.on_checkpoint(cp)
        return entry

    def checkpoint(self) -> Checkpoint:
        """Sign (and store) a checkpoint for the current head."""
        if self._hub is None:
            raise AuditError("this audit log has no hub identity to sign checkpoints")
        with self._lock:
            return self._checkpoint_locked()

    def _checkpoint_locked(self) -> Checkpoint:
        assert self._hub is not None
        cp = Checkpoint.sign(self._hub, self._size, self._head, int(self._clock.wall() * 1000))
        try:
            # fsynced before the rename: a power cut must not leave a torn checkpoint.
            atomic_write(self.dir / CHECKPOINT_FILE, cp.encode() + b"\n", 0o644)
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
    problems: tuple[str, ...]
    pinned_checked: int

    @property
    def ok(self) -> bool:
        return not self.problems


def read_entries(path: Path) -> tuple[list[AuditEntry], list[str]]:
    """Parse the log. Returns entries and problems (edits, gaps, reordering, garbage)."""
    problems: list[str] = []
    entries: list[AuditEntry] = []
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AuditError(f"audit log {path} does not exist") from None
    except OSError as e:
        raise AuditError(f"cannot read audit log {path}: {e.strerror}") from None
    if raw and not raw.endswith(b"\n"):
        torn_line = raw.count(b"\n") + 1
        problems.append(f"line {torn_line}: torn final line (no newline)")
    prev = ZERO_HASH_HEX
    for lineno, line in enumerate(raw.split(b"\n")[:-1] if raw else [], start=1):
        expect = len(entries) + 1
        try:
            doc = json.loads(line)
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


def verify_log(path: Path, hub: HubPublic, pinned: Iterable[Checkpoint] = ()) -> VerifyReport:
    """Check the chain and every pinned checkpoint (each must be a prefix of this log)."""
    entries, problems = read_entries(path)
    n = 0
    for cp in pinned:
        n += 1
        if cp.hub != hub.key_id:
            problems.append(f"pinned checkpoint of size {cp.size} is from hub {cp.hub}, not {hub.key_id}")
            continue
        if cp.size > len(entries):
            problems.append(
                f"log truncated: it has {len(entries)} entries but a pinned checkpoint says {cp.size}"
            )
            continue
        have = entries[cp.size - 1].hash if cp.size else ZERO_HASH_HEX
        if have != cp.head:
            problems.append(
                f"log diverges from the pinned checkpoint at size {cp.size} "
                "(history rewritten, edited or entries removed before that point)"
            )
    head = entries[-1].hash if entries else ZERO_HASH_HEX
    return VerifyReport(len(entries), head, tuple(problems), n)


# --- owner-side pins -----------------------------------------------------------------


def read_pins(path: Path, hub: HubPublic) -> list[Checkpoint]:
    """Every checkpoint the owner pinned (one per line), each verified under `hub`."""
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise AuditError(f"cannot read pinned checkpoints {path}: {e}") from None
    return [Checkpoint.decode(ln, hub, f"{path}:{i}") for i, ln in enumerate(lines, start=1)]


def pin_checkpoint(path: Path, cp: Checkpoint, hub: HubPublic) -> bool:
    """Add `cp` to the pin file. Refuses a checkpoint older than the last pin (rollback) and a
    different head for the same size (a fork). Returns False if it was already pinned."""
    pins = read_pins(path, hub)
    if pins:
        last = pins[-1]
        if cp.size < last.size:
            raise AuditError(
                f"checkpoint of size {cp.size} is older than the pinned size {last.size}; refusing a rollback"
            )
        if cp.size == last.size:
            if cp.head != last.head:
                raise AuditError(
                    f"checkpoint of size {cp.size} has another head than the pinned one: the hub's log forked"
                )
            return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(cp.encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise AuditError(f"cannot write pinned checkpoints {path}: {e.strerror}") from None
    return True
