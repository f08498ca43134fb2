"""The owner-signed recipient roster: who receives clips, who may sign the next roster.

The roster carries a version counter; the hub refuses a roster whose version went backwards,
and once a roster is installed only a device that is an owner in the installed roster may sign
the next one. Revoking a device removes it and lists its key id under `revoked`, so new clips
exclude it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash

from agent.crypto.keys.encoding import (
    b64url_decode,
    b64url_encode,
    canonical_json,
    check_key_id,
)
from agent.crypto.keys.files import HUB_PUBLIC_FILE, hub_public, keys_dir, load_device_public
from agent.crypto.keys.identity import REQUESTER_ROLES, ROLES, DeviceIdentity, DevicePublic, Role
from agent.errors import InvalidKey, RosterError, RosterRollback
from agent.fsutil import atomic_write
from agent.jsonlimits import loads_bounded

log = logging.getLogger(__name__)


ROSTER_FILE = "roster.json"


# Rosters arrive from untrusted places (retained MQTT messages): bound them before parsing.
MAX_ROSTER_BYTES = 256 * 1024


MAX_ROSTER_DEVICES = 64


# Domain separation for roster signatures (see the spec): a signature made for one message
# type can never be replayed as another.
ROSTER_SIG_DOMAIN = b"epa/v1/roster\x00"


@dataclass(frozen=True, slots=True)
class RosterEntry:
    device: DevicePublic
    role: Role = "member"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise RosterError(f"roster role {self.role!r} must be one of {', '.join(ROLES)}")


@dataclass(frozen=True, slots=True)
class RequesterEntry:
    """A requester the owners enrolled: its key, and the role THEY gave it (never self-asserted).

    Requesters receive no clips; they are listed so the hub can apply the right approval rule and
    owners see a verified name and role instead of whatever a request claims."""

    device: DevicePublic
    role: str

    def __post_init__(self) -> None:
        if self.role not in REQUESTER_ROLES:
            raise RosterError(f"requester role {self.role!r} must be one of {', '.join(REQUESTER_ROLES)}")


@dataclass(frozen=True, slots=True)
class Roster:
    """An owner-signed list of recipient devices. Build with `sign_roster`, read with `Roster.decode`."""

    version: int
    entries: tuple[RosterEntry, ...]
    revoked: tuple[str, ...]
    hub_key_id: str | None
    signer_key_id: str
    signature: bytes
    requesters: tuple[RequesterEntry, ...] = ()

    def body(self) -> dict[str, Any]:
        return _roster_body(self.version, self.entries, self.revoked, self.hub_key_id, self.signer_key_id,
                            self.requesters)

    def body_bytes(self) -> bytes:
        return canonical_json(self.body())

    def encode(self) -> bytes:
        return canonical_json({"roster": self.body(), "signature": b64url_encode(self.signature)}) + b"\n"

    @property
    def devices(self) -> tuple[DevicePublic, ...]:
        return tuple(e.device for e in self.entries)

    def owners(self) -> tuple[DevicePublic, ...]:
        return tuple(e.device for e in self.entries if e.role == "owner")

    def find(self, key_id: str) -> RosterEntry | None:
        for e in self.entries:
            if e.device.key_id == key_id:
                return e
        return None

    def is_revoked(self, key_id: str) -> bool:
        return key_id in self.revoked

    def find_requester(self, key_id: str) -> RequesterEntry | None:
        if key_id in self.revoked:
            return None
        for e in self.requesters:
            if e.device.key_id == key_id:
                return e
        return None

    @staticmethod
    def decode(data: bytes | str, what: str = "roster") -> Roster:
        """Parse and check the signature (signer must be an owner listed in the roster itself)."""
        if len(data) > MAX_ROSTER_BYTES:
            raise RosterError(f"{what}: {len(data)} bytes is larger than the {MAX_ROSTER_BYTES}-byte limit")
        try:
            doc = loads_bounded(data, max_bytes=MAX_ROSTER_BYTES, max_depth=8, what=what)
        except (ValueError, UnicodeDecodeError) as e:
            raise RosterError(f"{what}: not acceptable JSON ({e})") from None
        if not isinstance(doc, dict) or set(doc) != {"roster", "signature"}:
            raise RosterError(f"{what}: expected exactly the keys 'roster' and 'signature'")
        body, sig_s = doc["roster"], doc["signature"]
        if not isinstance(body, dict) or not isinstance(sig_s, str):
            raise RosterError(f"{what}: malformed")
        expected = {"format", "version", "devices", "revoked", "hub", "signer"}
        # `requesters` is present only when the owners enrolled any (a roster without it encodes
        # exactly as before requesters existed).
        if set(body) != expected and set(body) != expected | {"requesters"}:
            raise RosterError(f"{what}: body must have exactly the keys {sorted(expected)} (and optionally requesters)")
        if body["format"] != "epa1-roster":
            raise RosterError(f"{what}: unknown format {body['format']!r}")
        ver = body["version"]
        if not isinstance(ver, int) or isinstance(ver, bool) or not (1 <= ver < 2**53):
            raise RosterError(f"{what}: version must be a positive integer")
        if not isinstance(body["devices"], list) or not isinstance(body["revoked"], list):
            raise RosterError(f"{what}: devices and revoked must be lists")
        if len(body["devices"]) > MAX_ROSTER_DEVICES:
            raise RosterError(f"{what}: more than {MAX_ROSTER_DEVICES} devices")
        try:
            entries = [RosterEntry(dev, role)  # type: ignore[arg-type]
                       for dev, role in _listed(body["devices"], f"{what}: devices")]
            reqs = body.get("requesters", [])
            if not isinstance(reqs, list) or len(reqs) > MAX_ROSTER_DEVICES:
                raise RosterError(f"{what}: requesters must be a list of at most {MAX_ROSTER_DEVICES}")
            requesters = [RequesterEntry(dev, role) for dev, role in _listed(reqs, f"{what}: requesters")]
            revoked = tuple(check_key_id(k, f"{what}: revoked key id") for k in body["revoked"])
            hub = body["hub"]
            if hub is not None:
                check_key_id(hub, f"{what}: hub key id")
            signer = check_key_id(body["signer"], f"{what}: signer key id")
            sig = b64url_decode(sig_s, f"{what}: signature")
        except InvalidKey as e:
            raise RosterError(str(e)) from None
        if len(sig) != 64:
            raise RosterError(f"{what}: signature must be 64 bytes")
        roster = Roster(ver, tuple(entries), revoked, hub, signer, sig, tuple(requesters))
        _check_roster_shape(roster, what)
        if roster.body_bytes() != canonical_json(body):
            raise RosterError(f"{what}: body is not in canonical order")
        signer_entry = roster.find(signer)
        if signer_entry is None or signer_entry.role != "owner":
            raise RosterError(f"{what}: signer {signer} is not an owner device in the roster")
        try:
            signer_entry.device.sign_pk.verify(ROSTER_SIG_DOMAIN + roster.body_bytes(), sig)
        except nacl.exceptions.BadSignatureError:
            raise RosterError(f"{what}: signature does not verify") from None
        return roster


def _listed(items: list[Any], what: str) -> list[tuple[DevicePublic, str]]:
    """`[{key_id, pub, role}]` (devices and requesters alike): each key checked against its id."""
    out = []
    for i, d in enumerate(items):
        if not isinstance(d, dict) or set(d) != {"key_id", "pub", "role"}:
            raise RosterError(f"{what}[{i}] must have exactly key_id, pub, role")
        if not isinstance(d["pub"], str) or not isinstance(d["role"], str):
            raise RosterError(f"{what}[{i}] is malformed")
        dev = DevicePublic.decode(d["pub"], f"{what}[{i}]")
        if d["key_id"] != dev.key_id:
            raise RosterError(f"{what}[{i}] key_id does not match its public key")
        out.append((dev, d["role"]))
    return out


def _roster_body(
    version: int, entries: Sequence[RosterEntry], revoked: Sequence[str], hub: str | None, signer: str,
    requesters: Sequence[RequesterEntry] = (),
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "format": "epa1-roster",
        "version": version,
        "devices": [{"key_id": e.device.key_id, "pub": e.device.encode(), "role": e.role} for e in entries],
        "revoked": list(revoked),
        "hub": hub,
        "signer": signer,
    }
    if requesters:
        body["requesters"] = [{"key_id": e.device.key_id, "pub": e.device.encode(), "role": e.role}
                              for e in requesters]
    return body


def _check_roster_shape(r: Roster, what: str) -> None:
    ids = [e.device.key_id for e in r.entries]
    if ids != sorted(set(ids)):
        raise RosterError(f"{what}: devices must be sorted by key id without duplicates")
    if list(r.revoked) != sorted(set(r.revoked)):
        raise RosterError(f"{what}: revoked must be sorted without duplicates")
    if set(ids) & set(r.revoked):
        raise RosterError(f"{what}: a revoked device is still listed")
    rids = [e.device.key_id for e in r.requesters]
    if rids != sorted(set(rids)):
        raise RosterError(f"{what}: requesters must be sorted by key id without duplicates")
    if set(rids) & set(r.revoked):
        raise RosterError(f"{what}: a revoked requester is still listed")
    if set(rids) & set(ids):
        raise RosterError(f"{what}: a key is listed both as a household device and as a requester")
    if not any(e.role == "owner" for e in r.entries):
        raise RosterError(f"{what}: needs at least one owner device")


def sign_roster(
    signer: DeviceIdentity,
    version: int,
    entries: Iterable[RosterEntry],
    revoked: Iterable[str] = (),
    hub_key_id: str | None = None,
    requesters: Iterable[RequesterEntry] = (),
) -> Roster:
    """Build and sign a roster. Entries and revocations are put in canonical (sorted) order."""
    ents = tuple(sorted(entries, key=lambda e: e.device.key_id))
    reqs = tuple(sorted(requesters, key=lambda e: e.device.key_id))
    rev = tuple(sorted(set(check_key_id(k, "revoked key id") for k in revoked)))
    if hub_key_id is not None:
        check_key_id(hub_key_id, "hub key id")
    if not isinstance(version, int) or version < 1:
        raise RosterError("roster version must be a positive integer")
    body = canonical_json(_roster_body(version, ents, rev, hub_key_id, signer.key_id, reqs))
    sig = signer.signing_key.sign(ROSTER_SIG_DOMAIN + body).signature
    roster = Roster(version, ents, rev, hub_key_id, signer.key_id, sig, reqs)
    _check_roster_shape(roster, "roster")
    e = roster.find(signer.key_id)
    if e is None or e.role != "owner":
        raise RosterError("the signing device must be listed in the roster as an owner")
    return roster


def updated_roster(
    signer: DeviceIdentity,
    current: Roster | None,
    add: Iterable[DevicePublic] = (),
    add_owners: Iterable[DevicePublic] = (),
    revoke: Iterable[str] = (),
    hub_key_id: str | None = None,
    add_requesters: Iterable[tuple[DevicePublic, str]] = (),
) -> Roster:
    """Next roster version: add members/owners/requesters, revoke key ids (revocation wins and is
    permanent, for requesters too)."""
    entries: dict[str, RosterEntry] = {}
    requesters: dict[str, RequesterEntry] = {}
    revoked: set[str] = set()
    version = 1
    if current is not None:
        entries = {e.device.key_id: e for e in current.entries}
        requesters = {e.device.key_id: e for e in current.requesters}
        revoked = set(current.revoked)
        version = current.version + 1
        if hub_key_id is None:
            hub_key_id = current.hub_key_id
    else:
        entries[signer.key_id] = RosterEntry(signer.public, "owner")
    for d in add:
        if d.key_id not in entries:
            entries[d.key_id] = RosterEntry(d, "member")
    for d in add_owners:
        entries[d.key_id] = RosterEntry(d, "owner")
    for d, role in add_requesters:
        if d.key_id in entries:
            raise RosterError(f"{d.key_id} ({d.name!r}) is a household device; a requester needs its own key")
        requesters[d.key_id] = RequesterEntry(d, role)  # re-enrolling changes the role
    for k in revoke:
        check_key_id(k, "revoked key id")
        if k == signer.key_id:
            raise RosterError("a device cannot revoke itself; sign the revocation with another owner device")
        entries.pop(k, None)
        revoked.add(k)
    for k in revoked:
        entries.pop(k, None)
        requesters.pop(k, None)
    if signer.key_id not in entries or entries[signer.key_id].role != "owner":
        raise RosterError(f"device {signer.key_id} is not an owner in the current roster")
    return sign_roster(signer, version, entries.values(), revoked, hub_key_id, requesters.values())


def check_roster_update(current: Roster | None, new: Roster, hub_id: str | None = None) -> bool:
    """Decide whether `new` may replace `current`. True = install, False = same roster (no-op).

    Rules: the roster must be for this hub (if bound); the version must not go backwards; an
    equal version must be byte-identical (idempotent redelivery); once a roster is installed the
    next one must be signed by an owner of the installed one (continuity of authority).
    """
    if hub_id is not None and new.hub_key_id is not None and new.hub_key_id != hub_id:
        raise RosterError(f"roster is for hub {new.hub_key_id}, not this hub {hub_id}")
    if current is None:
        return True
    if new.version < current.version:
        raise RosterRollback(f"roster version {new.version} is older than installed version {current.version}")
    if new.version == current.version:
        if new.encode() != current.encode():
            raise RosterRollback(f"roster version {new.version} reuses the installed version with other content")
        return False
    e = current.find(new.signer_key_id)
    if e is None or e.role != "owner":
        raise RosterError(f"roster signer {new.signer_key_id} is not an owner in the installed roster")
    return True


def load_roster(data_dir: str | Path) -> Roster | None:
    p = keys_dir(data_dir) / ROSTER_FILE
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RosterError(f"cannot read {p}: {e.strerror}") from None
    return Roster.decode(data, str(p))


def install_roster(data_dir: str | Path, roster: Roster) -> bool:
    """Install a roster in DATA/keys/ atomically. Returns False when it was already installed."""
    kd = keys_dir(data_dir)
    hub_id: str | None = None
    if (kd / HUB_PUBLIC_FILE).exists():
        hub_id = hub_public(data_dir).key_id
    if not check_roster_update(load_roster(data_dir), roster, hub_id):
        return False
    kd.mkdir(parents=True, exist_ok=True, mode=0o700)
    final = kd / ROSTER_FILE
    try:
        atomic_write(final, roster.encode(), 0o600)
    except OSError as e:
        raise RosterError(f"cannot write {final}: {e.strerror}") from None
    log.info("installed roster version %d (%d devices)", roster.version, len(roster.entries))
    return True


def resolve_recipients(
    values: Sequence[str], base_dir: Path | None, roster: Roster | None
) -> tuple[DevicePublic, ...]:
    """The devices a clip is wrapped for.

    `values` are config entries (encoded values or .pub paths). With an installed roster, an
    empty list means every device in the roster; a revoked device is dropped (new clips exclude
    it); a device that is not in the roster is refused, because the roster is the owner's signed
    word on who may receive video. Without a roster the config list is used as is.
    """
    devices = [load_device_public(v, base_dir) for v in values]
    if roster is not None:
        if not devices:
            devices = list(roster.devices)
        kept = []
        for d in devices:
            if roster.is_revoked(d.key_id):
                log.warning("recipient %s (%s) is revoked in the roster; new clips exclude it", d.key_id, d.name)
                continue
            if roster.find(d.key_id) is None:
                raise RosterError(
                    f"recipient {d.key_id} ({d.name!r}) is not in the owner-signed roster; "
                    "enroll it with `privacy-agent owner enroll`"
                )
            kept.append(d)
        devices = kept
    uniq: dict[str, DevicePublic] = {}
    for d in devices:
        uniq.setdefault(d.key_id, d)
    return tuple(sorted(uniq.values(), key=lambda d: d.key_id))
