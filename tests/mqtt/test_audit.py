"""The audit log: hash chain, Merkle tree, C2SP signed checkpoints, pins with consistency proofs,
and every kind of tampering."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from access_world import ALICE, HUB, OTHER_HUB

from agent import access as A
from agent.access import merkle
from agent.access.audit import (
    AuditLog,
    Checkpoint,
    leaves_of,
    pin_checkpoint,
    read_entries,
    read_pins,
    verify_log,
)
from agent.clock import FakeClock
from agent.crypto.keys import canonical_json
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
    assert rep.root == log.root == cps[-1].root
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
    assert verify_log(log.path, HUB.public, [cps[2]]).ok  # a clean prefix, by itself
    resigned = Checkpoint.sign(HUB, 3, verify_log(log.path, HUB.public, require_signed=False).root, 0)
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


def test_checkpoint_is_a_c2sp_signed_note(tmp_path: Path) -> None:
    _, cps = _log(tmp_path)
    raw = cps[-1].encode()
    text = raw.decode()
    body, _, sig = text.partition("\n\n")
    origin, size, root, ext = body.split("\n")
    assert origin == f"epa-audit/{HUB.key_id}" and size == "6" and ext.startswith("signed-ms ")
    assert base64.b64decode(root) == bytes.fromhex(cps[-1].root)
    assert sig.startswith(f"\u2014 {origin} ") and sig.endswith("\n")
    # The signature is Ed25519 over the note text, with the signed-note key hash in front.
    blob = base64.b64decode(sig.split(" ")[2])
    assert blob[:4] == merkle.sha256(origin.encode() + b"\n\x01" + bytes(HUB.signing_key.verify_key))[:4]
    HUB.signing_key.verify_key.verify((body + "\n").encode(), blob[4:])
    assert Checkpoint.decode(raw, HUB.public) == cps[-1]
    with pytest.raises(AuditError, match="origin"):
        Checkpoint.decode(raw, OTHER_HUB.public)
    with pytest.raises(AuditError, match="does not verify"):
        Checkpoint.decode(text.replace("\n6\n", "\n7\n", 1), HUB.public)
    # A hub signature made for an access message is not a checkpoint signature (domains differ).
    forged = A.sign_message("status", {"type": "status", "v": A.PROTOCOL_VERSION}, HUB.signing_key, HUB.key_id)
    with pytest.raises(AuditError):
        Checkpoint.decode(forged, HUB.public)
    # The JSON checkpoints of the previous format are refused with a clear message.
    with pytest.raises(AuditError, match="JSON checkpoint"):
        Checkpoint.decode('{"checkpoint":{"size":1},"signature":"x"}\n\n\u2014 x y\n', HUB.public)


def test_merkle_root_matches_rfc6962_vectors() -> None:
    """The RFC 6962 reference tree (certificate-transparency test data)."""
    data = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57", bytes(range(0x60, 0x70))]
    leaves = [merkle.leaf_hash(d) for d in data]
    assert merkle.root(leaves).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert merkle.root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    proof = merkle.consistency_proof(leaves, 3)
    assert [h.hex()[:16] for h in proof] == ["0298d122906dcfc1", "07506a85fd9dd2f1", "fac54203e7cc696c",
                                              "6b47aaf29ee3c2af"]
    for n in range(1, 9):
        for m in range(0, n + 1):
            p = merkle.consistency_proof(leaves[:n], m)
            assert merkle.verify_consistency(m, n, merkle.root(leaves[:m]), merkle.root(leaves[:n]), p)
            if 0 < m < n:
                assert not merkle.verify_consistency(m, n, merkle.leaf_hash(b"x"), merkle.root(leaves[:n]), p)


def test_verify_requires_a_signed_checkpoint(tmp_path: Path) -> None:
    """Finding 9: after one entry is edited, the log re-chained and the checkpoint deleted, verify
    must fail (it used to pass: nothing required a signature)."""
    log, _ = _log(tmp_path)
    log.close()
    entries, _ = read_entries(log.path)
    prev = "0" * 64
    out = []
    for e in entries:
        fields = dict(e.fields)
        if e.seq == 3:
            fields["camera"] = "garden"  # the edit
        from agent.access.audit import entry_hash

        h = entry_hash(e.seq, e.kind, e.wall_ms, fields, prev)
        out.append(canonical_json({"seq": e.seq, "kind": e.kind, "wall_ms": e.wall_ms, "fields": fields,
                                   "prev": prev, "hash": h}) + b"\n")
        prev = h
    log.path.write_bytes(b"".join(out))
    assert not read_entries(log.path)[1]  # the chain alone is perfect again
    (tmp_path / "audit" / "checkpoint").unlink()
    rep = verify_log(log.path, HUB.public, [])
    assert not rep.ok and "no signed checkpoint" in rep.problems[0]


def test_pins_never_go_back_and_detect_forks(tmp_path: Path) -> None:
    log, cps = _log(tmp_path)
    pins = tmp_path / "pins.jsonl"
    proof = log.consistency
    assert pin_checkpoint(pins, cps[2], HUB.public, proof)
    assert pin_checkpoint(pins, cps[4], HUB.public, proof)
    assert not pin_checkpoint(pins, cps[4], HUB.public, proof)  # same one again (retained redelivery)
    with pytest.raises(AuditError, match="rollback"):
        pin_checkpoint(pins, cps[1], HUB.public, proof)  # an old retained message from the broker
    fork = Checkpoint.sign(HUB, 5, "ab" * 32, 0)
    with pytest.raises(AuditError, match="FORK"):
        pin_checkpoint(pins, fork, HUB.public, proof)
    assert [c.size for c in read_pins(pins, HUB.public)] == [3, 5]
    assert (pins.stat().st_mode & 0o777) == 0o600


def test_pin_reports_a_larger_fork_as_a_fork(tmp_path: Path) -> None:
    """Finding 9: a forked checkpoint that is merely LARGER used to be pinned. Now it needs a
    consistency proof that it extends the pin, which a rewritten history cannot give."""
    log, cps = _log(tmp_path)
    log.close()
    pins = tmp_path / "pins.jsonl"
    assert pin_checkpoint(pins, cps[3], HUB.public, log.consistency)  # the owner pinned size 4
    # The hub (or a thief with its key) rewrites history and grows it to 9 entries.
    (tmp_path / "audit" / "log.jsonl").unlink()
    (tmp_path / "audit" / "checkpoint").unlink()
    forked = AuditLog(tmp_path / "audit", FakeClock(), HUB)
    for i in range(9):
        forked.append("boot", {"i": i})
    big = forked.latest_checkpoint()
    assert big is not None and big.size == 9
    with pytest.raises(AuditError, match="FORK"):
        pin_checkpoint(pins, big, HUB.public, forked.consistency)
    with pytest.raises(AuditError, match="no consistency proof"):
        pin_checkpoint(pins, big, HUB.public, None)
    # A genuine extension pins fine, proven by the log that really grew.
    assert [c.size for c in read_pins(pins, HUB.public)] == [4]


def test_proof_from_the_log_file_matches_the_hubs(tmp_path: Path) -> None:
    log, _ = _log(tmp_path, 11)
    entries, _ = read_entries(log.path)
    assert merkle.consistency_proof(leaves_of(entries), 4) == log.consistency(4, 11)


def test_torn_final_line_is_repaired_and_recorded(tmp_path: Path) -> None:
    log, _ = _log(tmp_path, 3)
    log.close()
    with open(log.path, "ab") as f:
        f.write(b'{"fields":{"i":3')  # crash mid-write
    rep = verify_log(log.path, HUB.public, require_signed=False)
    assert any("torn" in p for p in rep.problems)
    log2 = AuditLog(tmp_path / "audit", FakeClock(), HUB)
    assert log2.size == 4
    last = json.loads(_lines(log2)[-1])
    assert last["kind"] == "audit_repair" and last["fields"]["dropped_bytes"] == 16
    cp = log2.latest_checkpoint()
    assert cp is not None and verify_log(log2.path, HUB.public, [cp]).ok


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
    with pytest.raises(AuditError):
        Checkpoint.decode(b"[" * 100_000, HUB.public)
