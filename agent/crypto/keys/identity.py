"""Identities in memory: owner and household devices, and the hub.

A device holds an Ed25519 signing seed (rosters, approvals) and an X25519 box secret (clip
keys); the hub holds one Ed25519 signing key and no key that opens a finished clip. Nothing
here logs key material.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from agent.crypto.keys.encoding import (
    DEVICE_PUB_PREFIX,
    DEVICE_SEC_PREFIX,
    HUB_BOX_PREFIX,
    HUB_PUB_PREFIX,
    HUB_SEC_PREFIX,
    MAX_NAME_BYTES,
    b64url_decode,
    b64url_encode,
    check_name,
    decode_name,
    device_key_id,
    hub_key_id,
    validate_ed25519_public,
    validate_x25519_public,
)
from agent.errors import InvalidKey
from agent.vocab import REQUESTER_ROLES as _REQUESTER_ROLES

Role = Literal["owner", "member"]


ROLES: tuple[str, ...] = ("owner", "member")

REQUESTER_ROLES = _REQUESTER_ROLES  # one home: agent.vocab


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
        check_name(self.name, f"device {self.name!r}")
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
        return DevicePublic.from_keys(raw[:32], raw[32:64], decode_name(raw[64:], what))


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
        pub = DevicePublic.from_keys(bytes(sk.verify_key), bytes(bsk.public_key), check_name(name, "device"))
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
        return DeviceIdentity.from_secrets(raw[:32], raw[32:64], decode_name(raw[64:], what))


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
    """The hub's identity: an Ed25519 signing key and an X25519 box key, kept apart.

    The box key exists only for key release: an owner device seals the clip keys it re-wrapped
    for a requester to this key, so that what crosses the broker in a decision is useless until
    the hub has checked and audited the grant. What the hub opens with it is still sealed to the
    requester, so the hub never holds a key that opens a clip.
    """

    key_id: str
    signing_key: SigningKey
    box_secret: PrivateKey | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.key_id != hub_key_id(bytes(self.signing_key.verify_key)):
            raise InvalidKey("hub key id does not match the hub signing key")
        if self.box_secret is not None and bytes(self.box_secret) == bytes(self.signing_key):
            raise InvalidKey("the hub box key must not be the signing seed")

    @property
    def box_public(self) -> PublicKey:
        if self.box_secret is None:
            raise InvalidKey("this hub identity has no box key (run `privacy-agent keys init` again)")
        return self.box_secret.public_key

    def with_box(self, box_secret: PrivateKey) -> HubIdentity:
        return HubIdentity(self.key_id, self.signing_key, box_secret)

    def encode_box_secret(self) -> str:
        return HUB_BOX_PREFIX + b64url_encode(bytes(self.box_secret or b""))

    @property
    def public(self) -> HubPublic:
        return HubPublic.from_key(bytes(self.signing_key.verify_key))

    @staticmethod
    def generate() -> HubIdentity:
        return HubIdentity.from_seed(bytes(SigningKey.generate()), bytes(PrivateKey.generate()))

    @staticmethod
    def from_seed(seed: bytes, box_sk: bytes | None = None) -> HubIdentity:
        if len(seed) != 32 or (box_sk is not None and len(box_sk) != 32):
            raise InvalidKey("hub signing seed and box secret must be 32 bytes each")
        sk = SigningKey(seed)
        return HubIdentity(hub_key_id(bytes(sk.verify_key)), sk, None if box_sk is None else PrivateKey(box_sk))

    def encode_secret(self) -> str:
        return HUB_SEC_PREFIX + b64url_encode(bytes(self.signing_key))
