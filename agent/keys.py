"""Household keys: the hub identity, owner device identities, and the signed recipient roster.

Who holds what:
- The **hub** holds one Ed25519 signing key (`DATA/keys/hub.key`, mode 0600). It signs clip
  headers and trailers. It holds **no** key that decrypts a finished clip: clip keys are
  wrapped for devices with SealedBox and forgotten, so a stolen hub reads nothing old.
- An **owner device** (phone, laptop) holds an Ed25519 signing seed (to sign rosters and
  approvals) and an X25519 box secret (to unwrap clip keys). `owner keygen` writes both to a
  0600 file and the public halves to `FILE.pub`.
- The **roster** is the owner-signed list of devices that receive clips. It carries a version
  counter; the hub refuses a roster whose version went backwards, and once a roster is installed
  only a device that is an owner in the installed roster may sign the next one. Revoking a
  device removes it from the roster and lists its key id under `revoked`, so new clips exclude
  it.

Encodings (all canonical; see docs/envelope-spec.md "Keys"):
- device public value  `epa1pub:` base64url-nopad(sign_pk[32] || box_pk[32] || name utf-8)
- device secret value  `epa1sec:` base64url-nopad(sign_seed[32] || box_sk[32] || name utf-8)
- hub public value     `epa1hub:` base64url-nopad(sign_pk[32])
- hub secret value     `epa1hubsec:` base64url-nopad(sign_seed[32])
- device key id        hex(BLAKE2b-64(sign_pk || box_pk, person="epa1-device-id"))
- hub key id           hex(BLAKE2b-64(sign_pk, person="epa1-hub-id"))

Invariants:
- Every key is validated on construction: lengths, canonical encoding, Ed25519 points that are
  valid and in the prime-order subgroup, X25519 points that are not of low order.
- Secret key files are created 0600 with O_EXCL (never overwritten) and refused on load when
  group/other have any permission bit.
- Nothing here logs key material.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from agent.errors import InvalidKey, KeyFileError, RosterError, RosterRollback
from agent.fsutil import atomic_write, fsync_dir

log = logging.getLogger(__name__)

DEVICE_PUB_PREFIX = "epa1pub:"
DEVICE_SEC_PREFIX = "epa1sec:"
HUB_PUB_PREFIX = "epa1hub:"
HUB_SEC_PREFIX = "epa1hubsec:"

KEYS_DIRNAME = "keys"
HUB_SECRET_FILE = "hub.key"
HUB_PUBLIC_FILE = "hub.pub"
ROSTER_FILE = "roster.json"

MAX_NAME_BYTES = 64
# Rosters arrive from untrusted places (retained MQTT messages): bound them before parsing.
MAX_ROSTER_BYTES = 256 * 1024
MAX_ROSTER_DEVICES = 64
KEY_ID_HEX_LEN = 16
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")

# Domain separation for roster signatures (see the spec): a signature made for one message
# type can never be replayed as another.
ROSTER_SIG_DOMAIN = b"epa/v1/roster\x00"

Role = Literal["owner", "member"]
ROLES: tuple[str, ...] = ("owner", "member")


# --- small encoding helpers ---------------------------------------------------


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, what: str) -> bytes:
    """Strict base64url without padding; rejects non-canonical trailing bits."""
    if not _B64URL_RE.match(text) or len(text) % 4 == 1:
        raise InvalidKey(f"{what}: not base64url without padding")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidKey(f"{what}: not base64url without padding") from None
    if b64url_encode(raw) != text:
        raise InvalidKey(f"{what}: non-canonical base64url")
    return raw


def _blake2b_64(data: bytes, person: bytes) -> bytes:
    return nacl.hash.blake2b(data, digest_size=8, person=person, encoder=nacl.encoding.RawEncoder)


def device_key_id(sign_pk: bytes, box_pk: bytes) -> str:
    return _blake2b_64(sign_pk + box_pk, b"epa1-device-id").hex()


def hub_key_id(sign_pk: bytes) -> str:
    return _blake2b_64(sign_pk, b"epa1-hub-id").hex()


def check_key_id(value: str, what: str = "key id") -> str:
    if not isinstance(value, str) or not _KEY_ID_RE.match(value):
        raise InvalidKey(f"{what} {value!r} must be {KEY_ID_HEX_LEN} lower-case hex characters")
    return value


def _check_name(name: str, what: str) -> str:
    raw = name.encode("utf-8")
    if len(raw) > MAX_NAME_BYTES:
        raise InvalidKey(f"{what}: device name is longer than {MAX_NAME_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidKey(f"{what}: device name contains control characters")
    return name


def _decode_name(raw: bytes, what: str) -> str:
    try:
        return _check_name(raw.decode("utf-8"), what)
    except UnicodeDecodeError:
        raise InvalidKey(f"{what}: device name is not UTF-8") from None


def validate_ed25519_public(pk: bytes, what: str) -> VerifyKey:
    """A 32-byte Ed25519 point that is canonical, on the curve and in the prime-order subgroup."""
    if not isinstance(pk, bytes) or len(pk) != 32:
        raise InvalidKey(f"{what}: Ed25519 public key must be 32 bytes")
    # is_valid_point rejects non-canonical encodings, small-order and mixed-order points; our
    # own keys never are any of those, so a key that is one was crafted.
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(pk):
        raise InvalidKey(f"{what}: not a valid prime-order Ed25519 public key")
    return VerifyKey(pk)


# Any clamped scalar works: clamping clears the cofactor, so the product is the all-zero point
# exactly when the input has low order, and libsodium then refuses (RuntimeError).
_LOW_ORDER_PROBE = bytes([9]) + bytes(31)


def validate_x25519_public(pk: bytes, what: str) -> PublicKey:
    """A 32-byte X25519 public key that is not of low order (a SealedBox to one leaks K)."""
    if not isinstance(pk, bytes) or len(pk) != 32:
        raise InvalidKey(f"{what}: X25519 public key must be 32 bytes")
    try:
        nacl.bindings.crypto_scalarmult(_LOW_ORDER_PROBE, pk)
    except nacl.exceptions.RuntimeError:
        raise InvalidKey(f"{what}: X25519 public key has low order") from None
    return PublicKey(pk)


# --- key dataclasses ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DevicePublic:
    """The public half of an owner/household device. `key_id` is derived, never trusted input."""

    key_id: str
    sign_pk: VerifyKey
    box_pk: PublicKey
    name: str = ""

    def __post_init__(self) -> None:
        spk = bytes(self.sign_pk)
        bpk = bytes(self.box_pk)
        validate_ed25519_public(spk, f"device {self.name!r}")
        validate_x25519_public(bpk, f"device {self.name!r}")
        _check_name(self.name, f"device {self.name!r}")
        if self.key_id != device_key_id(spk, bpk):
            raise InvalidKey(f"device {self.name!r}: key id {self.key_id!r} does not match its public keys")

    @staticmethod
    def from_keys(sign_pk: bytes, box_pk: bytes, name: str = "") -> DevicePublic:
        return DevicePublic(
            device_key_id(sign_pk, box_pk),
            validate_ed25519_public(sign_pk, f"device {name!r}"),
            validate_x25519_public(box_pk, f"device {name!r}"),
            name,
        )

    def encode(self) -> str:
        return DEVICE_PUB_PREFIX + b64url_encode(
            bytes(self.sign_pk) + bytes(self.box_pk) + self.name.encode("utf-8")
        )

    @staticmethod
    def decode(value: str, what: str = "device public key") -> DevicePublic:
        value = value.strip()
        if not value.startswith(DEVICE_PUB_PREFIX):
            raise InvalidKey(f"{what}: expected a value starting with {DEVICE_PUB_PREFIX!r}")
        raw = b64url_decode(value[len(DEVICE_PUB_PREFIX):], what)
        if len(raw) < 64 or len(raw) > 64 + MAX_NAME_BYTES:
            raise InvalidKey(f"{what}: decoded length {len(raw)} is not 64..{64 + MAX_NAME_BYTES} bytes")
        return DevicePublic.from_keys(raw[:32], raw[32:64], _decode_name(raw[64:], what))


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """An owner device's secret identity. Lives on the device, never on the hub."""

    public: DevicePublic
    signing_key: SigningKey
    box_secret: PrivateKey

    def __post_init__(self) -> None:
        if bytes(self.signing_key.verify_key) != bytes(self.public.sign_pk) or bytes(
            self.box_secret.public_key
        ) != bytes(self.public.box_pk):
            raise InvalidKey(f"device {self.public.name!r}: secret keys do not match the public keys")

    @property
    def key_id(self) -> str:
        return self.public.key_id

    @staticmethod
    def generate(name: str = "") -> DeviceIdentity:
        sk = SigningKey.generate()
        bsk = PrivateKey.generate()
        return DeviceIdentity.from_secrets(bytes(sk), bytes(bsk), name)

    @staticmethod
    def from_secrets(sign_seed: bytes, box_sk: bytes, name: str = "") -> DeviceIdentity:
        if len(sign_seed) != 32 or len(box_sk) != 32:
            raise InvalidKey("device secret keys must be 32 + 32 bytes")
        sk = SigningKey(sign_seed)
        bsk = PrivateKey(box_sk)
        pub = DevicePublic.from_keys(bytes(sk.verify_key), bytes(bsk.public_key), _check_name(name, "device"))
        return DeviceIdentity(pub, sk, bsk)

    def encode_secret(self) -> str:
        return DEVICE_SEC_PREFIX + b64url_encode(
            bytes(self.signing_key) + bytes(self.box_secret) + self.public.name.encode("utf-8")
        )

    @staticmethod
    def decode_secret(value: str, what: str = "device identity") -> DeviceIdentity:
        value = value.strip()
        if not value.startswith(DEVICE_SEC_PREFIX):
            raise InvalidKey(f"{what}: expected a value starting with {DEVICE_SEC_PREFIX!r}")
        raw = b64url_decode(value[len(DEVICE_SEC_PREFIX):], what)
        if len(raw) < 64 or len(raw) > 64 + MAX_NAME_BYTES:
            raise InvalidKey(f"{what}: decoded length is not 64..{64 + MAX_NAME_BYTES} bytes")
        return DeviceIdentity.from_secrets(raw[:32], raw[32:64], _decode_name(raw[64:], what))


@dataclass(frozen=True, slots=True)
class HubPublic:
    key_id: str
    verify_key: VerifyKey

    def __post_init__(self) -> None:
        pk = bytes(self.verify_key)
        validate_ed25519_public(pk, "hub public key")
        if self.key_id != hub_key_id(pk):
            raise InvalidKey(f"hub key id {self.key_id!r} does not match the hub public key")

    @staticmethod
    def from_key(pk: bytes) -> HubPublic:
        return HubPublic(hub_key_id(pk), validate_ed25519_public(pk, "hub public key"))

    def encode(self) -> str:
        return HUB_PUB_PREFIX + b64url_encode(bytes(self.verify_key))

    @staticmethod
    def decode(value: str, what: str = "hub public key") -> HubPublic:
        value = value.strip()
        if not value.startswith(HUB_PUB_PREFIX):
            raise InvalidKey(f"{what}: expected a value starting with {HUB_PUB_PREFIX!r}")
        raw = b64url_decode(value[len(HUB_PUB_PREFIX):], what)
        if len(raw) != 32:
            raise InvalidKey(f"{what}: decoded length {len(raw)} is not 32 bytes")
        return HubPublic.from_key(raw)


@dataclass(frozen=True, slots=True)
class HubIdentity:
    """The hub's signing identity. It signs; it cannot decrypt clips."""

    key_id: str
    signing_key: SigningKey

    def __post_init__(self) -> None:
        if self.key_id != hub_key_id(bytes(self.signing_key.verify_key)):
            raise InvalidKey("hub key id does not match the hub signing key")

    @property
    def public(self) -> HubPublic:
        return HubPublic.from_key(bytes(self.signing_key.verify_key))

    @staticmethod
    def generate() -> HubIdentity:
        return HubIdentity.from_seed(bytes(SigningKey.generate()))

    @staticmethod
    def from_seed(seed: bytes) -> HubIdentity:
        if len(seed) != 32:
            raise InvalidKey("hub signing seed must be 32 bytes")
        sk = SigningKey(seed)
        return HubIdentity(hub_key_id(bytes(sk.verify_key)), sk)

    def encode_secret(self) -> str:
        return HUB_SEC_PREFIX + b64url_encode(bytes(self.signing_key))


# --- files -------------------------------------------------------------------


def _value_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def write_new_file(path: Path, text: str, mode: int) -> None:
    """Create `path` with `mode` (O_EXCL: never overwrite a key), write, fsync."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key file") from None
    except OSError as e:
        raise KeyFileError(f"cannot create {path}: {e.strerror}") from None
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed or (for .pub) we want exactly `mode`
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def read_secret_file(path: Path) -> str:
    """Read a secret key file, refusing one that group or others can access."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    perms = stat.S_IMODE(st.st_mode)
    if perms & 0o077:
        raise KeyFileError(
            f"key file {path} has mode {perms:04o}; secret keys must be 0600 (run: chmod 600 {path})"
        )
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"cannot read key file {path}: {e}") from None


def _single_value(text: str, path: Path | str) -> str:
    vals = _value_lines(text)
    if len(vals) != 1:
        raise KeyFileError(f"key file {path}: expected exactly one key line, found {len(vals)}")
    return vals[0]


def write_device_identity(identity: DeviceIdentity, out: Path) -> Path:
    """Write FILE (0600, secret) and FILE.pub (0644, public). Returns the .pub path."""
    out = Path(out)
    pub_path = out.with_name(out.name + ".pub")
    if pub_path.exists():
        raise KeyFileError(f"{pub_path} already exists; refusing to overwrite a key file")
    name = identity.public.name
    write_new_file(
        out,
        f"# Edge Privacy Agent owner device identity {name!r}, key id {identity.key_id}.\n"
        "# SECRET: it opens clips. Keep it on this device, mode 0600.\n"
        f"{identity.encode_secret()}\n",
        0o600,
    )
    write_new_file(
        pub_path,
        f"# Edge Privacy Agent device public key {name!r}, key id {identity.key_id}.\n"
        f"{identity.public.encode()}\n",
        0o644,
    )
    return pub_path


def load_device_identity(path: str | Path) -> DeviceIdentity:
    p = Path(path)
    value = _single_value(read_secret_file(p), p)
    try:
        return DeviceIdentity.decode_secret(value, f"key file {p}")
    except InvalidKey as e:
        raise KeyFileError(str(e)) from None


def _looks_like_value(s: str, prefix: str) -> bool:
    return s.strip().startswith(prefix)


def load_device_public(path_or_value: str | Path, base_dir: Path | None = None) -> DevicePublic:
    """Accept an encoded `epa1pub:` value or the path of a `.pub` file (relative to `base_dir`)."""
    if isinstance(path_or_value, str) and _looks_like_value(path_or_value, DEVICE_PUB_PREFIX):
        return DevicePublic.decode(path_or_value)
    p = Path(path_or_value).expanduser()
    if base_dir is not None and not p.is_absolute():
        p = base_dir / p
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"public key file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"cannot read public key file {p}: {e}") from None
    value = _single_value(text, p)
    if value.startswith(DEVICE_SEC_PREFIX):
        raise KeyFileError(f"{p} is a secret identity file; give its .pub file instead")
    return DevicePublic.decode(value, f"public key file {p}")


def keys_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / KEYS_DIRNAME


def init_hub(data_dir: str | Path) -> HubIdentity:
    """Create the hub identity under DATA/keys/ (dir 0700, key 0600). Refuses to overwrite."""
    kd = keys_dir(data_dir)
    sec, pub = kd / HUB_SECRET_FILE, kd / HUB_PUBLIC_FILE
    if sec.exists() or pub.exists():
        raise KeyFileError(f"hub identity already exists in {kd}; refusing to replace it")
    try:
        kd.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(kd, 0o700)
    except OSError as e:
        raise KeyFileError(f"cannot create {kd}: {e.strerror}") from None
    hub = HubIdentity.generate()
    write_new_file(
        sec,
        f"# Edge Privacy Agent hub signing key, key id {hub.key_id}. SECRET, mode 0600.\n"
        "# It signs clips; it cannot decrypt them.\n"
        f"{hub.encode_secret()}\n",
        0o600,
    )
    write_new_file(pub, f"# Edge Privacy Agent hub public key, key id {hub.key_id}.\n{hub.public.encode()}\n", 0o644)
    log.info("created hub identity %s in %s", hub.key_id, kd)
    return hub


def load_hub_identity(data_dir: str | Path) -> HubIdentity:
    p = keys_dir(data_dir) / HUB_SECRET_FILE
    if not p.exists():
        raise KeyFileError(f"no hub identity at {p}; run: privacy-agent keys init --data {data_dir}")
    value = _single_value(read_secret_file(p), p)
    if not value.startswith(HUB_SEC_PREFIX):
        raise KeyFileError(f"key file {p}: expected a value starting with {HUB_SEC_PREFIX!r}")
    try:
        return HubIdentity.from_seed(b64url_decode(value[len(HUB_SEC_PREFIX):], f"key file {p}"))
    except InvalidKey as e:
        raise KeyFileError(str(e)) from None


def load_hub_public(path_or_value: str | Path) -> HubPublic:
    """Accept an encoded `epa1hub:` value, a hub.pub file, or a hub data directory."""
    if isinstance(path_or_value, str) and _looks_like_value(path_or_value, HUB_PUB_PREFIX):
        return HubPublic.decode(path_or_value)
    p = Path(path_or_value).expanduser()
    if p.is_dir():
        cand = keys_dir(p) / HUB_PUBLIC_FILE
        p = cand if cand.exists() else p / HUB_PUBLIC_FILE
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"hub public key file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"cannot read hub public key file {p}: {e}") from None
    return HubPublic.decode(_single_value(text, p), f"hub public key file {p}")


def hub_public(data_dir: str | Path) -> HubPublic:
    return load_hub_public(keys_dir(data_dir) / HUB_PUBLIC_FILE)


# --- roster ------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """The one canonical JSON form used for signed bodies: sorted keys, no spaces, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@dataclass(frozen=True, slots=True)
class RosterEntry:
    device: DevicePublic
    role: Role = "member"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise RosterError(f"roster role {self.role!r} must be one of {', '.join(ROLES)}")


@dataclass(frozen=True, slots=True)
class Roster:
    """An owner-signed list of recipient devices. Build with `sign_roster`, read with `Roster.decode`."""

    version: int
    entries: tuple[RosterEntry, ...]
    revoked: tuple[str, ...]
    hub_key_id: str | None
    signer_key_id: str
    signature: bytes

    def body(self) -> dict[str, Any]:
        return _roster_body(self.version, self.entries, self.revoked, self.hub_key_id, self.signer_key_id)

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

    @staticmethod
    def decode(data: bytes | str, what: str = "roster") -> Roster:
        """Parse and check the signature (signer must be an owner listed in the roster itself)."""
        if len(data) > MAX_ROSTER_BYTES:
            raise RosterError(f"{what}: {len(data)} bytes is larger than the {MAX_ROSTER_BYTES}-byte limit")
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise RosterError(f"{what}: not JSON ({type(e).__name__})") from None
        if not isinstance(doc, dict) or set(doc) != {"roster", "signature"}:
            raise RosterError(f"{what}: expected exactly the keys 'roster' and 'signature'")
        body, sig_s = doc["roster"], doc["signature"]
        if not isinstance(body, dict) or not isinstance(sig_s, str):
            raise RosterError(f"{what}: malformed")
        expected = {"format", "version", "devices", "revoked", "hub", "signer"}
        if set(body) != expected:
            raise RosterError(f"{what}: body must have exactly the keys {sorted(expected)}")
        if body["format"] != "epa1-roster":
            raise RosterError(f"{what}: unknown format {body['format']!r}")
        ver = body["version"]
        if not isinstance(ver, int) or isinstance(ver, bool) or not (1 <= ver < 2**53):
            raise RosterError(f"{what}: version must be a positive integer")
        if not isinstance(body["devices"], list) or not isinstance(body["revoked"], list):
            raise RosterError(f"{what}: devices and revoked must be lists")
        if len(body["devices"]) > MAX_ROSTER_DEVICES:
            raise RosterError(f"{what}: more than {MAX_ROSTER_DEVICES} devices")
        entries = []
        try:
            for i, d in enumerate(body["devices"]):
                if not isinstance(d, dict) or set(d) != {"key_id", "pub", "role"}:
                    raise RosterError(f"{what}: devices[{i}] must have exactly key_id, pub, role")
                if not isinstance(d["pub"], str) or not isinstance(d["role"], str):
                    raise RosterError(f"{what}: devices[{i}] is malformed")
                dev = DevicePublic.decode(d["pub"], f"{what}: devices[{i}]")
                if d["key_id"] != dev.key_id:
                    raise RosterError(f"{what}: devices[{i}] key_id does not match its public key")
                entries.append(RosterEntry(dev, d["role"]))  # type: ignore[arg-type]
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
        roster = Roster(ver, tuple(entries), revoked, hub, signer, sig)
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


def _roster_body(
    version: int, entries: Sequence[RosterEntry], revoked: Sequence[str], hub: str | None, signer: str
) -> dict[str, Any]:
    return {
        "format": "epa1-roster",
        "version": version,
        "devices": [{"key_id": e.device.key_id, "pub": e.device.encode(), "role": e.role} for e in entries],
        "revoked": list(revoked),
        "hub": hub,
        "signer": signer,
    }


def _check_roster_shape(r: Roster, what: str) -> None:
    ids = [e.device.key_id for e in r.entries]
    if ids != sorted(set(ids)):
        raise RosterError(f"{what}: devices must be sorted by key id without duplicates")
    if list(r.revoked) != sorted(set(r.revoked)):
        raise RosterError(f"{what}: revoked must be sorted without duplicates")
    if set(ids) & set(r.revoked):
        raise RosterError(f"{what}: a revoked device is still listed")
    if not any(e.role == "owner" for e in r.entries):
        raise RosterError(f"{what}: needs at least one owner device")


def sign_roster(
    signer: DeviceIdentity,
    version: int,
    entries: Iterable[RosterEntry],
    revoked: Iterable[str] = (),
    hub_key_id: str | None = None,
) -> Roster:
    """Build and sign a roster. Entries and revocations are put in canonical (sorted) order."""
    ents = tuple(sorted(entries, key=lambda e: e.device.key_id))
    rev = tuple(sorted(set(check_key_id(k, "revoked key id") for k in revoked)))
    if hub_key_id is not None:
        check_key_id(hub_key_id, "hub key id")
    if not isinstance(version, int) or version < 1:
        raise RosterError("roster version must be a positive integer")
    body = canonical_json(_roster_body(version, ents, rev, hub_key_id, signer.key_id))
    sig = signer.signing_key.sign(ROSTER_SIG_DOMAIN + body).signature
    roster = Roster(version, ents, rev, hub_key_id, signer.key_id, sig)
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
) -> Roster:
    """Next roster version: add members/owners, revoke key ids (revocation wins and is permanent)."""
    entries: dict[str, RosterEntry] = {}
    revoked: set[str] = set()
    version = 1
    if current is not None:
        entries = {e.device.key_id: e for e in current.entries}
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
    for k in revoke:
        check_key_id(k, "revoked key id")
        if k == signer.key_id:
            raise RosterError("a device cannot revoke itself; sign the revocation with another owner device")
        entries.pop(k, None)
        revoked.add(k)
    for k in revoked:
        entries.pop(k, None)
    if signer.key_id not in entries or entries[signer.key_id].role != "owner":
        raise RosterError(f"device {signer.key_id} is not an owner in the current roster")
    return sign_roster(signer, version, entries.values(), revoked, hub_key_id)


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
        atomic_write(final, roster.encode(), 0o644)
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
