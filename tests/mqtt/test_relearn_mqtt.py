"""An owner's signed `relearn` over a real Mosquitto: recorded, then handed to the camera, then answered.

Members are refused (answered, tallied, not audited one by one), replays are refused by the
per-device counter, forged signatures and unknown keys get no answer at all. End to end,
`owner relearn` on an owner device makes the hub write a relearn request `run` acts on, with the
audit entry already in the log.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from access_world import ALICE, HUB, MALLORY, ROSTER_V1, T0_WALL_MS, TEEN
from conftest import PREFIX, Connect
from mosquitto import USERS, Broker
from mqtt_util import Collector

from agent import access as A
from agent.access.audit import AuditLog
from agent.access.state import init_state
from agent.analysis.scenestore import RelearnWatcher, read_request, write_request
from agent.cli.main import main
from agent.clock import FakeClock
from agent.config import load_config
from agent.crypto.keys import canonical_json
from agent.errors import AccessError
from agent.mqtt.hub import HubAccessService
from agent.mqtt.service import HubMqtt
from agent.topics import Topics

pytestmark = pytest.mark.mqtt
T = Topics(PREFIX)


class Hub:
    def __init__(self, broker: Broker, connect: Connect, data: Path, tag: str) -> None:
        self.data = data
        self.clock = FakeClock()
        self.audit = AuditLog(data / "audit", self.clock, HUB)
        init_state(data)
        self.orders: list[A.RelearnOrder] = []

        def relearner(order: A.RelearnOrder) -> None:
            self.orders.append(order)
            write_request(data, order.camera, order.device, T0_WALL_MS, recorded=True)

        self.service = HubAccessService(connect(broker, "hub", client_id=f"hub-{tag}"), HUB, lambda: ROSTER_V1,
                                        self.audit, data / "mqtt", clock=self.clock,
                                        known_cameras=frozenset({"porch", "garden"}), relearner=relearner)
        self.service.start()
        self.owner = connect(broker, "owner", client_id=f"owner-{tag}")

    def kinds(self) -> list[str]:
        return [json.loads(x)["kind"] for x in (self.data / "audit" / "log.jsonl").read_text().splitlines()]

    def results(self, col: Collector) -> list[A.RelearnResult]:
        out = []
        for m in col.messages:
            try:
                out.append(A.parse_relearn_result(m.payload, HUB.public))
            except AccessError:
                continue  # another test's hub: not this hub's answer
        return out


@pytest.fixture
def hub(broker: Broker, connect: Connect, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Hub]:
    h = Hub(broker, connect, tmp_path / "data", request.node.name[-30:])
    yield h
    h.audit.close()


def relearn(dev: object, counter: int, camera: str = "porch", rid: int = 1) -> bytes:
    return A.make_relearn(dev, HUB.key_id, camera, bytes([rid]) * 16, counter, 1, T0_WALL_MS)  # type: ignore[arg-type]


def test_an_owners_signed_relearn_is_recorded_then_applied_then_answered(hub: Hub) -> None:
    answers = Collector(hub.owner, T.relearn_result(ALICE.key_id))
    hub.owner.publish_wait(T.relearn_request, relearn(ALICE, 5))
    assert hub.service.wait_result(lambda r: r.status == "relearn", 10)
    assert answers.wait_for(lambda ms: bool(hub.results(answers)))
    [res] = hub.results(answers)
    assert (res.status, res.camera, res.device, res.counter) == ("applied", "porch", ALICE.key_id, 5)
    assert [o.camera for o in hub.orders] == ["porch"]
    entries = [json.loads(x) for x in (hub.data / "audit" / "log.jsonl").read_text().splitlines()]
    [e] = [e for e in entries if e["kind"] == "camera_relearned"]
    assert e["fields"] == {"camera": "porch", "by": ALICE.key_id, "via": "mqtt", "request_id": "01" * 16,
                           "counter": 5}
    # The request `run` picks up says it is recorded already: no second audit entry for it.
    req = read_request(hub.data, "porch")
    assert req is not None and req.recorded and req.by == ALICE.key_id

    class Pipe:
        camera_id = "porch"
        asked = 0

        def request_relearn(self) -> None:
            self.asked += 1

    pipe = Pipe()
    RelearnWatcher(hub.data, {"porch": pipe}, hub.audit.append).poll_once()
    assert pipe.asked == 1 and hub.kinds().count("camera_relearned") == 1


def test_member_replay_forgery_and_unknown_camera_are_refused(hub: Hub) -> None:
    teen = Collector(hub.owner, T.relearn_result(TEEN.key_id))
    alice = Collector(hub.owner, T.relearn_result(ALICE.key_id))
    mallory = Collector(hub.owner, T.relearn_result(MALLORY.key_id))

    # A member's signed relearn: a signed refusal, tallied, not acted on.
    hub.owner.publish_wait(T.relearn_request, relearn(TEEN, 7))
    assert teen.wait_for(lambda ms: bool(hub.results(teen)))
    assert hub.results(teen)[0].status == "refused" and "not an owner" in hub.results(teen)[0].reason

    # A forged signature (Alice's body, a bad signature) and an unknown key: no answer at all.
    doc = json.loads(relearn(ALICE, 8))
    doc["sig"] = base64.urlsafe_b64encode(bytes(64)).rstrip(b"=").decode()
    before = hub.service.unauthenticated
    # In canonical form, so that it is the signature that is refused, not the encoding.
    hub.owner.publish_wait(T.relearn_request, canonical_json(doc))
    hub.owner.publish_wait(T.relearn_request, relearn(MALLORY, 9))
    # Wait on the count, not on a result: the set-up's refused deletions left "not in the
    # roster" results behind, which would match at once.
    assert hub.service.wait_result(lambda r: hub.service.unauthenticated >= before + 2, 10)

    # Applied once; the same bytes again are a duplicate; a new message with an old counter is a replay.
    ok = relearn(ALICE, 20, rid=2)
    hub.owner.publish_wait(T.relearn_request, ok)
    assert hub.service.wait_result(lambda r: r.status == "relearn", 10)
    hub.owner.publish_wait(T.relearn_request, ok)
    assert hub.service.wait_result(lambda r: r.status == "duplicate", 10)
    hub.owner.publish_wait(T.relearn_request, relearn(ALICE, 20, rid=3))
    assert hub.service.wait_result(lambda r: "replayed relearn" in r.reason, 10)
    hub.owner.publish_wait(T.relearn_request, relearn(ALICE, 21, camera="attic", rid=4))
    assert hub.service.wait_result(lambda r: "no camera 'attic'" in r.reason, 10)
    assert alice.wait_for(lambda ms: len(hub.results(alice)) >= 3)
    assert [r.status for r in hub.results(alice)] == ["applied", "refused", "refused"]

    assert len(hub.orders) == 1  # only the owner's fresh request was carried out
    assert hub.kinds().count("camera_relearned") == 1
    assert mallory.messages == []


def _pwfile(d: Path, user: str) -> Path:
    p = d / f"{user}.pw"
    p.write_text(USERS[user] + "\n")
    os.chmod(p, 0o600)
    return p


def test_owner_relearn_cli_end_to_end(broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, keys = tmp_path / "data", tmp_path / "keys"
    keys.mkdir()
    assert main(["keys", "init", "--data", str(data)]) == 0
    assert main(["owner", "keygen", "--out", str(keys / "alice.key"), "--name", "alice-phone"]) == 0
    assert main(["owner", "enroll", "--identity", str(keys / "alice.key"), "--roster", str(keys / "roster.json"),
                 "--hub", str(data), "--install", str(data)]) == 0
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
  client_id: hub-relearn-test
  reconnect_min_s: 0.05
  reconnect_max_s: 0.2
""")
    hub = HubMqtt.from_config(load_config(cfg))
    hub.start()
    try:
        assert hub.client.wait_connected(10)
        conn = ["--host", "127.0.0.1", "--port", str(broker.port), "--ca-file", str(broker.ca_file),
                "--prefix", PREFIX, "--username", "owner", "--password-file", str(_pwfile(tmp_path, "owner"))]
        capsys.readouterr()
        assert main(["owner", "relearn", "porch", "--identity", str(keys / "alice.key"), "--hub", str(data),
                     "--roster-version", "1", "--timeout", "10", *conn]) == 0
        assert "recorded the relearn" in capsys.readouterr().out
        req = read_request(data, "porch")
        assert req is not None and req.recorded
        assert main(["owner", "relearn", "attic", "--identity", str(keys / "alice.key"), "--hub", str(data),
                     "--roster-version", "1", "--timeout", "10", *conn]) == 4
        assert "no camera 'attic'" in capsys.readouterr().err
    finally:
        hub.stop(flush_s=1)
