"""Sealing: stream redacted video into an encrypted, hub-signed clip.

A random clip key K per clip, wrapped per recipient with SealedBox over
`"epa/v1/wrap\\0" || clip_id || K`; the hub then forgets K, so a stolen hub reads no finished
clip. A recipient given as an `EpochRecipient` gets K sealed to the epoch key of the clip's start
(version 2 stanza names the epoch), so once the device destroys that epoch's secret no copy of
the clip opens; a plain `DevicePublic` gets it sealed to the long-term box key. Chunks are encrypted into batches of records, and each batch
is hashed on a background thread while the next one fills (`hashing.RecordBatches`). Randomness
comes from libsodium unless a test injects `clip_key`/`clip_id` for vectors.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import nacl.bindings as sodium
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.utils
from nacl.public import SealedBox

from agent.crypto.envelope import rawsodium
from agent.crypto.envelope.format import (
    ABYTES,
    CHUNK_BYTES,
    CLIP_ID_BYTES,
    FULL_RECORD_CT,
    HEADER_SIG_DOMAIN,
    KEY_BYTES,
    MAX_CHUNKS,
    MAX_RECIPIENTS,
    TAG_FINAL,
    TAG_MESSAGE,
    TRAILER_SIG_DOMAIN,
    U32,
    VERSION,
    VERSION_1,
    WRAP_LABEL,
    ZERO_HASH,
    ClipInfo,
    Header,
    Stanza,
    header_digest_of,
    trailer_digest_of,
)
from agent.crypto.envelope.hashing import RecordBatches
from agent.crypto.keys import DevicePublic, EpochRecipient, HubIdentity, canonical_json
from agent.errors import (
    MalformedEnvelope,
)

#: The largest chunk record: its length prefix and a full chunk's ciphertext.
RECORD_MAX = U32.size + FULL_RECORD_CT

Recipient = DevicePublic | EpochRecipient
"""A plain device (its long-term box key) or a device with the epoch key of the clip's start."""


def wrap_key(recipient: Recipient, clip_id: bytes, key: bytes) -> Stanza:
    """Seal K to one device, bound to `clip_id`. Anonymous sender: the hub cannot unwrap it later.

    An `EpochRecipient` with an epoch gets K sealed to that epoch's public key, and the stanza
    names the epoch; a plain `DevicePublic` (or an `EpochRecipient` without an epoch) gets it
    sealed to the device's long-term box key."""
    if len(key) != KEY_BYTES or len(clip_id) != CLIP_ID_BYTES:
        raise MalformedEnvelope("wrap: bad key or clip id length")
    epoch = recipient.epoch if isinstance(recipient, EpochRecipient) else None
    sealed = SealedBox(recipient.box_pk).encrypt(WRAP_LABEL + clip_id + key)
    return Stanza(recipient.key_id, bytes(sealed), epoch)


def _unique(recipients: Sequence[Recipient]) -> dict[str, Recipient]:
    uniq: dict[str, Recipient] = {}
    for r in recipients:
        have = uniq.get(r.key_id)
        if have is not None and bytes(have.box_pk) != bytes(r.box_pk):
            # Two different keys for one device: which one would the device hold? Refuse.
            raise MalformedEnvelope(f"recipient {r.key_id} is given twice with different keys")
        uniq[r.key_id] = r
    return uniq


class ClipWriter:
    """A write-only file object that encrypts as bytes arrive and streams the envelope to `out`.

    Hand it to an encoder (PyAV) as its output. It is deliberately not seekable: plaintext is
    only ever held in one 64 KiB buffer (wiped on abort), never on disk. Call `finish(metadata)` to write the
    final chunk and the signed trailer, or `abort()` to drop the clip.
    """

    def __init__(
        self,
        out: BinaryIO,
        hub: HubIdentity,
        recipients: Sequence[Recipient],
        stream_id: bytes,
        seq: int,
        prev_hash: bytes = ZERO_HASH,
        *,
        clip_key: bytes | None = None,
        clip_id: bytes | None = None,
        format_version: int = VERSION,
    ) -> None:
        # `format_version` exists for the vectors only (VERSION_1 re-creates the old layout, which
        # has no epoch field); the hub always writes VERSION.
        if format_version not in (VERSION_1, VERSION):
            raise MalformedEnvelope(f"cannot write envelope version {format_version}")
        uniq = _unique(recipients)
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
        if format_version == VERSION_1 and any(st.epoch is not None for st in stanzas):
            raise MalformedEnvelope("a version 1 envelope cannot wrap to epoch keys")
        self.header = Header(bytes(hub.signing_key.verify_key), cid, stream_id, seq, prev_hash, ss_header, stanzas,
                             format_version)
        raw = self.header.encode()
        self._hdig = header_digest_of(raw)
        self._count = 0
        self._size = 0
        self._done = False
        # Pending plaintext: one 64 KiB buffer, filled by write() and encrypted in place. Input of a
        # whole chunk or more is encrypted straight from the caller's buffer, within the call.
        self._pt = bytearray(CHUNK_BYTES)
        self._pt_view = memoryview(self._pt)
        self._pt_ptr = rawsodium.pointer(self._pt)
        self._pt_len = 0
        self._records = RecordBatches(b"epa1-chunks", out.write, RECORD_MAX)
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
        # Nothing of `data` is kept once write() returns: the caller may reuse its buffer.
        if self._pt_len:
            take = min(CHUNK_BYTES - self._pt_len, n)
            self._pt_view[self._pt_len : self._pt_len + take] = mv[:take]
            self._pt_len += take
            pos = take
            if self._pt_len == CHUNK_BYTES:
                self._push(self._pt_ptr, CHUNK_BYTES, TAG_MESSAGE)
                self._pt_len = 0
        while n - pos >= CHUNK_BYTES:
            self._push(rawsodium.pointer(mv[pos : pos + CHUNK_BYTES]), CHUNK_BYTES, TAG_MESSAGE)
            pos += CHUNK_BYTES
        if pos < n:
            self._pt_view[: n - pos] = mv[pos:]
            self._pt_len = n - pos
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

    def _push(self, src: rawsodium.Pointer, mlen: int, tag: int) -> None:
        """Encrypt `mlen` bytes at `src` as the next record (`u32 len || ct`), in the current batch."""
        if self._count >= MAX_CHUNKS - 1:
            raise MalformedEnvelope("clip too long for one envelope")
        ct_len = mlen + ABYTES
        buf, ptr, off = self._records.reserve()
        U32.pack_into(buf, off, ct_len)
        rawsodium.push_into(self._state, ptr + off + U32.size, src, mlen, self._hdig, tag)
        self._records.commit(U32.size + ct_len)
        self._size += U32.size + ct_len
        self._count += 1

    def finish(self, metadata: Mapping[str, Any]) -> ClipInfo:
        """Push the last video bytes, the metadata as the TAG_FINAL chunk, and the signed trailer."""
        if self._done:
            raise ValueError("clip already finished")
        meta = canonical_json(dict(metadata))
        if len(meta) > CHUNK_BYTES:
            raise MalformedEnvelope(f"clip metadata is {len(meta)} bytes; the limit is {CHUNK_BYTES}")
        if self._pt_len:
            self._push(self._pt_ptr, self._pt_len, TAG_MESSAGE)
            self._pt_len = 0
        self._push(rawsodium.pointer(meta), len(meta), TAG_FINAL)
        self._done = True
        self._wipe()
        ct_hash = self._records.digest()  # writes the last batch before the end marker below
        tdig = trailer_digest_of(self._hdig, self._count, ct_hash)
        tsig = self._hub.signing_key.sign(TRAILER_SIG_DOMAIN + tdig).signature
        self._emit(U32.pack(0))
        self._emit(U32.pack(self._count) + ct_hash + tsig)
        self._state = None  # type: ignore[assignment]  # drop K with the state
        return ClipInfo(self.header, self._hsig, self._count, ct_hash, tsig, self._size)

    def abort(self) -> None:
        self._done = True
        self._records.cancel()
        self._wipe()
        self._state = None  # type: ignore[assignment]

    def _wipe(self) -> None:
        """No plaintext left behind: the whole buffer, since earlier chunks stay past a short remainder."""
        self._pt_view[:] = bytes(CHUNK_BYTES)
        self._pt_len = 0

    def close(self) -> None:
        """PyAV closes its output when the container closes; that is not the end of the clip."""
        return None


def seal(
    payload: bytes,
    metadata: Mapping[str, Any],
    hub: HubIdentity,
    recipients: Sequence[Recipient],
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
