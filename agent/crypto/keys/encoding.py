"""Canonical encodings of keys and key ids, and the validation of public points.

See docs/envelope-spec.md "Keys". Every key is validated on construction: lengths, canonical
encoding, Ed25519 points that are valid and in the prime-order subgroup, X25519 points that are
not of low order. `canonical_json` is the one serialisation every signature covers.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
from nacl.public import PublicKey
from nacl.signing import VerifyKey

from agent.errors import InvalidKey

DEVICE_PUB_PREFIX = "epa1pub:"


DEVICE_SEC_PREFIX = "epa1sec:"


HUB_PUB_PREFIX = "epa1hub:"


HUB_SEC_PREFIX = "epa1hubsec:"


# The hub's X25519 box secret (key release, see docs/access-protocol.md): its own prefix, so it
# can never be mistaken for the signing seed.
HUB_BOX_PREFIX = "epa1hubbox:"


MAX_NAME_BYTES = 64


KEY_ID_HEX_LEN = 16


_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")


_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")


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


def check_name(name: str, what: str) -> str:
    raw = name.encode("utf-8")
    if len(raw) > MAX_NAME_BYTES:
        raise InvalidKey(f"{what}: device name is longer than {MAX_NAME_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidKey(f"{what}: device name contains control characters")
    return name


def decode_name(raw: bytes, what: str) -> str:
    try:
        return check_name(raw.decode("utf-8"), what)
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


def canonical_json(obj: Any) -> bytes:
    """The one canonical JSON form used for signed bodies: sorted keys, no spaces, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
