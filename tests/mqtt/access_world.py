"""Deterministic identities, roster and clips for the access-flow tests and vectors."""

from __future__ import annotations

from dataclasses import dataclass

from agent import access as A
from agent.crypto.envelope import seal, unwrap_key, wrap_key
from agent.crypto.keys import (
    DeviceIdentity,
    HubIdentity,
    RequesterEntry,
    Roster,
    RosterEntry,
    sign_roster,
    updated_roster,
)


def dev(n: int, name: str) -> DeviceIdentity:
    return DeviceIdentity.from_secrets(bytes([n]) * 32, bytes([n + 100]) * 32, name)


HUB = HubIdentity.from_seed(bytes([7]) * 32, bytes([17]) * 32)
OTHER_HUB = HubIdentity.from_seed(bytes([8]) * 32, bytes([18]) * 32)
ALICE = dev(11, "alice-phone")  # owner
BOB = dev(12, "bob-laptop")  # owner
TEEN = dev(13, "teen-tablet")  # member: receives clips, cannot approve
VENDOR = dev(21, "acme-support")
POLICE = dev(22, "city-police")
PLUMBER = dev(23, "plumber")
MALLORY = dev(24, "mallory")  # not enrolled anywhere

ROSTER_V1: Roster = sign_roster(
    ALICE, 1,
    [RosterEntry(ALICE.public, "owner"), RosterEntry(BOB.public, "owner"), RosterEntry(TEEN.public, "member")],
    hub_key_id=HUB.key_id,
    # The owners enrolled these requesters with these roles; MALLORY is enrolled nowhere.
    requesters=[RequesterEntry(VENDOR.public, "vendor"), RequesterEntry(POLICE.public, "police"),
                RequesterEntry(PLUMBER.public, "contractor")],
)
# Version 2 revokes Bob's laptop (signed by Alice).
ROSTER_V2: Roster = updated_roster(ALICE, ROSTER_V1, revoke=[BOB.key_id])

T0_WALL_MS = 1_790_000_000_000
STREAM = bytes(range(16))


def clip_span(n: int) -> tuple[int, int]:
    """Clip n was recorded on the porch, n minutes into the hour before T0, for 30 s."""
    start = T0_WALL_MS - 3_600_000 + n * 60_000
    return start, start + 30_000


def clip_meta(n: int, camera: str = "porch") -> A.ClipMeta:
    start, end = clip_span(n)
    return A.ClipMeta((bytes([n]) * 16).hex(), camera, start, end)


#: What the hub's clip index says about clips 1..20 (all porch, inside the last hour).
CLIP_INDEX: dict[str, A.ClipMeta] = {clip_meta(n).clip: clip_meta(n) for n in range(1, 21)}


@dataclass(frozen=True)
class Clip:
    data: bytes
    clip_id: str
    payload: bytes


def make_clip(n: int, recipients: tuple[DeviceIdentity, ...] = (ALICE, BOB)) -> Clip:
    payload = b"\x00\x00\x00\x18ftypisom" + bytes([n]) * 3000  # looks like MP4 (for the leak test)
    start, end = clip_span(n)
    meta = {"camera_id": "porch", "n": n, "start_wall_s": start / 1000, "end_wall_s": end / 1000}
    data, info = seal(payload, meta, HUB, [r.public for r in recipients], STREAM,
                      seq=n, clip_id=bytes([n]) * 16, clip_key=bytes([n + 50]) * 32)
    return Clip(data, info.clip_id_hex, payload)


def rewrap(owner: DeviceIdentity, clip: Clip, requester: DeviceIdentity) -> A.WrappedKey:
    """What an owner device does for an approval: unwrap K, seal it to the requester (the decision
    then seals this to the hub's box key: `A.release_keys`)."""
    from agent.crypto.envelope import verify_clip

    info = verify_clip(clip.data, HUB.public)
    k = unwrap_key(owner, info.header)
    st = wrap_key(requester.public, info.header.clip_id, k)
    return A.WrappedKey(clip.clip_id, st.sealed)


def request(requester: DeviceIdentity = VENDOR, role: str = "contractor", *, n: int = 1,
            scope: A.Scope | None = None, hub: HubIdentity = HUB) -> bytes:
    scope = scope or A.Scope.make(["porch"], [], T0_WALL_MS - 3_600_000, T0_WALL_MS)
    return A.make_request(requester, hub.key_id, bytes([n]) * 16, role, scope,
                          "router firmware support", "ticket #4711", T0_WALL_MS)
