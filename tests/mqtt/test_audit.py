"""The audit log: hash chain, signed checkpoints, pins, and every kind of tampering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from access_world import ALICE, HUB, OTHER_HUB

from agent import access as A
from agent.access.audit import (
    CHECKPOINT_SIG_DOMAIN,
    AuditLog,
    Checkpoint,
    pin_checkpoint,
    read_pins,
    verify_log,
)
from agent.clock import FakeClock
from agent.crypto.keys import b64url_encode, canonical_json
from agent.errors import AuditError


def _log(tmp_path: Path, n: int = 6) -> tuple[AuditLog, list[Checkpoint]]:
    cps: list[Checkpoint] = []
    log = AuditLog(tmp_path / "audit", FakeClock(), HUB, on_checkpoint=cps.append)
    kinds = ["boot", "clip_created", "clip_uploaded", "access_request", "access_grant", "mode_change",
             "clip_deleted", "tamper"]
    for i in range(n):
        log.append(kinds[i % len(kinds)], {"i": i, "camera": "porch"})
    return log, cps


def test_chain_and_checkpoints_verify(tmp_path: Path) -> None:
    log, cps = _log(tmp_path)
    assert [c.size for c in cps] == [1, 2, 3, 4, 5, 6]
    rep = verify_log(log.path, HUB.public, cps)
    assert rep.ok and rep.entries == 6 and rep.head == log.head and rep.pinned_checked == 6
    # Reopening continues the chain.
    log.close()
    log2 = AuditLog(tmp_path / "audit", FakeClock(), HUB)
    log2.append("boot", {})
    assert verify_log(log2.path, HUB.public, cps).ok and log2.size == 7


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("attack, expect", [
    ("edit", "edited"),
    ("edit_rehash", "does not chain"),
    ("remove", "removed"),
    ("reorder", "seq"),
    ("duplicate", "duplicated"),
    ("truncate", "truncated"),
    ("garbage", "not JSON"),
    ("whitespace", "canonical"),
])
def test_tampering_is_detected(tmp_path: Path, attack: str, expect: str) -> None:
    log, cps = _log(tmp_path)
    pinned = [cps[-1]]
    lines = _lines(log)
    if attack == "edit":
        lines[2] = lines[2].replace(b'"i":2', b'"i":9')
    elif attack == "edit_rehash":
        # Edit entry 3 and recompute its own hash: entry 4 no longer chains to it.
        from agent.access.audit import entry_hash

        d = json.loads(lines[2])
        d["fields"]["camera"] = "garden"
        d["hash"] = entry_hash(d["seq"], d["kind"], d["wall_ms"], d["fields"], d["prev"])
        lines[2] = canonical_json(d) + b"\n"
    elif attack == "remove":
        del lines[3]
    elif attack == "reorder":
        lines[2], lines[3] = lines[3], lines[2]
    elif attack == "duplicate":
        lines.insert(3, lines[2])
    elif attack == "truncate":
        lines = lines[:4]
    elif attack == "garbage":
        lines[1] = b"{not json\n"
    elif attack == "whitespace":
        lines[1] = json.dumps(json.loads(lines[1]), indent=1).replace("\n", " ").encode() + b"\n"
    log.path.write_bytes(b"".join(lines))
    rep = verify_log(log.path, HUB.public, pinned)
    assert not rep.ok
    assert any(expect in p for p in rep.problems), rep.problems


def test_truncation_undetectable_without_pin_but_caught_with_it(tmp_path: Path) -> None:
    """Whoever holds the hub key can cut the log and re-sign: only an owner's pin catches it."""
    log, cps = _log(tmp_path)
    log.path.write_bytes(b"".join(_lines(log)[:3]))
    assert verify_log(log.path, HUB.public, []).ok  # a clean prefix, by itself
    resigned = Checkpoint.sign(HUB, 3, verify_log(log.path, HUB.public).head, 0)
    assert verify_log(log.path, HUB.public, [resigned]).ok
    assert not verify_log(log.path, HUB.public, [cps[4]]).ok  # the owner pinned size 5 earlier


def test_rewritten_history_caught_by_pin(tmp_path: Path) -> None:
    log, cps = _log(tmp_path)
    log.close()
    # Rebuild a different log of the same length from scratch, fully consistent by itself.
    (tmp_path / "audit" / "log.jsonl").unlink()
    log2 = AuditLog(tmp_path / "audit", FakeClock(), HUB)
    for i in range(6):
        log2.append("boot", {"i": i})
    rep = verify_log(log2.path, HUB.public, [cps[3]])
    assert not rep.ok and "diverges" in rep.problems[0]


def test_checkpoint_signature_domain_and_hub(tmp_path: Path) -> None:
    _, cps = _log(tmp_path)
    raw = cps[-1].encode()
    assert Checkpoint.decode(raw, HUB.public) == cps[-1]
    with pytest.raises(AuditError, match="expected"):
        Checkpoint.decode(raw, OTHER_HUB.public)
    doc = json.loads(raw)
    doc["checkpoint"]["size"] = 99
    with pytest.raises(AuditError, match="does not verify"):
        Checkpoint.decode(canonical_json(doc), HUB.public)
    # A hub signature made for an access message is not a checkpoint signature (domains differ).
    body = json.loads(raw)["checkpoint"]
    sig = HUB.signing_key.sign(A.sig_domain("grant") + canonical_json(body)).signature
    with pytest.raises(AuditError, match="does not verify"):
        Checkpoint.decode(canonical_json({"checkpoint": body, "signature": b64url_encode(sig)}), HUB.public)
    assert CHECKPOINT_SIG_DOMAIN.endswith(b"\x00")


def test_pins_never_go_back_and_detect_forks(tmp_path: Path) -> None:
    _, cps = _log(tmp_path)
    pins = tmp_path / "pins.jsonl"
    assert pin_checkpoint(pins, cps[2], HUB.public)
    assert pin_checkpoint(pins, cps[4], HUB.public)
    assert not pin_checkpoint(pins, cps[4], HUB.public)  # same one again (retained redelivery)
    with pytest.raises(AuditError, match="rollback"):
        pin_checkpoint(pins, cps[1], HUB.public)  # an old retained message from the broker
    fork = Checkpoint.sign(HUB, 5, "ab" * 32, 0)
    with pytest.raises(AuditError, match="forked"):
        pin_checkpoint(pins, fork, HUB.public)
    assert [c.size for c in read_pins(pins, HUB.public)] == [3, 5]


def test_torn_final_line_is_repaired_and_recorded(tmp_path: Path) -> None:
    log, _ = _log(tmp_path, 3)
    log.close()
    with open(log.path, "ab") as f:
        f.write(b'{"fields":{"i":3')  # crash mid-write
    rep = verify_log(log.path, HUB.public)
    assert any("torn" in p for p in rep.problems)
    log2 = AuditLog(tmp_path / "audit", FakeClock(), HUB)
    assert log2.size == 4
    last = json.loads(_lines(log2)[-1])
    assert last["kind"] == "audit_repair" and last["fields"]["dropped_bytes"] == 16
    assert verify_log(log2.path, HUB.public).ok


def test_unknown_kind_and_non_json_fields_refused(tmp_path: Path) -> None:
    log, _ = _log(tmp_path, 1)
    with pytest.raises(AuditError, match="unknown audit kind"):
        log.append("coffee", {})
    with pytest.raises(AuditError, match="not JSON"):
        log.append("boot", {"key": b"\x00" * 32})


def test_access_message_is_not_a_checkpoint(tmp_path: Path) -> None:
    mode = A.make_mode_set(ALICE, HUB.key_id, "away", 1, 1, 0)
    with pytest.raises(AuditError):
        Checkpoint.decode(mode, HUB.public)
