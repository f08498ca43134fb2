"""The reference CLIs drive the whole flow end to end against a real broker (in-process hub)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PREFIX
from mosquitto import USERS, Broker

from agent.cli.main import main
from agent.config import load_config
from agent.core.datatypes import Event
from agent.crypto.envelope import seal
from agent.crypto.keys import hub_public, load_device_identity, load_hub_identity
from agent.errors import AuditError
from agent.mqtt.service import HubMqtt
from agent.storage.index import object_name

pytestmark = pytest.mark.mqtt


def index_clip(data: Path, clip_bytes: bytes, info: object, camera: str, start_s: float, end_s: float) -> None:
    """Commit a sealed clip through the hub's real outbox, so it is in the hub's clip index."""
    from agent.clock import SystemClock
    from agent.storage.outbox import Outbox

    ob = Outbox(data, SystemClock())
    try:
        fh, part = ob.open_part(info.header.stream_id.hex(), info.clip_id_hex)  # type: ignore[attr-defined]
        fh.write(clip_bytes)
        ob.commit(fh, part, info, camera, [], start_wall_s=start_s, end_wall_s=end_s)  # type: ignore[arg-type]
    finally:
        ob.close()


def _pwfile(d: Path, user: str) -> Path:
    p = d / f"{user}.pw"
    p.write_text(USERS[user] + "\n")
    os.chmod(p, 0o600)
    return p


@pytest.fixture
def world(broker: Broker, tmp_path: Path) -> Iterator[dict[str, object]]:
    data = tmp_path / "data"
    keys = tmp_path / "keys"
    keys.mkdir()
    assert main(["keys", "init", "--data", str(data)]) == 0
    for name in ("alice", "bob"):
        assert main(["owner", "keygen", "--out", str(keys / f"{name}.key"), "--name", f"{name}-phone"]) == 0
    assert main(["requester", "keygen", "--out", str(keys / "plumber.key"), "--name", "plumber"]) == 0
    roster = keys / "roster.json"
    assert main(["owner", "enroll", "--identity", str(keys / "alice.key"), "--roster", str(roster),
                 "--add-owner", str(keys / "bob.key.pub"), "--add-requester", str(keys / "plumber.key.pub"),
                 "--requester-role", "contractor", "--hub", str(data), "--install", str(data)]) == 0
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""\
data_dir: {data}
cameras:
  - id: porch
    source: {tmp_path / 'porch.mp4'}
mqtt:
  host: 127.0.0.1
  port: {broker.port}
  ca_file: {broker.ca_file}
  username: hub
  password_file: {_pwfile(tmp_path, 'hub')}
  topic_prefix: {PREFIX}
  client_id: hub-cli-test
  reconnect_min_s: 0.05
  reconnect_max_s: 0.2
  access:
    challenge_ttl_s: 120
""")
    hub = HubMqtt.from_config(load_config(cfg))
    hub.record_boot()
    hub.start()
    assert hub.client.wait_connected(10)
    # A recorded clip of the porch camera, sealed by this hub to Alice and Bob.
    alice = load_device_identity(keys / "alice.key")
    bob = load_device_identity(keys / "bob.key")
    payload = b"\x00\x00\x00\x18ftypisom" + os.urandom(5000)
    start_s = time.time() - 600
    clip_bytes, info = seal(payload, {"camera_id": "porch", "start_wall_s": start_s, "end_wall_s": start_s + 30},
                            load_hub_identity(data), [alice.public, bob.public], bytes(16))
    clips = tmp_path / "clips"
    clips.mkdir()
    # Where a directory sink puts it (the one naming rule), and in the hub's own clip index.
    dest = clips / object_name(info.header.stream_id.hex(), info.header.seq, info.clip_id_hex)
    dest.parent.mkdir()
    dest.write_bytes(clip_bytes)
    index_clip(data, clip_bytes, info, "porch", start_s, start_s + 30)
    conn = ["--host", "127.0.0.1", "--port", str(broker.port), "--ca-file", str(broker.ca_file),
            "--prefix", PREFIX]
    yield {"data": data, "keys": keys, "hub": hub, "clip_id": info.clip_id_hex, "clips": clips,
           "payload": payload, "tmp": tmp_path, "roster": roster,
           "owner": conn + ["--username", "owner", "--password-file", str(_pwfile(tmp_path, "owner"))],
           "requester": conn + ["--username", "requester", "--password-file", str(_pwfile(tmp_path, "requester"))]}
    hub.stop(flush_s=1)


def test_cli_request_approve_open_and_audit(world: dict[str, object], capsys: pytest.CaptureFixture[str]) -> None:
    keys, data, tmp = Path(str(world["keys"])), Path(str(world["data"])), Path(str(world["tmp"]))
    hub_pub = str(data)
    grant = tmp / "grant.json"
    rc: list[int] = []
    req = threading.Thread(target=lambda: rc.append(main([
        "requester", "request", "--identity", str(keys / "plumber.key"), "--hub", hub_pub, "--role", "contractor",
        "--camera", "porch", "--clip", str(world["clip_id"]), "--purpose", "check the porch light",
        "--legal-ref", "job 12", "--wait", "20", "--out", str(grant), *world["requester"]])))  # type: ignore[misc]
    req.start()
    hub: HubMqtt = world["hub"]  # type: ignore[assignment]
    assert hub.access.wait_result(lambda r: r.status == "challenged", 10)

    # The hub records the challenge, then publishes it: on a busy machine the retained message
    # can reach the broker a moment after the result, so ask again until it is there.
    pending: list[dict[str, object]] = []
    for _ in range(20):
        capsys.readouterr()
        assert main(["owner", "pending", "--hub", hub_pub, "--json", *world["owner"]]) == 0  # type: ignore[misc]
        out_text = capsys.readouterr().out  # the requester thread may print its own line too
        pending = json.loads(out_text[out_text.index("\n["):] if not out_text.startswith("[") else out_text)
        if pending:
            break
    assert len(pending) == 1 and pending[0]["purpose"] == "check the porch light"
    cid = pending[0]["challenge_id"]

    # Bob approves a narrower scope? No: he tries to add a camera, which the tool refuses.
    rc_bad = main(["owner", "approve", cid[:12], "--identity", str(keys / "bob.key"), "--hub", hub_pub,
                   "--camera", "bedroom", *world["owner"]])  # type: ignore[misc]
    assert rc_bad != 0
    assert main(["owner", "approve", cid[:12], "--identity", str(keys / "alice.key"), "--hub", hub_pub,
                 "--roster", str(world["roster"]), "--clips-dir", str(world["clips"]),
                 *world["owner"]]) == 0  # type: ignore[misc]
    req.join(25)
    assert rc == [0] and grant.exists()

    out = tmp / "clip.mp4"
    clip_file = next(Path(str(world["clips"])).rglob(f"*{world['clip_id']}.epaclip"))
    assert main(["requester", "open", str(clip_file),
                 "--identity", str(keys / "plumber.key"), "--hub", hub_pub, "--grant", str(grant),
                 "--out", str(out)]) == 0
    assert out.read_bytes() == world["payload"]
    # Bob (an owner, but not the requester) cannot use the grant.
    assert main(["requester", "open", str(clip_file),
                 "--identity", str(keys / "bob.key"), "--hub", hub_pub, "--grant", str(grant),
                 "--out", str(tmp / "x.mp4")]) != 0

    # Audit: pin the retained checkpoint from the broker, verify, then tamper.
    pins = tmp / "alice-pins.jsonl"
    assert main(["audit", "pin", "--hub", hub_pub, "--pins", str(pins), *world["owner"]]) == 0  # type: ignore[misc]
    assert main(["audit", "verify", "--data", str(data), "--pins", str(pins)]) == 0
    # More entries, then a second pin: the hub proves over the broker that its log extends the pin.
    assert main(["owner", "mode", "away", "--identity", str(keys / "alice.key"), "--hub", hub_pub,
                 *world["owner"]]) == 0  # type: ignore[misc]
    capsys.readouterr()
    assert main(["audit", "pin", "--hub", hub_pub, "--pins", str(pins), "--max-age-s", "0",
                 *world["owner"]]) == 0  # type: ignore[misc]
    c = capsys.readouterr()
    assert "consistent with the previous pin" in c.out and "warning: this checkpoint was signed" in c.err
    assert len(pins.read_text().splitlines()) == 2
    # A log file alone proves nothing: verify wants a signed checkpoint with it.
    log_only = ["audit", "verify", "--log", str(data / "audit" / "log.jsonl"), "--hub", hub_pub]
    assert main(log_only) == AuditError.exit_code
    assert "no signed checkpoint" in capsys.readouterr().out
    assert main([*log_only, "--checkpoint", str(data / "audit" / "checkpoint")]) == 0
    kinds = [json.loads(x)["kind"] for x in (data / "audit" / "log.jsonl").read_text().splitlines()]
    assert kinds[:1] == ["boot"] and "access_grant" in kinds and "access_approval" in kinds

    log = data / "audit" / "log.jsonl"
    original = log.read_bytes()
    lines = original.splitlines(keepends=True)
    assert json.loads(lines[1])["kind"] == "access_request"
    edited = lines[1].replace(b"check the porch light", b"routine maintenance")
    assert edited != lines[1]
    log.write_bytes(b"".join(lines[:1] + [edited] + lines[2:]))
    capsys.readouterr()
    assert main(["audit", "verify", "--data", str(data), "--pins", str(pins)]) == AuditError.exit_code
    assert "edited" in capsys.readouterr().out
    log.write_bytes(b"".join(lines[:-1]))  # the last entry removed
    assert main(["audit", "verify", "--data", str(data), "--pins", str(pins)]) == AuditError.exit_code
    assert "truncated" in capsys.readouterr().out
    log.write_bytes(original)


def test_cli_owner_mode_set_and_get(world: dict[str, object], capsys: pytest.CaptureFixture[str]) -> None:
    keys, data = Path(str(world["keys"])), Path(str(world["data"]))
    assert main(["owner", "mode", "away", "--identity", str(keys / "alice.key"), "--hub", str(data),
                 "--roster-version", "1", *world["owner"]]) == 0  # type: ignore[misc]
    capsys.readouterr()
    assert main(["owner", "mode", "--hub", str(data), *world["owner"]]) == 0  # type: ignore[misc]
    assert "mode: away" in capsys.readouterr().out
    hub: HubMqtt = world["hub"]  # type: ignore[assignment]
    hub.on_event(Event("clip_sealed", "porch", "sealed", 1.0, {"clip_id": "ab" * 16, "seq": 3}))
    hub.on_event(Event("withheld", "porch", "withheld", 1.0, {"frames": 3}))
    assert hub.outbox.flush(10)
    entries = [json.loads(x) for x in (data / "audit" / "log.jsonl").read_text().splitlines()]
    assert entries[-1]["kind"] == "clip_created" and entries[-1]["fields"]["clip_id"] == "ab" * 16
    assert [e["kind"] for e in entries].count("clip_created") == 1  # `withheld` is an event, not audit
    state = json.loads((data / "state" / "mode.json").read_text())
    assert state["mode"] == "away" and "owner device" in state["by"]
    assert hub_public(data).key_id in (data / "audit" / "checkpoint").read_text()
