"""Consent that cannot be bypassed, end to end: the real CLIs against the real Mosquitto (TLS,
passwords, ACLs) and an in-process hub. One test per finding that involves the broker."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PREFIX, Connect
from mosquitto import Broker
from mqtt_util import Collector
from test_access_cli import _pwfile, index_clip

from agent import access as A
from agent.access.state import state_path
from agent.cli.main import main
from agent.config import load_config
from agent.core.modes import ModeController
from agent.crypto.envelope import Stanza, seal, unwrap_key, verify_clip
from agent.crypto.keys import DeviceIdentity, load_device_identity, load_hub_identity
from agent.errors import AccessStateError, AgentError
from agent.mqtt.service import HubMqtt
from agent.storage.index import object_name
from agent.topics import Topics
from agent.vocab import Mode

pytestmark = pytest.mark.mqtt
T = Topics(PREFIX)


@dataclasses.dataclass
class World:
    data: Path
    keys: Path
    tmp: Path
    cfg: Path
    hub: HubMqtt
    clips: Path
    clip_ids: dict[str, str]
    owner: list[str]
    requester: list[str]
    broker: Broker

    def key(self, name: str) -> str:
        return str(self.keys / f"{name}.key")


def _config(tmp: Path, data: Path, broker: Broker) -> Path:
    cfg = tmp / "config.yaml"
    cfg.write_text(f"""\
data_dir: {data}
cameras:
  - id: porch
    source: {tmp / 'porch.mp4'}
  - id: garden
    source: {tmp / 'garden.mp4'}
mqtt:
  host: 127.0.0.1
  port: {broker.port}
  ca_file: {broker.ca_file}
  username: hub
  password_file: {_pwfile(tmp, 'hub')}
  topic_prefix: {PREFIX}
  client_id: hub-consent-test
  reconnect_min_s: 0.05
  reconnect_max_s: 0.2
  access:
    challenge_ttl_s: 120
""")
    return cfg


@pytest.fixture
def world(broker: Broker, tmp_path: Path) -> Iterator[World]:
    data, keys = tmp_path / "data", tmp_path / "keys"
    keys.mkdir()
    assert main(["keys", "init", "--data", str(data)]) == 0
    for name in ("alice", "bob", "teen"):
        assert main(["owner", "keygen", "--out", str(keys / f"{name}.key"), "--name", f"{name}-phone"]) == 0
    for name in ("police", "plumber", "mallory"):
        assert main(["requester", "keygen", "--out", str(keys / f"{name}.key"), "--name", name]) == 0
    roster = keys / "roster.json"
    assert main(["owner", "enroll", "--identity", str(keys / "alice.key"), "--roster", str(roster),
                 "--add-owner", str(keys / "bob.key.pub"), "--add", str(keys / "teen.key.pub"),
                 "--add-requester", str(keys / "police.key.pub"), "--requester-role", "police",
                 "--hub", str(data), "--install", str(data)]) == 0
    assert main(["owner", "enroll", "--identity", str(keys / "alice.key"), "--roster", str(roster),
                 "--add-requester", str(keys / "plumber.key.pub"), "--requester-role", "contractor",
                 "--install", str(data)]) == 0
    cfg = _config(tmp_path, data, broker)
    hub = HubMqtt.from_config(load_config(cfg))
    hub.record_boot()
    hub.start()
    assert hub.client.wait_connected(10)
    recipients = [load_device_identity(keys / f"{n}.key").public for n in ("alice", "bob")]
    clips = tmp_path / "clips"
    now = time.time()
    ids: dict[str, str] = {}
    # name: (camera in the index, camera inside the clip, start)
    for n, (indexed, inside, start) in {"porch": ("porch", "porch", now - 900), "garden": ("garden", "garden", now - 800),
                                        "liar": ("porch", "bedroom", now - 700)}.items():
        payload = b"\x00\x00\x00\x18ftypisom" + os.urandom(3000)
        stream = bytes([len(ids) + 1]) * 16
        clip_bytes, info = seal(payload, {"camera_id": inside, "start_wall_s": start, "end_wall_s": start + 30},
                                load_hub_identity(data), recipients, stream)
        dest = clips / object_name(info.header.stream_id.hex(), info.header.seq, info.clip_id_hex)
        dest.parent.mkdir(parents=True)
        dest.write_bytes(clip_bytes)
        index_clip(data, clip_bytes, info, indexed, start, start + 30)
        ids[n] = info.clip_id_hex
    conn = ["--host", "127.0.0.1", "--port", str(broker.port), "--ca-file", str(broker.ca_file), "--prefix", PREFIX]
    w = World(data, keys, tmp_path, cfg, hub, clips, ids,
              conn + ["--username", "owner", "--password-file", str(_pwfile(tmp_path, "owner"))],
              conn + ["--username", "requester", "--password-file", str(_pwfile(tmp_path, "requester"))], broker)
    yield w
    hub.stop(flush_s=1)


def _request(w: World, who: str, role: str, cameras: list[str], clips: list[str], grant: Path,
             wait: float = 20) -> tuple[threading.Thread, list[int]]:
    rc: list[int] = []
    args = ["requester", "request", "--identity", w.key(who), "--hub", str(w.data), "--role", role,
            "--purpose", "investigation", "--legal-ref", "case 7", "--wait", str(wait), "--out", str(grant),
            "--from", str(int((time.time() - 3600) * 1000)), *w.requester]
    for c in cameras:
        args += ["--camera", c]
    for c in clips:
        args += ["--clip", c]
    t = threading.Thread(target=lambda: rc.append(main(args)))
    t.start()
    return t, rc


def _pending(w: World, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["owner", "pending", "--hub", str(w.data), "--json", *w.owner]) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("["):])  # type: ignore[no-any-return]


def test_1_an_approval_read_off_the_broker_opens_nothing(world: World, connect: Connect,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Police need two owners. Home Assistant's account reads Alice's approval off the broker and
    hands it to the requester; Bob then denies. Old code: the requester decrypted the clip anyway."""
    w = world
    ha = connect(w.broker, "homeassistant")
    decisions = Collector(ha, T.access_decision_filter)
    grant = w.tmp / "grant.json"
    t, rc = _request(w, "police", "police", ["porch"], [w.clip_ids["porch"]], grant)
    assert w.hub.access.wait_result(lambda r: r.status == "challenged", 10)
    (ch,) = _pending(w, capsys)
    assert ch["approvals_needed"] == 2 and ch["requester_status"] == "enrolled" and ch["role"] == "police"
    assert main(["owner", "approve", ch["challenge_id"][:12], "--identity", w.key("alice"), "--hub", str(w.data),
                 "--clips-dir", str(w.clips), *w.owner]) == 0
    assert decisions.wait_count(1)
    assert main(["owner", "deny", ch["challenge_id"][:12], "--identity", w.key("bob"), "--hub", str(w.data),
                 *w.owner]) == 0
    t.join(25)
    assert rc and rc[0] != 0 and not grant.exists()  # denied
    # What HA saw: keys sealed to the hub's box key. The police key cannot open them.
    police = load_device_identity(w.key("police"))
    clip_file = next(w.clips.rglob(f"*{w.clip_ids['porch']}.epaclip"))
    info = verify_clip(clip_file.read_bytes(), load_hub_identity(w.data).public)
    keys = json.loads(decisions.messages[0].payload)["body"]["keys"]
    assert len(keys) == 1
    sealed = A.wire._b64d(keys[0]["sealed"], "sealed")
    for blob in (sealed, sealed[-A.SEALED_KEY_BYTES:], sealed[:A.SEALED_KEY_BYTES]):
        with pytest.raises(AgentError):
            unwrap_key(police, dataclasses.replace(info.header, stanzas=(Stanza(police.key_id, blob),)))


def test_2_narrowing_by_camera_drops_clips_and_the_owner_sees_cameras_and_times(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    w = world
    grant = w.tmp / "grant.json"
    t, rc = _request(w, "plumber", "contractor", ["garden", "porch"], [w.clip_ids["porch"], w.clip_ids["garden"]],
                     grant)
    assert w.hub.access.wait_result(lambda r: r.status == "challenged", 10)
    capsys.readouterr()
    assert main(["owner", "pending", "--hub", str(w.data), *w.owner]) == 0
    shown = capsys.readouterr().out
    assert "porch 20" in shown and "garden 20" in shown  # camera names and UTC times, from the hub's index
    (ch,) = _pending(w, capsys)
    assert main(["owner", "approve", ch["challenge_id"][:12], "--identity", w.key("alice"), "--hub", str(w.data),
                 "--camera", "porch", "--clips-dir", str(w.clips), *w.owner]) == 0
    t.join(25)
    assert rc == [0]
    g = A.parse_grant(grant.read_bytes(), load_hub_identity(w.data).public)
    assert g.scope.cameras == ("porch",) and g.scope.clips == (w.clip_ids["porch"],)
    assert [k.clip for k in g.keys] == [w.clip_ids["porch"]]


def test_2_the_hub_refuses_a_clip_outside_the_request_and_the_owner_tool_checks_the_clip_itself(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    w = world
    # 'porch' asked, but the garden clip listed: refused by the hub (the index knows its camera).
    t, rc = _request(w, "plumber", "contractor", ["porch"], [w.clip_ids["garden"]], w.tmp / "g1.json", wait=5)
    t.join(10)
    r = w.hub.access.wait_result(lambda r: r.status == "refused" and "garden" in r.reason, 5)
    assert r is not None and rc and rc[0] != 0
    # The index says porch, the clip itself says bedroom: the owner tool refuses to release it.
    t, rc = _request(w, "plumber", "contractor", ["porch"], [w.clip_ids["liar"]], w.tmp / "g2.json", wait=8)
    assert w.hub.access.wait_result(lambda r: r.status == "challenged", 10)
    (ch,) = _pending(w, capsys)
    capsys.readouterr()
    rc_ap = main(["owner", "approve", ch["challenge_id"][:12], "--identity", w.key("alice"), "--hub", str(w.data),
                  "--clips-dir", str(w.clips), *w.owner])
    err = capsys.readouterr().err
    assert rc_ap != 0 and "bedroom" in err and "Traceback" not in err
    t.join(15)


def _mode(w: World, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["owner", "mode", *args, "--hub", str(w.data), "--timeout", "4", *w.owner])
    c = capsys.readouterr()
    assert "Traceback" not in c.err
    return rc, c.out + c.err


def test_7_15_owner_mode_verifies_the_signed_state_and_says_why_a_change_failed(
        world: World, connect: Connect, capsys: pytest.CaptureFixture[str]) -> None:
    w = world
    # A broker operator (here: the hub's own account) plants a plain retained "privacy".
    evil = connect(w.broker, "hub", client_id="evil-broker")
    evil.publish_wait(T.mode_state, b"privacy", retain=True)
    rc, out = _mode(w, capsys)
    assert rc != 0 and "unconfirmed" in out
    # A real change (the planted message hid the signed state, so the roster version is given):
    # confirmed by the hub's signed state.
    rc, out = _mode(w, capsys, "away", "--identity", w.key("alice"), "--roster-version", "2")
    assert rc == 0 and "now away" in out and "confirmed" in out, out
    rc, out = _mode(w, capsys)
    assert rc == 0 and "mode: away (signed by hub" in out
    # Why a change was not confirmed:
    rc, out = _mode(w, capsys, "home", "--identity", w.key("alice"), "--roster-version", "1")
    assert rc != 0 and "stale roster" in out  # the hub runs version 2
    rc, out = _mode(w, capsys, "home", "--identity", w.key("teen"))
    assert rc != 0 and "not an owner" in out
    rc, out = _mode(w, capsys, "home", "--identity", w.key("mallory"))
    assert rc != 0 and "no answer" in out
    assert ModeController(load_config(w.cfg).config.modes, w.data).current() == Mode.AWAY


def test_6_the_privacy_switch_wins_over_the_owner(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    from firmware_hooks.hooks import main as hooks_main

    w = world
    modes = ModeController(load_config(w.cfg).config.modes, w.data)
    assert hooks_main(["privacy-switch", "on", "--config", str(w.cfg)]) == 0
    rc, out = _mode(w, capsys, "home", "--identity", w.key("alice"))
    assert rc != 0 and "privacy switch" in out
    assert modes.current() == Mode.PRIVACY
    assert hooks_main(["privacy-switch", "off", "--config", str(w.cfg)]) == 0
    rc, out = _mode(w, capsys, "home", "--identity", w.key("alice"))
    assert rc == 0
    assert ModeController(load_config(w.cfg).config.modes, w.data).current() == Mode.HOME


def test_8_a_flood_of_throwaway_keys_does_not_block_an_enrolled_requester(world: World, connect: Connect,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    w = world
    hub_id = load_hub_identity(w.data).key_id
    flood = connect(w.broker, "requester", client_id="flooder")
    before = len((w.data / "audit" / "log.jsonl").read_text().splitlines())
    scope = A.Scope.make(["porch"], [], int(time.time() * 1000) - 3_600_000, int(time.time() * 1000))
    for _ in range(60):
        junk = DeviceIdentity.generate("city-police")
        rid = os.urandom(16)
        flood.publish_wait(T.access_request(rid.hex()),
                           A.make_request(junk, hub_id, rid, "household", scope, "x", "", int(time.time() * 1000)))
    flood.sync()
    assert w.hub.access.wait_result(lambda r: sum(1 for x in w.hub.access.results if x.status == "refused") >= 50,
                                    20)
    t, rc = _request(w, "plumber", "contractor", ["porch"], [], w.tmp / "g.json", wait=1)
    t.join(10)
    pend = _pending(w, capsys)
    assert any(p["requester_status"] == "enrolled" for p in pend)
    assert sum(1 for p in pend if p["requester_status"] == "unverified") == A.AccessPolicy().unverified_cap
    w.hub.access.clear_pending()  # a stop audits the tally as one entry
    after = (w.data / "audit" / "log.jsonl").read_text().splitlines()
    grown = len(after) - before
    # 4 unverified challenges and 1 enrolled (2 entries each), one refusal summary, and checkpoints of nothing.
    assert grown <= 2 * (A.AccessPolicy().unverified_cap + 1) + 1, grown
    summary = [json.loads(x) for x in after if '"aggregated":true' in x]
    assert summary and json.loads(after[-1])["fields"]["count"] >= 50


def test_5_a_missing_state_file_is_a_fail_closed_refusal(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    w = world
    w.hub.stop(flush_s=1)
    state_path(w.data).unlink()
    with pytest.raises(AccessStateError, match="missing"):
        HubMqtt.from_config(load_config(w.cfg))
    capsys.readouterr()
    assert main(["hub", "serve", "--config", str(w.cfg)]) != 0
    err = capsys.readouterr().err
    assert "reset-access-state" in err and "Traceback" not in err
    assert main(["keys", "reset-access-state", "--data", str(w.data)]) == 0
    hub = HubMqtt.from_config(load_config(w.cfg))
    assert hub.access.state.counter_floor > 0
    kinds = [json.loads(x)["kind"] for x in (w.data / "audit" / "log.jsonl").read_text().splitlines()]
    assert "access_state_reset" in kinds
    w.hub = hub
    hub.start()

