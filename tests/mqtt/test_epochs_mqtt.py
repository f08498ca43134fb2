"""Epoch key lists over MQTT, against the real Mosquitto: household devices publish them retained on
`P/epochs/<device>` (`owner epochs publish`), the hub installs and audits them, refuses (and
audits) bad ones without stopping, and publishes the days left for Home Assistant."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PREFIX, Connect
from hubkit import hub_password_file
from mosquitto import USERS, Broker
from mqtt_util import Collector
from nacl.public import PrivateKey

from agent.access.audit import LOG_FILE, AuditLog, audit_dir, read_entries
from agent.cli.main import main
from agent.clock import FakeClock
from agent.crypto.keys import (
    DeviceIdentity,
    EpochList,
    HubIdentity,
    epoch_of,
    init_hub,
    install_roster,
    load_epoch_lists,
    load_roster,
    updated_roster,
    write_device_identity,
)
from agent.errors import MqttError
from agent.mqtt.client import MqttClient
from agent.mqtt.epochs import HubEpochService
from agent.topics import Topics

pytestmark = pytest.mark.mqtt
T = Topics(PREFIX)
EPOCH_S = 3600
WALL0 = 1_790_000_000.0
E0 = epoch_of(WALL0, EPOCH_S)


@dataclass
class Hub:
    data: Path
    hub: HubIdentity
    service: HubEpochService
    client: MqttClient
    audit: AuditLog
    owner: DeviceIdentity
    member: DeviceIdentity
    revoked: DeviceIdentity


def epoch_list(dev: DeviceIdentity, *, first: int = E0, n: int = 24 * 10, version: int = 1) -> EpochList:
    keys = [PrivateKey.generate().public_key.encode() for _ in range(n)]
    return EpochList.sign(dev, epoch_s=EPOCH_S, first=first, keys=keys, version=version, created_ms=1)


@pytest.fixture
def hub(broker: Broker, connect: Connect, tmp_path: Path) -> Iterator[Hub]:
    # Fresh device keys per test: the broker is shared, and retained lists of other tests stay on it.
    owner, member, revoked = (DeviceIdentity.generate(n) for n in ("alice", "bob", "nanny"))
    data = tmp_path / "data"
    hub_id = init_hub(data)
    r1 = updated_roster(owner, None, add=[member.public, revoked.public], hub_key_id=hub_id.key_id)
    install_roster(data, updated_roster(owner, r1, revoke=[revoked.key_id]))
    clock = FakeClock(wall_s=WALL0)
    audit = AuditLog(audit_dir(data), clock, hub_id)
    client = connect(broker, "hub")
    service = HubEpochService(client, data, audit, lambda: load_roster(data), clock)
    service.start()
    yield Hub(data, hub_id, service, client, audit, owner, member, revoked)
    for d in (owner, member, revoked):  # no retained list stays for other tests' hubs
        client.publish_wait(T.epoch_list(d.key_id), b"", retain=True)
    audit.close()


def _audit(h: Hub) -> list[tuple[str, dict[str, object]]]:
    entries, problems = read_entries(audit_dir(h.data) / LOG_FILE)
    assert not problems
    return [(e.kind, dict(e.fields)) for e in entries]


def test_install_over_mqtt_audits_and_reports_days(broker: Broker, connect: Connect, hub: Hub) -> None:
    ha = connect(broker, "homeassistant")
    status = Collector(ha, T.epochs_left)
    owner_c = connect(broker, "owner")
    lst = epoch_list(hub.owner)
    owner_c.publish_wait(T.epoch_list(hub.owner.key_id), lst.encode(), retain=True)
    assert hub.service.wait_result(lambda r: r[0] == hub.owner.key_id and r[1] == "installed", 10)
    assert set(load_epoch_lists(hub.data, load_roster(hub.data))) == {hub.owner.key_id}
    assert ("epochs_installed", {"device": hub.owner.key_id, "version": 1, "first": E0, "last": E0 + 239}) \
        in _audit(hub)

    def days(ms: list) -> dict | None:  # the hub's latest status with the owner's list in it
        for m in reversed(ms):
            doc = json.loads(m.payload)
            if doc.get(hub.owner.key_id) is not None:
                return doc
        return None

    assert status.wait_for(lambda ms: days(ms) is not None)
    doc = days(status.messages)
    assert doc is not None and 9.5 < doc[hub.owner.key_id] <= 10 and doc[hub.member.key_id] is None
    # The same retained list again (a reconnect): nothing new in the log.
    n = len(_audit(hub))
    owner_c.publish_wait(T.epoch_list(hub.owner.key_id), lst.encode(), retain=True)
    assert hub.service.wait_result(lambda r: r[1] == "unchanged", 10)
    assert len(_audit(hub)) == n


def test_refusals_over_mqtt_are_audited_and_the_hub_keeps_going(broker: Broker, connect: Connect, hub: Hub) -> None:
    owner_c = connect(broker, "owner")
    good = epoch_list(hub.member)
    stranger = DeviceIdentity.generate("stranger")
    cases = [
        (hub.revoked.key_id, epoch_list(hub.revoked).encode(), "revoked"),
        (stranger.key_id, epoch_list(stranger).encode(), "not in the roster"),
        (hub.owner.key_id, good.encode(), "published as device"),  # the member's list on the owner's topic
        (hub.member.key_id, b"{\"list\": " * 50, "not acceptable JSON"),
    ]
    for device, payload, _ in cases:
        owner_c.publish_wait(T.epoch_list(device), payload)
    for device, _, msg in cases:
        r = hub.service.wait_result(lambda r, d=device, m=msg: r[0] == d and r[1] == "refused" and m in r[2], 10)
        assert r is not None, msg
    assert load_epoch_lists(hub.data, load_roster(hub.data)) == {}
    refused = [f for k, f in _audit(hub) if k == "epochs_refused"]
    assert len(refused) == len(cases)
    assert {f["device"] for f in refused} == {hub.revoked.key_id, stranger.key_id, hub.owner.key_id, hub.member.key_id}
    # Then a good list, a rollback and an overlap with other keys.
    owner_c.publish_wait(T.epoch_list(hub.member.key_id), good.encode())
    assert hub.service.wait_result(lambda r: r[0] == hub.member.key_id and r[1] == "installed", 10)
    v2 = EpochList.sign(hub.member, epoch_s=EPOCH_S, first=good.first, keys=good.keys, version=2, created_ms=2)
    owner_c.publish_wait(T.epoch_list(hub.member.key_id), v2.encode())
    assert hub.service.wait_result(lambda r: r[1] == "installed" and r[2] == "version 2", 10)
    owner_c.publish_wait(T.epoch_list(hub.member.key_id), good.encode())
    assert hub.service.wait_result(lambda r: r[1] == "refused" and "older than" in r[2], 10)
    other = epoch_list(hub.member, version=3)
    owner_c.publish_wait(T.epoch_list(hub.member.key_id), other.encode())
    assert hub.service.wait_result(lambda r: r[1] == "refused" and "different key" in r[2], 10)
    assert load_epoch_lists(hub.data, load_roster(hub.data))[hub.member.key_id].version == 2


def test_intruder_and_requester_cannot_publish_lists(broker: Broker, connect: Connect, hub: Hub) -> None:
    lst = epoch_list(hub.owner)
    for user in ("requester", "intruder"):
        c = connect(broker, user)
        with pytest.raises(MqttError, match="refused"):  # the ACL: only owner devices write P/epochs/#
            c.publish_wait(T.epoch_list(hub.owner.key_id), lst.encode(), timeout_s=2)
    owner_c = connect(broker, "owner")
    probe = epoch_list(hub.member)
    owner_c.publish_wait(T.epoch_list(hub.member.key_id), probe.encode())
    assert hub.service.wait_result(lambda r: r[0] == hub.member.key_id, 10)
    assert not any(r[0] == hub.owner.key_id for r in hub.service.results)


def test_owner_epochs_publish_cli(broker: Broker, hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "bob.key"
    write_device_identity(hub.member, key)
    lst_file = tmp_path / "bob.epochs.json"
    lst_file.write_bytes(epoch_list(hub.member).encode())
    pw = tmp_path / "owner.pw"
    pw.write_text(USERS["owner"])
    os.chmod(pw, 0o600)
    conn = ["--host", "127.0.0.1", "--port", str(broker.port), "--ca-file", str(broker.ca_file), "--prefix", PREFIX,
            "--username", "owner", "--password-file", str(pw)]
    assert main(["owner", "epochs", "publish", "--identity", str(key), "--list", str(lst_file), *conn]) == 0
    assert "published" in capsys.readouterr().out
    assert hub.service.wait_result(lambda r: r[0] == hub.member.key_id and r[1] == "installed", 10)
    # Someone else's list is not published from this device.
    other = tmp_path / "alice.epochs.json"
    other.write_bytes(epoch_list(hub.owner).encode())
    assert main(["owner", "epochs", "publish", "--identity", str(key), "--list", str(other), *conn]) != 0
    out, err = capsys.readouterr()
    assert f"list of device {hub.owner.key_id}, not of this device" in err and "Traceback" not in out + err


def test_hub_mqtt_wires_the_epoch_service(broker: Broker, connect: Connect, tmp_path: Path) -> None:
    from agent.access.state import init_state
    from agent.config import load_config
    from agent.mqtt.service import HubMqtt

    owner = DeviceIdentity.generate("alice")
    data = tmp_path / "data"
    hub_id = init_hub(data)
    init_state(data)
    install_roster(data, updated_roster(owner, None, hub_key_id=hub_id.key_id))
    pw = hub_password_file(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"data_dir: {data}\ncameras:\n  - id: porch\n    source: v.mp4\nmqtt:\n  host: 127.0.0.1\n"
                   f"  port: {broker.port}\n  ca_file: {broker.ca_file}\n  username: hub\n  password_file: {pw}\n"
                   f"  topic_prefix: {PREFIX}\n  client_id: hub-epochs-test\n")
    h = HubMqtt.from_config(load_config(cfg))
    assert h.discovery is not None and [d for d, _ in h.discovery.devices] == [owner.key_id]
    h.start()
    try:
        assert h.client.wait_connected(10)
        owner_c = connect(broker, "owner")
        owner_c.publish_wait(T.epoch_list(owner.key_id), epoch_list(owner).encode(), retain=True)
        assert h.epochs.wait_result(lambda r: r[0] == owner.key_id and r[1] == "installed", 10)
        owner_c.publish_wait(T.epoch_list(owner.key_id), b"", retain=True)
    finally:
        h.stop(flush_s=1)
    entries, problems = read_entries(audit_dir(data) / LOG_FILE)
    assert not problems and "epochs_installed" in [e.kind for e in entries]
