"""Owner-signed deletion requests in the pure access state machine: who may delete, replay, receipts."""

from __future__ import annotations

from pathlib import Path

import pytest
from access_world import ALICE, BOB, HUB, MALLORY, ROSTER_V1, T0_WALL_MS, TEEN
from test_access_machine import Hub

from agent import access as A
from agent.crypto.keys import DeviceIdentity
from agent.errors import AccessError

WINDOW = A.Scope.make(["porch"], [], T0_WALL_MS - 7_200_000 + 1_800_000, T0_WALL_MS)


def _req(who: DeviceIdentity, counter: int, scope: A.Scope = WINDOW, rv: int = 1, n: int = 1) -> bytes:
    return A.make_delete_request(who, HUB.key_id, bytes([n]) * 16, scope, counter, rv, T0_WALL_MS)


def _run(hub: Hub, data: bytes) -> tuple[A.Result, A.DeleteOrder | None]:
    hub.state, r, order = A.on_delete_request(hub.state, data, hub=HUB, now_mono_s=0, now_wall_ms=T0_WALL_MS,
                                              known_cameras=frozenset({"porch"}))
    return r, order


def test_an_owner_deletion_is_recorded_before_it_is_carried_out() -> None:
    hub = Hub()
    r, order = _run(hub, _req(ALICE, 5))
    assert order is not None and order.device == ALICE.key_id and order.scope == WINDOW
    assert r.status == "delete" and [k for k, _ in r.audit] == ["delete_request"] and not r.outbound
    assert hub.state.counters[ALICE.key_id] == 5


@pytest.mark.parametrize("case", ["forged", "replayed", "stale", "member", "unknown", "empty", "camera"])
def test_bad_delete_requests_are_refused(case: str) -> None:
    hub = Hub()
    assert _run(hub, _req(ALICE, 5))[1] is not None
    data = {
        "forged": _req(ALICE, 9)[:-20] + b'AAAAAAAAAAAAAAAAAAA"}',
        "replayed": _req(ALICE, 5, n=2),
        "stale": _req(BOB, 9, rv=7),
        "member": _req(TEEN, 9),
        "unknown": _req(MALLORY, 9),
        "empty": None,
        "camera": _req(BOB, 9, A.Scope.make(["bedroom"], [], 0, T0_WALL_MS)),
    }[case]
    if data is None:
        with pytest.raises(AccessError):
            _req(BOB, 9, A.Scope.make([], [], 0, 1))
        return
    r, order = _run(hub, data)
    assert order is None and r.status == "refused"
    if case in ("forged", "unknown"):
        assert not r.authenticated and not r.outbound and not r.audit  # no amplification...
        assert hub.state.tally["unauthenticated_delete"] == 1  # ...but on record in the refusal summary
    else:
        assert r.audit and r.audit[0][0] == "access_refused"
        receipt = A.parse_delete_receipt(r.outbound[0].payload, HUB.public)
        assert receipt.status == "refused" and receipt.reason
        assert not r.outbound[0].retain  # never replaces a real receipt retained under the same id
    # The exact same accepted message again: a duplicate, nothing deleted twice.
    r, order = _run(hub, _req(ALICE, 5))
    assert order is None and r.status == "duplicate"


def test_the_receipt_says_which_parts_are_storage_only() -> None:
    scope = A.Scope.make(["porch"], [], 1_800_000, 5 * 3_600_000 + 60_000)
    assert A.storage_only_ranges(scope) == [[1_800_000, 3_600_000], [5 * 3_600_000, 5 * 3_600_000 + 60_000]]
    msg = A.delete_receipt_message(HUB, "ab" * 16, ALICE.key_id, "deleted", "", scope,
                                   [{"clip": "cd" * 16, "camera": "porch", "start_ms": 1, "end_ms": 2,
                                     "places": ["outbox", "nas"]}], [], T0_WALL_MS)
    rc = A.parse_delete_receipt(msg, HUB.public)
    assert rc.deleted[0]["places"] == ["outbox", "nas"] and len(rc.storage_only) == 2
    rid, device, got = A.parse_delete_request(_req(ALICE, 3), HUB.key_id, ROSTER_V1)
    assert device == ALICE.key_id and got == WINDOW
    with pytest.raises(AccessError):
        A.parse_delete_request(_req(TEEN, 3), HUB.key_id, ROSTER_V1)


def test_verify_explains_a_gap_by_a_signed_receipt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`verify --receipt`: a gap the hub signed for as an owner's deletion is DELETED, not MISSING;
    a forged receipt counts for nothing."""
    from access_world import make_clip

    from agent.cli.main import main
    from agent.crypto.envelope import verify_clip

    clips = [make_clip(n) for n in (1, 2, 3)]  # sequence numbers 1, 2, 3 of one stream
    infos = [verify_clip(c.data, HUB.public) for c in clips]
    d = tmp_path / "nas"
    d.mkdir()
    for c in (clips[0], clips[2]):
        (d / f"{c.clip_id}.epaclip").write_bytes(c.data)
    hubpub = tmp_path / "hub.pub"
    hubpub.write_text(HUB.public.encode() + "\n")
    entry = {"clip": clips[1].clip_id, "camera": "porch", "stream": infos[1].header.stream_id.hex(),
             "seq": infos[1].header.seq, "start_ms": 0, "end_ms": 1, "places": ["nas"]}
    receipt = tmp_path / "receipt.json"
    receipt.write_bytes(A.delete_receipt_message(HUB, "ab" * 16, ALICE.key_id, "deleted", "", WINDOW, [entry], [],
                                                 T0_WALL_MS))
    assert main(["verify", str(d), "--hub", str(hubpub)]) != 0  # the gap, unexplained
    capsys.readouterr()
    assert main(["verify", str(d), "--hub", str(hubpub), "--receipt", str(receipt)]) == 0
    assert "DELETED" in capsys.readouterr().out
    forged = tmp_path / "forged.json"
    forged.write_bytes(receipt.read_bytes().replace(b'"status":"deleted"', b'"status":"refused"'))
    assert main(["verify", str(d), "--hub", str(hubpub), "--receipt", str(forged)]) != 0


def test_the_retained_copy_after_a_restart_is_a_duplicate_not_a_refusal() -> None:
    """Delete requests stay retained (offline devices shred from them). After a hub restart the
    broker hands the old request over again: it must not be refused, audited again, or answered
    with a receipt that would replace the real one."""
    hub = Hub()
    assert _run(hub, _req(ALICE, 5))[1] is not None
    restarted = Hub()
    restarted.state = A.new_state(HUB.key_id, ROSTER_V1, {ALICE.key_id: 5})  # counters from disk, no memory
    restarted.state, r, order = A.on_delete_request(restarted.state, _req(ALICE, 5), hub=HUB, now_mono_s=0,
                                                    now_wall_ms=T0_WALL_MS, retained=True)
    assert order is None and r.status == "duplicate" and not r.audit and not r.outbound
    # A live (not retained) replay is still a refusal on record.
    restarted.state, r, order = A.on_delete_request(restarted.state, _req(ALICE, 5), hub=HUB, now_mono_s=0,
                                                    now_wall_ms=T0_WALL_MS)
    assert order is None and r.status == "refused" and r.audit
