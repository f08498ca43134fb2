"""The requester's and the owner device's side of the access flow: build requests and
decisions, check what the hub signed.

An owner device checks the requester's signature before showing or approving anything, never
signs a scope wider than the request, and re-wraps clip keys only to the requester key named in
the signed request. Pure: keys, time and counters are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nacl.public import PublicKey

from agent.access.wire import (
    KEY_ID_RE,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_BYTES,
    MODES,
    PROTOCOL_VERSION,
    REQUESTER_ROLES,
    REQUESTER_STATUSES,
    ClipMeta,
    Request,
    Scope,
    Signed,
    WrappedKey,
    choice_field,
    exact_keys,
    hex_field,
    int_field,
    parse_keys,
    parse_message,
    parse_request,
    seal_release,
    sign_message,
    text_field,
    verify_signed,
)
from agent.crypto.keys import (
    DeviceIdentity,
    HubPublic,
    b64url_decode,
    canonical_json,
    validate_x25519_public,
)
from agent.errors import AccessError, InvalidKey
from agent.jsonlimits import loads_bounded


def make_request(
    requester: DeviceIdentity, hub_id: str, request_id: bytes, role: str, scope: Scope,
    purpose: str, legal_ref: str, created_ms: int,
) -> bytes:
    if len(request_id) != 16:
        raise AccessError("request id must be 16 random bytes")
    body = {
        "type": "request", "v": PROTOCOL_VERSION, "hub": hub_id, "request_id": request_id.hex(),
        "requester": requester.public.encode(), "role": choice_field(role, REQUESTER_ROLES, "role"),
        "scope": scope.to_json(), "purpose": text_field(purpose, "purpose"), "legal_ref": text_field(legal_ref, "legal_ref"),
        "created_ms": created_ms,
    }
    return sign_message("request", body, requester.signing_key, requester.key_id)


@dataclass(frozen=True, slots=True)
class Challenge:
    challenge_id: str
    request: Request
    ttl_s: int
    approvals_needed: int
    roster_version: int
    issued_ms: int
    #: The hub's box key: approved keys are sealed to it (only the hub releases them).
    hub_box: PublicKey
    #: `enrolled` (name and role are the owners' own, from the roster) or `unverified`.
    requester_status: str
    #: The role the hub applies: the enrolled one, or only the claimed one when unverified.
    role: str
    #: The hub's index entry (camera, start, end) for every requested clip.
    clips: tuple[ClipMeta, ...]

    @property
    def verified(self) -> bool:
        return self.requester_status == "enrolled"

    def clip(self, clip_id: str) -> ClipMeta:
        for c in self.clips:
            if c.clip == clip_id:
                return c
        raise AccessError(f"clip {clip_id} is not part of this challenge")


def parse_hub_message(data: bytes, msg_type: str, hub: HubPublic) -> Signed:
    """Any hub-signed message (challenge, grant, denial, status), verified under the pinned hub key."""
    m = parse_message(data, msg_type)
    if m.signer != hub.key_id or m.body.get("hub") != hub.key_id:
        raise AccessError(f"{msg_type}: not from hub {hub.key_id}")
    verify_signed(m, msg_type, hub.verify_key, msg_type)
    return m


def parse_challenge(data: bytes, hub: HubPublic) -> Challenge:
    """Owner side: verify the hub's challenge and the requester's signature inside it."""
    m = parse_hub_message(data, "challenge", hub)
    b = exact_keys(dict(m.body), ("type", "v", "hub", "challenge_id", "request_id", "request_hash", "request",
                                   "ttl_s", "approvals_needed", "roster_version", "issued_ms", "hub_box",
                                   "requester_status", "role", "clips"), "challenge")
    req = parse_request(canonical_json(b["request"]), hub.key_id)
    if req.hash != b["request_hash"] or req.request_id != b["request_id"]:
        raise AccessError("challenge: request hash does not match the request it carries")
    if not isinstance(b["hub_box"], str):
        raise AccessError("challenge: hub_box must be base64url")
    try:
        box = validate_x25519_public(b64url_decode(b["hub_box"], "challenge: hub_box"), "challenge: hub_box")
    except InvalidKey as e:
        raise AccessError(str(e)) from None
    if not isinstance(b["clips"], list):
        raise AccessError("challenge: clips must be a list")
    clips = tuple(ClipMeta.from_json(c, f"challenge: clips[{i}]") for i, c in enumerate(b["clips"]))
    if [c.clip for c in clips] != list(req.scope.clips):
        raise AccessError("challenge: the clip index entries do not match the requested clips")
    return Challenge(hex_field(b["challenge_id"], 64, "challenge: challenge_id"), req, int_field(b["ttl_s"], "ttl_s"),
                     int_field(b["approvals_needed"], "approvals_needed", 1, 16),
                     int_field(b["roster_version"], "roster_version", 1), int_field(b["issued_ms"], "issued_ms"),
                     box, choice_field(b["requester_status"], REQUESTER_STATUSES, "challenge: requester_status"),
                     choice_field(b["role"], REQUESTER_ROLES, "challenge: role"), clips)


def release_keys(challenge: Challenge, inner: Sequence[WrappedKey]) -> tuple[WrappedKey, ...]:
    """Owner side: seal each requester-wrapped key to the hub's box key for this challenge, so that
    only the hub can release it, and only in a grant after its checks."""
    return tuple(seal_release(challenge.hub_box, challenge.challenge_id, k) for k in inner)


def make_decision(
    owner: DeviceIdentity, challenge: Challenge, verdict: str, counter: int, roster_version: int,
    signed_ms: int, scope: Scope | None = None, keys: Sequence[WrappedKey] = (),
) -> bytes:
    """Owner side. `scope` defaults to the requested scope; it may only narrow it."""
    if verdict == "approve":
        scope = scope or challenge.request.scope
        why = scope.escalation(challenge.request.scope)
        if why is not None:
            raise AccessError(why)
    body = {
        "type": "decision", "v": PROTOCOL_VERSION, "hub": challenge.request.body["hub"],
        "challenge_id": challenge.challenge_id, "request_id": challenge.request.request_id,
        "request_hash": challenge.request.hash, "requester": challenge.request.requester.key_id,
        "verdict": choice_field(verdict, ("approve", "deny"), "verdict"),
        "scope": scope.to_json() if (verdict == "approve" and scope is not None) else None,
        "keys": [k.to_json() for k in sorted(keys, key=lambda k: k.clip)] if verdict == "approve" else [],
        "counter": counter, "roster_version": roster_version, "signed_ms": signed_ms,
    }
    return sign_message("decision", body, owner.signing_key, owner.key_id)


def make_mode_set(owner: DeviceIdentity, hub_id: str, mode: str, counter: int, roster_version: int,
                  signed_ms: int) -> bytes:
    body = {"type": "mode_set", "v": PROTOCOL_VERSION, "hub": hub_id, "mode": choice_field(mode, MODES, "mode"),
            "counter": counter, "roster_version": roster_version, "signed_ms": signed_ms}
    return sign_message("mode_set", body, owner.signing_key, owner.key_id)


@dataclass(frozen=True, slots=True)
class Grant:
    challenge_id: str
    request_id: str
    request_hash: str
    requester: str
    scope: Scope
    keys: tuple[WrappedKey, ...]
    approvers: tuple[str, ...]
    issued_ms: int
    expires_ms: int


def parse_grant(data: bytes, hub: HubPublic) -> Grant:
    """Requester side: a hub-signed grant. A `denial` raises AccessError saying so."""
    try:
        doc = loads_bounded(data, max_bytes=MAX_MESSAGE_BYTES, max_depth=MAX_JSON_DEPTH, what="grant")
        body = doc.get("body", {}) if isinstance(doc, dict) else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise AccessError(f"grant: not acceptable JSON ({e})") from None
    if isinstance(body, dict) and body.get("type") == "denial":
        parse_hub_message(data, "denial", hub)
        raise AccessError(f"request {body.get('request_id')} was denied")
    m = parse_hub_message(data, "grant", hub)
    b = exact_keys(dict(m.body), ("type", "v", "hub", "challenge_id", "request_id", "request_hash", "requester",
                                   "scope", "keys", "approvers", "issued_ms", "expires_ms"), "grant")
    if not isinstance(b["approvers"], list) or not all(isinstance(a, str) and KEY_ID_RE.match(a)
                                                        for a in b["approvers"]):
        raise AccessError("grant: approvers must be device key ids")
    return Grant(hex_field(b["challenge_id"], 64, "grant: challenge_id"), hex_field(b["request_id"], 32, "grant: request_id"),
                 hex_field(b["request_hash"], 64, "grant: request_hash"), hex_field(b["requester"], 16, "grant: requester"),
                 Scope.from_json(b["scope"], "grant: scope"), parse_keys(b["keys"], "grant: keys"),
                 tuple(b["approvers"]), int_field(b["issued_ms"], "grant: issued_ms"),
                 int_field(b["expires_ms"], "grant: expires_ms"))


@dataclass(frozen=True, slots=True)
class ModeState:
    """The household mode as the hub applies it (hub-signed, retained on `P/mode/state`)."""

    mode: str
    switch: bool
    roster_version: int
    seq: int
    issued_ms: int


def parse_mode_state(data: bytes, hub: HubPublic) -> ModeState:
    m = parse_hub_message(data, "mode_state", hub)
    b = exact_keys(dict(m.body), ("type", "v", "hub", "mode", "switch", "roster_version", "seq", "issued_ms"),
                   "mode_state")
    if not isinstance(b["switch"], bool):
        raise AccessError("mode_state: switch must be true or false")
    return ModeState(choice_field(b["mode"], MODES, "mode_state: mode"), b["switch"],
                     int_field(b["roster_version"], "mode_state: roster_version", 1),
                     int_field(b["seq"], "mode_state: seq"), int_field(b["issued_ms"], "mode_state: issued_ms"))


@dataclass(frozen=True, slots=True)
class ModeResult:
    """The hub's signed answer to one device's mode change (`P/mode/result/<device>`)."""

    device: str
    counter: int
    mode: str
    status: str  # applied | refused
    reason: str
    roster_version: int
    issued_ms: int


def parse_mode_result(data: bytes, hub: HubPublic) -> ModeResult:
    m = parse_hub_message(data, "mode_result", hub)
    b = exact_keys(dict(m.body), ("type", "v", "hub", "device", "counter", "mode", "status", "reason",
                                   "roster_version", "issued_ms"), "mode_result")
    return ModeResult(hex_field(b["device"], 16, "mode_result: device"), int_field(b["counter"], "mode_result: counter"),
                      choice_field(b["mode"], MODES, "mode_result: mode"),
                      choice_field(b["status"], ("applied", "refused"), "mode_result: status"),
                      text_field(b["reason"], "mode_result: reason"),
                      int_field(b["roster_version"], "mode_result: roster_version", 1),
                      int_field(b["issued_ms"], "mode_result: issued_ms"))


@dataclass(frozen=True, slots=True)
class CameraState:
    camera: str
    state: str
    seq: int
    issued_ms: int


def parse_camera_state(data: bytes, hub: HubPublic) -> CameraState:
    m = parse_hub_message(data, "camera_state", hub)
    b = exact_keys(dict(m.body), ("type", "v", "hub", "camera", "state", "seq", "issued_ms"), "camera_state")
    if not isinstance(b["camera"], str):
        raise AccessError("camera_state: camera must be text")
    return CameraState(b["camera"], choice_field(b["state"], ("clear", "masked", "withheld"), "camera_state: state"),
                       int_field(b["seq"], "camera_state: seq"), int_field(b["issued_ms"], "camera_state: issued_ms"))
