"""The requester's and the owner device's side of the access flow: build requests and
decisions, check what the hub signed.

An owner device checks the requester's signature before showing or approving anything, never
signs a scope wider than the request, and re-wraps clip keys only to the requester key named in
the signed request. Pure: keys, time and counters are passed in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from agent.access.wire import (
    KEY_ID_RE,
    MODES,
    PROTOCOL_VERSION,
    REQUESTER_ROLES,
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
    sign_message,
    text_field,
    verify_signed,
)
from agent.crypto.keys import DeviceIdentity, HubPublic, canonical_json
from agent.errors import AccessError


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
                                   "ttl_s", "approvals_needed", "roster_version", "issued_ms"), "challenge")
    req = parse_request(canonical_json(b["request"]), hub.key_id)
    if req.hash != b["request_hash"] or req.request_id != b["request_id"]:
        raise AccessError("challenge: request hash does not match the request it carries")
    return Challenge(hex_field(b["challenge_id"], 64, "challenge: challenge_id"), req, int_field(b["ttl_s"], "ttl_s"),
                     int_field(b["approvals_needed"], "approvals_needed", 1, 16),
                     int_field(b["roster_version"], "roster_version", 1), int_field(b["issued_ms"], "issued_ms"))


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
        body = json.loads(data).get("body", {})
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise AccessError("grant: not JSON") from None
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
