"""The hub's side of the access flow as a pure state machine: request -> challenge -> decision(s) -> grant.

Consent cannot be bypassed around the hub (docs/access-protocol.md, "Threat model"):
- Key release: an approval's clip keys are sealed to the hub's box key (around the stanza sealed
  to the requester), so a decision read off the broker is useless. The hub opens the outer seal
  and republishes the requester-sealed keys only in a grant, after every check and after the
  grant is in the audit log.
- Scope binding: every clip id in a request must be in the hub's own clip index, from a requested
  camera and inside the requested window; an approval's clips must be inside the approval's
  narrowed scope; the grant keeps only clips inside the intersected scope.
- Roles come from the owners: an enrolled requester's role is the roster's; a requester the
  owners never enrolled is refused or needs the strictest rule, and challenges say "unverified".
- Approvals are re-checked against the roster current at grant time (revoked or demoted owners
  no longer count).
- Flooding: open challenges are limited per requester key, per role and (tighter) for unverified
  requesters together; refusals of that kind are counted and audited as one summary per period.

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
    ClipMeta,
    Decision,
    Request,
    Scope,
    Signed,
    WrappedKey,
    choice_field,
    exact_keys,
    int_field,
    message_digest,
    open_release,
    parse_decision,
    parse_message,
    parse_request,
    sign_message,
    verify_signed,
)
from agent.crypto.keys import HubIdentity, Roster, RosterEntry, b64url_encode
from agent.errors import AccessError

#: Approvals an unverified requester needs whatever role it claims: the strictest rule there is.
STRICTEST_APPROVALS = 2

#: Refusals counted instead of audited one by one (flooding): what they are called in the summary.
TALLIED = ("unverified_refused", "unverified_limit", "requester_limit", "role_limit", "hub_limit",
           "unverified_bad_request", "unauthenticated_delete", "member_mode_set", "member_relearn")


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    challenge_ttl_s: float = 600.0
    grant_ttl_s: int = 86_400
    two_owner_roles: frozenset[str] = frozenset({"vendor", "police"})
    max_pending: int = 32
    unknown_requesters: str = "strict"  # strict | refuse
    max_pending_per_requester: int = 4
    max_pending_per_role: int = 16
    max_pending_unverified: int = 4
    #: Seconds between the audit summaries of tallied refusals.
    tally_period_s: float = 60.0

    def approvals_needed(self, role: str, enrolled: bool = True) -> int:
        if not enrolled:
            return STRICTEST_APPROVALS
        return 2 if role in self.two_owner_roles else 1

    @property
    def unverified_cap(self) -> int:
        # Always below the hub-wide limit, so unverified keys can never fill every slot.
        return max(0, min(self.max_pending_unverified, self.max_pending - 1))

    @staticmethod
    def from_config(cfg: Any) -> AccessPolicy:
        """From `agent.config.mqtt.AccessPolicyConfig`."""
        return AccessPolicy(float(cfg.challenge_ttl_s), int(cfg.grant_ttl_s), frozenset(cfg.two_owner_roles),
                            int(cfg.max_pending), str(cfg.unknown_requesters), int(cfg.max_pending_per_requester),
                            int(cfg.max_pending_per_role), int(cfg.max_pending_unverified))


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
    #: The hub index's word on every requested clip (camera and time), by clip id.
    clips: Mapping[str, ClipMeta] = field(default_factory=lambda: MappingProxyType({}))
    #: Enrolled by the owners (role from the roster) or unverified (role only claimed).
    enrolled: bool = True
    role: str = ""


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
    #: Refusals counted, not yet audited (TALLIED name -> count), and since when.
    tally: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    tally_since_mono_s: float | None = None
    #: Every counter below this is refused (set when the counter state had to be reset).
    counter_floor: int = 0

    def tick(self, now_mono_s: float) -> tuple[HubState, float]:
        """Time never goes back for the state machine: use the high-water mark."""
        now = max(now_mono_s, self.high_mono_s)
        return (self if now == self.high_mono_s else replace(self, high_mono_s=now)), now


@dataclass(frozen=True, slots=True)
class Outbound:
    """Something the hub publishes. `channel` is mapped to a topic by agent.mqtt.hub."""

    channel: str  # challenge | challenge_clear | grant | status | mode_result
    key: str  # challenge id (challenge*), request id (grant, status) or device key id (mode_result)
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


def _last_counter(state: HubState, signer: str) -> int:
    """The counter an owner device's next message must exceed (never below the hub's floor)."""
    return max(state.counters.get(signer, 0), state.counter_floor)


def _consume(state: HubState, signer: str, counter: int, digest: str) -> HubState:
    """`signer`'s counter moves to `counter` and the message is remembered as processed: it can
    never be replayed, whatever the hub answers next."""
    return replace(state, counters=_frozen({**state.counters, signer: counter}),
                   seen=_frozen(_bounded({**state.seen, digest: "processed"})))


def _tallied(state: HubState, what: str, now: float) -> HubState:
    """Count a refusal instead of auditing it (flooding): the summary goes out once per period."""
    tally = dict(state.tally)
    tally[what] = tally.get(what, 0) + 1
    since = state.tally_since_mono_s if state.tally_since_mono_s is not None else now
    return replace(state, tally=_frozen(tally), tally_since_mono_s=since)


def flush_tally(state: HubState, *, now_mono_s: float, policy: AccessPolicy, force: bool = False
                ) -> tuple[HubState, tuple[tuple[str, Mapping[str, Any]], ...]]:
    """The audit summary of tallied refusals, once `tally_period_s` has passed (or `force`)."""
    if not state.tally or state.tally_since_mono_s is None:
        return state, ()
    period = max(0.0, now_mono_s - state.tally_since_mono_s)
    if not force and period < policy.tally_period_s:
        return state, ()
    entry = ("access_refused", {"aggregated": True, "count": sum(state.tally.values()),
                                "reasons": dict(sorted(state.tally.items())), "period_s": int(period)})
    return replace(state, tally=_frozen({}), tally_since_mono_s=None), (entry,)


def _request_policy(state: HubState, req: Request, policy: AccessPolicy) -> tuple[bool, str, str | None, str | None]:
    """(enrolled, effective role, refusal reason, tally name) for a parsed request."""
    entry = state.roster.find_requester(req.requester.key_id)
    if entry is None:
        if state.roster.is_revoked(req.requester.key_id):
            return False, req.role, f"requester {req.requester.key_id} is revoked by the owners", None
        if state.roster.find(req.requester.key_id) is not None:
            return False, req.role, "a household device cannot be a requester; enroll a requester key", None
        if policy.unknown_requesters == "refuse":
            return False, req.role, (f"requester {req.requester.key_id} is not enrolled by the owners "
                                     "(this hub refuses unenrolled requesters)"), "unverified_refused"
        return False, req.role, None, None
    if req.role != entry.role:
        # The owners said who this key is; a request cannot promote itself to a laxer rule.
        return True, entry.role, (f"requester {req.requester.key_id} is enrolled as {entry.role!r}; "
                                  f"a request may not claim {req.role!r}"), None
    return True, entry.role, None, None


def _limit(state: HubState, req: Request, enrolled: bool, role: str, policy: AccessPolicy) -> tuple[str, str] | None:
    open_ = list(state.pending.values())
    if not enrolled:
        unverified = [p for p in open_ if not p.enrolled]
        if any(p.request.requester.key_id == req.requester.key_id for p in unverified):
            return "unverified_limit", "an unverified requester may have one open challenge at a time"
        if len(unverified) >= policy.unverified_cap:
            return "unverified_limit", (f"too many open challenges from unverified requesters "
                                        f"({policy.unverified_cap}); try again later")
    else:
        mine = sum(1 for p in open_ if p.request.requester.key_id == req.requester.key_id)
        if mine >= policy.max_pending_per_requester:
            return "requester_limit", f"this requester already has {mine} open challenges"
        same_role = sum(1 for p in open_ if p.enrolled and p.role == role)
        if same_role >= policy.max_pending_per_role:
            return "role_limit", f"too many open challenges for role {role!r} ({same_role}); try again later"
    if len(open_) >= policy.max_pending:
        return "hub_limit", f"too many open challenges ({policy.max_pending}); try again later"
    return None


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
    clip_index: Mapping[str, ClipMeta] | None = None,
) -> tuple[HubState, Result]:
    """A request arrived: verify it and open a challenge for the owner devices.

    `clip_index` is the hub's own index entry for each requested clip id (missing = the hub never
    made that clip): the request is refused unless every clip is there, from a requested camera and
    inside the requested window."""
    state, now = state.tick(now_mono_s)
    state, expired = expire(state, now_mono_s=now, hub=hub, now_wall_ms=now_wall_ms, policy=policy)
    try:
        req = parse_request(data, hub.key_id)
    except AccessError as e:
        return state, Result("refused", str(e), expired.outbound, expired.audit, authenticated=False)
    if req.hash in state.by_request:
        # The same signed request again (QoS 1 redelivery or replay): no second challenge.
        return state, Result("duplicate", "request already challenged", expired.outbound, expired.audit,
                             challenge_id=state.by_request[req.hash])
    enrolled, role, why, tally_as = _request_policy(state, req, policy)
    audit_req = ("access_request", {
        "request_id": req.request_id, "request_hash": req.hash, "requester": req.requester.key_id,
        "requester_name": req.requester.name, "role": role, "claimed_role": req.role,
        "requester_status": "enrolled" if enrolled else "unverified", "scope": req.scope.to_json(),
        "purpose": req.purpose, "legal_ref": req.legal_ref,
    })

    def refuse(reason: str, tally: str | None) -> tuple[HubState, Result]:
        status = (_status(hub, req.request_id, None, "refused", reason, now_wall_ms),)
        if tally is not None:
            # Counted, not audited one by one: a flood of throw-away keys cannot grow the log. An
            # enrolled requester still hears why; an unverified key gets nothing (no amplification).
            return _tallied(state, tally, now), Result("refused", reason,
                                                       expired.outbound + (status if enrolled else ()),
                                                       expired.audit)
        return state, Result("refused", reason, expired.outbound + status,
                             expired.audit + (audit_req, ("access_refused", {"request_id": req.request_id,
                                                                             "reason": reason})))

    if why is not None:
        return refuse(why, tally_as)
    limited = _limit(state, req, enrolled, role, policy)
    if limited is not None:
        return refuse(limited[1], limited[0])
    bad = _scope_problem(req, known_cameras, clip_index)
    if bad is not None:
        return refuse(bad, None if enrolled else "unverified_bad_request")
    if hub.box_secret is None:
        # Without its box key the hub could not release keys: refuse rather than open a challenge
        # that can only end in a key crossing the broker unprotected.
        return refuse("this hub has no box key to release keys with (run `privacy-agent keys init`)", None)
    if len(challenge_id) != 32:
        raise AccessError("challenge id must be 32 random bytes")
    cid = challenge_id.hex()
    if cid in state.pending or cid in state.closed:
        raise AccessError("challenge id collision (the random source is broken)")
    needed = policy.approvals_needed(role, enrolled)
    ttl = int(policy.challenge_ttl_s)
    metas = {c: clip_index[c] for c in req.scope.clips} if clip_index is not None else {}
    raw = _hub_msg(hub, "challenge", {
        "challenge_id": cid, "request_id": req.request_id, "request_hash": req.hash,
        "request": dict(json_body(req.raw)), "ttl_s": ttl, "approvals_needed": needed,
        "roster_version": state.roster.version, "issued_ms": now_wall_ms,
        "hub_box": b64url_encode(bytes(hub.box_public)),
        "requester_status": "enrolled" if enrolled else "unverified", "role": role,
        "clips": [metas[c].to_json() for c in req.scope.clips],
    })
    p = Pending(cid, req, now + policy.challenge_ttl_s, needed, state.roster.version, raw,
                clips=_frozen(metas), enrolled=enrolled, role=role)
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


def json_body(raw: bytes) -> Mapping[str, Any]:
    return json.loads(raw)  # raw was already parsed within bounds by parse_request


def _scope_problem(req: Request, known_cameras: frozenset[str] | None,
                   clip_index: Mapping[str, ClipMeta] | None) -> str | None:
    if known_cameras is not None:
        unknown = sorted(set(req.scope.cameras) - known_cameras)
        if unknown:
            return f"request names cameras this hub does not have: {unknown}"
    for c in req.scope.clips:
        meta = (clip_index or {}).get(c)
        if meta is None:
            return f"clip {c} is not in this hub's clip index (never made here, or its times are unknown)"
        why = meta.outside(req.scope)
        if why is not None:
            return f"request scope does not cover its own clips: {why}"
    return None


def _close(state: HubState, cid: str, outcome: str) -> HubState:
    pending = dict(state.pending)
    pending.pop(cid, None)
    return replace(state, pending=_frozen(pending), closed=_frozen(_bounded({**state.closed, cid: outcome})))


def expire(state: HubState, *, now_mono_s: float, hub: HubIdentity, now_wall_ms: int,
           policy: AccessPolicy | None = None) -> tuple[HubState, Result]:
    """Close every challenge whose TTL ran out on the monotonic clock; audit the refusal tally
    once its period is over."""
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
    if policy is not None:
        state, summary = flush_tally(state, now_mono_s=now, policy=policy)
        aud.extend(summary)
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


def _still_owner(roster: Roster, device: str) -> bool:
    e = roster.find(device)
    return e is not None and e.role == "owner" and not roster.is_revoked(device)


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
    state, expired = expire(state, now_mono_s=now, hub=hub, now_wall_ms=now_wall_ms, policy=policy)
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
    last = _last_counter(state, d.signer)
    if d.counter <= last:
        return refuse(f"counter {d.counter} is not greater than {last} (replayed or stale decision)")
    # From here the decision is authentic and fresh: consume the counter whatever happens next.
    state = _consume(state, d.signer, d.counter, d.digest)
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
    for c in d.scope.clips:
        why = p.clips[c].outside(d.scope) if c in p.clips else f"clip {c} is not in the challenge"
        if why is not None:
            return refuse(f"approval keeps a clip outside its own scope: {why}")
    key_clips = [k.clip for k in d.keys]
    if set(key_clips) != set(d.scope.clips):
        missing = sorted(set(d.scope.clips) - set(key_clips))
        extra = sorted(set(key_clips) - set(d.scope.clips))
        return refuse(f"wrapped keys must match the approved clips exactly (missing {missing}, extra {extra})")
    if hub.box_secret is None:
        return refuse("this hub has no box key to release keys with")
    try:
        inner = tuple(open_release(hub.box_secret, cid, k) for k in d.keys)
    except AccessError as e:
        return refuse(str(e))
    if any(a.device == d.signer for a in p.approvals):
        return refuse(f"device {d.signer} already approved this challenge; another owner device must approve")
    # Approvals given earlier count only if their device is still an owner in the roster of NOW:
    # a device revoked or demoted since it approved no longer speaks for the household.
    kept = tuple(a for a in p.approvals if _still_owner(state.roster, a.device))
    dropped = [a.device for a in p.approvals if a not in kept]
    approvals = kept + (Approval(d.signer, d.scope, inner),)
    aud_appr = ("access_approval", {"request_id": rid, "challenge_id": cid, "device": d.signer,
                                    "scope": d.scope.to_json(), "approvals": len(approvals), "needed": p.needed,
                                    "dropped": dropped})
    if len(approvals) < p.needed:
        state = replace(state, pending=_frozen({**state.pending, cid: replace(p, approvals=approvals)}))
        reason = f"{len(approvals)} of {p.needed} owner approvals"
        if dropped:
            reason += f" (no longer counted, revoked or demoted since: {', '.join(dropped)})"
        return state, Result("approved", reason,
                             expired.outbound + (_status(hub, rid, cid, "approved", reason, now_wall_ms),),
                             expired.audit + (aud_appr,), challenge_id=cid)

    scope = approvals[0].scope
    for a in approvals[1:]:
        scope = scope.intersect(a.scope)
    # The intersection may have narrowed cameras or time: keep only the clips still inside it.
    scope = replace(scope, clips=tuple(c for c in scope.clips if p.clips[c].outside(scope) is None))
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


def authenticate_device_message(roster: Roster, data: bytes, msg_type: str, keys: tuple[str, ...], hub_id: str
                                ) -> tuple[Signed, RosterEntry, Mapping[str, Any]]:
    """A message signed by a device of the roster (not revoked), for this hub, with exactly `keys`.
    Whether that device's ROLE may do what the message asks is the caller's check (members get a
    signed answer saying so; unknown keys get none)."""
    m = parse_message(data, msg_type)
    if roster.is_revoked(m.signer):
        raise AccessError(f"{msg_type}: device {m.signer} is revoked")
    entry = roster.find(m.signer)
    if entry is None:
        raise AccessError(f"{msg_type}: device {m.signer!r} is not in the roster")
    verify_signed(m, msg_type, entry.device.sign_pk, msg_type)
    b = exact_keys(dict(m.body), keys, msg_type)
    if b["hub"] != hub_id:
        raise AccessError(f"{msg_type} is for hub {b['hub']!r}, not this hub")
    return m, entry, b


def on_mode_set(
    state: HubState, data: bytes, *, hub: HubIdentity, now_mono_s: float, now_wall_ms: int,
    switch_on: bool = False,
) -> tuple[HubState, Result]:
    """A signed mode change: only an owner device of the current roster may change the mode, and
    nothing remote takes the hub out of privacy while the physical privacy switch is on.

    The result's audit entry and counter must be made durable by the caller BEFORE it applies
    `Result.mode` (record, then act). A device of the roster (owner or member) gets a signed
    `mode_result` saying what happened; an unknown key gets nothing (no amplification)."""
    state, now = state.tick(now_mono_s)
    try:
        m, entry, b = authenticate_device_message(state.roster, data, "mode_set", _MODE_KEYS, hub.key_id)
        mode = choice_field(b["mode"], MODES, "mode_set: mode")
        counter = int_field(b["counter"], "mode_set: counter", 1)
        rv = int_field(b["roster_version"], "mode_set: roster_version", 1)
        int_field(b["signed_ms"], "mode_set: signed_ms")
    except AccessError as e:
        return state, Result("refused", str(e), authenticated=False)
    digest = message_digest(m.raw)
    if digest in state.seen:
        return state, Result("duplicate", "mode change already processed")

    def answer(status: str, reason: str) -> Outbound:
        body = {"device": m.signer, "counter": counter, "mode": mode, "status": status, "reason": reason,
                "roster_version": state.roster.version, "issued_ms": now_wall_ms}
        return Outbound("mode_result", m.signer, _hub_msg(hub, "mode_result", body))

    def refuse(reason: str, short: str) -> tuple[HubState, Result]:
        return state, Result("refused", reason, (answer("refused", reason),),
                             (("access_refused", {"device": m.signer, "reason": short}),))

    if entry.role != "owner":
        # Answered (the device learns why) but tallied, not audited one by one: a stolen member
        # device cannot grow the audit log by flooding mode changes.
        reason = f"device {m.signer} is a {entry.role}, not an owner; only owners change the mode"
        return _tallied(state, "member_mode_set", now), Result("refused", reason, (answer("refused", reason),))
    if rv != state.roster.version:
        return refuse(f"stale roster: the change was made against roster version {rv}, the hub has version "
                      f"{state.roster.version}", "stale roster (mode_set)")
    last = _last_counter(state, m.signer)
    if counter <= last:
        return refuse(f"counter {counter} is not greater than {last} (replayed mode change)", "replayed mode_set")
    state = _consume(state, m.signer, counter, digest)
    if switch_on and mode != "privacy":
        # The physical switch wins over every remote source; the counter is consumed all the same,
        # so the message cannot be replayed once the switch is off.
        reason = "the privacy switch on the hub is on: only turning it off leaves privacy mode"
        return state, Result("refused", reason, (answer("refused", reason),),
                             (("access_refused", {"device": m.signer, "reason": "privacy switch on (mode_set)",
                                                  "mode": mode}),))
    return state, Result("mode_set", "", (answer("applied", ""),),
                         (("mode_change", {"mode": mode, "by": m.signer, "via": "mqtt", "counter": counter}),),
                         mode=mode)


def mode_state_message(hub: HubIdentity, mode: str, *, switch_on: bool, roster_version: int, seq: int,
                       issued_ms: int) -> bytes:
    """The household mode as the hub applies it, hub-signed (the broker cannot show another)."""
    return _hub_msg(hub, "mode_state", {"mode": choice_field(mode, MODES, "mode"), "switch": bool(switch_on),
                                        "roster_version": roster_version, "seq": seq, "issued_ms": issued_ms})


def camera_state_message(hub: HubIdentity, camera: str, camera_state: str, *, seq: int, issued_ms: int) -> bytes:
    """One camera's privacy state (clear, masked, withheld), hub-signed."""
    return _hub_msg(hub, "camera_state", {"camera": camera, "state": camera_state, "seq": seq,
                                          "issued_ms": issued_ms})


def new_state(hub_id: str, roster: Roster, counters: Mapping[str, int] | None = None,
              counter_floor: int = 0) -> HubState:
    return HubState(hub_id, roster, counters=_frozen(dict(counters or {})), counter_floor=counter_floor)
