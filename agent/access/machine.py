"""The hub's side of the access flow as a pure state machine: request -> challenge -> decision(s) -> grant.

Hub checks on a decision, all of them before anything is granted or recorded as approved:
signer is an owner in the current roster (not revoked); the signature verifies under the
`decision` domain; the decision names this hub, this challenge, this request hash and this
requester; the challenge is open and unexpired on the MONOTONIC clock (time is the high-water
mark of every `now` seen, and an expired challenge is closed for good); the roster version is
the current one; the device counter is strictly greater than any seen from that device; the
scope only narrows and every approved clip carries exactly one wrapped key for the requester;
the policy's number of distinct owner devices is reached. A replayed or redelivered (QoS 1)
decision therefore yields exactly one grant.

Invariants: pure functions over frozen dataclasses; randomness (challenge ids) and time are
passed in; nothing here touches the network or the filesystem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from agent.access.wire import (
    CLOSED_MEMORY,
    MODES,
    PROTOCOL_VERSION,
    Decision,
    Request,
    Scope,
    WrappedKey,
    choice_field,
    exact_keys,
    int_field,
    message_digest,
    parse_decision,
    parse_message,
    parse_request,
    sign_message,
    verify_signed,
)
from agent.crypto.keys import HubIdentity, Roster
from agent.errors import AccessError


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    challenge_ttl_s: float = 600.0
    grant_ttl_s: int = 86_400
    two_owner_roles: frozenset[str] = frozenset({"vendor", "police"})
    max_pending: int = 32

    def approvals_needed(self, role: str) -> int:
        return 2 if role in self.two_owner_roles else 1

    @staticmethod
    def from_config(cfg: Any) -> AccessPolicy:
        """From `agent.config.mqtt.AccessPolicyConfig`."""
        return AccessPolicy(float(cfg.challenge_ttl_s), int(cfg.grant_ttl_s), frozenset(cfg.two_owner_roles),
                            int(cfg.max_pending))


@dataclass(frozen=True, slots=True)
class Approval:
    device: str
    scope: Scope
    keys: tuple[WrappedKey, ...]


@dataclass(frozen=True, slots=True)
class Pending:
    challenge_id: str
    request: Request
    expires_mono_s: float
    needed: int
    roster_version: int
    challenge_raw: bytes = field(repr=False)
    approvals: tuple[Approval, ...] = ()


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


def _bounded(d: dict[str, Any]) -> dict[str, Any]:
    while len(d) > CLOSED_MEMORY:
        del d[next(iter(d))]
    return d


@dataclass(frozen=True, slots=True)
class HubState:
    hub_id: str
    roster: Roster
    pending: Mapping[str, Pending] = field(default_factory=lambda: MappingProxyType({}))
    closed: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # challenge id -> outcome
    by_request: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # request hash -> challenge id
    counters: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # device -> last counter
    seen: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # message digest -> result
    high_mono_s: float = float("-inf")

    def tick(self, now_mono_s: float) -> tuple[HubState, float]:
        """Time never goes back for the state machine: use the high-water mark."""
        now = max(now_mono_s, self.high_mono_s)
        return (self if now == self.high_mono_s else replace(self, high_mono_s=now)), now


@dataclass(frozen=True, slots=True)
class Outbound:
    """Something the hub publishes. `channel` is mapped to a topic by agent.mqtt.hub."""

    channel: str  # challenge | challenge_clear | grant | status | mode_state
    key: str  # challenge id (challenge*) or request id (grant, status); "" for mode_state
    payload: bytes = field(repr=False)
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    status: str  # challenged | approved | granted | denied | expired | refused | duplicate | mode_set
    reason: str = ""
    outbound: tuple[Outbound, ...] = ()
    audit: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    mode: str | None = None
    challenge_id: str | None = None
    authenticated: bool = True


def _hub_msg(hub: HubIdentity, msg_type: str, body: dict[str, Any]) -> bytes:
    return sign_message(msg_type, {"type": msg_type, "v": PROTOCOL_VERSION, "hub": hub.key_id, **body},
                        hub.signing_key, hub.key_id)


def _status(hub: HubIdentity, request_id: str, challenge_id: str | None, status: str, reason: str,
            now_wall_ms: int) -> Outbound:
    body = {"request_id": request_id, "challenge_id": challenge_id, "status": status, "reason": reason,
            "issued_ms": now_wall_ms}
    return Outbound("status", request_id, _hub_msg(hub, "status", body))


def with_roster(state: HubState, roster: Roster) -> HubState:
    """Install a newer roster (the caller checked it with keys.check_roster_update)."""
    if roster.version < state.roster.version:
        raise AccessError(f"roster version {roster.version} is older than {state.roster.version}")
    return replace(state, roster=roster)


def on_request(
    state: HubState,
    data: bytes,
    *,
    hub: HubIdentity,
    policy: AccessPolicy,
    now_mono_s: float,
    now_wall_ms: int,
    challenge_id: bytes,
    known_cameras: frozenset[str] | None = None,
) -> tuple[HubState, Result]:
    """A request arrived: verify it and open a challenge for the owner devices."""
    state, now = state.tick(now_mono_s)
    state, expired = expire(state, now_mono_s=now, hub=hub, now_wall_ms=now_wall_ms)
    try:
        req = parse_request(data, hub.key_id)
    except AccessError as e:
        return state, Result("refused", str(e), authenticated=False)
    if req.hash in state.by_request:
        # The same signed request again (QoS 1 redelivery or replay): no second challenge.
        return state, Result("duplicate", "request already challenged", challenge_id=state.by_request[req.hash])
    audit_req = ("access_request", {
        "request_id": req.request_id, "request_hash": req.hash, "requester": req.requester.key_id,
        "requester_name": req.requester.name, "role": req.role, "scope": req.scope.to_json(),
        "purpose": req.purpose, "legal_ref": req.legal_ref,
    })
    if known_cameras is not None:
        unknown = sorted(set(req.scope.cameras) - known_cameras)
        if unknown:
            reason = f"request names cameras this hub does not have: {unknown}"
            return state, Result("refused", reason, (_status(hub, req.request_id, None, "refused", reason, now_wall_ms),),
                                 (audit_req, ("access_refused", {"request_id": req.request_id, "reason": reason})))
    if len(state.pending) >= policy.max_pending:
        reason = f"too many open challenges ({policy.max_pending}); try again later"
        return state, Result("refused", reason, (_status(hub, req.request_id, None, "refused", reason, now_wall_ms),),
                             (audit_req, ("access_refused", {"request_id": req.request_id, "reason": reason})))
    if len(challenge_id) != 32:
        raise AccessError("challenge id must be 32 random bytes")
    cid = challenge_id.hex()
    if cid in state.pending or cid in state.closed:
        raise AccessError("challenge id collision (the random source is broken)")
    needed = policy.approvals_needed(req.role)
    ttl = int(policy.challenge_ttl_s)
    raw = _hub_msg(hub, "challenge", {
        "challenge_id": cid, "request_id": req.request_id, "request_hash": req.hash,
        "request": json.loads(req.raw), "ttl_s": ttl, "approvals_needed": needed,
        "roster_version": state.roster.version, "issued_ms": now_wall_ms,
    })
    p = Pending(cid, req, now + policy.challenge_ttl_s, needed, state.roster.version, raw)
    state = replace(
        state,
        pending=_frozen({**state.pending, cid: p}),
        by_request=_frozen(_bounded({**state.by_request, req.hash: cid})),
    )
    out = (
        Outbound("challenge", cid, raw, retain=True),
        _status(hub, req.request_id, cid, "challenged", f"waiting for {needed} owner approval(s)", now_wall_ms),
    )
    aud = (audit_req, ("access_challenge", {"request_id": req.request_id, "challenge_id": cid,
                                             "ttl_s": ttl, "approvals_needed": needed,
                                             "roster_version": state.roster.version}))
    return state, Result("challenged", "", expired.outbound + out, expired.audit + aud, challenge_id=cid)


def _close(state: HubState, cid: str, outcome: str) -> HubState:
    pending = dict(state.pending)
    pending.pop(cid, None)
    return replace(state, pending=_frozen(pending), closed=_frozen(_bounded({**state.closed, cid: outcome})))


def expire(state: HubState, *, now_mono_s: float, hub: HubIdentity, now_wall_ms: int) -> tuple[HubState, Result]:
    """Close every challenge whose TTL ran out on the monotonic clock."""
    state, now = state.tick(now_mono_s)
    out: list[Outbound] = []
    aud: list[tuple[str, Mapping[str, Any]]] = []
    for cid, p in list(state.pending.items()):
        if now >= p.expires_mono_s:
            state = _close(state, cid, "expired")
            out.append(Outbound("challenge_clear", cid, b"", retain=True))
            out.append(_status(hub, p.request.request_id, cid, "expired", "no decision before the challenge expired",
                               now_wall_ms))
            aud.append(("access_expiry", {"request_id": p.request.request_id, "challenge_id": cid,
                                          "approvals": [a.device for a in p.approvals]}))
    return state, Result("expired" if out else "noop", "", tuple(out), tuple(aud))


def _refuse(state: HubState, d: Decision | None, reason: str, hub: HubIdentity, now_wall_ms: int,
            request_id: str | None = None) -> tuple[HubState, Result]:
    fields: dict[str, Any] = {"reason": reason}
    out: tuple[Outbound, ...] = ()
    if d is not None:
        fields.update({"device": d.signer, "challenge_id": d.challenge_id, "request_id": d.request_id})
        rid = request_id or d.request_id
        out = (_status(hub, rid, d.challenge_id, "refused", reason, now_wall_ms),)
        state = replace(state, seen=_frozen(_bounded({**state.seen, d.digest: "refused"})))
    return state, Result("refused", reason, out, (("access_refused", fields),) if d is not None else (),
                         challenge_id=d.challenge_id if d else None, authenticated=d is not None)


def on_decision(
    state: HubState,
    data: bytes,
    *,
    hub: HubIdentity,
    policy: AccessPolicy,
    now_mono_s: float,
    now_wall_ms: int,
) -> tuple[HubState, Result]:
    """An owner decision arrived: run every hub check, then grant, deny or wait for more."""
    state, now = state.tick(now_mono_s)
    state, expired = expire(state, now_mono_s=now, hub=hub, now_wall_ms=now_wall_ms)
    try:
        d = parse_decision(data, hub.key_id, state.roster)
    except AccessError as e:
        # Unauthenticated (forged, revoked, malformed, wrong type): refused without any output
        # an outsider could use to make the hub publish or write on its behalf.
        return state, Result("refused", str(e), expired.outbound, expired.audit, authenticated=False)
    if d.digest in state.seen:
        # The exact same message again: QoS 1 redelivery or a replay. Idempotent.
        return state, Result("duplicate", "decision already processed", expired.outbound, expired.audit,
                             challenge_id=d.challenge_id)

    def refuse(reason: str) -> tuple[HubState, Result]:
        s, r = _refuse(state, d, reason, hub, now_wall_ms)
        return s, replace(r, outbound=expired.outbound + r.outbound, audit=expired.audit + r.audit)

    closed = state.closed.get(d.challenge_id)
    if closed is not None:
        return refuse(f"challenge {d.challenge_id[:16]}… is closed ({closed}); it cannot be used again")
    p = state.pending.get(d.challenge_id)
    if p is None:
        return refuse("unknown challenge (never issued by this hub, or issued before a restart)")
    if d.request_hash != p.request.hash or d.request_id != p.request.request_id:
        return refuse("decision is bound to another request")
    if d.requester != p.request.requester.key_id:
        return refuse("decision is bound to another requester")
    if d.roster_version != state.roster.version:
        return refuse(f"decision was made against roster version {d.roster_version}; "
                      f"the hub has version {state.roster.version}")
    last = state.counters.get(d.signer, 0)
    if d.counter <= last:
        return refuse(f"counter {d.counter} is not greater than {last} (replayed or stale decision)")
    # From here the decision is authentic and fresh: consume the counter whatever happens next.
    state = replace(state, counters=_frozen({**state.counters, d.signer: d.counter}),
                    seen=_frozen(_bounded({**state.seen, d.digest: "processed"})))
    rid, cid = p.request.request_id, p.challenge_id

    if d.verdict == "deny":
        state = _close(state, cid, "denied")
        denial = _hub_msg(hub, "denial", {"challenge_id": cid, "request_id": rid, "request_hash": p.request.hash,
                                          "requester": p.request.requester.key_id, "by": d.signer,
                                          "issued_ms": now_wall_ms})
        return state, Result(
            "denied", f"denied by {d.signer}",
            expired.outbound + (Outbound("challenge_clear", cid, b"", retain=True), Outbound("grant", rid, denial)),
            expired.audit + (("access_denial", {"request_id": rid, "challenge_id": cid, "device": d.signer}),),
            challenge_id=cid,
        )

    assert d.scope is not None
    why = d.scope.escalation(p.request.scope)
    if why is not None:
        return refuse(why)
    if d.scope.empty:
        return refuse("an approval must keep at least one camera or clip; send a denial instead")
    key_clips = [k.clip for k in d.keys]
    if set(key_clips) != set(d.scope.clips):
        missing = sorted(set(d.scope.clips) - set(key_clips))
        extra = sorted(set(key_clips) - set(d.scope.clips))
        return refuse(f"wrapped keys must match the approved clips exactly (missing {missing}, extra {extra})")
    if any(a.device == d.signer for a in p.approvals):
        return refuse(f"device {d.signer} already approved this challenge; another owner device must approve")
    approvals = p.approvals + (Approval(d.signer, d.scope, d.keys),)
    aud_appr = ("access_approval", {"request_id": rid, "challenge_id": cid, "device": d.signer,
                                    "scope": d.scope.to_json(), "approvals": len(approvals), "needed": p.needed})
    if len(approvals) < p.needed:
        state = replace(state, pending=_frozen({**state.pending, cid: replace(p, approvals=approvals)}))
        reason = f"{len(approvals)} of {p.needed} owner approvals"
        return state, Result("approved", reason,
                             expired.outbound + (_status(hub, rid, cid, "approved", reason, now_wall_ms),),
                             expired.audit + (aud_appr,), challenge_id=cid)

    scope = approvals[0].scope
    for a in approvals[1:]:
        scope = scope.intersect(a.scope)
    state = _close(state, cid, "granted" if not scope.empty else "denied")
    clear = Outbound("challenge_clear", cid, b"", retain=True)
    if scope.empty:
        reason = "the owner approvals have nothing in common"
        denial = _hub_msg(hub, "denial", {"challenge_id": cid, "request_id": rid, "request_hash": p.request.hash,
                                          "requester": p.request.requester.key_id, "by": None,
                                          "issued_ms": now_wall_ms})
        return state, Result("denied", reason, expired.outbound + (clear, Outbound("grant", rid, denial)),
                             expired.audit + (aud_appr, ("access_denial", {"request_id": rid, "challenge_id": cid,
                                                                           "reason": reason})),
                             challenge_id=cid)
    keys: dict[str, WrappedKey] = {}
    for a in approvals:
        for k in a.keys:
            if k.clip in scope.clips:
                keys.setdefault(k.clip, k)
    grant_body = {
        "challenge_id": cid, "request_id": rid, "request_hash": p.request.hash,
        "requester": p.request.requester.key_id, "scope": scope.to_json(),
        "keys": [keys[c].to_json() for c in sorted(keys)],
        "approvers": sorted(a.device for a in approvals),
        "issued_ms": now_wall_ms, "expires_ms": now_wall_ms + policy.grant_ttl_s * 1000,
    }
    grant = _hub_msg(hub, "grant", grant_body)
    aud_grant = ("access_grant", {"request_id": rid, "challenge_id": cid, "requester": p.request.requester.key_id,
                                  "scope": scope.to_json(), "approvers": grant_body["approvers"],
                                  "clips": sorted(keys), "grant_hash": message_digest(grant)})
    return state, Result("granted", "", expired.outbound + (clear, Outbound("grant", rid, grant)),
                         expired.audit + (aud_appr, aud_grant), challenge_id=cid)


_MODE_KEYS = ("type", "v", "hub", "mode", "counter", "roster_version", "signed_ms")


def on_mode_set(
    state: HubState, data: bytes, *, hub: HubIdentity, now_mono_s: float, now_wall_ms: int
) -> tuple[HubState, Result]:
    """A signed mode change: only an owner device of the current roster may change the mode."""
    state, _ = state.tick(now_mono_s)
    try:
        m = parse_message(data, "mode_set")
        if state.roster.is_revoked(m.signer):
            raise AccessError(f"mode_set: device {m.signer} is revoked")
        entry = state.roster.find(m.signer)
        if entry is None or entry.role != "owner":
            raise AccessError(f"mode_set: device {m.signer!r} is not an owner in the roster")
        verify_signed(m, "mode_set", entry.device.sign_pk, "mode_set")
        b = exact_keys(dict(m.body), _MODE_KEYS, "mode_set")
        if b["hub"] != hub.key_id:
            raise AccessError(f"mode_set is for hub {b['hub']!r}, not this hub")
        mode = choice_field(b["mode"], MODES, "mode_set: mode")
        counter = int_field(b["counter"], "mode_set: counter", 1)
        rv = int_field(b["roster_version"], "mode_set: roster_version", 1)
        int_field(b["signed_ms"], "mode_set: signed_ms")
    except AccessError as e:
        return state, Result("refused", str(e), authenticated=False)
    digest = message_digest(m.raw)
    if digest in state.seen:
        return state, Result("duplicate", "mode change already processed")
    if rv != state.roster.version:
        return state, Result("refused", f"mode_set made against roster version {rv}, hub has {state.roster.version}",
                             audit=(("access_refused", {"device": m.signer, "reason": "stale roster (mode_set)"}),))
    last = state.counters.get(m.signer, 0)
    if counter <= last:
        return state, Result("refused", f"counter {counter} is not greater than {last} (replayed mode change)",
                             audit=(("access_refused", {"device": m.signer, "reason": "replayed mode_set"}),))
    state = replace(state, counters=_frozen({**state.counters, m.signer: counter}),
                    seen=_frozen(_bounded({**state.seen, digest: "processed"})))
    return state, Result("mode_set", "", (Outbound("mode_state", "", mode.encode(), retain=True),),
                         (("mode_change", {"mode": mode, "by": m.signer, "via": "mqtt"}),), mode=mode)


def new_state(hub_id: str, roster: Roster, counters: Mapping[str, int] | None = None) -> HubState:
    return HubState(hub_id, roster, counters=_frozen(dict(counters or {})))
