"""The clip envelope (format `epa-clip` v1): seal, verify and open end-to-end encrypted clips.

The byte format is specified in docs/envelope-spec.md, with vectors in tests/vectors/. In short:

    header || header_sig || chunk_record* || u32(0) || trailer

- A random clip key K per clip; the payload is `crypto_secretstream_xchacha20poly1305` in
  64 KiB chunks, every chunk authenticated with the header digest as associated data.
- Video chunks carry TAG_MESSAGE; the last chunk carries TAG_FINAL and holds the encrypted
  metadata (camera id and name, times, labels, thumbnail). A reader demands TAG_FINAL on the
  last chunk and nothing after the trailer, because secretstream itself does not notice a cut at
  a chunk boundary.
- K is wrapped per recipient with SealedBox over `"epa/v1/wrap\\0" || clip_id || K`; the hub
  keeps no key that unwraps it, so a stolen hub reads no finished clip.
- The hub signs the header digest and a trailer digest (chunk count + hash of every chunk
  record), each with its own domain prefix. Without the trailer a holder of K could substitute
  other content under a valid header.
- Clips of one camera form a chain: each header carries the previous clip's `clip_hash`.

Invariants:
- Pure: no filesystem, no clock. Callers pass file objects. Randomness comes from libsodium
  unless a test injects `clip_key`/`clip_id` for vectors.
- Every failure is a typed `EnvelopeError`: MalformedEnvelope, TruncatedClip, TamperedClip,
  BadSignature (a TamperedClip: a signature that does not verify), WrongRecipient. Parsing
  arbitrary bytes never raises anything else.
- `open_clip` verifies signatures, structure and the ciphertext hash before it decrypts a byte,
  and checks the hash again while decrypting (the file could change between the passes).
"""

from __future__ import annotations

import io
import json
import queue
import struct
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import nacl.bindings as sodium
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.utils
from nacl.public import SealedBox
from nacl.signing import VerifyKey

from agent.errors import (
    BadSignature,
    InvalidKey,
    MalformedEnvelope,
    TamperedClip,
    TruncatedClip,
    WrongRecipient,
)
from agent.keys import (
    DeviceIdentity,
    DevicePublic,
    HubIdentity,
    HubPublic,
    canonical_json,
    hub_key_id,
    validate_ed25519_public,
)

MAGIC = b"epa-clip"
VERSION = 1
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
STANZA_BYTES = KEY_ID_BYTES + WRAP_SEALED_BYTES  # 116

# Signature domains: a hub signature over one message type can never pass as another.
HEADER_SIG_DOMAIN = b"epa/v1/header\x00"
TRAILER_SIG_DOMAIN = b"epa/v1/trailer\x00"

# magic, version, hub_pk, clip_id, stream_id, seq, prev_hash, ss_header, n_recipients
_FIXED = struct.Struct(">8sB32s16s16sQ32s24sB")
HEADER_FIXED_BYTES = _FIXED.size  # 138
_U32 = struct.Struct(">I")
TRAILER_BYTES = 4 + HASH_BYTES + SIG_BYTES

ZERO_HASH = bytes(HASH_BYTES)


def _h(person: bytes, *parts: bytes) -> bytes:
    return nacl.hash.blake2b(b"".join(parts), digest_size=HASH_BYTES, person=person, encoder=nacl.encoding.RawEncoder)


def header_digest_of(header_bytes: bytes) -> bytes:
    return _h(b"epa1-header", header_bytes)


def trailer_digest_of(header_digest: bytes, chunk_count: int, ct_hash: bytes) -> bytes:
    return _h(b"epa1-trailer", header_digest, _U32.pack(chunk_count), ct_hash)


def clip_hash_of(header_digest: bytes, trailer_digest: bytes) -> bytes:
    return _h(b"epa1-clip", header_digest, trailer_digest)


def stream_id_for(hub: HubIdentity, camera_id: str) -> bytes:
    """An opaque, stable per-camera chain id: the cloud can follow a chain without learning the camera."""
    key = _h(b"epa1-stream-key", bytes(hub.signing_key))
    return nacl.hash.blake2b(
        camera_id.encode("utf-8"), digest_size=STREAM_ID_BYTES, key=key, person=b"epa1-stream-id",
        encoder=nacl.encoding.RawEncoder,
    )


# --- header -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stanza:
    """One recipient: the device key id and K sealed to that device (bound to the clip id)."""

    key_id: str
    sealed: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Header:
    hub_pk: bytes
    clip_id: bytes
    stream_id: bytes
    seq: int
    prev_hash: bytes
    ss_header: bytes
    stanzas: tuple[Stanza, ...]

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

    @property
    def hub_key_id(self) -> str:
        return hub_key_id(self.hub_pk)

    @property
    def recipient_ids(self) -> tuple[str, ...]:
        return tuple(s.key_id for s in self.stanzas)

    def encode(self) -> bytes:
        fixed = _FIXED.pack(
            MAGIC, VERSION, self.hub_pk, self.clip_id, self.stream_id, self.seq, self.prev_hash,
            self.ss_header, len(self.stanzas),
        )
        return fixed + b"".join(bytes.fromhex(s.key_id) + s.sealed for s in self.stanzas)

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


# --- reading helpers ----------------------------------------------------------


class _Reader:
    """Exact reads from a stream; EOF in the middle of a structure is truncation."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self.pos = 0

    def exact(self, n: int, what: str) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                part = self._src.read(n - len(buf))
            except OSError as e:
                raise MalformedEnvelope(f"cannot read {what}: {e}") from None
            if not part:
                raise TruncatedClip(
                    f"clip ends at byte {self.pos + len(buf)} inside the {what} (needs {n - len(buf)} more bytes)"
                )
            buf += part
        self.pos += n
        return bytes(buf)

    def at_eof(self) -> int:
        """0 if at EOF, else how many bytes follow (counted up to a bound)."""
        extra = 0
        while True:
            part = self._src.read(65536)
            if not part:
                return extra
            extra += len(part)
            if extra > 1 << 20:
                return extra


def _as_stream(src: BinaryIO | bytes | bytearray | memoryview) -> BinaryIO:
    if isinstance(src, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(src))
    return src


def _read_header(r: _Reader) -> tuple[Header, bytes]:
    fixed = r.exact(HEADER_FIXED_BYTES, "header")
    magic, version, hub_pk, clip_id, stream_id, seq, prev, ssh, n = _FIXED.unpack(fixed)
    if magic != MAGIC:
        raise MalformedEnvelope("not an epa-clip envelope (bad magic)")
    if version != VERSION:
        raise MalformedEnvelope(f"unsupported envelope version {version} (this reader knows {VERSION})")
    if not (1 <= n <= MAX_RECIPIENTS):
        raise MalformedEnvelope(f"header: recipient count {n} is not 1..{MAX_RECIPIENTS}")
    raw_stanzas = r.exact(n * STANZA_BYTES, "recipient stanzas")
    stanzas = tuple(
        Stanza(
            raw_stanzas[i * STANZA_BYTES : i * STANZA_BYTES + KEY_ID_BYTES].hex(),
            raw_stanzas[i * STANZA_BYTES + KEY_ID_BYTES : (i + 1) * STANZA_BYTES],
        )
        for i in range(n)
    )
    header = Header(hub_pk, clip_id, stream_id, seq, prev, ssh, stanzas)
    raw = fixed + raw_stanzas
    return header, raw


def _expected_hub_key(header: Header, hub: HubPublic | None) -> VerifyKey:
    if hub is not None:
        if header.hub_key_id != hub.key_id:
            raise BadSignature(f"clip is signed by hub {header.hub_key_id}, not by the expected hub {hub.key_id}")
        return hub.verify_key
    try:
        return validate_ed25519_public(header.hub_pk, "hub key in the clip header")
    except InvalidKey as e:
        raise MalformedEnvelope(str(e)) from None


def _check_sig(vk: VerifyKey, domain: bytes, digest: bytes, sig: bytes, what: str) -> None:
    try:
        vk.verify(domain + digest, sig)
    except nacl.exceptions.BadSignatureError:
        raise BadSignature(f"{what} signature does not verify: the clip was modified or not signed by this hub") from None


def _records(r: _Reader) -> Iterator[bytes]:
    """Yield chunk ciphertexts up to the end marker, enforcing the length rules of the spec."""
    count = 0
    while True:
        (n,) = _U32.unpack(r.exact(4, f"length of chunk {count}"))
        if n == 0:
            return
        if n < ABYTES or n > FULL_RECORD_CT:
            raise MalformedEnvelope(f"chunk {count} has length {n}, outside {ABYTES}..{FULL_RECORD_CT}")
        count += 1
        if count > MAX_CHUNKS:
            raise MalformedEnvelope("too many chunks")
        yield r.exact(n, f"chunk {count - 1}")


class _ChunkShape:
    """Structural rule: only the last two records (last video chunk, final metadata chunk) may be short."""

    def __init__(self) -> None:
        self.short_at: int | None = None
        self.count = 0

    def add(self, n: int) -> None:
        if self.short_at is not None and self.count >= self.short_at + 2:
            raise MalformedEnvelope(f"chunk {self.short_at} is short but is not one of the last two chunks")
        if n != FULL_RECORD_CT and self.short_at is None:
            self.short_at = self.count
        self.count += 1

    def done(self) -> None:
        if self.count == 0:
            raise MalformedEnvelope("clip has no chunks")
        if self.short_at is not None and self.count > self.short_at + 2:
            raise MalformedEnvelope(f"chunk {self.short_at} is short but is not one of the last two chunks")


def _read_trailer(r: _Reader) -> tuple[int, bytes, bytes]:
    raw = r.exact(TRAILER_BYTES, "trailer")
    (count,) = _U32.unpack(raw[:4])
    return count, raw[4 : 4 + HASH_BYTES], raw[4 + HASH_BYTES :]


def _check_end(r: _Reader) -> None:
    extra = r.at_eof()
    if extra:
        raise TamperedClip(f"{extra} unexpected bytes after the end of the clip")


# --- verify -------------------------------------------------------------------


def verify_clip(src: BinaryIO | bytes, hub: HubPublic | None = None) -> ClipInfo:
    """Check structure and both hub signatures without any secret key.

    With `hub` the clip must be signed by that hub; without it, by the key named in the header
    (which proves integrity only, not origin: pin the hub for that).
    """
    r = _Reader(_as_stream(src))
    header, raw = _read_header(r)
    vk = _expected_hub_key(header, hub)
    hdig = header_digest_of(raw)
    hsig = r.exact(SIG_BYTES, "header signature")
    _check_sig(vk, HEADER_SIG_DOMAIN, hdig, hsig, "header")
    hasher = _Blake2bStream(b"epa1-chunks")
    shape = _ChunkShape()
    for ct in _records(r):
        shape.add(len(ct))
        hasher.update(_U32.pack(len(ct)))
        hasher.update(ct)
    shape.done()
    count, ct_hash, tsig = _read_trailer(r)
    _check_sig(vk, TRAILER_SIG_DOMAIN, trailer_digest_of(hdig, count, ct_hash), tsig, "trailer")
    if count != shape.count:
        # A clip cut in transit ends early (TruncatedClip above); a complete structure whose
        # chunk count disagrees with the signed trailer had chunks removed or inserted.
        raise TamperedClip(f"trailer says {count} chunks but the clip has {shape.count}")
    if hasher.digest() != ct_hash:
        raise TamperedClip("ciphertext does not match the hash the hub signed in the trailer")
    _check_end(r)
    return ClipInfo(header, hsig, count, ct_hash, tsig, r.pos)


class _Blake2bStream:
    """Incremental BLAKE2b-256 with a personalisation (libsodium's crypto_generichash via PyNaCl)."""

    def __init__(self, person: bytes) -> None:
        self._st = sodium.crypto_generichash_blake2b_init(person=person.ljust(16, b"\x00"), digest_size=HASH_BYTES)

    def update(self, data: bytes) -> None:
        sodium.crypto_generichash_blake2b_update(self._st, data)

    def digest(self) -> bytes:
        return sodium.crypto_generichash_blake2b_final(self._st)


class _BackgroundHasher:
    """The same hash, computed on a worker thread while the caller encrypts or decrypts.

    PyNaCl's cffi calls release the GIL, so hashing chunk i overlaps with sealing chunk i+1 on a
    second core; the bounded queue keeps at most a few chunks in memory. Order is preserved (one
    worker, FIFO), so the digest is identical to `_Blake2bStream`'s. The worker holds no
    reference to this object: if a writer is dropped without finish/abort, the finalizer stops it.
    """

    def __init__(self, person: bytes, depth: int = 8) -> None:
        self._h = _Blake2bStream(person)
        self._q: queue.Queue[tuple[bytes, ...] | None] = queue.Queue(maxsize=depth)
        self._err: list[BaseException] = []
        self._t = threading.Thread(
            target=_hash_worker, args=(self._q, self._h, self._err), name="epa-clip-hash", daemon=True
        )
        self._t.start()
        self._stop = weakref.finalize(self, self._q.put, None)

    def update(self, *parts: bytes) -> None:
        self._q.put(parts)

    def digest(self) -> bytes:
        self._stop()
        self._t.join()
        if self._err:
            raise self._err[0]
        return self._h.digest()

    def cancel(self) -> None:
        self._stop()
        self._t.join()


def _hash_worker(q: queue.Queue[tuple[bytes, ...] | None], h: _Blake2bStream, err: list[BaseException]) -> None:
    while True:
        item = q.get()
        if item is None:
            return
        if not err:
            try:
                for part in item:
                    h.update(part)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread by digest()
                err.append(e)


# --- key wrapping ---------------------------------------------------------------


def wrap_key(recipient: DevicePublic, clip_id: bytes, key: bytes) -> Stanza:
    """Seal K to one device, bound to `clip_id`. Anonymous sender: the hub cannot unwrap it later."""
    if len(key) != KEY_BYTES or len(clip_id) != CLIP_ID_BYTES:
        raise MalformedEnvelope("wrap: bad key or clip id length")
    sealed = SealedBox(recipient.box_pk).encrypt(WRAP_LABEL + clip_id + key)
    return Stanza(recipient.key_id, bytes(sealed))


def unwrap_key(identity: DeviceIdentity, header: Header) -> bytes:
    """Find this device's stanza and recover K; the sealed plaintext must name this clip."""
    for s in header.stanzas:
        if s.key_id == identity.key_id:
            break
    else:
        raise WrongRecipient(
            f"clip {header.clip_id.hex()} is not addressed to device {identity.key_id} "
            f"(recipients: {', '.join(header.recipient_ids)})"
        )
    if len(s.sealed) != WRAP_SEALED_BYTES:
        raise MalformedEnvelope("wrapped key has the wrong length")
    try:
        plain = SealedBox(identity.box_secret).decrypt(s.sealed)
    except nacl.exceptions.CryptoError:
        raise TamperedClip(f"the wrapped key for device {identity.key_id} does not open") from None
    if len(plain) != WRAP_PLAIN_BYTES or not plain.startswith(WRAP_LABEL):
        raise TamperedClip("the wrapped key is malformed")
    bound = plain[len(WRAP_LABEL) : len(WRAP_LABEL) + CLIP_ID_BYTES]
    if bound != header.clip_id:
        raise TamperedClip("the wrapped key belongs to another clip (moved between clips)")
    return plain[len(WRAP_LABEL) + CLIP_ID_BYTES :]


# --- seal (streaming writer) ----------------------------------------------------


class ClipWriter:
    """A write-only file object that encrypts as bytes arrive and streams the envelope to `out`.

    Hand it to an encoder (PyAV) as its output. It is deliberately not seekable: plaintext is
    only ever held in one 64 KiB buffer, never on disk. Call `finish(metadata)` to write the
    final chunk and the signed trailer, or `abort()` to drop the clip.
    """

    def __init__(
        self,
        out: BinaryIO,
        hub: HubIdentity,
        recipients: Sequence[DevicePublic],
        stream_id: bytes,
        seq: int,
        prev_hash: bytes = ZERO_HASH,
        *,
        clip_key: bytes | None = None,
        clip_id: bytes | None = None,
    ) -> None:
        uniq = {d.key_id: d for d in recipients}
        if not uniq:
            raise MalformedEnvelope("a clip needs at least one recipient")
        if len(uniq) > MAX_RECIPIENTS:
            raise MalformedEnvelope(f"a clip can have at most {MAX_RECIPIENTS} recipients")
        key = clip_key if clip_key is not None else sodium.crypto_secretstream_xchacha20poly1305_keygen()
        cid = clip_id if clip_id is not None else nacl.utils.random(CLIP_ID_BYTES)
        self._out = out
        self._hub = hub
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        ss_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        stanzas = tuple(wrap_key(uniq[k], cid, key) for k in sorted(uniq))
        del key  # K lives on only inside the secretstream state and the sealed stanzas
        self.header = Header(bytes(hub.signing_key.verify_key), cid, stream_id, seq, prev_hash, ss_header, stanzas)
        raw = self.header.encode()
        self._hdig = header_digest_of(raw)
        # Pending plaintext as pieces (copied once, by join, into the chunk pushed).
        self._buf: list[bytes] = []
        self._buf_len = 0
        self._hasher = _BackgroundHasher(b"epa1-chunks")
        self._count = 0
        self._size = 0
        self._done = False
        self._hsig = hub.signing_key.sign(HEADER_SIG_DOMAIN + self._hdig).signature
        self._emit(raw)
        self._emit(self._hsig)

    # file-object protocol (what PyAV and io need)
    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def flush(self) -> None:
        return None

    @property
    def closed(self) -> bool:
        return self._done

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._done:
            raise ValueError("write to a finished clip")
        mv = memoryview(data).cast("B")
        n = len(mv)
        pos = 0
        if self._buf_len:
            take = min(CHUNK_BYTES - self._buf_len, n)
            self._buf.append(bytes(mv[:take]))
            self._buf_len += take
            pos = take
            if self._buf_len == CHUNK_BYTES:
                self._push(b"".join(self._buf), TAG_MESSAGE)
                self._buf, self._buf_len = [], 0
        while n - pos >= CHUNK_BYTES:
            self._push(bytes(mv[pos : pos + CHUNK_BYTES]), TAG_MESSAGE)
            pos += CHUNK_BYTES
        if pos < n:
            self._buf.append(bytes(mv[pos:]))
            self._buf_len += n - pos
        return n

    @property
    def header_digest(self) -> bytes:
        return self._hdig

    @property
    def bytes_written(self) -> int:
        return self._size

    def _emit(self, b: bytes) -> None:
        self._out.write(b)
        self._size += len(b)

    def _push(self, plain: bytes, tag: int) -> None:
        if self._count >= MAX_CHUNKS - 1:
            raise MalformedEnvelope("clip too long for one envelope")
        ct = sodium.crypto_secretstream_xchacha20poly1305_push(self._state, plain, self._hdig, tag)
        rec_len = _U32.pack(len(ct))
        self._hasher.update(rec_len, ct)
        self._emit(rec_len)
        self._emit(ct)
        self._count += 1

    def finish(self, metadata: Mapping[str, Any]) -> ClipInfo:
        """Push the last video bytes, the metadata as the TAG_FINAL chunk, and the signed trailer."""
        if self._done:
            raise ValueError("clip already finished")
        meta = canonical_json(dict(metadata))
        if len(meta) > CHUNK_BYTES:
            raise MalformedEnvelope(f"clip metadata is {len(meta)} bytes; the limit is {CHUNK_BYTES}")
        if self._buf_len:
            self._push(b"".join(self._buf), TAG_MESSAGE)
            self._buf, self._buf_len = [], 0
        self._push(meta, TAG_FINAL)
        self._done = True
        ct_hash = self._hasher.digest()
        tdig = trailer_digest_of(self._hdig, self._count, ct_hash)
        tsig = self._hub.signing_key.sign(TRAILER_SIG_DOMAIN + tdig).signature
        self._emit(_U32.pack(0))
        self._emit(_U32.pack(self._count) + ct_hash + tsig)
        self._state = None  # type: ignore[assignment]  # drop K with the state
        return ClipInfo(self.header, self._hsig, self._count, ct_hash, tsig, self._size)

    def abort(self) -> None:
        self._done = True
        self._hasher.cancel()
        self._buf, self._buf_len = [], 0
        self._state = None  # type: ignore[assignment]

    def close(self) -> None:
        """PyAV closes its output when the container closes; that is not the end of the clip."""
        return None


def seal(
    payload: bytes,
    metadata: Mapping[str, Any],
    hub: HubIdentity,
    recipients: Sequence[DevicePublic],
    stream_id: bytes,
    seq: int = 0,
    prev_hash: bytes = ZERO_HASH,
    **inject: Any,
) -> tuple[bytes, ClipInfo]:
    """Seal a whole payload in memory (tests, vectors). The sink streams through `ClipWriter`."""
    out = io.BytesIO()
    w = ClipWriter(out, hub, recipients, stream_id, seq, prev_hash, **inject)
    w.write(payload)
    info = w.finish(metadata)
    return out.getvalue(), info


# --- open -------------------------------------------------------------------------


def decrypt_verified(
    src: BinaryIO | bytes,
    info: ClipInfo,
    key: bytes,
    write: Callable[[bytes], object],
    *,
    recheck_hash: bool = True,
) -> tuple[Mapping[str, Any], int]:
    """Decrypt a clip whose `info` came from `verify_clip`, with a clip key K.

    Re-reads the stream and demands the same header and ciphertext hash as verified (a file can
    change between the passes; `recheck_hash=False` only for immutable bytes), every chunk
    authenticating under the header digest, TAG_FINAL exactly on the last chunk.
    """
    r = _Reader(_as_stream(src))
    header, raw = _read_header(r)
    if raw != info.header.encode():
        raise TamperedClip("clip header changed between verification and decryption")
    hdig = header_digest_of(raw)
    r.exact(SIG_BYTES, "header signature")
    if len(key) != KEY_BYTES:
        raise MalformedEnvelope("clip key must be 32 bytes")
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    try:
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header.ss_header, key)
    except nacl.exceptions.CryptoError:
        raise TamperedClip("secretstream header rejected") from None
    hasher = _BackgroundHasher(b"epa1-chunks") if recheck_hash else None
    pending: bytes | None = None  # hold one chunk back: the last one is metadata, not video
    index = 0
    total = 0
    final_seen = False
    meta_plain = b""
    for ct in _records(r):
        if final_seen:
            raise TamperedClip(f"chunk {index} follows the final chunk")
        if hasher is not None:
            hasher.update(_U32.pack(len(ct)), ct)
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, ct, hdig)
        except nacl.exceptions.CryptoError:
            raise TamperedClip(f"chunk {index} fails authentication (modified, reordered or from another clip)") from None
        if tag == TAG_FINAL:
            final_seen = True
            meta_plain = plain
        elif tag != TAG_MESSAGE:
            raise TamperedClip(f"chunk {index} has unexpected tag {tag}")
        else:
            if pending is not None:
                write(pending)
                total += len(pending)
            pending = plain
        index += 1
    if not final_seen:
        # A cut at a chunk boundary authenticates chunk by chunk; only the missing FINAL shows it.
        raise TruncatedClip(f"clip ends after chunk {index - 1} without the final chunk")
    if pending is not None:
        write(pending)
        total += len(pending)
    count, ct_hash, _ = _read_trailer(r)
    if count != index or ct_hash != info.ct_hash or (hasher is not None and hasher.digest() != info.ct_hash):
        raise TamperedClip("ciphertext changed between verification and decryption")
    _check_end(r)
    try:
        meta = json.loads(meta_plain.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedEnvelope("clip metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise MalformedEnvelope("clip metadata is not a JSON object")
    return meta, total


def open_clip(
    src: BinaryIO | bytes,
    identity: DeviceIdentity,
    write: Callable[[bytes], object],
    hub: HubPublic | None = None,
) -> OpenedClip:
    """Verify, unwrap K for `identity`, then decrypt, streaming video bytes to `write`.

    `src` must be re-readable: bytes, or a seekable file (it is read twice: verify, then decrypt).
    """
    immutable = isinstance(src, bytes)
    stream = _as_stream(src)
    start = stream.tell() if stream.seekable() else None
    if start is None:
        raise MalformedEnvelope("open_clip needs bytes or a seekable file")
    info = verify_clip(stream, hub)
    key = unwrap_key(identity, info.header)
    stream.seek(start)
    meta, n = decrypt_verified(stream, info, key, write, recheck_hash=not immutable)
    return OpenedClip(info, meta, n)


def open_clip_bytes(data: bytes, identity: DeviceIdentity, hub: HubPublic | None = None) -> tuple[bytes, OpenedClip]:
    out = bytearray()
    opened = open_clip(data, identity, out.extend, hub)
    return bytes(out), opened


def check_chain(clips: Sequence[ClipInfo]) -> list[str]:
    """Problems in per-camera chains (a deleted, reordered or inserted clip). Empty list = intact.

    Clips are grouped by stream id and ordered by sequence number; each clip must carry the
    previous clip's hash and the sequence numbers must be consecutive.
    """
    problems: list[str] = []
    streams: dict[bytes, list[ClipInfo]] = {}
    for c in clips:
        streams.setdefault(c.header.stream_id, []).append(c)
    for sid, items in streams.items():
        items.sort(key=lambda c: c.header.seq)
        for a, b in zip(items, items[1:], strict=False):
            if b.header.seq == a.header.seq:
                problems.append(f"stream {sid.hex()[:8]}: two clips with sequence {a.header.seq}")
            elif b.header.seq != a.header.seq + 1:
                lo, hi = a.header.seq + 1, b.header.seq - 1
                gap = f"clip {lo} is" if lo == hi else f"clips {lo}..{hi} are"
                problems.append(f"stream {sid.hex()[:8]}: {gap} missing")
            elif b.header.prev_hash != a.clip_hash:
                problems.append(
                    f"stream {sid.hex()[:8]}: clip {b.header.seq} does not follow clip {a.header.seq} "
                    "(previous-clip hash differs)"
                )
    return problems
