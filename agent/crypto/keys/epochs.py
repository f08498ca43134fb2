"""Forward-secure epoch keys: what a household device publishes so that old clips can be made
unopenable for good.

Each household device (owner or member) generates one X25519 key pair per epoch (an hour by
default) ahead of time, for a horizon (35 days by default), and signs the list of PUBLIC epoch
keys with its device key. The hub wraps each clip key to the recipient's epoch key for the
clip's start time. When the device destroys the secret of an epoch (`owner shred`), every copy of
every clip of that epoch, wherever it is kept, becomes unopenable, even with the device's
long-term key and the hub's whole data directory.

Epoch `e` covers wall time `[e * epoch_s, (e + 1) * epoch_s)` in seconds since the Unix epoch.

Signed list (canonical JSON, `EPOCHS_SIG_DOMAIN`):
    {"list": {"format": "epa1-epochs", "device": key id, "hub": hub key id | null, "epoch_s": int,
              "first": first epoch index, "keys": [b64url X25519 public key, ...], "version": int,
              "created_ms": int},
     "signature": b64url(Ed25519 by the device's signing key)}
`keys[i]` is the key of epoch `first + i`. `version` strictly increases per device; a new list
may not change the key of an epoch an installed list already has, nor end before it (see
`check_epoch_update`).

This module is pure: keys and time are passed in; the device's secret store is in
`agent.crypto.keys.epochstore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import nacl.exceptions
from nacl.public import PublicKey

from agent.crypto.keys.encoding import (
    b64url_decode,
    b64url_encode,
    canonical_json,
    check_key_id,
    validate_x25519_public,
)
from agent.crypto.keys.identity import DeviceIdentity, DevicePublic
from agent.crypto.keys.roster import Roster
from agent.errors import EpochError, InvalidKey
from agent.jsonlimits import loads_bounded

EPOCHS_FORMAT = "epa1-epochs"
EPOCHS_SIG_DOMAIN = b"epa/v1/epochs\x00"
DEFAULT_EPOCH_S = 3600
DEFAULT_HORIZON_S = 35 * 86_400
#: 35 days of hourly keys is 840; leave room for longer horizons or shorter epochs.
MAX_EPOCHS = 24 * 400
MAX_LIST_BYTES = 64 + MAX_EPOCHS * 48 + 4096


@dataclass(frozen=True, slots=True)
class EpochRecipient:
    """A recipient device for one clip, with the epoch key the clip key is wrapped to.

    `epoch` None means the device's long-term box key (no epoch key was available: see the
    `retention.missing_epoch_key` setting). The envelope's stanza names the epoch."""

    device: DevicePublic
    epoch: int | None = None
    key: PublicKey | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.epoch is None) != (self.key is None):
            raise EpochError("an epoch recipient needs both the epoch and its key, or neither")

    @property
    def key_id(self) -> str:
        return self.device.key_id

    @property
    def box_pk(self) -> PublicKey:
        return self.key if self.key is not None else self.device.box_pk


def epoch_of(wall_s: float, epoch_s: int) -> int:
    """The epoch that contains wall time `wall_s`."""
    return int(wall_s // epoch_s)


def epoch_start_s(epoch: int, epoch_s: int) -> int:
    return epoch * epoch_s


@dataclass(frozen=True, slots=True)
class EpochList:
    """A device's signed list of public epoch keys."""

    device: str
    hub: str | None
    epoch_s: int
    first: int
    keys: tuple[bytes, ...] = field(repr=False)
    version: int
    created_ms: int
    signature: bytes = field(default=b"", repr=False)

    @property
    def last(self) -> int:
        """The last epoch this list has a key for."""
        return self.first + len(self.keys) - 1

    @property
    def horizon_end_s(self) -> int:
        """Wall time (s) when the last epoch ends: after it the hub has no key for this device."""
        return (self.last + 1) * self.epoch_s

    def key_for(self, wall_s: float) -> tuple[int, PublicKey] | None:
        """(epoch, public key) for a clip starting at `wall_s`, or None outside the list."""
        e = epoch_of(wall_s, self.epoch_s)
        if not self.first <= e <= self.last:
            return None
        return e, PublicKey(self.keys[e - self.first])

    def body(self) -> dict[str, object]:
        return {"format": EPOCHS_FORMAT, "device": self.device, "hub": self.hub, "epoch_s": self.epoch_s,
                "first": self.first, "keys": [b64url_encode(k) for k in self.keys], "version": self.version,
                "created_ms": self.created_ms}

    def encode(self) -> bytes:
        return canonical_json({"list": self.body(), "signature": b64url_encode(self.signature)}) + b"\n"

    @staticmethod
    def sign(device: DeviceIdentity, *, epoch_s: int, first: int, keys: Sequence[bytes], version: int,
             created_ms: int, hub: str | None = None) -> EpochList:
        if not 60 <= epoch_s <= 86_400:
            raise EpochError("epoch_s must be between 60 s and one day")
        if not 1 <= len(keys) <= MAX_EPOCHS:
            raise EpochError(f"an epoch list holds 1..{MAX_EPOCHS} keys")
        for k in keys:
            validate_x25519_public(bytes(k), "epoch key")
        unsigned = EpochList(device.key_id, hub, epoch_s, first, tuple(bytes(k) for k in keys), version, created_ms)
        sig = device.signing_key.sign(EPOCHS_SIG_DOMAIN + canonical_json(unsigned.body())).signature
        return EpochList(device.key_id, hub, epoch_s, first, unsigned.keys, version, created_ms, sig)

    @staticmethod
    def decode(data: bytes | str, roster: Roster, what: str = "epoch list") -> EpochList:
        """Parse and verify: the signer must be a device of `roster` (owner or member), not revoked."""
        try:
            doc = loads_bounded(data, max_bytes=MAX_LIST_BYTES, max_depth=4, what=what)
        except ValueError as e:
            raise EpochError(f"{what}: not acceptable JSON ({e})") from None
        if not isinstance(doc, dict) or set(doc) != {"list", "signature"}:
            raise EpochError(f"{what}: expected exactly the keys 'list' and 'signature'")
        b, sig_s = doc["list"], doc["signature"]
        keys_expected = {"format", "device", "hub", "epoch_s", "first", "keys", "version", "created_ms"}
        if not isinstance(b, dict) or set(b) != keys_expected or not isinstance(sig_s, str):
            raise EpochError(f"{what}: body must have exactly the keys {sorted(keys_expected)}")
        if b["format"] != EPOCHS_FORMAT:
            raise EpochError(f"{what}: unknown format {b['format']!r}")
        try:
            device = check_key_id(b["device"], f"{what}: device")
            hub = None if b["hub"] is None else check_key_id(b["hub"], f"{what}: hub")
            for name in ("epoch_s", "first", "version", "created_ms"):
                v = b[name]
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**53:
                    raise EpochError(f"{what}: {name} must be a non-negative integer")
            if not isinstance(b["keys"], list) or not all(isinstance(k, str) for k in b["keys"]):
                raise EpochError(f"{what}: keys must be a list of base64url values")
            keys = tuple(validate_x25519_public(b64url_decode(k, f"{what}: key"), f"{what}: key").encode()
                         for k in b["keys"])
            sig = b64url_decode(sig_s, f"{what}: signature")
        except InvalidKey as e:
            raise EpochError(str(e)) from None
        if roster.is_revoked(device):
            raise EpochError(f"{what}: device {device} is revoked in roster version {roster.version}")
        entry = roster.find(device)
        if entry is None:
            raise EpochError(f"{what}: device {device} is not in the roster (version {roster.version})")
        if hub is not None and roster.hub_key_id is not None and hub != roster.hub_key_id:
            raise EpochError(f"{what}: made for hub {hub}, not this hub")
        if len(sig) != 64:
            raise EpochError(f"{what}: signature must be 64 bytes")
        lst = EpochList(device, hub, b["epoch_s"], b["first"], keys, b["version"], b["created_ms"], sig)
        if canonical_json(lst.body()) != canonical_json(b):
            raise EpochError(f"{what}: not in canonical form")
        if not 60 <= lst.epoch_s <= 86_400 or not 1 <= len(keys) <= MAX_EPOCHS:
            raise EpochError(f"{what}: epoch_s or the number of keys is out of range")
        try:
            entry.device.sign_pk.verify(EPOCHS_SIG_DOMAIN + canonical_json(lst.body()), sig)
        except nacl.exceptions.BadSignatureError:
            raise EpochError(f"{what}: signature does not verify") from None
        return lst


def check_epoch_update(current: EpochList | None, new: EpochList) -> bool:
    """May `new` replace the installed `current` list of the same device? True = install, False =
    the same list again (no-op). Raises EpochError for a rollback or an overlap that changes keys:
    an epoch's key, once installed, never changes (a thief with the device key could otherwise
    swap in keys whose secrets were never shredded)."""
    if current is None:
        return True
    if new.device != current.device:
        raise EpochError("epoch list is for another device")
    if new.version == current.version:
        if new.encode() != current.encode():
            raise EpochError(f"epoch list version {new.version} reuses the installed version with other keys")
        return False
    if new.version < current.version:
        raise EpochError(f"epoch list version {new.version} is older than the installed version {current.version}")
    if new.epoch_s != current.epoch_s:
        raise EpochError(f"epoch list changes the epoch length ({current.epoch_s} s -> {new.epoch_s} s)")
    if new.last < current.last:
        raise EpochError(f"epoch list ends at epoch {new.last}, before the installed one ({current.last}): a rollback")
    for e in range(max(new.first, current.first), min(new.last, current.last) + 1):
        if new.keys[e - new.first] != current.keys[e - current.first]:
            raise EpochError(f"epoch list overlaps the installed one with a different key for epoch {e}")
    return True
