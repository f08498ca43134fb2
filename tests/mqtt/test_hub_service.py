"""HubAccessService without a broker: persistence of counters, fail-closed audit, stale state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from access_world import ALICE, HUB, PLUMBER, ROSTER_V1, ROSTER_V2, T0_WALL_MS, request

from agent import access as A
from agent.access.audit import AuditLog
from agent.access.state import Counters, save_state
from agent.clock import FakeClock
from agent.errors import AccessError
from agent.mqtt.client import Message, MqttClient
from agent.mqtt.hub import HubAccessService
from agent.topics import Topics

T = Topics("epa-unit")


class RecordingClient(MqttClient):
    """Never connects; records what would be published."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 1, client_id="unit", topics=T)
        self.sent: list[tuple[str, bytes, bool]] = []

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> Any:
        self.sent.append((topic, payload if isinstance(payload, bytes) else payload.encode(), retain))
        return None


def _service(tmp_path: Path, roster: Any = ROSTER_V1, **kw: Any) -> tuple[HubAccessService, RecordingClient, AuditLog]:
    c = RecordingClient()
    clock = FakeClock()
    audit = AuditLog(tmp_path / "audit", clock, HUB)
    roster_box = [roster]
    state = tmp_path / "state" / "access-state.json"
    if not state.exists():  # what installing the first roster does
        save_state(state, Counters())
    s = HubAccessService(c, HUB, lambda: roster_box[0], audit, tmp_path / "state", clock=clock,
                         random_bytes=lambda n: bytes([len(c.sent) % 256]) * n, **kw)
    s.roster_box = roster_box  # type: ignore[attr-defined]
    return s, c, audit


def _msg(topic: str, payload: bytes) -> Message:
    return Message(topic, payload, 1, False, False)


def _challenge(c: RecordingClient) -> A.Challenge:
    raw = next(p for t, p, _ in reversed(c.sent) if "/access/challenge/" in t and p)
    return A.parse_challenge(raw, HUB.public)


def test_counters_survive_a_restart(tmp_path: Path) -> None:
    s1, c1, a1 = _service(tmp_path)
    s1._on_request(_msg(T.access_request("x"), request(PLUMBER, n=1)))
    ch = _challenge(c1)
    s1._on_decision(_msg(T.access_decision("x"), A.make_decision(ALICE, ch, "approve", 10, 1, T0_WALL_MS)))
    assert s1.results[-1].status == "granted"
    late = A.make_decision(ALICE, ch, "deny", 9, 1, T0_WALL_MS)  # signed earlier, replayed later
    a1.close()
    s2, c2, _ = _service(tmp_path)
    s2._on_request(_msg(T.access_request("y"), request(PLUMBER, n=2)))
    ch2 = _challenge(c2)
    s2._on_decision(_msg(T.access_decision("y"), A.make_decision(ALICE, ch2, "approve", 10, 1, T0_WALL_MS)))
    assert s2.results[-1].status == "refused" and "counter 10" in s2.results[-1].reason
    s2._on_decision(_msg(T.access_decision("x"), late))
    assert s2.results[-1].status == "refused"
    s2._on_decision(_msg(T.access_decision("y"), A.make_decision(ALICE, ch2, "approve", 11, 1, T0_WALL_MS)))
    assert s2.results[-1].status == "granted"


def test_unreadable_counter_state_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "access-state.json").write_text("{garbage")
    with pytest.raises(AccessError, match="refusing to start"):
        _service(tmp_path)


def test_no_grant_is_published_if_the_audit_log_cannot_record_it(tmp_path: Path) -> None:
    s, c, audit = _service(tmp_path)
    s._on_request(_msg(T.access_request("x"), request(PLUMBER, n=1)))
    ch = _challenge(c)
    audit.close()  # the audit file is gone (disk failure): appends now fail
    n = len(c.sent)
    s._on_decision(_msg(T.access_decision("x"), A.make_decision(ALICE, ch, "approve", 1, 1, T0_WALL_MS)))
    assert not any("/access/grant/" in t for t, _, _ in c.sent[n:])


def test_roster_update_applies_and_revokes(tmp_path: Path) -> None:
    from access_world import BOB

    s, c, _ = _service(tmp_path)
    s._on_request(_msg(T.access_request("x"), request(PLUMBER, n=1)))
    ch = _challenge(c)
    s.roster_box[0] = ROSTER_V2  # type: ignore[attr-defined]  # the owner installs version 2 (Bob revoked)
    s._on_decision(_msg(T.access_decision("x"), A.make_decision(BOB, ch, "approve", 1, 1, T0_WALL_MS)))
    assert "revoked" in s.results[-1].reason
    s.roster_box[0] = ROSTER_V1  # type: ignore[attr-defined]  # a rollback attempt is ignored
    s._on_decision(_msg(T.access_decision("x"), A.make_decision(BOB, ch, "approve", 2, 1, T0_WALL_MS)))
    assert "revoked" in s.results[-1].reason and s.state.roster.version == 2


def test_republish_after_reconnect_and_stale_challenges_cleared(tmp_path: Path) -> None:
    s, c, _ = _service(tmp_path)
    s._on_request(_msg(T.access_request("x"), request(PLUMBER, n=1)))
    ch = _challenge(c)
    c.sent.clear()
    s.republish()
    topics = [t for t, _, r in c.sent if r]
    assert T.access_challenge(ch.challenge_id) in topics and T.audit_checkpoint in topics
    c.sent.clear()
    s._on_retained_challenge(_msg(T.access_challenge("ab" * 32), b"old"))
    s._on_retained_challenge(_msg(T.access_challenge(ch.challenge_id), b"current"))
    assert c.sent == [(T.access_challenge("ab" * 32), b"", True)]


def test_5_a_mode_change_is_recorded_before_it_is_applied(tmp_path: Path) -> None:
    """Finding 5. Old code applied the mode first, then audited and stored the counter: with the
    audit log failing the mode still changed, and the message replayed after a restart."""
    seen_at_apply: list[tuple[str, list[str], dict[str, int]]] = []

    def apply(mode: str, by: str) -> None:
        log = (tmp_path / "audit" / "log.jsonl").read_text().splitlines()
        state = json.loads((tmp_path / "state" / "access-state.json").read_text())
        seen_at_apply.append((mode, [json.loads(x)["kind"] for x in log], state["counters"]))

    s, c, audit = _service(tmp_path, on_mode=apply)
    s._on_mode_set(_msg(T.mode_set, A.make_mode_set(ALICE, HUB.key_id, "away", 5, 1, T0_WALL_MS)))
    assert seen_at_apply == [("away", ["mode_change"], {ALICE.key_id: 5})]  # recorded, THEN applied
    # The audit log fails: the change is not applied and nothing says it was.
    audit.close()
    n = len(c.sent)
    s._on_mode_set(_msg(T.mode_set, A.make_mode_set(ALICE, HUB.key_id, "home", 6, 1, T0_WALL_MS)))
    assert len(seen_at_apply) == 1
    assert not any(t == T.mode_state for t, _, _ in c.sent[n:])
    assert s.results[-1].status == "refused" and "not recorded" in s.results[-1].reason
    # After a restart, the applied message stays refused (its counter was stored before applying).
    s2, _, _ = _service(tmp_path, on_mode=apply)
    s2._on_mode_set(_msg(T.mode_set, A.make_mode_set(ALICE, HUB.key_id, "away", 5, 1, T0_WALL_MS)))
    assert len(seen_at_apply) == 1 and s2.results[-1].status == "refused"


def test_6_the_switch_refusal_reaches_the_owner_signed(tmp_path: Path) -> None:
    applied: list[str] = []
    s, c, _ = _service(tmp_path, on_mode=lambda m, by: applied.append(m), switch_on=lambda: True)
    s._on_mode_set(_msg(T.mode_set, A.make_mode_set(ALICE, HUB.key_id, "home", 5, 1, T0_WALL_MS)))
    assert applied == []
    res = [A.parse_mode_result(p, HUB.public) for t, p, _ in c.sent if t == T.mode_result(ALICE.key_id)]
    assert res and res[-1].status == "refused" and "privacy switch" in res[-1].reason
