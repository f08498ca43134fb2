"""The page's status panels: the audit verdict is `audit verify --data`'s; challenges are listed, never approvable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Hub

from agent import access as A
from agent.access.recorder import open_hub_audit
from agent.cli.main import main
from agent.clock import FakeClock
from agent.crypto.keys import DeviceIdentity, HubIdentity, RequesterEntry, RosterEntry, sign_roster
from agent.web.status import AuditStatus, audit_verdict, pending_challenges


def _hub_with_log(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    assert main(["keys", "init", "--data", str(data)]) == 0
    log = open_hub_audit(data, FakeClock())
    assert log is not None
    for i in range(4):
        log.append("boot", {"i": i})
    log.checkpoint()
    log.close()
    return data


def test_the_audit_verdict_is_audit_verifys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _hub_with_log(tmp_path)
    v = audit_verdict(data)
    assert v["ok"] is True and v["entries"] == 4 and v["problems"] == []
    assert main(["audit", "verify", "--data", str(data)]) == 0
    assert v["summary"] in capsys.readouterr().out
    log = data / "audit" / "log.jsonl"
    lines = log.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["fields"]["i"] = 99  # an edited entry
    lines[1] = json.dumps(entry, separators=(",", ":"), sort_keys=True)
    log.write_text("\n".join(lines) + "\n")
    v = audit_verdict(data)
    assert v["ok"] is False and v["problems"]
    assert main(["audit", "verify", "--data", str(data)]) != 0
    out = capsys.readouterr().out
    assert all(f"PROBLEM: {p}" in out for p in v["problems"])


def test_a_deleted_checkpoint_is_the_same_problem_on_the_page_and_in_audit_verify(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _hub_with_log(tmp_path)
    (data / "audit" / "checkpoint").unlink()  # removing the signature is itself tampering
    v = audit_verdict(data)
    assert v["ok"] is False
    assert any("checkpoint" in p and "missing" in p for p in v["problems"])
    assert main(["audit", "verify", "--data", str(data)]) != 0
    out = capsys.readouterr().out
    assert all(f"PROBLEM: {p}" in out for p in v["problems"])


def test_the_audit_status_is_cached_until_the_log_changes(tmp_path: Path) -> None:
    data = _hub_with_log(tmp_path)
    clock = FakeClock()
    status = AuditStatus(data, clock)
    first = status.get()
    assert status.get() is first
    (data / "audit" / "log.jsonl").write_text("")
    assert status.get()["entries"] == 0


def test_pending_challenges_say_who_what_and_when_and_nothing_more() -> None:
    # A real challenge: the hub's pure access machine, a roster signed by an owner, a signed request.
    owner = DeviceIdentity.from_secrets(bytes([11]) * 32, bytes([111]) * 32, "alice-phone")
    vendor = DeviceIdentity.from_secrets(bytes([21]) * 32, bytes([121]) * 32, "acme-support")
    hub = HubIdentity.from_seed(bytes([7]) * 32, bytes([17]) * 32)
    roster = sign_roster(owner, 1, [RosterEntry(owner.public, "owner")], hub_key_id=hub.key_id,
                         requesters=[RequesterEntry(vendor.public, "vendor")])
    wall_ms = 1_790_000_000_000
    scope = A.Scope.make(["porch"], [], wall_ms - 3_600_000, wall_ms)
    req = A.make_request(vendor, hub.key_id, bytes([1]) * 16, "vendor", scope, "router firmware", "ticket 1",
                         wall_ms)
    state, result = A.on_request(A.new_state(hub.key_id, roster), req, hub=hub, policy=A.AccessPolicy(),
                                 now_mono_s=1000.0, now_wall_ms=wall_ms, challenge_id=bytes([9]) * 32)
    assert result.status == "challenged", result
    [row] = pending_challenges(state, 1100.0)
    assert row == {"challenge": (bytes([9]) * 32).hex()[:12], "requester": "acme-support",
                   "requester_key": vendor.key_id[:16], "enrolled": True, "role": "vendor", "cameras": ["porch"],
                   "clips": 0, "from_ms": wall_ms - 3_600_000, "to_ms": wall_ms, "purpose": "router firmware",
                   "expires_in_s": 500, "approvals": "0 of 2"}  # vendor: two owners by default
    assert pending_challenges(None, 0.0) == []


def test_the_page_has_no_control_over_access_or_the_mode(hub: Hub) -> None:
    cookie, csrf = hub.login()
    for path in ("/api/mode", "/api/approve", "/api/challenges/x/approve", "/api/access"):
        assert hub.post_json(path, {"mode": "away"}, cookie=cookie, csrf=csrf)[0] == 404
    _, _, raw = hub.request("GET", "/api/state", headers={"Cookie": cookie})
    state = json.loads(raw)
    assert state["mode"] == "home" and "owner device" in state["mode_note"]
    assert state["pending"] == [] and state["mqtt"] is False
    js = (Path(__file__).parents[2] / "agent/web/static/app.js").read_text()
    assert "approve" not in js.lower().replace("privacy-agent owner approve", "")
