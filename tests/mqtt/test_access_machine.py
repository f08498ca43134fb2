"""The access state machine (pure): every hub check, without a broker."""

from __future__ import annotations

import dataclasses
import json

import pytest
from access_world import (
    ALICE,
    BOB,
    CLIP_INDEX,
    HUB,
    MALLORY,
    OTHER_HUB,
    PLUMBER,
    POLICE,
    ROSTER_V1,
    ROSTER_V2,
    T0_WALL_MS,
    TEEN,
    VENDOR,
    Clip,
    make_clip,
    request,
    rewrap,
)

from agent import access as A
from agent.clock import FakeClock
from agent.crypto.envelope import decrypt_verified, unwrap_key, verify_clip
from agent.crypto.keys import DeviceIdentity, canonical_json
from agent.errors import AccessError

POLICY = A.AccessPolicy(challenge_ttl_s=300, grant_ttl_s=3600)


class Hub:
    """A hub driving the pure functions with an injected clock and deterministic randomness."""

    def __init__(self, roster: object = ROSTER_V1, policy: A.AccessPolicy = POLICY) -> None:
        self.clock = FakeClock()
        self.state = A.new_state(HUB.key_id, roster)  # type: ignore[arg-type]
        self.policy = policy
        self.n = 0
        self.counter = {ALICE.key_id: 0, BOB.key_id: 0, TEEN.key_id: 0, MALLORY.key_id: 0}

    def request(self, data: bytes) -> A.Result:
        self.n += 1
        self.state, r = A.on_request(self.state, data, hub=HUB, policy=self.policy,
                                     now_mono_s=self.clock.monotonic(), now_wall_ms=T0_WALL_MS,
                                     challenge_id=bytes([self.n]) * 32, clip_index=CLIP_INDEX)
        return r

    def decide(self, data: bytes) -> A.Result:
        self.state, r = A.on_decision(self.state, data, hub=HUB, policy=self.policy,
                                      now_mono_s=self.clock.monotonic(), now_wall_ms=T0_WALL_MS)
        return r

    def challenge(self, r: A.Result) -> A.Challenge:
        raw = next(o.payload for o in r.outbound if o.channel == "challenge")
        return A.parse_challenge(raw, HUB.public)

    def decision(self, owner: DeviceIdentity, ch: A.Challenge, verdict: str = "approve", *,
                 scope: A.Scope | None = None, keys: tuple[A.WrappedKey, ...] = (),
                 roster_version: int | None = None, counter: int | None = None) -> bytes:
        self.counter[owner.key_id] = counter if counter is not None else self.counter[owner.key_id] + 1
        # What an owner device sends: the requester-wrapped keys sealed to the hub for release.
        released = A.release_keys(ch, [k for k in keys if len(k.sealed) == A.SEALED_KEY_BYTES])
        released += tuple(k for k in keys if len(k.sealed) != A.SEALED_KEY_BYTES)
        return A.make_decision(owner, ch, verdict, self.counter[owner.key_id],
                               roster_version or self.state.roster.version, T0_WALL_MS, scope, released)


def grants(r: A.Result) -> list[A.Outbound]:
    return [o for o in r.outbound if o.channel == "grant" and json.loads(o.payload)["body"]["type"] == "grant"]


@pytest.fixture
def clip() -> Clip:
    return make_clip(1)


def test_happy_path_contractor_one_owner_and_requester_decrypts(clip: Clip) -> None:
    hub = Hub()
    scope = A.Scope.make(["porch"], [clip.clip_id], T0_WALL_MS - 3_600_000, T0_WALL_MS)
    r = hub.request(request(PLUMBER, "contractor", scope=scope))
    assert r.status == "challenged"
    assert [k for k, _ in r.audit] == ["access_request", "access_challenge"]
    ch = hub.challenge(r)
    assert ch.approvals_needed == 1 and ch.request.requester.key_id == PLUMBER.key_id
    r2 = hub.decide(hub.decision(ALICE, ch, keys=(rewrap(ALICE, clip, PLUMBER),)))
    assert r2.status == "granted", r2.reason
    assert [k for k, _ in r2.audit] == ["access_approval", "access_grant"]
    assert any(o.channel == "challenge_clear" and o.retain and o.payload == b"" for o in r2.outbound)
    g = A.parse_grant(grants(r2)[0].payload, HUB.public)
    assert g.requester == PLUMBER.key_id and g.scope.clips == (clip.clip_id,)
    assert g.expires_ms == T0_WALL_MS + 3600 * 1000
    # The requester opens exactly the granted clip with its own key.
    info = verify_clip(clip.data, HUB.public)
    from agent.crypto.envelope import Stanza

    hdr = dataclasses.replace(info.header, stanzas=(Stanza(PLUMBER.key_id, g.keys[0].sealed),))
    k = unwrap_key(PLUMBER, hdr)
    out = bytearray()
    decrypt_verified(clip.data, info, k, out.extend)
    assert bytes(out) == clip.payload


def test_redelivered_approval_gives_exactly_one_grant(clip: Clip) -> None:
    hub = Hub()
    ch = hub.challenge(hub.request(request(PLUMBER)))
    d = hub.decision(ALICE, ch)
    results = [hub.decide(d) for _ in range(5)]
    assert [r.status for r in results] == ["granted"] + ["duplicate"] * 4
    assert sum(len(grants(r)) for r in results) == 1
    # A re-signed copy (new counter) of the same approval hits the closed challenge.
    r = hub.decide(hub.decision(ALICE, ch))
    assert r.status == "refused" and "closed (granted)" in r.reason and not grants(r)


def test_redelivered_request_gives_one_challenge() -> None:
    hub = Hub()
    data = request(PLUMBER)
    assert hub.request(data).status == "challenged"
    r = hub.request(data)
    assert r.status == "duplicate" and not r.outbound
    assert len(hub.state.pending) == 1


def test_expired_challenge_refused_and_clock_going_back_does_not_revive() -> None:
    hub = Hub()
    ch = hub.challenge(hub.request(request(PLUMBER)))
    d = hub.decision(ALICE, ch)
    hub.clock.advance(301)
    r = hub.decide(d)
    assert r.status == "refused" and "closed (expired)" in r.reason
    assert ("access_expiry" in [k for k, _ in r.audit])
    # Set the clock back (wall AND monotonic): the challenge stays expired.
    hub.clock.mono_s -= 10_000
    hub.clock.wall_s -= 10_000
    assert hub.decide(hub.decision(ALICE, ch)).status == "refused"
    assert not hub.state.pending


def test_clock_going_back_before_expiry_is_processed_does_not_extend_ttl() -> None:
    hub = Hub()
    ch = hub.challenge(hub.request(request(PLUMBER)))
    hub.clock.advance(301)
    hub.request(request(PLUMBER, n=2))  # any traffic: the hub saw t0+301
    hub.clock.mono_s -= 1000  # a broken/injected clock steps back
    r = hub.decide(hub.decision(ALICE, ch))
    assert r.status == "refused" and "expired" in r.reason


def test_wall_clock_jump_does_not_matter() -> None:
    hub = Hub()
    ch = hub.challenge(hub.request(request(PLUMBER)))
    hub.clock.wall_s += 10 * 86400  # NTP fixes the Pi's wall time at boot
    assert hub.decide(hub.decision(ALICE, ch)).status == "granted"


def test_revoked_device_is_refused() -> None:
    hub = Hub(roster=ROSTER_V2)
    ch = hub.challenge(hub.request(request(PLUMBER)))
    r = hub.decide(hub.decision(BOB, ch))
    assert r.status == "refused" and "revoked" in r.reason and not r.authenticated
    assert not r.outbound  # nothing published for an unauthenticated message
    assert hub.decide(hub.decision(ALICE, ch)).status == "granted"


def test_stale_roster_version_is_refused() -> None:
    hub = Hub(roster=ROSTER_V2)
    ch = hub.challenge(hub.request(request(PLUMBER)))
    r = hub.decide(hub.decision(ALICE, ch, roster_version=1))
    assert r.status == "refused" and "roster version 1" in r.reason
    assert [k for k, _ in r.audit] == ["access_refused"]
    assert hub.decide(hub.decision(ALICE, ch)).status == "granted"


def test_hub_refuses_a_roster_rollback() -> None:
    s = A.new_state(HUB.key_id, ROSTER_V2)
    with pytest.raises(AccessError, match="older"):
        A.with_roster(s, ROSTER_V1)


def test_member_device_cannot_approve() -> None:
    hub = Hub()
    ch = hub.challenge(hub.request(request(PLUMBER)))
    r = hub.decide(hub.decision(TEEN, ch))
    assert r.status == "refused" and "not an owner" in r.reason


def test_forged_signer_is_refused() -> None:
    hub = Hub()
    ch = hub.challenge(hub.request(request(PLUMBER)))
    body = json.loads(hub.decision(MALLORY, ch))["body"]
    forged = A.sign_message("decision", body, MALLORY.signing_key, ALICE.key_id)  # claims to be Alice
    r = hub.decide(forged)
    assert r.status == "refused" and "signature does not verify" in r.reason and not r.outbound
    r = hub.decide(hub.decision(MALLORY, ch))  # signs as herself: not in the roster
    assert r.status == "refused" and "not in the roster" in r.reason


def _with(data: bytes, owner: DeviceIdentity, **changes: object) -> bytes:
    body = dict(json.loads(data)["body"])
    body.update(changes)
    return A.sign_message("decision", body, owner.signing_key, owner.key_id)


def test_approval_bound_to_another_request_requester_or_hub() -> None:
    hub = Hub()
    ch1 = hub.challenge(hub.request(request(PLUMBER, n=1)))
    ch2 = hub.challenge(hub.request(request(VENDOR, "vendor", n=2)))
    d = hub.decision(ALICE, ch1)
    other_req = _with(d, ALICE, request_hash=ch2.request.hash, counter=50)
    r = hub.decide(other_req)
    assert r.status == "refused" and "another request" in r.reason
    other_requester = _with(d, ALICE, requester=VENDOR.key_id, counter=51)
    r = hub.decide(other_requester)
    assert r.status == "refused" and "another requester" in r.reason
    # The approval for challenge 1 presented on challenge 2 (its request hash does not match).
    moved = _with(d, ALICE, challenge_id=ch2.challenge_id, counter=52)
    assert "another request" in hub.decide(moved).reason
    other_hub = _with(d, ALICE, hub=OTHER_HUB.key_id, counter=53)
    r = hub.decide(other_hub)
    assert r.status == "refused" and "not this hub" in r.reason
    # A request signed for another hub never opens a challenge here.
    r = hub.request(request(PLUMBER, n=9, hub=OTHER_HUB))
    assert r.status == "refused" and "not this hub" in r.reason
    assert hub.decide(hub.decision(ALICE, ch1, counter=60)).status == "granted"


def test_scope_can_only_narrow(clip: Clip) -> None:
    clip2 = make_clip(2)
    hub = Hub()
    req_scope = A.Scope.make(["porch"], [clip.clip_id], T0_WALL_MS - 3_600_000, T0_WALL_MS)
    ch = hub.challenge(hub.request(request(PLUMBER, scope=req_scope)))
    k1, k2 = rewrap(ALICE, clip, PLUMBER), rewrap(ALICE, clip2, PLUMBER)
    bad = [
        (A.Scope.make(["porch", "bedroom"], [clip.clip_id], req_scope.from_ms, req_scope.to_ms), (k1,), "cameras"),
        (A.Scope.make(["porch"], [clip.clip_id, clip2.clip_id], req_scope.from_ms, req_scope.to_ms), (k1, k2), "clips"),
        (A.Scope.make(["porch"], [clip.clip_id], req_scope.from_ms - 1, req_scope.to_ms), (k1,), "time window"),
        (A.Scope.make(["porch"], [clip.clip_id], req_scope.from_ms, req_scope.to_ms + 1), (k1,), "time window"),
    ]
    for scope, keys, what in bad:
        with pytest.raises(AccessError):  # the owner tool refuses to sign an escalation...
            hub.decision(ALICE, ch, scope=scope, keys=keys)
        body = dict(json.loads(hub.decision(ALICE, ch, scope=req_scope, keys=(k1,)))["body"])
        body["scope"] = scope.to_json()
        body["keys"] = [k.to_json() for k in A.release_keys(ch, keys)]
        r = hub.decide(A.sign_message("decision", body, ALICE.signing_key, ALICE.key_id))
        assert r.status == "refused" and what in r.reason  # ...and so does the hub
    # Keys must match the approved clips exactly.
    r = hub.decide(hub.decision(ALICE, ch, scope=req_scope, keys=()))
    assert r.status == "refused" and "wrapped keys" in r.reason
    narrower = A.Scope.make(["porch"], [], req_scope.from_ms + 1000, req_scope.to_ms - 1000)
    r = hub.decide(hub.decision(ALICE, ch, scope=narrower))
    assert r.status == "granted"
    g = A.parse_grant(grants(r)[0].payload, HUB.public)
    assert g.scope == narrower and g.keys == ()


@pytest.mark.parametrize("role", ["vendor", "police"])
def test_vendor_and_police_need_two_distinct_owners(role: str) -> None:
    hub = Hub()
    ch = hub.challenge(hub.request(request(VENDOR if role == "vendor" else POLICE, role)))
    assert ch.approvals_needed == 2
    r = hub.decide(hub.decision(ALICE, ch))
    assert r.status == "approved" and not grants(r)
    r = hub.decide(hub.decision(ALICE, ch))  # same owner again (new counter): does not count twice
    assert r.status == "refused" and "already approved" in r.reason
    r = hub.decide(hub.decision(BOB, ch))
    assert r.status == "granted"
    assert A.parse_grant(grants(r)[0].payload, HUB.public).approvers == tuple(sorted([ALICE.key_id, BOB.key_id]))


def test_two_owner_grant_is_the_intersection() -> None:
    c1, c2 = make_clip(1), make_clip(2)
    hub = Hub()
    scope = A.Scope.make(["porch"], [c1.clip_id, c2.clip_id], 0, T0_WALL_MS)
    ch = hub.challenge(hub.request(request(POLICE, "police", scope=scope)))
    sa = A.Scope.make(["porch"], [c1.clip_id, c2.clip_id], 0, T0_WALL_MS)
    sb = A.Scope.make(["porch"], [c1.clip_id], 0, T0_WALL_MS)
    hub.decide(hub.decision(ALICE, ch, scope=sa, keys=(rewrap(ALICE, c1, POLICE), rewrap(ALICE, c2, POLICE))))
    r = hub.decide(hub.decision(BOB, ch, scope=sb, keys=(rewrap(BOB, c1, POLICE),)))
    g = A.parse_grant(grants(r)[0].payload, HUB.public)
    assert g.scope.clips == (c1.clip_id,) and [k.clip for k in g.keys] == [c1.clip_id]


def test_denial_closes_the_challenge() -> None:
    hub = Hub()
    ch = hub.challenge(hub.request(request(VENDOR, "vendor")))
    hub.decide(hub.decision(ALICE, ch))
    r = hub.decide(hub.decision(BOB, ch, "deny"))
    assert r.status == "denied" and [k for k, _ in r.audit] == ["access_denial"]
    denial = next(o for o in r.outbound if o.channel == "grant")
    with pytest.raises(AccessError, match="denied"):
        A.parse_grant(denial.payload, HUB.public)
    assert hub.decide(hub.decision(BOB, ch)).status == "refused"


def test_counter_must_strictly_increase_across_challenges() -> None:
    hub = Hub()
    ch1 = hub.challenge(hub.request(request(PLUMBER, n=1)))
    ch2 = hub.challenge(hub.request(request(PLUMBER, n=2)))
    d_old = hub.decision(ALICE, ch2, counter=5)  # signed first, delivered late
    assert hub.decide(hub.decision(ALICE, ch1, counter=6)).status == "granted"
    r = hub.decide(d_old)
    assert r.status == "refused" and "counter 5" in r.reason


def test_type_confusion_is_refused() -> None:
    hub = Hub()
    r = hub.request(request(PLUMBER))
    ch = hub.challenge(r)
    challenge_raw = next(o.payload for o in r.outbound if o.channel == "challenge")
    # 1. A hub-signed challenge presented as a decision.
    assert "expected a 'decision'" in hub.decide(challenge_raw).reason
    # 2. An owner-signed mode change presented as a decision.
    mode = A.make_mode_set(ALICE, HUB.key_id, "away", 99, 1, T0_WALL_MS)
    assert "expected a 'decision'" in hub.decide(mode).reason
    # 3. A valid decision body whose signature was made under another type's domain (for example
    #    a tool tricked into signing it as a `mode_set`): the body says "decision", the domain not.
    body = dict(json.loads(hub.decision(ALICE, ch))["body"])
    sig = ALICE.signing_key.sign(A.sig_domain("mode_set") + canonical_json(body)).signature
    from agent.crypto.keys import b64url_encode

    confused = canonical_json({"body": body, "sig": b64url_encode(sig), "signer": ALICE.key_id})
    r3 = hub.decide(confused)
    assert r3.status == "refused" and "signature does not verify" in r3.reason
    # 4. A roster (owner-signed, its own domain) is not an approval either.
    assert hub.decide(ROSTER_V1.encode()).status == "refused"
    assert hub.decide(hub.decision(ALICE, ch)).status == "granted"


def test_non_canonical_or_malformed_messages_are_refused() -> None:
    hub = Hub()
    ch = hub.challenge(hub.request(request(PLUMBER)))
    d = hub.decision(ALICE, ch)
    pretty = json.dumps(json.loads(d), indent=1).encode()
    assert "canonical" in hub.decide(pretty).reason
    for junk in (b"", b"null", b"[]", b"{}", b"\xff\xfe", d[:-5], b"x" * (A.MAX_MESSAGE_BYTES + 1)):
        r = hub.decide(junk)
        assert r.status == "refused" and not r.authenticated
    assert hub.decide(d).status == "granted"


def test_max_pending_challenges() -> None:
    hub = Hub(policy=dataclasses.replace(POLICY, max_pending=2))
    assert hub.request(request(PLUMBER, n=1)).status == "challenged"
    assert hub.request(request(PLUMBER, n=2)).status == "challenged"
    r = hub.request(request(PLUMBER, n=3))
    assert r.status == "refused" and "too many" in r.reason


def test_mode_set_only_by_owner_and_not_replayable() -> None:
    hub = Hub()

    def mode(data: bytes) -> A.Result:
        hub.state, r = A.on_mode_set(hub.state, data, hub=HUB, now_mono_s=hub.clock.monotonic(),
                                     now_wall_ms=T0_WALL_MS)
        return r

    d = A.make_mode_set(ALICE, HUB.key_id, "privacy", 1, 1, T0_WALL_MS)
    r = mode(d)
    assert r.status == "mode_set" and r.mode == "privacy"
    assert r.audit[0][0] == "mode_change"
    assert mode(d).status == "duplicate"
    assert "not an owner" in mode(A.make_mode_set(TEEN, HUB.key_id, "home", 2, 1, T0_WALL_MS)).reason
    assert "not in the roster" in mode(A.make_mode_set(MALLORY, HUB.key_id, "home", 2, 1, T0_WALL_MS)).reason
    assert "replayed" in mode(A.make_mode_set(ALICE, HUB.key_id, "home", 1, 1, T0_WALL_MS)).reason
    assert "not this hub" in mode(A.make_mode_set(ALICE, OTHER_HUB.key_id, "home", 5, 1, T0_WALL_MS)).reason
    with pytest.raises(AccessError):
        A.make_mode_set(ALICE, HUB.key_id, "off", 3, 1, T0_WALL_MS)


def test_challenge_verified_by_owner_device() -> None:
    hub = Hub()
    r = hub.request(request(PLUMBER))
    raw = next(o.payload for o in r.outbound if o.channel == "challenge")
    with pytest.raises(AccessError, match="not from hub"):
        A.parse_challenge(raw, OTHER_HUB.public)
    body = dict(json.loads(raw)["body"])
    body["ttl_s"] = 10**6  # an attacker on the broker edits the retained challenge
    edited = canonical_json({**json.loads(raw), "body": body})
    with pytest.raises(AccessError, match="signature"):
        A.parse_challenge(edited, HUB.public)
