"""A household device's epoch secret store: the file that makes shredding possible.

Beside the device identity (`alice.key` -> `alice.key.epochs`), mode 0600, JSON:

    {"format": "epa1-epoch-store", "device": key id, "epoch_s": int, "retention_days": int | null,
     "secrets": {"<epoch>": b64url(X25519 secret), ...},
     "shredded": [{"first": epoch, "last": epoch, "at_s": wall time of the shred}, ...],
     "list": the last signed public list (`EpochList.encode()` as an object) | null}

Invariants (security intent first):
- Epoch secrets are fresh random keys, never derived from the device identity: the long-term
  key cannot recompute a destroyed one.
- Destroying an epoch removes its secret from the file, rewritten atomically (temp file, fsync,
  rename, fsync of the directory) BEFORE the call returns; the epoch's index and the time are
  kept in `shredded`, so opening one of its clips says "past retention", not "unknown".
- Every change is a read-modify-write of the file on disk under an exclusive `flock` on it: two
  processes (an `open` that auto-shreds, a `generate`) never undo each other's shred by writing
  back a secret they loaded earlier.
- An epoch's key never changes once generated; each generated list has a higher version and
  passes `check_epoch_update` against the previous one.
- Only past epochs can be shredded (an epoch the hub may still wrap to stays).
- A failed write (read-only path, full disk) raises `EpochError` naming the file and changes
  nothing: neither the file nor this object.
- What it cannot do: a copy of the store made before a shred (a backup, another device, flash
  blocks the filesystem has not reused) still holds the secret. See docs/envelope-spec.md.
"""

from __future__ import annotations

import bisect
import fcntl
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from nacl.public import PrivateKey

from agent.crypto.keys.encoding import b64url_decode, b64url_encode, canonical_json, check_key_id
from agent.crypto.keys.epochs import (
    DEFAULT_EPOCH_S,
    DEFAULT_HORIZON_S,
    MAX_EPOCHS,
    EpochList,
    check_epoch_update,
    epoch_of,
)
from agent.crypto.keys.files import read_secret_file
from agent.crypto.keys.identity import DeviceIdentity
from agent.errors import EpochError, InvalidKey, KeyFileError, PastRetention
from agent.fsutil import atomic_write, fsync_dir
from agent.jsonlimits import loads_bounded

STORE_FORMAT = "epa1-epoch-store"
STORE_SUFFIX = ".epochs"
#: A year of hourly secrets is about 0.5 MB; leave room for a few.
MAX_STORE_BYTES = 16 << 20
MAX_RETENTION_DAYS = 36_500

T = TypeVar("T")


def store_path(identity_path: Path | str) -> Path:
    """The epoch store beside a device identity file: `alice.key` -> `alice.key.epochs`."""
    p = Path(identity_path)
    return p.with_name(p.name + STORE_SUFFIX)


def utc(wall_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(wall_s))


def epoch_span(epoch: int, epoch_s: int) -> str:
    """`2026-01-31 18:00-19:00 UTC`: the wall time an epoch covers."""
    start, end = epoch * epoch_s, (epoch + 1) * epoch_s
    s = time.strftime("%Y-%m-%d %H:%M", time.gmtime(start))
    same_day = time.gmtime(start)[:3] == time.gmtime(end)[:3]
    e = time.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M", time.gmtime(end))
    return f"{s}-{e} UTC"


@dataclass(frozen=True, slots=True)
class ShredRecord:
    """Epochs `first..last` (inclusive) had their secrets destroyed at wall time `at_s`."""

    first: int
    last: int
    at_s: int


@dataclass(frozen=True, slots=True)
class ShredResult:
    """What one shred did: the epochs destroyed now, and (for a range) the partial epochs kept."""

    epoch_s: int
    at_s: int
    destroyed: tuple[int, ...] = ()
    kept_partial: tuple[int, ...] = ()

    @property
    def destroyed_from_s(self) -> int | None:
        return None if not self.destroyed else self.destroyed[0] * self.epoch_s

    @property
    def destroyed_to_s(self) -> int | None:
        return None if not self.destroyed else (self.destroyed[-1] + 1) * self.epoch_s


@dataclass(frozen=True, slots=True)
class _State:
    """One snapshot of the file's content (immutable: a change builds a new one)."""

    device: str
    epoch_s: int
    secrets: Mapping[int, bytes] = field(repr=False)
    shredded: tuple[ShredRecord, ...] = ()
    retention_days: int | None = None
    listed: EpochList | None = None

    def encode(self) -> bytes:
        doc = {
            "format": STORE_FORMAT,
            "device": self.device,
            "epoch_s": self.epoch_s,
            "retention_days": self.retention_days,
            "secrets": {str(e): b64url_encode(self.secrets[e]) for e in sorted(self.secrets)},
            "shredded": [{"first": r.first, "last": r.last, "at_s": r.at_s} for r in self.shredded],
            "list": None if self.listed is None else {"list": self.listed.body(),
                                                       "signature": b64url_encode(self.listed.signature)},
        }
        return canonical_json(doc) + b"\n"

    def shred_record(self, epoch: int) -> ShredRecord | None:
        return next((r for r in self.shredded if r.first <= epoch <= r.last), None)

    def without(self, epochs: Iterable[int], at_s: int) -> _State:
        """This state with the secrets of `epochs` destroyed, recorded as shredded at `at_s`."""
        gone = sorted(set(epochs) & set(self.secrets))
        if not gone:
            return self
        records = list(self.shredded)
        run_start = prev = gone[0]
        for e in gone[1:]:
            if e != prev + 1:
                records.append(ShredRecord(run_start, prev, at_s))
                run_start = e
            prev = e
        records.append(ShredRecord(run_start, prev, at_s))
        dead = set(gone)
        secrets = {e: s for e, s in self.secrets.items() if e not in dead}
        return replace(self, secrets=secrets, shredded=tuple(records))


def _int(v: Any, what: str, lo: int = 0, hi: int = 2**63) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v < hi:
        raise EpochError(f"{what} must be an integer in {lo}..{hi - 1}")
    return v


def _decode(data: bytes, path: Path) -> _State:
    what = f"epoch key store {path}"
    try:
        doc = loads_bounded(data, max_bytes=MAX_STORE_BYTES, max_depth=6, what=what)
    except ValueError as e:
        raise EpochError(f"{what} is not valid JSON ({e}); it is damaged") from None
    expected = {"format", "device", "epoch_s", "retention_days", "secrets", "shredded", "list"}
    if not isinstance(doc, dict) or set(doc) != expected:
        raise EpochError(f"{what}: expected exactly the keys {sorted(expected)}")
    if doc["format"] != STORE_FORMAT:
        raise EpochError(f"{what}: unknown format {doc['format']!r}")
    try:
        device = check_key_id(doc["device"], f"{what}: device")
        epoch_s = _int(doc["epoch_s"], f"{what}: epoch_s", 60, 86_401)
        ret = doc["retention_days"]
        retention = None if ret is None else _int(ret, f"{what}: retention_days", 1, MAX_RETENTION_DAYS + 1)
        if not isinstance(doc["secrets"], dict):
            raise EpochError(f"{what}: secrets must be an object")
        secrets: dict[int, bytes] = {}
        for k, v in doc["secrets"].items():
            if not (k.isascii() and k.isdigit()) or str(int(k)) != k or not isinstance(v, str):
                raise EpochError(f"{what}: secrets must map epoch numbers to base64url keys")
            raw = b64url_decode(v, f"{what}: secret of epoch {k}")
            if len(raw) != 32:
                raise EpochError(f"{what}: the secret of epoch {k} is not 32 bytes")
            secrets[_int(int(k), f"{what}: epoch")] = raw
        if not isinstance(doc["shredded"], list):
            raise EpochError(f"{what}: shredded must be a list")
        shredded = []
        for r in doc["shredded"]:
            if not isinstance(r, dict) or set(r) != {"first", "last", "at_s"}:
                raise EpochError(f"{what}: each shred record has exactly first, last and at_s")
            rec = ShredRecord(_int(r["first"], f"{what}: shred first"), _int(r["last"], f"{what}: shred last"),
                              _int(r["at_s"], f"{what}: shred time"))
            if rec.last < rec.first:
                raise EpochError(f"{what}: a shred record is empty")
            shredded.append(rec)
        live = sorted(secrets)
        for rec in shredded:  # a destroyed epoch with a secret again: damaged or tampered with
            i = bisect.bisect_left(live, rec.first)
            if i < len(live) and live[i] <= rec.last:
                raise EpochError(f"{what}: epoch {live[i]} is recorded as destroyed but has a secret")
        listed = None
        if doc["list"] is not None:
            listed = _decode_list(doc["list"], device, epoch_s, what)
    except InvalidKey as e:
        raise EpochError(f"{what}: {e}") from None
    return _State(device, epoch_s, secrets, tuple(shredded), retention, listed)


def _decode_list(doc: Any, device: str, epoch_s: int, what: str) -> EpochList:
    """The store's own copy of the last list it signed (trusted as far as the store is: the
    device re-derives every public key it publishes from the secrets anyway)."""
    if not isinstance(doc, dict) or set(doc) != {"list", "signature"} or not isinstance(doc["list"], dict):
        raise EpochError(f"{what}: list must be a signed epoch list")
    b = doc["list"]
    body_keys = {"format", "device", "hub", "epoch_s", "first", "keys", "version", "created_ms"}
    if set(b) != body_keys or not isinstance(b["keys"], list) or not all(isinstance(k, str) for k in b["keys"]) \
            or not isinstance(doc["signature"], str) or not (b["hub"] is None or isinstance(b["hub"], str)):
        raise EpochError(f"{what}: list is malformed")
    lst = EpochList(check_key_id(b["device"], f"{what}: list device"), b["hub"],
                    _int(b["epoch_s"], f"{what}: list epoch_s"), _int(b["first"], f"{what}: list first"),
                    tuple(b64url_decode(k, f"{what}: list key") for k in b["keys"]),
                    _int(b["version"], f"{what}: list version", 1), _int(b["created_ms"], f"{what}: created"),
                    b64url_decode(doc["signature"], f"{what}: list signature"))
    if lst.device != device or lst.epoch_s != epoch_s or not lst.keys:
        raise EpochError(f"{what}: list is for another device or epoch length")
    return lst


class EpochStore:
    """A device's epoch secrets on disk. Every change is durable before the method returns.

    Build one with `EpochStore.load(path)`, `EpochStore.create(path, identity)` or
    `EpochStore.open_or_create(path, identity)`; `store_path(identity_file)` names the file.
    """

    def __init__(self, path: Path, state: _State) -> None:
        self.path = Path(path)
        self._state = state

    # --- construction ---------------------------------------------------------------------

    @staticmethod
    def load(path: Path | str) -> EpochStore:
        """Read a store; a missing, loose (group/other permissions), unreadable or malformed file
        is an EpochError that names it."""
        p = Path(path)
        return EpochStore(p, _read(p))

    @staticmethod
    def create(path: Path | str, identity: DeviceIdentity, epoch_s: int = DEFAULT_EPOCH_S) -> EpochStore:
        """A new, empty store for `identity` (O_EXCL: never over an existing one), mode 0600."""
        p = Path(path)
        if not 60 <= epoch_s <= 86_400:
            raise EpochError("epoch length must be between one minute and one day")
        state = _State(identity.key_id, epoch_s, {})
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
        try:
            fd = os.open(p, flags, 0o600)
        except FileExistsError:
            raise EpochError(f"epoch key store {p} already exists") from None
        except OSError as e:
            raise EpochError(f"cannot create epoch key store {p}: {e.strerror or e}") from None
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, state.encode())
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            p.unlink(missing_ok=True)
            raise EpochError(f"cannot write epoch key store {p}: {e.strerror or e}") from None
        os.close(fd)
        fsync_dir(p.parent)
        return EpochStore(p, state)

    @staticmethod
    def open_or_create(path: Path | str, identity: DeviceIdentity, epoch_s: int = DEFAULT_EPOCH_S) -> EpochStore:
        p = Path(path)
        store = EpochStore.load(p) if os.path.lexists(p) else EpochStore.create(p, identity, epoch_s)
        if store.device != identity.key_id:
            raise EpochError(f"epoch key store {p} belongs to device {store.device}, not {identity.key_id}")
        return store

    # --- reading --------------------------------------------------------------------------

    @property
    def device(self) -> str:
        return self._state.device

    @property
    def epoch_s(self) -> int:
        return self._state.epoch_s

    @property
    def retention_days(self) -> int | None:
        return self._state.retention_days

    @property
    def current_list(self) -> EpochList | None:
        """The last list `generate` signed (what the hub should have)."""
        return self._state.listed

    @property
    def live_epochs(self) -> tuple[int, ...]:
        """Epochs whose secret is still held, ascending."""
        return tuple(sorted(self._state.secrets))

    @property
    def shredded(self) -> tuple[ShredRecord, ...]:
        return self._state.shredded

    def destroyed_at(self, epoch: int) -> int | None:
        """When the secret of `epoch` was destroyed (wall s), or None if it was not."""
        rec = self._state.shred_record(epoch)
        return None if rec is None else rec.at_s

    def secret_for(self, epoch: int) -> PrivateKey:
        """The secret of `epoch`. PastRetention if it was destroyed, EpochError if never known."""
        raw = self._state.secrets.get(epoch)
        if raw is not None:
            return PrivateKey(raw)
        at = self.destroyed_at(epoch)
        if at is not None:
            raise PastRetention(f"past retention: the key of epoch {epoch} ({epoch_span(epoch, self.epoch_s)}) "
                                f"was destroyed on {utc(at)}")
        raise EpochError(f"epoch key store {self.path} has no key for epoch {epoch} "
                         f"({epoch_span(epoch, self.epoch_s)}): it was never generated on this device")

    # --- changes (each one: lock, re-read, change, write, fsync) ----------------------------

    def generate(self, identity: DeviceIdentity, now_s: float, horizon_s: int = DEFAULT_HORIZON_S,
                 epoch_s: int = DEFAULT_EPOCH_S, hub: str | None = None) -> EpochList:
        """Sign a new public list from the current epoch to `now_s + horizon_s`.

        New secrets only for epochs not yet in the store; the keys of epochs already generated
        never change; the version is one above the last list. The returned list passes
        `check_epoch_update(previous, new)`. `hub` (a hub key id) binds the list to one hub."""
        if identity.key_id != self.device:
            raise EpochError(f"epoch key store {self.path} belongs to device {self.device}, not {identity.key_id}")
        if not 60 <= epoch_s <= 86_400:
            raise EpochError("epoch length must be between one minute and one day")
        if horizon_s < epoch_s:
            raise EpochError("the horizon must be at least one epoch")

        def change(st: _State) -> tuple[_State, EpochList]:
            if epoch_s != st.epoch_s:
                if st.secrets or st.shredded or st.listed is not None:
                    raise EpochError(f"epoch key store {self.path} uses {st.epoch_s // 60}-minute epochs; "
                                     "the epoch length of published keys cannot change")
                st = replace(st, epoch_s=epoch_s)
            prev = st.listed
            first = epoch_of(now_s, st.epoch_s)
            if prev is not None:
                first = max(first, prev.first)  # a clock that went back must not re-key dropped epochs
            if st.shredded:
                first = max(first, max(r.last for r in st.shredded) + 1)
            last = epoch_of(now_s + horizon_s, st.epoch_s)
            if prev is not None:
                last = max(last, prev.last)  # never end before the installed list: a rollback
            if last - first + 1 > MAX_EPOCHS:
                raise EpochError(f"{last - first + 1} epochs is more than one list holds ({MAX_EPOCHS}): "
                                 "use a shorter horizon or longer epochs")
            secrets = dict(st.secrets)
            keys = []
            for e in range(first, last + 1):
                if e not in secrets:
                    if prev is not None and prev.first <= e <= prev.last:
                        raise EpochError(f"epoch key store {self.path} lost the secret of listed epoch {e}; "
                                         "it is damaged")
                    secrets[e] = bytes(PrivateKey.generate())
                keys.append(bytes(PrivateKey(secrets[e]).public_key))
            new = EpochList.sign(identity, epoch_s=st.epoch_s, first=first, keys=keys,
                                 version=1 if prev is None else prev.version + 1,
                                 created_ms=int(now_s * 1000), hub=hub)
            check_epoch_update(prev, new)  # our own promise to the hub, checked before it is kept
            return replace(st, secrets=secrets, listed=new), new

        return self._commit(change)

    def shred_before(self, wall_s: float, now_s: float) -> ShredResult:
        """Destroy every epoch that ENDS at or before `wall_s` (which may not be after `now_s`)."""
        if wall_s > now_s:
            raise EpochError(f"cannot shred up to {utc(wall_s)}: that is after now ({utc(now_s)}); "
                             "only past epochs can be destroyed")

        def change(st: _State) -> tuple[_State, ShredResult]:
            gone = tuple(e for e in sorted(st.secrets) if (e + 1) * st.epoch_s <= wall_s)
            return st.without(gone, int(now_s)), ShredResult(st.epoch_s, int(now_s), gone)

        return self._commit(change, write_if=lambda r: bool(r.destroyed))

    def shred_range(self, from_s: float, to_s: float, now_s: float) -> ShredResult:
        """Destroy the epochs WHOLLY inside `[from_s, to_s)`; the partial epochs at either end are
        kept (their other clips must still open) and returned in `kept_partial`. A range that
        reaches past `now_s` is cut at `now_s`: the epoch in progress is kept as partial, and
        future epochs are not touched (the hub may still wrap to them)."""
        if to_s <= from_s:
            raise EpochError("the end of the range to shred must be after its start")
        to_s = min(to_s, now_s)

        def change(st: _State) -> tuple[_State, ShredResult]:
            n = st.epoch_s
            gone = tuple(e for e in sorted(st.secrets) if e * n >= from_s and (e + 1) * n <= to_s)
            partial = tuple(e for e in sorted(st.secrets)
                            if e not in gone and e * n < to_s and (e + 1) * n > from_s)
            return st.without(gone, int(now_s)), ShredResult(n, int(now_s), gone, partial)

        return self._commit(change, write_if=lambda r: bool(r.destroyed))

    def set_retention(self, days: int | None, now_s: float) -> ShredResult:
        """Keep secrets for `days` days (None: forever), and apply that at once."""
        if days is not None and not 1 <= days <= MAX_RETENTION_DAYS:
            raise EpochError(f"retention must be 1..{MAX_RETENTION_DAYS} days")

        def change(st: _State) -> tuple[_State, ShredResult]:
            st = replace(st, retention_days=days)
            return _apply_retention(st, now_s)

        return self._commit(change)

    def auto_shred(self, now_s: float) -> ShredResult:
        """Apply `retention_days` (nothing without it); writes only when something is destroyed."""
        return self._commit(lambda st: _apply_retention(st, now_s), write_if=lambda r: bool(r.destroyed))

    # --- the one place the file changes ---------------------------------------------------

    def _commit(self, change: Callable[[_State], tuple[_State, T]], write_if: Callable[[T], bool] | None = None) -> T:
        """Under an exclusive lock on the file: re-read it, apply `change`, write the result
        atomically and fsync; only then adopt it. On any failure nothing changes."""
        fd = _lock(self.path)
        try:
            current = _read(self.path)
            if current.device != self.device:
                raise EpochError(f"epoch key store {self.path} was replaced by one for device {current.device}")
            new, result = change(current)
            if write_if is None or write_if(result):
                try:
                    atomic_write(self.path, new.encode(), 0o600)
                except OSError as e:
                    raise EpochError(f"cannot write epoch key store {self.path}: {e.strerror or e}; "
                                     "nothing was changed") from None
            self._state = new
            return result
        finally:
            os.close(fd)  # releases the lock


def _apply_retention(st: _State, now_s: float) -> tuple[_State, ShredResult]:
    if st.retention_days is None:
        return st, ShredResult(st.epoch_s, int(now_s))
    cut = now_s - st.retention_days * 86_400
    gone = tuple(e for e in sorted(st.secrets) if (e + 1) * st.epoch_s <= cut)
    return st.without(gone, int(now_s)), ShredResult(st.epoch_s, int(now_s), gone)


def _read(path: Path) -> _State:
    # The same checks as every secret key file (regular file, 0600, bounded size).
    try:
        text = read_secret_file(path, MAX_STORE_BYTES)
    except KeyFileError as e:
        raise EpochError(f"epoch key store: {e}") from None
    return _decode(text.encode("utf-8"), path)


def _lock(path: Path) -> int:
    """An exclusive flock on the store file itself (works on a read-only mount too). The file is
    replaced by rename, so after the lock is granted the name must still be that inode."""
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise EpochError(f"epoch key store {path} does not exist") from None
        except OSError as e:
            raise EpochError(f"cannot open epoch key store {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except OSError as e:
            os.close(fd)
            raise EpochError(f"cannot lock epoch key store {path}: {e.strerror or e}") from None
        os.close(fd)
    raise EpochError(f"epoch key store {path} keeps changing; is another process rewriting it?")
