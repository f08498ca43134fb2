"""Clip envelope: round trips and the adversarial list of issue 4."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import nacl.bindings as sodium
import pytest
from clip_helpers import U32, device_from, hub_from, split
from nacl.public import PrivateKey, SealedBox

from agent.crypto import envelope as env
from agent.crypto.keys import DeviceIdentity, HubIdentity, HubPublic, init_hub, load_hub_identity
from agent.errors import (
    BadSignature,
    EnvelopeError,
    MalformedEnvelope,
    TamperedClip,
    TruncatedClip,
    WrongRecipient,
)

HUB = hub_from(1)
OWNER = device_from(2, "owner")
PARTNER = device_from(3, "partner")
STRANGER = device_from(4, "stranger")
OTHER_HUB = hub_from(9)
STREAM = env.stream_id_for(HUB, "bedroom")
META = {"camera_id": "bedroom", "camera_name": "Bedroom", "labels": ["person"]}


def seal(payload: bytes, *, recipients=(OWNER.public,), hub: HubIdentity = HUB, seq: int = 0, prev=env.ZERO_HASH):
    return env.seal(payload, META, hub, list(recipients), STREAM, seq, prev)


def open_(data: bytes, who: DeviceIdentity = OWNER, hub: HubPublic | None = HUB.public) -> bytes:
    out, _ = env.open_clip_bytes(data, who, hub)
    return out


SMALL = b"small clip payload \x00\x01\x02"  # one video chunk + the final metadata chunk
BIG = os.urandom(3 * env.CHUNK_BYTES + 1234)  # several chunks
SMALL_ENV, SMALL_INFO = seal(SMALL)
BIG_ENV, BIG_INFO = seal(BIG)


# --- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, env.CHUNK_BYTES - 1, env.CHUNK_BYTES, env.CHUNK_BYTES + 1, 2 * env.CHUNK_BYTES])
def test_round_trip_sizes(n: int) -> None:
    payload = os.urandom(n)
    data, info = seal(payload)
    out, opened = env.open_clip_bytes(data, OWNER, HUB.public)
    assert out == payload
    assert dict(opened.metadata) == META
    assert opened.info.clip_hash == info.clip_hash
    assert info.size_bytes == len(data)
    # last video chunk + final metadata chunk; full chunks before
    assert info.chunk_count == -(-n // env.CHUNK_BYTES) + 1


def test_streaming_writes_match_one_shot_layout() -> None:
    import io

    out = io.BytesIO()
    w = env.ClipWriter(out, HUB, [OWNER.public], STREAM, 0)
    for i in range(0, len(BIG), 1000):
        w.write(BIG[i : i + 1000])
    w.finish(META)
    assert open_(out.getvalue()) == BIG
    assert not w.seekable() and w.writable()


def test_writes_of_every_size_and_buffers_reused_after_write() -> None:
    """Writes straddling chunks and batches, whole chunks from the caller's buffer, and a bytearray
    the caller overwrites after each write() all give the one-shot clip's plaintext."""
    import io

    payload = os.urandom(13 * env.CHUNK_BYTES + 777)  # more than three batches of records
    sizes = [1, env.CHUNK_BYTES - 1, env.CHUNK_BYTES, 2 * env.CHUNK_BYTES + 5, 3, 200_000, 32768]
    out = io.BytesIO()
    w = env.ClipWriter(out, HUB, [OWNER.public], STREAM, 0)
    scratch = bytearray(max(sizes))
    pos = i = 0
    while pos < len(payload):
        n = min(sizes[i % len(sizes)], len(payload) - pos)
        view = memoryview(scratch)[:n]
        view[:] = payload[pos : pos + n]
        kind = i % 3
        w.write(view if kind == 0 else bytes(view) if kind == 1 else bytearray(view))
        view[:] = b"\xff" * n  # the caller reuses its buffer at once
        pos += n
        i += 1
    info = w.finish(META)
    data = out.getvalue()
    assert open_(data) == payload
    assert info.size_bytes == len(data)
    assert env.verify_clip(data, HUB.public).clip_hash == info.clip_hash
    assert info.chunk_count == 15


def test_batched_hash_matches_pynacl() -> None:
    """The seal's direct libsodium calls give PyNaCl's bytes: the hash of a batch of records equals
    PyNaCl's generichash over the same bytes, and a record pushed into a buffer pulls with PyNaCl."""
    from agent.crypto.envelope import rawsodium

    data = os.urandom(300_000)
    h = rawsodium.Blake2b(b"epa1-chunks".ljust(16, b"\x00"), 32)
    h.update(rawsodium.pointer(data), 1000)
    h.update(rawsodium.pointer(memoryview(data)[1000:]), len(data) - 1000)
    st = sodium.crypto_generichash_blake2b_init(person=b"epa1-chunks".ljust(16, b"\x00"), digest_size=32)
    sodium.crypto_generichash_blake2b_update(st, data)
    assert h.digest() == sodium.crypto_generichash_blake2b_final(st)

    key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    push = sodium.crypto_secretstream_xchacha20poly1305_state()
    hdr = sodium.crypto_secretstream_xchacha20poly1305_init_push(push, key)
    out = bytearray(1000 + rawsodium.ABYTES + 8)
    rawsodium.push_into(push, rawsodium.pointer(out) + 8, rawsodium.pointer(data), 1000, b"ad", env.TAG_FINAL)
    pull = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(pull, hdr, key)
    plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(pull, bytes(out[8:]), b"ad")
    assert (plain, tag) == (data[:1000], env.TAG_FINAL)
    assert out[:8] == bytes(8)
    with pytest.raises(MalformedEnvelope):
        rawsodium.push_into(push, rawsodium.pointer(out), rawsodium.pointer(data), -1, b"", env.TAG_MESSAGE)


def test_failed_output_write_stops_the_writer_cleanly() -> None:
    """A disk that fails mid-clip: write() raises the OSError, abort() stops the hash thread and
    wipes the pending plaintext; a writer dropped without finish or abort leaves no thread."""
    import gc
    import threading

    class Full:
        def __init__(self, room: int) -> None:
            self.room = room

        def write(self, b: bytes) -> int:
            if len(b) > self.room:
                raise OSError(28, "No space left on device")
            self.room -= len(b)
            return len(b)

    before = {t.ident for t in threading.enumerate()}
    w = env.ClipWriter(Full(600_000), HUB, [OWNER.public], STREAM, 0)  # type: ignore[arg-type]
    with pytest.raises(OSError):
        for _ in range(40):
            w.write(os.urandom(50_000))
    w.abort()
    assert bytes(w._pt) == bytes(len(w._pt))
    # Uneven writes leave earlier chunks' bytes past the remainder: abort and finish wipe them all.
    for end in ("abort", "finish"):
        w2 = env.ClipWriter(Full(10**9), HUB, [OWNER.public], STREAM, 0)  # type: ignore[arg-type]
        w2.write(os.urandom(40_000))
        w2.write(os.urandom(40_000))
        w2.abort() if end == "abort" else w2.finish(META)
        assert bytes(w2._pt) == bytes(len(w2._pt)), end
    dropped = env.ClipWriter(Full(10**9), HUB, [OWNER.public], STREAM, 0)  # type: ignore[arg-type]
    dropped.write(os.urandom(5 * env.CHUNK_BYTES))
    del dropped
    gc.collect()
    for t in threading.enumerate():
        if t.ident not in before:
            t.join(timeout=5)
    assert not [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]


def test_every_recipient_opens_and_header_lists_them() -> None:
    data, info = seal(b"x" * 100, recipients=(OWNER.public, PARTNER.public))
    assert open_(data, OWNER) == open_(data, PARTNER) == b"x" * 100
    assert set(info.header.recipient_ids) == {OWNER.key_id, PARTNER.key_id}


def test_verify_without_any_secret() -> None:
    info = env.verify_clip(BIG_ENV, HUB.public)
    assert info.chunk_count == BIG_INFO.chunk_count and info.clip_hash == BIG_INFO.clip_hash
    assert env.verify_clip(BIG_ENV).header.hub_key_id == HUB.key_id


def test_header_is_canonical() -> None:
    p = split(SMALL_ENV)
    info = env.verify_clip(SMALL_ENV)
    assert info.header.encode() == p.header


# --- wrong recipient / stolen hub ------------------------------------------------------


def test_wrong_recipient() -> None:
    with pytest.raises(WrongRecipient) as e:
        open_(SMALL_ENV, STRANGER)
    assert STRANGER.key_id in str(e.value)


def test_stolen_hub_decrypts_nothing(tmp_path: Path) -> None:
    """A full copy of the hub's data dir (hub key, outbox, roster) opens no finished clip."""
    data_dir = tmp_path / "hub"
    hub = init_hub(data_dir)
    data, _ = env.seal(SMALL, META, hub, [OWNER.public], env.stream_id_for(hub, "cam"))
    (data_dir / "outbox").mkdir()
    (data_dir / "outbox" / "c.epaclip").write_bytes(data)
    stolen = tmp_path / "stolen"
    shutil.copytree(data_dir, stolen)
    thief_hub = load_hub_identity(stolen)
    header = env.verify_clip(data).header
    # Every secret in the copy, tried as an X25519 key against every stanza.
    seed = bytes(thief_hub.signing_key)
    candidates = [
        PrivateKey(seed),
        PrivateKey(sodium.crypto_sign_ed25519_sk_to_curve25519(seed + bytes(thief_hub.signing_key.verify_key))),
    ]
    for sk in candidates:
        for s in header.stanzas:
            with pytest.raises(Exception):  # noqa: B017 - any failure is the point: nothing opens
                SealedBox(sk).decrypt(s.sealed)
    for f in stolen.rglob("*"):
        if f.is_file():
            assert SMALL not in f.read_bytes()
    with pytest.raises(WrongRecipient):
        env.open_clip_bytes(data, DeviceIdentity.from_secrets(seed, seed), hub.public)


# --- bit flips --------------------------------------------------------------------------


def test_bit_flip_at_every_byte_offset() -> None:
    data = SMALL_ENV
    assert len(data) < 1000
    for i in range(len(data)):
        for bit in (0, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(EnvelopeError):
                open_(bytes(bad))
            with pytest.raises(EnvelopeError):
                env.verify_clip(bytes(bad), HUB.public)


# --- truncation -------------------------------------------------------------------------


def _record_offsets(data: bytes) -> list[int]:
    p = split(data)
    pos = len(p.header) + 64
    offs = []
    for r in p.records:
        offs.append(pos)
        pos += 4 + len(r)
    offs.append(pos)  # end marker
    return offs


def test_truncation_at_chunk_boundaries_and_mid_chunk() -> None:
    offs = _record_offsets(BIG_ENV)
    cuts = set(offs) | {o + 2 for o in offs} | {o + 4 + 1000 for o in offs[:-1]} | {len(BIG_ENV) - 1, 10, 0}
    for cut in sorted(c for c in cuts if c < len(BIG_ENV)):
        with pytest.raises(TruncatedClip):
            open_(BIG_ENV[:cut])
        with pytest.raises(TruncatedClip):
            env.verify_clip(BIG_ENV[:cut], HUB.public)


def test_truncation_resigned_by_hub_key_holder_is_caught_by_missing_final() -> None:
    """Even someone with the hub key cannot cut a clip short: the reader demands TAG_FINAL."""
    p = split(BIG_ENV)
    cut = p.resign(HUB)
    cut.records = p.records[:2]
    cut = cut.resign(HUB, header=False)
    data = cut.build()
    env.verify_clip(data, HUB.public)  # signatures and hash are consistent...
    with pytest.raises(TruncatedClip, match="final"):
        open_(data)  # ...but the stream has no final chunk


# --- reorder, duplicate, data after final ---------------------------------------------------


@pytest.mark.parametrize("resign", [False, True])
def test_reordered_chunks(resign: bool) -> None:
    p = split(BIG_ENV)
    p.records[0], p.records[1] = p.records[1], p.records[0]
    data = (p.resign(HUB, header=False) if resign else p).build()
    with pytest.raises(TamperedClip):
        open_(data)


@pytest.mark.parametrize("resign", [False, True])
def test_duplicated_chunk(resign: bool) -> None:
    p = split(BIG_ENV)
    p.records.insert(1, p.records[0])
    data = (p.resign(HUB, header=False) if resign else p).build()
    with pytest.raises(EnvelopeError):
        open_(data)


def test_bytes_after_the_end() -> None:
    for extra in (b"\x00", b"\x00\x00\x00\x00", os.urandom(100)):
        with pytest.raises(TamperedClip, match="after the end"):
            open_(SMALL_ENV + extra)
        with pytest.raises(TamperedClip):
            env.verify_clip(SMALL_ENV + extra, HUB.public)


@pytest.mark.parametrize("resign", [False, True])
def test_chunk_after_final(resign: bool) -> None:
    p = split(seal(os.urandom(env.CHUNK_BYTES))[0])  # full video chunk, then the final chunk
    p.records.append(p.records[-1])
    data = (p.resign(HUB, header=False) if resign else p).build()
    with pytest.raises(EnvelopeError):
        open_(data)
    if resign:
        with pytest.raises(TamperedClip):
            open_(data)


# --- header attacks ------------------------------------------------------------------------


def test_header_of_one_clip_on_payload_of_another() -> None:
    a, b = split(seal(BIG)[0]), split(BIG_ENV)
    swapped = split(BIG_ENV)
    swapped.header, swapped.hsig = a.header, a.hsig
    with pytest.raises(BadSignature):
        open_(swapped.build())  # the trailer is bound to the other header
    # with the hub key, re-sign the trailer: the chunks still carry the other header as AD
    with pytest.raises(TamperedClip):
        open_(swapped.resign(HUB, header=False).build())
    assert b.header != a.header


FIELDS = {  # offset, length of each fixed header field
    "magic": (0, 8),
    "version": (8, 1),
    "hub_pk": (9, 32),
    "clip_id": (41, 16),
    "stream_id": (57, 16),
    "seq": (73, 8),
    "prev_hash": (81, 32),
    "ss_header": (113, 24),
    "n_recipients": (137, 1),
    "stanza_key_id": (138, 8),
    "stanza_sealed": (146, 108),
}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_edited_header_fields(field: str) -> None:
    off, ln = FIELDS[field]
    data = bytearray(SMALL_ENV)
    data[off + ln - 1] ^= 0x01
    with pytest.raises(EnvelopeError):
        open_(bytes(data))
    with pytest.raises(EnvelopeError):
        env.verify_clip(bytes(data), HUB.public)


@pytest.mark.parametrize("field", ["clip_id", "stream_id", "seq", "prev_hash", "ss_header"])
def test_edited_header_fields_even_when_resigned(field: str) -> None:
    """With the hub key an attacker can re-sign, but the chunks' AD or the wrap binding still fail."""
    off, ln = FIELDS[field]
    p = split(SMALL_ENV)
    h = bytearray(p.header)
    h[off + ln - 1] ^= 0x01
    p.header = bytes(h)
    with pytest.raises(TamperedClip):
        open_(p.resign(HUB).build())


def test_wrapped_key_moved_between_clips() -> None:
    a = split(seal(SMALL)[0])
    b = split(SMALL_ENV)
    stanza_a = a.header[env.HEADER_FIXED_BYTES :]
    moved = split(SMALL_ENV)
    moved.header = b.header[: env.HEADER_FIXED_BYTES] + stanza_a
    with pytest.raises(BadSignature):
        open_(moved.build())
    with pytest.raises(TamperedClip, match="another clip"):
        open_(moved.resign(HUB).build())


def test_signature_by_a_key_that_is_not_the_hub() -> None:
    forged, _ = seal(SMALL, hub=OTHER_HUB)
    with pytest.raises(BadSignature, match="not by the expected hub"):
        open_(forged)
    with pytest.raises(BadSignature):
        env.verify_clip(forged, HUB.public)
    # Same hub key in the header, but signatures made with another key
    p = split(SMALL_ENV).resign(OTHER_HUB)
    with pytest.raises(BadSignature):
        env.verify_clip(p.build(), HUB.public)
    with pytest.raises(BadSignature):
        env.verify_clip(p.build())


def test_signature_domains_are_separate() -> None:
    """A header signature is not accepted as a trailer signature and vice versa."""
    p = split(SMALL_ENV)
    p.tsig = p.hsig
    with pytest.raises(BadSignature):
        env.verify_clip(p.build(), HUB.public)


# --- malformed lengths and encodings ----------------------------------------------------------


def test_malformed_lengths_and_encodings() -> None:
    p = split(SMALL_ENV)
    cases = {
        "zero recipients": p.header[: env.HEADER_FIXED_BYTES - 1] + b"\x00",
        "33 recipients": p.header[: env.HEADER_FIXED_BYTES - 1] + bytes([33]) + p.header[env.HEADER_FIXED_BYTES :],
        "bad magic": b"EPA-CLIP" + p.header[8:],
        "version 0": p.header[:8] + b"\x00" + p.header[9:],
        "version 3": p.header[:8] + b"\x03" + p.header[9:],
    }
    for name, header in cases.items():
        with pytest.raises((MalformedEnvelope, TruncatedClip)):
            env.verify_clip(header + SMALL_ENV[len(p.header) :])
        assert name
    rest = p.header + p.hsig
    for ln in (1, env.ABYTES - 1, env.FULL_RECORD_CT + 1, 0xFFFFFFFF):
        with pytest.raises(MalformedEnvelope):
            env.verify_clip(rest + U32.pack(ln) + b"\x00" * 64)


def test_short_chunk_in_the_middle_is_malformed() -> None:
    p = split(BIG_ENV)
    p.records[0] = p.records[0][:100]
    with pytest.raises(MalformedEnvelope, match="short"):
        env.verify_clip(p.resign(HUB, header=False).build(), HUB.public)


def test_no_chunks_is_malformed() -> None:
    p = split(SMALL_ENV)
    p.records = []
    with pytest.raises(MalformedEnvelope):
        env.verify_clip(p.resign(HUB, header=False).build(), HUB.public)


def test_trailer_count_mismatch() -> None:
    p = split(BIG_ENV)
    fewer = split(BIG_ENV)
    fewer.records = p.records[:-1]
    with pytest.raises(TamperedClip):
        env.verify_clip(fewer.build(), HUB.public)


def test_open_refuses_non_seekable_source() -> None:
    class OneShot:
        def read(self, n: int = -1) -> bytes:
            return b""

        def seekable(self) -> bool:
            return False

        def tell(self) -> int:
            return 0

    with pytest.raises(MalformedEnvelope):
        env.open_clip(OneShot(), OWNER, lambda b: None)  # type: ignore[arg-type]


def test_wrap_is_sealedbox_bound_to_clip_id() -> None:
    header = env.verify_clip(SMALL_ENV).header
    s = header.stanzas[0]
    plain = SealedBox(OWNER.box_secret).decrypt(s.sealed)
    assert plain.startswith(env.WRAP_LABEL) and plain[len(env.WRAP_LABEL) : len(env.WRAP_LABEL) + 16] == header.clip_id
    assert len(s.sealed) == env.WRAP_SEALED_BYTES


# --- chain --------------------------------------------------------------------------------


def test_chain_detects_deleted_and_reordered_clips() -> None:
    infos = []
    prev = env.ZERO_HASH
    for seq in range(4):
        _, info = seal(b"c%d" % seq, seq=seq, prev=prev)
        infos.append(info)
        prev = info.clip_hash
    assert env.check_chain(infos) == []
    assert "clip 2 is missing" in env.check_chain([infos[0], infos[1], infos[3]])[0]
    _, fork = seal(b"other", seq=2, prev=env.ZERO_HASH)
    assert "does not follow" in env.check_chain([infos[0], infos[1], fork])[0]
    assert "two clips" in env.check_chain([infos[0], infos[1], infos[1]])[0]


def test_seq_is_big_endian_u64() -> None:
    _, info = seal(b"x", seq=2**40 + 5)
    assert info.header.seq == 2**40 + 5
    data, _ = seal(b"x", seq=7)
    assert struct.unpack(">Q", data[73:81])[0] == 7
