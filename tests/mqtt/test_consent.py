"""Consent that cannot be bypassed: one test per finding of the access review (pure state machine).

The broker-level and CLI-level tests of the same findings are in test_consent_mqtt.py.
"""

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
    PLUMBER,
    POLICE,
    ROSTER_V1,
    T0_WALL_MS,
    VENDOR,
    clip_meta,
    make_clip,
    request,
    rewrap,
)
from test_access_machine import POLICY, Hub, grants

from agent import access as A
from agent.crypto.envelope import Stanza, unwrap_key, verify_clip
from agent.crypto.keys import DeviceIdentity, updated_roster
from agent.errors import AccessError, AgentError

LAST_HOUR = (T0_WALL_MS - 3_600_000, T0_WALL_MS)


def _scope(cams: list[str], clips: list[str] = (), window: tuple[int, int] = LAST_HOUR) -> A.Scope:  # type: ignore[assignment]
    return A.Scope.make(cams, clips, *window)


# --- 1. key release -------------------------------------------------------------------------


def test_1_keys_in_an_approval_are_useless_until_the_hub_releases_them() -> None:
    """Police need two owners. Alice approves, Bob denies. Anyone reading Alice's decision off the
    broker (HA, the shared owner account) and handing it to the requester gets nothing: the keys
    inside are sealed to the hub's box key. Old code: the requester decrypted the clip."""
    clip = make_clip(1)
    hub = Hub()
    ch = hub.challenge(hub.request(request(POLICE, "police", scope=_scope(["porch"], [clip.clip_id]))))
    approval = hub.decision(ALICE, ch, keys=(rewrap(ALICE, clip, POLICE),))
    assert hub.decide(approval).status == "approved"
    r = hub.decide(hub.decision(BOB, ch, "deny"))
    assert r.status == "denied" and not grants(r)
    # The requester tries every key in the approval it was handed.
    info = verify_clip(clip.data, HUB.public)
    for k in json.loads(approval)["body"]["keys"]:
        sealed = A.WrappedKey(k["clip"], A.wire._b64d(k["sealed"], "sealed")).sealed
        assert len(sealed) == A.HUB_SEALED_BYTES != A.SEALED_KEY_BYTES
        with pytest.raises(AgentError):
            unwrap_key(POLICE, dataclasses.replace(info.header, stanzas=(Stanza(POLICE.key_id, sealed),)))
        with pytest.raises(AgentError):  # and it is not a requester stanza cut out of a bigger blob
            unwrap_key(POLICE, dataclasses.replace(info.header, stanzas=(Stanza(POLICE.key_id, sealed[-108:]),)))


def test_1_the_hub_releases_only_in_a_grant_and_never_holds_a_clip_key() -> None:
    clip = make_clip(2)
    hub = Hub()
    ch = hub.challenge(hub.request(request(PLUMBER, "contractor", scope=_scope(["porch"], [clip.clip_id]))))
    r = hub.decide(hub.decision(ALICE, ch, keys=(rewrap(ALICE, clip, PLUMBER),)))
    assert r.status == "granted"
    g = A.parse_grant(grants(r)[0].payload, HUB.public)
    assert len(g.keys[0].sealed) == A.SEALED_KEY_BYTES  # sealed to the requester only
    # What the hub released is still sealed to the requester: the hub's own keys cannot open it.
    info = verify_clip(clip.data, HUB.public)
    hub_as_device = DeviceIdentity.from_secrets(bytes(HUB.signing_key), bytes(HUB.box_secret or b""))
    with pytest.raises(AgentError):
        unwrap_key(hub_as_device, dataclasses.replace(info.header, stanzas=(Stanza(hub_as_device.key_id,
                                                                                     g.keys[0].sealed),)))


def test_1_a_release_seal_is_bound_to_its_challenge() -> None:
    clip = make_clip(3)
    hub = Hub()
    ch1 = hub.challenge(hub.request(request(PLUMBER, "contractor", n=1, scope=_scope(["porch"], [clip.clip_id]))))
    ch2 = hub.challenge(hub.request(request(VENDOR, "vendor", n=2, scope=_scope(["porch"], [clip.clip_id]))))
    outer = A.release_keys(ch1, (rewrap(ALICE, clip, PLUMBER),))
    # The seal made for challenge 1 is moved into a decision for challenge 2.
    d = A.make_decision(ALICE, ch2, "approve", 99, 1, T0_WALL_MS, _scope(["porch"], [clip.clip_id]), outer)
    r = hub.decide(d)
    assert r.status == "refused" and "another challenge" in r.reason


def test_1_old_protocol_version_is_refused() -> None:
    hub = Hub()
    body = dict(json.loads(request(PLUMBER))["body"])
    body["v"] = 1
    old = A.sign_message("request", body, PLUMBER.signing_key, PLUMBER.key_id)
    r = hub.request(old)
    assert r.status == "refused" and "version" in r.reason and not r.outbound


# --- 2. clips bound to the scope ---------------------------------------------------------------


def test_2_a_clip_outside_the_requested_cameras_or_window_is_refused() -> None:
    """'porch, last hour' listing a bedroom clip from three days ago. Old code: granted."""
    bedroom = A.ClipMeta("ee" * 16, "bedroom", T0_WALL_MS - 3 * 86_400_000, T0_WALL_MS - 3 * 86_400_000 + 30_000)
    index = {**CLIP_INDEX, bedroom.clip: bedroom}
    hub = Hub()
    state, r = A.on_request(hub.state, request(PLUMBER, scope=_scope(["porch"], [bedroom.clip])), hub=HUB,
                            policy=POLICY, now_mono_s=0, now_wall_ms=T0_WALL_MS, challenge_id=b"\x01" * 32,
                            clip_index=index, known_cameras=frozenset({"porch", "bedroom"}))
    assert r.status == "refused" and "bedroom" in r.reason and not state.pending
    # Naming the bedroom too does not help: the clip is not inside the window.
    state, r = A.on_request(hub.state, request(PLUMBER, n=2, scope=_scope(["bedroom", "porch"], [bedroom.clip])),
                            hub=HUB, policy=POLICY, now_mono_s=0, now_wall_ms=T0_WALL_MS,
                            challenge_id=b"\x02" * 32, clip_index=index)
    assert r.status == "refused" and "time window" in r.reason
    # A clip id the hub never made is refused.
    r = hub.request(request(PLUMBER, n=3, scope=_scope(["porch"], ["ab" * 16])))
    assert r.status == "refused" and "not in this hub's clip index" in r.reason


def test_2_narrowing_by_camera_or_time_drops_clips_outside() -> None:
    """The hub refuses an approval whose clips are outside its own narrowed scope, and a grant keeps
    only the clips inside the intersection of the approvals."""
    c1, c5 = make_clip(1), make_clip(5)
    hub = Hub()
    req = _scope(["porch"], [c1.clip_id, c5.clip_id])
    ch = hub.challenge(hub.request(request(POLICE, "police", scope=req)))
    assert [m.camera for m in ch.clips] == ["porch", "porch"]  # owners see cameras and times
    keys = (rewrap(ALICE, c1, POLICE), rewrap(ALICE, c5, POLICE))
    # Alice narrows the window to after clip 1, but keeps clip 1: refused by the hub.
    late = (clip_meta(3).start_ms, T0_WALL_MS)
    r = hub.decide(hub.decision(ALICE, ch, scope=_scope(["porch"], [c1.clip_id, c5.clip_id], late), keys=keys))
    assert r.status == "refused" and "outside its own scope" in r.reason
    # Alice approves both clips over the whole hour; Bob only the late window with clip 5.
    assert hub.decide(hub.decision(ALICE, ch, scope=req, keys=keys)).status == "approved"
    r = hub.decide(hub.decision(BOB, ch, scope=_scope(["porch"], [c5.clip_id], late),
                                keys=(rewrap(BOB, c5, POLICE),)))
    g = A.parse_grant(grants(r)[0].payload, HUB.public)
    assert g.scope.clips == (c5.clip_id,) and [k.clip for k in g.keys] == [c5.clip_id]


def test_2_intersection_of_windows_drops_a_clip_both_kept() -> None:
    c1, c9 = make_clip(1), make_clip(9)
    hub = Hub()
    ch = hub.challenge(hub.request(request(POLICE, "police", scope=_scope(["porch"], [c1.clip_id, c9.clip_id]))))
    keys_a = (rewrap(ALICE, c1, POLICE), rewrap(ALICE, c9, POLICE))
    early = (LAST_HOUR[0], clip_meta(9).end_ms)
    late = (clip_meta(1).start_ms, T0_WALL_MS)
    hub.decide(hub.decision(ALICE, ch, scope=_scope(["porch"], [c1.clip_id, c9.clip_id], early), keys=keys_a))
    keys_b = (rewrap(BOB, c1, POLICE), rewrap(BOB, c9, POLICE))
    r = hub.decide(hub.decision(BOB, ch, scope=_scope(["porch"], [c1.clip_id, c9.clip_id], late), keys=keys_b))
    g = A.parse_grant(grants(r)[0].payload, HUB.public)
    assert set(g.scope.clips) == {c1.clip_id, c9.clip_id}  # both inside [start(1), end(9)]
    tight = (clip_meta(2).start_ms, clip_meta(9).end_ms)
    hub2 = Hub()
    ch = hub2.challenge(hub2.request(request(POLICE, "police", scope=_scope(["porch"], [c1.clip_id, c9.clip_id]))))
    hub2.decide(hub2.decision(ALICE, ch, scope=_scope(["porch"], [c1.clip_id, c9.clip_id]), keys=keys_a))
    r = hub2.decide(hub2.decision(BOB, ch, scope=_scope(["porch"], [c9.clip_id], tight),
                                  keys=(rewrap(BOB, c9, POLICE),)))
    g = A.parse_grant(grants(r)[0].payload, HUB.public)
    assert g.scope.clips == (c9.clip_id,)


# --- 3. approvals re-checked at grant time ----------------------------------------------------


def test_3_an_approval_from_a_device_revoked_since_no_longer_counts() -> None:
    """Bob approves a police request, then Bob's laptop is revoked (roster v2). Alice's approval
    alone must not grant. Old code: granted with Bob's stale approval."""
    hub = Hub()
    ch = hub.challenge(hub.request(request(POLICE, "police")))
    assert hub.decide(hub.decision(BOB, ch)).status == "approved"
    v2 = updated_roster(ALICE, ROSTER_V1, revoke=[BOB.key_id])
    hub.state = A.with_roster(hub.state, v2)
    r = hub.decide(hub.decision(ALICE, ch, roster_version=2))
    assert r.status == "approved" and not grants(r), r.reason
    assert BOB.key_id in r.reason
    assert dict(r.audit[-1][1])["dropped"] == [BOB.key_id]


def test_3_an_approval_from_a_device_demoted_to_member_no_longer_counts() -> None:
    hub = Hub()
    ch = hub.challenge(hub.request(request(VENDOR, "vendor")))
    assert hub.decide(hub.decision(BOB, ch)).status == "approved"
    carol = DeviceIdentity.from_secrets(bytes([31]) * 32, bytes([131]) * 32, "carol-phone")
    # Version 2: Bob is now only a member; Carol is a new owner.
    entries = [e if e.device.key_id != BOB.key_id else dataclasses.replace(e, role="member")
               for e in ROSTER_V1.entries]
    from agent.crypto.keys import RosterEntry, sign_roster

    v2 = sign_roster(ALICE, 2, [*entries, RosterEntry(carol.public, "owner")], hub_key_id=HUB.key_id,
                     requesters=ROSTER_V1.requesters)
    hub.state = A.with_roster(hub.state, v2)
    hub.counter[carol.key_id] = 0
    r = hub.decide(hub.decision(ALICE, ch, roster_version=2))
    assert r.status == "approved" and not grants(r)
    r = hub.decide(hub.decision(carol, ch, roster_version=2))
    assert r.status == "granted"
    assert A.parse_grant(grants(r)[0].payload, HUB.public).approvers == tuple(sorted([ALICE.key_id, carol.key_id]))


# --- 4. roles from the owners --------------------------------------------------------------------


def test_4_an_enrolled_requester_cannot_claim_a_laxer_role() -> None:
    """The vendor claims 'household' to need one owner. Old code: one approval granted."""
    hub = Hub()
    r = hub.request(request(VENDOR, "household"))
    assert r.status == "refused" and "enrolled as 'vendor'" in r.reason
    r = hub.request(request(POLICE, "police", n=2))
    assert hub.challenge(r).approvals_needed == 2 and hub.challenge(r).verified


def test_4_an_unknown_key_gets_the_strictest_rule_and_is_labelled_unverified() -> None:
    """Any key can call itself 'city-police' or 'household'. Old code: household needed one owner."""
    hub = Hub()
    ch = hub.challenge(hub.request(request(MALLORY, "household")))
    assert ch.requester_status == "unverified" and not ch.verified and ch.approvals_needed == 2
    assert hub.decide(hub.decision(ALICE, ch)).status == "approved"  # one owner is not enough
    assert hub.state.pending[ch.challenge_id].enrolled is False


def test_4_unknown_requesters_can_be_refused_outright() -> None:
    hub = Hub(policy=dataclasses.replace(POLICY, unknown_requesters="refuse"))
    r = hub.request(request(MALLORY, "police"))
    assert r.status == "refused" and "not enrolled" in r.reason and not hub.state.pending
    assert hub.request(request(PLUMBER, "contractor", n=2)).status == "challenged"


def test_4_a_revoked_requester_is_refused() -> None:
    v2 = updated_roster(ALICE, ROSTER_V1, revoke=[PLUMBER.key_id])
    hub = Hub(roster=v2)
    r = hub.request(request(PLUMBER, "contractor"))
    assert r.status == "refused" and "revoked" in r.reason


# --- 8. flooding -----------------------------------------------------------------------------------


def test_8_a_flood_of_throwaway_keys_is_capped_tallied_and_an_enrolled_requester_gets_through() -> None:
    """Old code: 32 throw-away keys filled every slot and each request added two audit entries."""
    hub = Hub()
    audit_entries = 0
    for i in range(200):
        throwaway = DeviceIdentity.from_secrets(i.to_bytes(2, "big") * 16, bytes(32 - 1) + bytes([i % 250 + 1]),
                                                "city-police")
        r = hub.request(request(throwaway, "police", n=i % 250 + 1))
        audit_entries += len(r.audit)
    assert len(hub.state.pending) == POLICY.unverified_cap
    # Only the challenges actually opened were audited one by one; the rest are a tally.
    assert audit_entries == 2 * POLICY.unverified_cap
    assert sum(hub.state.tally.values()) == 200 - POLICY.unverified_cap
    # An enrolled requester still gets a challenge during the flood.
    assert hub.request(request(PLUMBER, "contractor", n=251)).status == "challenged"
    # The tally is audited as ONE summary entry after the period.
    hub.clock.advance(POLICY.tally_period_s + 1)
    state, r = A.expire(hub.state, now_mono_s=hub.clock.monotonic(), hub=HUB, now_wall_ms=T0_WALL_MS,
                        policy=POLICY)
    summaries = [f for k, f in r.audit if k == "access_refused"]
    assert len(summaries) == 1 and summaries[0]["count"] == 200 - POLICY.unverified_cap
    assert summaries[0]["aggregated"] is True and not state.tally


def test_8_per_key_and_per_role_limits() -> None:
    policy = dataclasses.replace(POLICY, max_pending_per_requester=2, max_pending_per_role=3)
    hub = Hub(policy=policy)
    assert [hub.request(request(PLUMBER, "contractor", n=i)).status for i in (1, 2, 3)] == [
        "challenged", "challenged", "refused"]
    # Unverified: one open challenge per key.
    assert hub.request(request(MALLORY, "household", n=10)).status == "challenged"
    r = hub.request(request(MALLORY, "household", n=11))
    assert r.status == "refused" and "one open challenge" in r.reason and not r.outbound  # no amplification


# --- 5/6. mode changes: recorded first, the switch wins ---------------------------------------------


def test_6_the_privacy_switch_wins_over_a_signed_remote_change() -> None:
    hub = Hub()
    state, r = A.on_mode_set(hub.state, A.make_mode_set(ALICE, HUB.key_id, "home", 5, 1, T0_WALL_MS), hub=HUB,
                             now_mono_s=0, now_wall_ms=T0_WALL_MS, switch_on=True)
    assert r.status == "refused" and r.mode is None and "privacy switch" in r.reason
    answer = A.parse_mode_result(r.outbound[0].payload, HUB.public)
    assert answer.status == "refused" and answer.device == ALICE.key_id
    # Privacy itself is always allowed; and the refused message cannot be replayed later.
    _, r = A.on_mode_set(state, A.make_mode_set(ALICE, HUB.key_id, "home", 5, 1, T0_WALL_MS), hub=HUB,
                         now_mono_s=0, now_wall_ms=T0_WALL_MS, switch_on=False)
    assert r.status in ("refused", "duplicate") and r.mode is None
    _, r = A.on_mode_set(state, A.make_mode_set(ALICE, HUB.key_id, "privacy", 6, 1, T0_WALL_MS), hub=HUB,
                         now_mono_s=0, now_wall_ms=T0_WALL_MS, switch_on=True)
    assert r.mode == "privacy"


def test_7_mode_and_camera_state_are_hub_signed() -> None:
    msg = A.mode_state_message(HUB, "home", switch_on=False, roster_version=1, seq=5, issued_ms=T0_WALL_MS)
    st = A.parse_mode_state(msg, HUB.public)
    assert st.mode == "home" and st.seq == 5
    with pytest.raises(AccessError):
        A.parse_mode_state(b"privacy", HUB.public)  # what a broker could show
    forged = msg.replace(b'"mode":"home"', b'"mode":"privacy"')
    with pytest.raises(AccessError):
        A.parse_mode_state(forged, HUB.public)
    cam = A.camera_state_message(HUB, "porch", "withheld", seq=1, issued_ms=T0_WALL_MS)
    assert A.parse_camera_state(cam, HUB.public).state == "withheld"


# --- 12. parsers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"[" * 200_000 + b"]" * 200_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                                     b'{"body":' + b"[" * 5000 + b"]" * 5000 + b"}", b"\xff\xfe", b"x" * 300_000])
def test_12_deeply_nested_or_huge_messages_are_typed_refusals(payload: bytes) -> None:
    hub = Hub()
    r = hub.request(payload)  # no RecursionError
    assert r.status == "refused" and not r.authenticated and not r.outbound
    assert hub.decide(payload).status == "refused"
    state, r = A.on_mode_set(hub.state, payload, hub=HUB, now_mono_s=0, now_wall_ms=T0_WALL_MS)
    assert r.status == "refused"
    for parse in (lambda: A.parse_challenge(payload, HUB.public), lambda: A.parse_grant(payload, HUB.public)):
        with pytest.raises(AccessError):
            parse()


def test_8_a_member_flooding_mode_changes_is_answered_but_tallied() -> None:
    from access_world import TEEN

    hub = Hub()
    for c in range(1, 51):
        hub.state, r = A.on_mode_set(hub.state, A.make_mode_set(TEEN, HUB.key_id, "home", c, 1, T0_WALL_MS), hub=HUB,
                                     now_mono_s=0, now_wall_ms=T0_WALL_MS)
        assert r.status == "refused" and not r.audit and r.mode is None
        assert A.parse_mode_result(r.outbound[0].payload, HUB.public).reason.endswith("only owners change the mode")
    assert hub.state.tally["member_mode_set"] == 50
