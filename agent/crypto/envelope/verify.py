"""Structural and signature verification of a sealed clip, without any secret key.

`verify_clip` checks the header and trailer signatures under the expected hub key, the chunk
structure and the trailer hash over every chunk record. Parsing arbitrary bytes never raises
anything but a typed `EnvelopeError`, and never reads past what the format allows. An I/O error
of the stream itself is not a verdict on the bytes: it is raised as the `OSError` it is.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.utils
from nacl.signing import VerifyKey

from agent.crypto.envelope.format import (
    ABYTES,
    EPOCH_NONE,
    FULL_RECORD_CT,
    HASH_BYTES,
    HEADER_FIXED,
    HEADER_FIXED_BYTES,
    HEADER_SIG_DOMAIN,
    KEY_ID_BYTES,
    MAGIC,
    MAX_CHUNKS,
    MAX_RECIPIENTS,
    SIG_BYTES,
    SUPPORTED_VERSIONS,
    TRAILER_BYTES,
    TRAILER_SIG_DOMAIN,
    U32,
    U64,
    VERSION,
    VERSION_1,
    ClipInfo,
    Header,
    Stanza,
    header_digest_of,
    stanza_bytes,
    trailer_digest_of,
)
from agent.crypto.envelope.hashing import Blake2bStream
from agent.crypto.keys import HubPublic, validate_ed25519_public
from agent.errors import (
    BadSignature,
    InvalidKey,
    MalformedEnvelope,
    TamperedClip,
    TruncatedClip,
)


class Reader:
    """Exact reads from a stream; EOF in the middle of a structure is truncation."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self.pos = 0

    def exact(self, n: int, what: str) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            # An OSError from the stream passes through untouched: a disk that cannot be read (or,
            # for a copying reader, a destination that cannot be written) says nothing about the
            # clip, and must never turn into a verdict such as "malformed" that gets it quarantined.
            part = self._src.read(n - len(buf))
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


def as_stream(src: BinaryIO | bytes | bytearray | memoryview) -> BinaryIO:
    if isinstance(src, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(src))
    return src


def _stanza(raw: bytes, version: int) -> Stanza:
    kid = raw[:KEY_ID_BYTES].hex()
    if version == VERSION_1:
        return Stanza(kid, raw[KEY_ID_BYTES:])
    (epoch,) = U64.unpack(raw[KEY_ID_BYTES : KEY_ID_BYTES + 8])
    return Stanza(kid, raw[KEY_ID_BYTES + 8 :], None if epoch == EPOCH_NONE else epoch)


def read_header(r: Reader) -> tuple[Header, bytes]:
    fixed = r.exact(HEADER_FIXED_BYTES, "header")
    magic, version, hub_pk, clip_id, stream_id, seq, prev, ssh, n = HEADER_FIXED.unpack(fixed)
    if magic != MAGIC:
        raise MalformedEnvelope("not an epa-clip envelope (bad magic)")
    if version not in SUPPORTED_VERSIONS:
        raise MalformedEnvelope(f"unsupported envelope version {version} (this reader knows 1..{VERSION})")
    if not (1 <= n <= MAX_RECIPIENTS):
        raise MalformedEnvelope(f"header: recipient count {n} is not 1..{MAX_RECIPIENTS}")
    size = stanza_bytes(version)
    raw_stanzas = r.exact(n * size, "recipient stanzas")
    stanzas = tuple(_stanza(raw_stanzas[i * size : (i + 1) * size], version) for i in range(n))
    header = Header(hub_pk, clip_id, stream_id, seq, prev, ssh, stanzas, version)
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


def records(r: Reader) -> Iterator[bytes]:
    """Yield chunk ciphertexts up to the end marker, enforcing the length rules of the spec."""
    count = 0
    while True:
        (n,) = U32.unpack(r.exact(4, f"length of chunk {count}"))
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


def read_trailer(r: Reader) -> tuple[int, bytes, bytes]:
    raw = r.exact(TRAILER_BYTES, "trailer")
    (count,) = U32.unpack(raw[:4])
    return count, raw[4 : 4 + HASH_BYTES], raw[4 + HASH_BYTES :]


def check_end(r: Reader) -> None:
    extra = r.at_eof()
    if extra:
        raise TamperedClip(f"{extra} unexpected bytes after the end of the clip")


def verify_clip(src: BinaryIO | bytes, hub: HubPublic | None = None) -> ClipInfo:
    """Check structure and both hub signatures without any secret key.

    With `hub` the clip must be signed by that hub; without it, by the key named in the header
    (which proves integrity only, not origin: pin the hub for that).
    """
    r = Reader(as_stream(src))
    header, raw = read_header(r)
    vk = _expected_hub_key(header, hub)
    hdig = header_digest_of(raw)
    hsig = r.exact(SIG_BYTES, "header signature")
    _check_sig(vk, HEADER_SIG_DOMAIN, hdig, hsig, "header")
    hasher = Blake2bStream(b"epa1-chunks")
    shape = _ChunkShape()
    for ct in records(r):
        shape.add(len(ct))
        hasher.update(U32.pack(len(ct)))
        hasher.update(ct)
    shape.done()
    count, ct_hash, tsig = read_trailer(r)
    _check_sig(vk, TRAILER_SIG_DOMAIN, trailer_digest_of(hdig, count, ct_hash), tsig, "trailer")
    if count != shape.count:
        # A clip cut in transit ends early (TruncatedClip above); a complete structure whose
        # chunk count disagrees with the signed trailer had chunks removed or inserted.
        raise TamperedClip(f"trailer says {count} chunks but the clip has {shape.count}")
    if hasher.digest() != ct_hash:
        raise TamperedClip("ciphertext does not match the hash the hub signed in the trailer")
    check_end(r)
    return ClipInfo(header, hsig, count, ct_hash, tsig, r.pos)
