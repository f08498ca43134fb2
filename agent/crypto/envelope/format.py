"""The `epa-clip` byte format (v2 written, v1 still read): sizes, domains, digests, and the parsed
header and trailer.

The one definition of the layout in docs/envelope-spec.md (vectors in tests/vectors/):

    header || header_sig || chunk_record* || u32(0) || trailer

Version 2 adds the epoch to each recipient stanza (`key_id || epoch u64 || sealed`), so a device
knows which epoch secret unwraps K; `EPOCH_NONE` there means the device's long-term box key.
Version 1 stanzas (`key_id || sealed`) always mean the long-term key.

Pure: nothing here reads a file, draws randomness or touches a key; `verify`, `seal` and
`opening` build on these definitions.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings as sodium
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.utils

from agent.crypto.keys import hub_key_id
from agent.errors import (
    MalformedEnvelope,
)

MAGIC = b"epa-clip"


#: The version every new clip is written with.
VERSION = 2


#: The first version (no epoch in the stanza); still parsed and opened.
VERSION_1 = 1


SUPPORTED_VERSIONS = (VERSION_1, VERSION)


#: The stanza's epoch field when K is sealed to the device's long-term box key.
EPOCH_NONE = 0xFFFF_FFFF_FFFF_FFFF


CHUNK_BYTES = 65536


ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES  # 17


SS_HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24


KEY_BYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES  # 32


TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE


TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL


FULL_RECORD_CT = CHUNK_BYTES + ABYTES


CLIP_ID_BYTES = 16


STREAM_ID_BYTES = 16


HASH_BYTES = 32


KEY_ID_BYTES = 8


SIG_BYTES = 64


MAX_RECIPIENTS = 32


MAX_CHUNKS = 2**32 - 1


WRAP_LABEL = b"epa/v1/wrap\x00"


WRAP_PLAIN_BYTES = len(WRAP_LABEL) + CLIP_ID_BYTES + KEY_BYTES  # 60


WRAP_SEALED_BYTES = WRAP_PLAIN_BYTES + sodium.crypto_box_SEALBYTES  # 108


EPOCH_BYTES = 8


#: A version 1 stanza: key_id || sealed.
STANZA_V1_BYTES = KEY_ID_BYTES + WRAP_SEALED_BYTES  # 116


#: A version 2 stanza (what is written): key_id || epoch u64 || sealed.
STANZA_BYTES = KEY_ID_BYTES + EPOCH_BYTES + WRAP_SEALED_BYTES  # 124


def stanza_bytes(version: int) -> int:
    """The size of one recipient stanza in a header of `version`."""
    return STANZA_V1_BYTES if version == VERSION_1 else STANZA_BYTES


# Signature domains: a hub signature over one message type can never pass as another.
HEADER_SIG_DOMAIN = b"epa/v1/header\x00"


TRAILER_SIG_DOMAIN = b"epa/v1/trailer\x00"


# magic, version, hub_pk, clip_id, stream_id, seq, prev_hash, ss_header, n_recipients
HEADER_FIXED = struct.Struct(">8sB32s16s16sQ32s24sB")


HEADER_FIXED_BYTES = HEADER_FIXED.size  # 138


U32 = struct.Struct(">I")


U64 = struct.Struct(">Q")


TRAILER_BYTES = 4 + HASH_BYTES + SIG_BYTES


ZERO_HASH = bytes(HASH_BYTES)


def blake2b_person(person: bytes, *parts: bytes) -> bytes:
    return nacl.hash.blake2b(b"".join(parts), digest_size=HASH_BYTES, person=person, encoder=nacl.encoding.RawEncoder)


def header_digest_of(header_bytes: bytes) -> bytes:
    return blake2b_person(b"epa1-header", header_bytes)


def trailer_digest_of(header_digest: bytes, chunk_count: int, ct_hash: bytes) -> bytes:
    return blake2b_person(b"epa1-trailer", header_digest, U32.pack(chunk_count), ct_hash)


def clip_hash_of(header_digest: bytes, trailer_digest: bytes) -> bytes:
    return blake2b_person(b"epa1-clip", header_digest, trailer_digest)


@dataclass(frozen=True, slots=True)
class Stanza:
    """One recipient: the device key id and K sealed to that device (bound to the clip id).

    `epoch` names the device's epoch key K is sealed to (version 2), or None for the device's
    long-term box key (always None in a version 1 header). The header signature covers it, so
    nobody but the hub can point a stanza at another epoch."""

    key_id: str
    sealed: bytes = field(repr=False)
    epoch: int | None = None

    def encode(self, version: int) -> bytes:
        kid = bytes.fromhex(self.key_id)
        if version == VERSION_1:
            return kid + self.sealed
        return kid + U64.pack(EPOCH_NONE if self.epoch is None else self.epoch) + self.sealed


@dataclass(frozen=True, slots=True)
class Header:
    hub_pk: bytes
    clip_id: bytes
    stream_id: bytes
    seq: int
    prev_hash: bytes
    ss_header: bytes
    stanzas: tuple[Stanza, ...]
    version: int = VERSION

    def __post_init__(self) -> None:
        checks = (
            (self.hub_pk, 32, "hub public key"),
            (self.clip_id, CLIP_ID_BYTES, "clip id"),
            (self.stream_id, STREAM_ID_BYTES, "stream id"),
            (self.prev_hash, HASH_BYTES, "previous clip hash"),
            (self.ss_header, SS_HEADER_BYTES, "secretstream header"),
        )
        for value, n, what in checks:
            if not isinstance(value, bytes) or len(value) != n:
                raise MalformedEnvelope(f"header: {what} must be {n} bytes")
        if self.version not in SUPPORTED_VERSIONS:
            raise MalformedEnvelope(f"header: unsupported envelope version {self.version}")
        if not (0 <= self.seq < 2**64):
            raise MalformedEnvelope("header: sequence number out of range")
        if not (1 <= len(self.stanzas) <= MAX_RECIPIENTS):
            raise MalformedEnvelope(f"header: needs 1..{MAX_RECIPIENTS} recipients, has {len(self.stanzas)}")
        ids = [s.key_id for s in self.stanzas]
        # Canonical: strictly ascending key ids, so one header has exactly one encoding.
        if any(a >= b for a, b in zip(ids, ids[1:], strict=False)):
            raise MalformedEnvelope("header: recipients must be sorted by key id without duplicates")
        for s in self.stanzas:
            if len(s.key_id) != 2 * KEY_ID_BYTES or len(s.sealed) != WRAP_SEALED_BYTES:
                raise MalformedEnvelope("header: malformed recipient stanza")
            if s.epoch is not None:
                if self.version == VERSION_1:
                    raise MalformedEnvelope("header: a version 1 stanza cannot name an epoch")
                if isinstance(s.epoch, bool) or not 0 <= s.epoch < EPOCH_NONE:
                    raise MalformedEnvelope("header: stanza epoch out of range")

    @property
    def hub_key_id(self) -> str:
        return hub_key_id(self.hub_pk)

    @property
    def recipient_ids(self) -> tuple[str, ...]:
        return tuple(s.key_id for s in self.stanzas)

    def encode(self) -> bytes:
        fixed = HEADER_FIXED.pack(
            MAGIC, self.version, self.hub_pk, self.clip_id, self.stream_id, self.seq, self.prev_hash,
            self.ss_header, len(self.stanzas),
        )
        return fixed + b"".join(s.encode(self.version) for s in self.stanzas)

    @property
    def digest(self) -> bytes:
        return header_digest_of(self.encode())


@dataclass(frozen=True, slots=True)
class ClipInfo:
    """What `verify_clip` establishes without any secret key."""

    header: Header
    header_sig: bytes = field(repr=False)
    chunk_count: int
    ct_hash: bytes
    trailer_sig: bytes = field(repr=False)
    size_bytes: int

    @property
    def clip_id_hex(self) -> str:
        return self.header.clip_id.hex()

    @property
    def header_digest(self) -> bytes:
        return self.header.digest

    @property
    def trailer_digest(self) -> bytes:
        return trailer_digest_of(self.header_digest, self.chunk_count, self.ct_hash)

    @property
    def clip_hash(self) -> bytes:
        """The chain link: the next clip of this camera carries it as `prev_hash`."""
        return clip_hash_of(self.header_digest, self.trailer_digest)


@dataclass(frozen=True, slots=True)
class OpenedClip:
    info: ClipInfo
    metadata: Mapping[str, Any]
    payload_bytes: int
