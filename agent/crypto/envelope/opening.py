"""Opening: unwrap the clip key for one recipient, then decrypt a clip that has already verified.

`open_clip` verifies signatures, structure and the ciphertext hash before it decrypts a byte,
and checks the hash again while decrypting (the file could change between the passes). A
reader demands TAG_FINAL on the last chunk and nothing after the trailer, because
secretstream itself does not notice a cut at a chunk boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, Protocol

import nacl.bindings as sodium
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.utils
from nacl.public import PrivateKey, SealedBox

from agent.crypto.envelope.format import (
    CHUNK_BYTES,
    CLIP_ID_BYTES,
    KEY_BYTES,
    SIG_BYTES,
    TAG_FINAL,
    TAG_MESSAGE,
    U32,
    WRAP_LABEL,
    WRAP_PLAIN_BYTES,
    WRAP_SEALED_BYTES,
    ClipInfo,
    Header,
    OpenedClip,
    header_digest_of,
)
from agent.crypto.envelope.hashing import BackgroundHasher
from agent.crypto.envelope.verify import (
    Reader,
    as_stream,
    check_end,
    read_header,
    read_trailer,
    records,
    verify_clip,
)
from agent.crypto.keys import DeviceIdentity, HubPublic
from agent.errors import (
    EpochError,
    MalformedEnvelope,
    TamperedClip,
    TruncatedClip,
    WrongRecipient,
)
from agent.jsonlimits import loads_bounded


class EpochSecrets(Protocol):
    """Where a device's epoch secrets come from (`agent.crypto.keys.EpochStore`)."""

    @property
    def device(self) -> str: ...

    def secret_for(self, epoch: int) -> PrivateKey:
        """The secret of `epoch`; PastRetention if it was destroyed, EpochError if never known."""
        ...


def unwrap_key(identity: DeviceIdentity, header: Header, epochs: EpochSecrets | None = None) -> bytes:
    """Find this device's stanza and recover K; the sealed plaintext must name this clip.

    A stanza without an epoch (every version 1 stanza) opens with the device's long-term box key;
    one that names an epoch opens only with that epoch's secret from `epochs`. The long-term key
    is never tried on an epoch stanza: it cannot open it, and after a shred nothing may."""
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
    if s.epoch is None:
        secret = identity.box_secret
        what = f"device {identity.key_id}"
    else:
        if epochs is None:
            raise EpochError(
                f"clip {header.clip_id.hex()} is sealed to epoch {s.epoch} of device {identity.key_id}: "
                "it opens only with that device's epoch key store (IDENTITY.epochs)"
            )
        if epochs.device != identity.key_id:
            raise EpochError(f"the epoch key store is for device {epochs.device}, not {identity.key_id}")
        secret = epochs.secret_for(s.epoch)  # PastRetention once shredded
        what = f"epoch {s.epoch} of device {identity.key_id}"
    try:
        plain = SealedBox(secret).decrypt(s.sealed)
    except nacl.exceptions.CryptoError:
        raise TamperedClip(f"the wrapped key for {what} does not open") from None
    if len(plain) != WRAP_PLAIN_BYTES or not plain.startswith(WRAP_LABEL):
        raise TamperedClip("the wrapped key is malformed")
    bound = plain[len(WRAP_LABEL) : len(WRAP_LABEL) + CLIP_ID_BYTES]
    if bound != header.clip_id:
        raise TamperedClip("the wrapped key belongs to another clip (moved between clips)")
    return plain[len(WRAP_LABEL) + CLIP_ID_BYTES :]


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
    r = Reader(as_stream(src))
    header, raw = read_header(r)
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
    hasher = BackgroundHasher(b"epa1-chunks") if recheck_hash else None
    pending: bytes | None = None  # hold one chunk back: the last one is metadata, not video
    index = 0
    total = 0
    final_seen = False
    meta_plain = b""
    for ct in records(r):
        if final_seen:
            raise TamperedClip(f"chunk {index} follows the final chunk")
        if hasher is not None:
            hasher.update(U32.pack(len(ct)), ct)
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
    count, ct_hash, _ = read_trailer(r)
    if count != index or ct_hash != info.ct_hash or (hasher is not None and hasher.digest() != info.ct_hash):
        raise TamperedClip("ciphertext changed between verification and decryption")
    check_end(r)
    try:
        # Bounded: the hub signed it, but a clip is opened far from the hub, and a parser that
        # recurses must not crash on a deeply nested document. The sealer keeps it to a chunk.
        meta = loads_bounded(meta_plain.decode("utf-8"), max_bytes=CHUNK_BYTES, what="clip metadata")
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedEnvelope(f"clip metadata is not JSON within limits: {e}") from None
    if not isinstance(meta, dict):
        raise MalformedEnvelope("clip metadata is not a JSON object")
    return meta, total


def open_clip(
    src: BinaryIO | bytes,
    identity: DeviceIdentity,
    write: Callable[[bytes], object],
    hub: HubPublic | None = None,
    epochs: EpochSecrets | None = None,
) -> OpenedClip:
    """Verify, unwrap K for `identity` (with its epoch secrets `epochs` for an epoch stanza), then
    decrypt, streaming video bytes to `write`.

    `src` must be re-readable: bytes, or a seekable file (it is read twice: verify, then decrypt).
    """
    immutable = isinstance(src, bytes)
    stream = as_stream(src)
    start = stream.tell() if stream.seekable() else None
    if start is None:
        raise MalformedEnvelope("open_clip needs bytes or a seekable file")
    info = verify_clip(stream, hub)
    key = unwrap_key(identity, info.header, epochs)
    stream.seek(start)
    meta, n = decrypt_verified(stream, info, key, write, recheck_hash=not immutable)
    return OpenedClip(info, meta, n)


def open_clip_bytes(
    data: bytes, identity: DeviceIdentity, hub: HubPublic | None = None, epochs: EpochSecrets | None = None
) -> tuple[bytes, OpenedClip]:
    out = bytearray()
    opened = open_clip(data, identity, out.extend, hub, epochs)
    return bytes(out), opened
