"""The access flow over a real Mosquitto: hub service, owner device, requester, a spy on `#`."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from access_world import (
    ALICE,
    BOB,
    CLIP_INDEX,
    HUB,
    MALLORY,
    PLUMBER,
    ROSTER_V1,
    T0_WALL_MS,
    VENDOR,
    Clip,
    make_clip,
    request,
    rewrap,
)
from conftest import PREFIX, Connect
from mosquitto import Broker
from mqtt_util import Collector

from agent import access as A
from agent.access.audit import AuditLog, Checkpoint, pin_checkpoint, read_pins, verify_log
from agent.access.state import init_state
from agent.clock import FakeClock
from agent.crypto.envelope import Stanza, decrypt_verified, unwrap_key, verify_clip
from agent.crypto.keys import b64url_encode
from agent.errors import AccessError, MqttError
from agent.mqtt.client import Message, MqttClient
from agent.mqtt.hub import HubAccessService
from agent.topics import Topics

pytestmark = pytest.mark.mqtt
T = Topics(PREFIX)


@dataclasses.dataclass
class Flow:
    broker: Broker
    clock: FakeClock
    service: HubAccessService
    hub_client: MqttClient
    owner: MqttClient
    requester: MqttClient
    spy: Collector
    audit: AuditLog
    data: Path
    modes: list[tuple[str, str]]
    counter: int = 0

    def next_counter(self) -> int:
        self.counter += 1
        return self.counter

    def fetch_challenge(self, request_id: str, timeout_s: float = 10) -> A.Challenge:
        """The open challenge for `request_id` (other retained challenges may be on the broker)."""
        col = Collector(self.owner, T.access_challenge_filter)

        def mine(ms: list[Message]) -> list[A.Challenge]:
            out = []
            for m in ms:
                if m.payload:
                    try:
                        ch = A.parse_challenge(m.payload, HUB.public)
                    except AccessError:
                        continue
                    if ch.request.request_id == request_id:
                        out.append(ch)
            return out

        assert col.wait_for(lambda ms: bool(mine(ms)), timeout_s), "no challenge arrived"
        return mine(col.messages)[-1]


def _start_flow(b: Broker, connect: Connect, tmp_path: Path, tag: str) -> Flow:
    clock = FakeClock()
    data = tmp_path / "hub-data"
    spy_client = connect(b, "spy", client_id=f"spy-{tag}")
    spy = Collector(spy_client, "#")
    hub_client = connect(b, "hub", client_id=f"hub-{tag}", availability=True, session_expiry_s=600)
    modes: list[tuple[str, str]] = []
    audit_holder: list[HubAccessService] = []
    audit = AuditLog(data / "audit", clock, HUB, on_checkpoint=lambda cp: audit_holder[0].publish_checkpoint(cp)
                     if audit_holder else None)
    init_state(data)  # what installing the first roster does
    service = HubAccessService(
        hub_client, HUB, lambda: ROSTER_V1, audit, data / "mqtt",
        policy=A.AccessPolicy(challenge_ttl_s=300, grant_ttl_s=3600), clock=clock,
        known_cameras=frozenset({"porch", "garden"}), on_mode=lambda m, by: modes.append((m, by)),
        clip_lookup=lambda ids: {c: CLIP_INDEX[c] for c in ids if c in CLIP_INDEX},
    )
    audit_holder.append(service)
    service.start()
    owner = connect(b, "owner", client_id=f"owner-{tag}")
    requester = connect(b, "requester", client_id=f"req-{tag}")
    return Flow(b, clock, service, hub_client, owner, requester, spy, audit, data, modes)


@pytest.fixture
def flow(broker: Broker, connect: Connect, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Flow]:
    f = _start_flow(broker, connect, tmp_path, request.node.name[-40:].replace("[", "_").replace("]", "_"))
    yield f
    f.audit.close()


def _grants(col: Collector) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in col.messages if m.payload]


def test_end_to_end_grant_and_nothing_secret_on_the_broker(flow: Flow) -> None:
    clip: Clip = make_clip(3)
    scope = A.Scope.make(["porch"], [clip.clip_id], T0_WALL_MS - 3_600_000, T0_WALL_MS)
    req = request(PLUMBER, "contractor", scope=scope)
    rid = json.loads(req)["body"]["request_id"]
    grant_col = Collector(flow.requester, T.access_grant(rid))
    flow.requester.publish_wait(T.access_request(rid), req)

    ch = flow.fetch_challenge(rid)
    assert ch.request.request_id == rid and ch.approvals_needed == 1
    key = rewrap(ALICE, clip, PLUMBER)
    d = A.make_decision(ALICE, ch, "approve", flow.next_counter(), ROSTER_V1.version, T0_WALL_MS, scope,
                        A.release_keys(ch, (key,)))
    flow.owner.publish_wait(T.access_decision(ch.challenge_id), d)

    assert grant_col.wait_count(1)
    g = A.parse_grant(grant_col.messages[0].payload, HUB.public)
    info = verify_clip(clip.data, HUB.public)
    k = unwrap_key(PLUMBER, dataclasses.replace(info.header, stanzas=(Stanza(PLUMBER.key_id, g.keys[0].sealed),)))
    out = bytearray()
    decrypt_verified(clip.data, info, k, out.extend)
    assert bytes(out) == clip.payload

    # The retained challenge was cleared, and a checkpoint is retained.
    assert flow.spy.wait_for(lambda ms: any(m.topic == T.access_challenge(ch.challenge_id) and not m.payload
                                            for m in ms))
    assert flow.spy.wait_for(lambda ms: any(m.topic == T.audit_checkpoint for m in ms))
    kinds = [json.loads(line)["kind"] for line in (flow.data / "audit" / "log.jsonl").read_text().splitlines()]
    assert kinds == ["access_request", "access_challenge", "access_approval", "access_grant"]

    # Never on the broker: the clip key, any secret key, any video or image bytes.
    secrets = [k, bytes(HUB.signing_key), bytes(ALICE.signing_key), bytes(ALICE.box_secret),
               bytes(PLUMBER.signing_key), bytes(PLUMBER.box_secret)]
    forms = []
    for s in secrets:
        forms += [s, s.hex().encode(), b64url_encode(s).encode(), base64.b64encode(s)]
    payloads = flow.spy.payloads()
    assert len(payloads) >= 6
    for p in payloads:
        for f in forms:
            assert f not in p
        for magic in (b"ftyp", b"mdat", b"\xff\xd8\xff", b"\x1aE\xdf\xa3", b"epa1sec:", b"epa1hubsec:"):
            assert magic not in p


def test_qos1_redelivered_approval_gives_one_grant(flow: Flow) -> None:
    req = request(PLUMBER, "contractor", n=4)
    rid = json.loads(req)["body"]["request_id"]
    grant_col = Collector(flow.requester, T.access_grant(rid))
    flow.requester.publish_wait(T.access_request(rid), req)
    flow.requester.publish_wait(T.access_request(rid), req)  # the request redelivered too
    ch = flow.fetch_challenge(rid)
    d = A.make_decision(ALICE, ch, "approve", flow.next_counter(), 1, T0_WALL_MS)
    for _ in range(3):  # what a QoS 1 sender does when it misses the PUBACK
        flow.owner.publish_wait(T.access_decision(ch.challenge_id), d)
    assert flow.service.wait_result(lambda r: r.status == "duplicate" and r.challenge_id == ch.challenge_id
                                    and "decision" in r.reason, 10)
    assert grant_col.wait_count(1)
    # All three copies were handled (one grant, then duplicates), and one grant went out. Wait for
    # every result the five messages give (1 challenge, 1 grant, 3 duplicates): the copies are
    # handled in order but the last may land after the first duplicate is seen.
    assert flow.service.wait_result(
        lambda r: [x.status for x in flow.service.results].count("duplicate") >= 3, 10)
    statuses = [r.status for r in flow.service.results]
    assert statuses.count("granted") == 1 and statuses.count("challenged") == 1
    assert statuses.count("duplicate") == 3  # 1 request + 2 decisions redelivered
    assert len(_grants(grant_col)) == 1


def test_expired_approval_refused_over_mqtt_clock_back_no_revive(flow: Flow) -> None:
    req = request(PLUMBER, "contractor", n=5)
    rid = json.loads(req)["body"]["request_id"]
    status = Collector(flow.owner, T.access_status(rid))
    flow.requester.publish_wait(T.access_request(rid), req)
    ch = flow.fetch_challenge(rid)
    flow.clock.advance(301)  # "5 minutes later", on the injected clock
    r = flow.service.tick()
    assert r.status == "expired"
    flow.clock.mono_s -= 3600
    flow.clock.wall_s -= 3600
    d = A.make_decision(ALICE, ch, "approve", flow.next_counter(), 1, T0_WALL_MS)
    flow.owner.publish_wait(T.access_decision(ch.challenge_id), d)
    res = flow.service.wait_result(lambda r: r.status == "refused" and r.challenge_id == ch.challenge_id, 10)
    assert res is not None and "closed (expired)" in res.reason
    assert status.wait_for(lambda ms: any(json.loads(m.payload)["body"]["status"] == "refused" for m in ms))
    assert not any(r.status == "granted" for r in flow.service.results)


def test_forged_messages_refused_by_acl_and_by_signature(flow: Flow, connect: Connect) -> None:
    req = request(VENDOR, "vendor", n=6)
    rid = json.loads(req)["body"]["request_id"]
    flow.requester.publish_wait(T.access_request(rid), req)
    ch = flow.fetch_challenge(rid)
    good = A.make_decision(ALICE, ch, "approve", flow.next_counter(), 1, T0_WALL_MS)
    # 1. Not authenticated: the broker does not even let it connect.
    anon = MqttClient(flow.broker.host, flow.broker.port, client_id="anon-forger", topics=T,
                      ca_file=flow.broker.ca_file, reconnect_min_s=0.05, reconnect_max_s=0.1)
    with pytest.raises(MqttError):
        anon.start(wait_s=2.0)
    # 2. Authenticated but without write access: the broker refuses the publish (ACL).
    intruder = connect(flow.broker, "intruder")
    with pytest.raises(MqttError, match="refused"):
        intruder.publish_wait(T.access_decision(ch.challenge_id), good)
    with pytest.raises(MqttError, match="refused"):
        intruder.publish_wait(T.mode_set, A.make_mode_set(ALICE, HUB.key_id, "away", 999, 1, T0_WALL_MS))
    with pytest.raises(MqttError, match="refused"):  # a requester cannot fake a grant
        flow.requester.publish_wait(T.access_grant(rid), b"{}")
    # 3. A client that may publish decisions but signs with a key not in the roster.
    body = dict(json.loads(A.make_decision(MALLORY, ch, "approve", 1, 1, T0_WALL_MS))["body"])
    forged = A.sign_message("decision", body, MALLORY.signing_key, ALICE.key_id)
    flow.owner.publish_wait(T.access_decision(ch.challenge_id), forged)
    flow.owner.publish_wait(T.access_decision(ch.challenge_id), A.make_decision(MALLORY, ch, "approve", 1, 1, 0))
    assert flow.service.wait_result(lambda r: "not in the roster" in r.reason, 10)
    assert any("signature does not verify" in r.reason for r in flow.service.results)
    assert flow.service.unauthenticated >= 2
    # Two real owners are needed for a vendor; only Alice approved (the intruder's copy never arrived).
    flow.owner.publish_wait(T.access_decision(ch.challenge_id), good)
    assert flow.service.wait_result(lambda r: r.status == "approved", 10)
    d_bob = A.make_decision(BOB, ch, "approve", 1, 1, T0_WALL_MS)
    flow.owner.publish_wait(T.access_decision(ch.challenge_id), d_bob)
    assert flow.service.wait_result(lambda r: r.status == "granted", 10)
    assert [r.status for r in flow.service.results].count("granted") == 1


def test_broker_restart_in_the_middle_of_a_flow(own_broker: Broker, connect: Connect, tmp_path: Path) -> None:
    f = _start_flow(own_broker, connect, tmp_path, "restart")
    req = request(PLUMBER, "contractor", n=7)
    rid = json.loads(req)["body"]["request_id"]
    f.requester.publish_wait(T.access_request(rid), req)
    ch = f.fetch_challenge(rid)
    before = {c.client_id: c.connect_count for c in (f.hub_client, f.owner, f.requester)}
    own_broker.restart()
    for c in (f.hub_client, f.owner, f.requester):  # each reconnects with backoff on its own
        assert c.wait_reconnected(before[c.client_id], 10)
    f.hub_client.sync()  # the broker has processed the hub's re-subscriptions
    grant_col = Collector(f.requester, T.access_grant(rid))
    # The hub re-published the open challenge after reconnecting (the broker may have lost it).
    assert f.fetch_challenge(rid).challenge_id == ch.challenge_id
    d = A.make_decision(ALICE, ch, "approve", f.next_counter(), 1, T0_WALL_MS)
    f.owner.publish_wait(T.access_decision(ch.challenge_id), d)
    assert grant_col.wait_count(1, 5), "\n".join(own_broker.log[-40:])
    assert A.parse_grant(grant_col.messages[0].payload, HUB.public).request_id == rid
    f.audit.close()


def _signed_mode(payload: bytes) -> str | None:
    try:
        return A.parse_mode_state(payload, HUB.public).mode
    except AccessError:
        return None  # unsigned, or another test's hub


def test_signed_mode_change_over_mqtt(flow: Flow) -> None:
    state = Collector(flow.owner, T.mode_state)
    flow.owner.publish_wait(T.mode_set, A.make_mode_set(ALICE, HUB.key_id, "away", flow.next_counter(), 1,
                                                        T0_WALL_MS))
    assert flow.service.wait_result(lambda r: r.status == "mode_set", 10)
    assert state.wait_for(lambda ms: any(_signed_mode(m.payload) == "away" and not m.retain for m in ms))
    assert flow.modes == [("away", f"owner device {ALICE.key_id}")]
    # Unsigned, member-signed or replayed changes do nothing.
    flow.owner.publish_wait(T.mode_set, b"privacy")
    flow.owner.publish_wait(T.mode_set, A.make_mode_set(MALLORY, HUB.key_id, "home", 5, 1, T0_WALL_MS))
    flow.owner.publish_wait(T.mode_set, A.make_mode_set(ALICE, HUB.key_id, "home", 1, 1, T0_WALL_MS))
    assert flow.service.wait_result(lambda r: "replayed" in r.reason, 10)
    assert flow.modes == [("away", f"owner device {ALICE.key_id}")]
    kinds = [json.loads(line)["kind"] for line in (flow.data / "audit" / "log.jsonl").read_text().splitlines()]
    assert "mode_change" in kinds


def test_pinned_checkpoint_from_broker_catches_truncation(flow: Flow, tmp_path: Path) -> None:
    for i in range(3):
        flow.audit.append("clip_created", {"clip_id": f"{i:032x}", "camera": "porch"})
    col = Collector(flow.owner, T.audit_checkpoint)
    assert col.wait_for(lambda ms: bool(ms) and Checkpoint.decode(ms[-1].payload, HUB.public).size == 3)
    cp = Checkpoint.decode(col.messages[-1].payload, HUB.public)
    pins = tmp_path / "owner" / "pins.jsonl"
    assert pin_checkpoint(pins, cp, HUB.public)
    log_path = flow.data / "audit" / "log.jsonl"
    assert verify_log(log_path, HUB.public, read_pins(pins, HUB.public)).ok
    # Whoever holds the hub key truncates the log and re-signs a checkpoint for the short log.
    lines = log_path.read_bytes().splitlines(keepends=True)
    log_path.write_bytes(b"".join(lines[:2]))
    rep = verify_log(log_path, HUB.public, read_pins(pins, HUB.public))
    assert not rep.ok and "truncated" in rep.problems[0]


def test_real_qos1_redelivery_after_a_lost_puback(flow: Flow) -> None:
    """The hub's connection dies after it received a decision but before its PUBACK went out:
    the broker redelivers it (DUP set) on the resumed session. Exactly one grant."""
    req = request(PLUMBER, "contractor", n=8)
    rid = json.loads(req)["body"]["request_id"]
    grant_col = Collector(flow.requester, T.access_grant(rid))
    flow.requester.publish_wait(T.access_request(rid), req)
    ch = flow.fetch_challenge(rid)
    paho = flow.hub_client._c
    orig = paho.on_message
    seen: list[bool] = []

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        orig(client, userdata, msg)  # type: ignore[misc]
        if "/access/decision/" in msg.topic:
            seen.append(bool(msg.dup))
            if len(seen) == 1:
                paho._sock.close()  # type: ignore[union-attr]  # dies before paho sends the PUBACK

    paho.on_message = on_message
    before = flow.hub_client.connect_count
    d = A.make_decision(ALICE, ch, "approve", flow.next_counter(), 1, T0_WALL_MS)
    flow.owner.publish_wait(T.access_decision(ch.challenge_id), d)
    assert flow.hub_client.wait_reconnected(before, 10)
    assert flow.service.wait_result(lambda r: r.status == "duplicate" and r.challenge_id == ch.challenge_id, 10)
    assert seen == [False, True]  # the second copy is the broker's redelivery
    assert grant_col.wait_count(1)
    assert [r.status for r in flow.service.results].count("granted") == 1
    assert len(_grants(grant_col)) == 1
