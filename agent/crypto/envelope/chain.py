"""The per-camera chain of clips: each header carries the previous clip's hash.

A deleted or reordered clip shows as a gap; deleted first clips show against the chain start the
hub recorded in its audit log (`check_heads`); the newest clips can only be checked against a
checkpoint pinned outside the hub (`audit pin`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.utils

from agent.crypto.envelope.format import STREAM_ID_BYTES, ClipInfo, blake2b_person
from agent.crypto.keys import HubIdentity


def stream_id_for(hub: HubIdentity, camera_id: str) -> bytes:
    """An opaque, stable per-camera chain id: the cloud can follow a chain without learning the camera."""
    key = blake2b_person(b"epa1-stream-key", bytes(hub.signing_key))
    return nacl.hash.blake2b(
        camera_id.encode("utf-8"), digest_size=STREAM_ID_BYTES, key=key, person=b"epa1-stream-id",
        encoder=nacl.encoding.RawEncoder,
    )


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


def check_heads(clips: Sequence[ClipInfo], heads: Mapping[str, str]) -> list[str]:
    """Problems with the START of each chain, against the heads the hub recorded in its audit log
    (`clip_stream_start`: stream id hex -> first clip id hex).

    No clip names its predecessor's absence, so deleting the FIRST clips of a chain leaves a chain
    that checks out by itself; only the recorded head shows it. A chain whose recorded head is not
    among `clips` while later clips of it are, or which has no recorded head at all, is reported."""
    problems: list[str] = []
    streams: dict[str, list[ClipInfo]] = {}
    for c in clips:
        streams.setdefault(c.header.stream_id.hex(), []).append(c)
    for sid, items in sorted(streams.items()):
        first = min(items, key=lambda c: c.header.seq)
        head = heads.get(sid)
        if head is None:
            problems.append(f"stream {sid[:8]}: the audit log records no start for this chain")
        elif all(c.clip_id_hex != head for c in items):
            problems.append(f"stream {sid[:8]}: its first clip {head[:12]}… is missing (the chain starts at "
                            f"clip {first.header.seq} here): the first clips were deleted")
    return problems
