"""Helpers for envelope/clip tests: fixed keys, envelope surgery, redacted frames, plaintext scans."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from agent.core.datatypes import Decision, Frame, MaskRegion
from agent.core.redact import RedactedFrame, apply
from agent.crypto import envelope as env
from agent.crypto.keys import DeviceIdentity, HubIdentity
from agent.geometry import PointRel
from agent.storage.sinks.upload import init_sink_dir
from agent.vocab import Action

U32 = struct.Struct(">I")


def sink_dir(path: Path) -> Path:
    """A directory sink's root as an installer prepares it: created, then `sink init`."""
    path.mkdir(parents=True, exist_ok=True)
    init_sink_dir(path)
    return path


def hub_from(n: int) -> HubIdentity:
    return HubIdentity.from_seed(bytes([n]) * 32)


def device_from(n: int, name: str = "") -> DeviceIdentity:
    return DeviceIdentity.from_secrets(bytes([n]) * 32, bytes([n + 100]) * 32, name or f"dev{n}")


@dataclass
class Parts:
    """An envelope cut into its pieces (see docs/envelope-spec.md)."""

    header: bytes
    hsig: bytes
    records: list[bytes]  # chunk ciphertexts (without length prefix)
    count: int
    ct_hash: bytes
    tsig: bytes
    extra: bytes = b""

    def build(self, *, with_end: bool = True) -> bytes:
        out = self.header + self.hsig + b"".join(U32.pack(len(r)) + r for r in self.records)
        if with_end:
            out += U32.pack(0) + U32.pack(self.count) + self.ct_hash + self.tsig
        return out + self.extra

    def resign(self, hub: HubIdentity, *, header: bool = True, trailer: bool = True) -> Parts:
        """What an attacker holding the hub key could do: re-sign edited parts consistently."""
        p = replace(self)
        hdig = env.header_digest_of(p.header)
        if header:
            p.hsig = hub.signing_key.sign(env.HEADER_SIG_DOMAIN + hdig).signature
        if trailer:
            p.count = len(p.records)
            p.ct_hash = chunk_hash(p.records)
            p.tsig = hub.signing_key.sign(
                env.TRAILER_SIG_DOMAIN + env.trailer_digest_of(hdig, p.count, p.ct_hash)
            ).signature
        return p


def chunk_hash(records: list[bytes]) -> bytes:
    import hashlib

    h = hashlib.blake2b(digest_size=32, person=b"epa1-chunks")
    for r in records:
        h.update(U32.pack(len(r)))
        h.update(r)
    return h.digest()


def split(data: bytes) -> Parts:
    n = data[env.HEADER_FIXED_BYTES - 1]
    hlen = env.HEADER_FIXED_BYTES + n * env.STANZA_BYTES
    header, pos = data[:hlen], hlen
    hsig = data[pos : pos + 64]
    pos += 64
    records = []
    while True:
        (ln,) = U32.unpack(data[pos : pos + 4])
        pos += 4
        if ln == 0:
            break
        records.append(data[pos : pos + ln])
        pos += ln
    (count,) = U32.unpack(data[pos : pos + 4])
    ct_hash = data[pos + 4 : pos + 36]
    tsig = data[pos + 36 : pos + 100]
    return Parts(header, hsig, records, count, ct_hash, tsig, data[pos + 100 :])


def redacted(camera_id: str, index: int, t_s: float, image: np.ndarray, *, masked: bool = False) -> RedactedFrame:
    frame = Frame(camera_id, index, t_s, 0.0, image)
    regions: tuple[MaskRegion, ...] = ()
    if masked:
        pts = (PointRel(0, 0), PointRel(0.5, 0), PointRel(0.5, 0.5), PointRel(0, 0.5))
        regions = (MaskRegion("face", "detection", pts), MaskRegion("bed-zone", "zone", pts))
    d = Decision(camera_id, index, t_s, Action.MASK if masked else Action.PASS, (), regions)
    rf = apply(frame, d)
    assert rf is not None
    return rf


def moving_image(i: int, w: int = 64, h: int = 48) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = (np.arange(w)[None, :] * 3 + i * 7) % 256
    img[:, :, 1] = (np.arange(h)[:, None] * 5 + i * 3) % 256
    img[10:20, (i * 2) % (w - 10) : (i * 2) % (w - 10) + 10] = 255
    return img


# Plaintext media signatures: MP4 boxes, the JPEG/JFIF header OpenCV writes, Matroska/WebM EBML.
# Each is at least 4 fixed bytes, so random ciphertext of the few KiB these tests write matches
# by chance with probability far below 1e-6.
PLAINTEXT_MAGIC = (b"ftyp", b"mdat", b"moov", b"moof", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"\x1a\x45\xdf\xa3")


def plaintext_hits(*roots: Path) -> list[str]:
    hits = []
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                for m in PLAINTEXT_MAGIC:
                    if m in data:
                        hits.append(f"{p}: {m!r}")
    return hits


#: The `mount` fixture of tests/conftest.py: `mount(path, size_kib=...)` or `mount(path, bind=src)`.
Mount = Callable[..., Path]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(disk: Path) -> Path:
    """Fill a small filesystem to its last block; returns the filler file to delete later."""
    import os

    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler
