"""Home Assistant discovery, per-camera state and counters, events, topic validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from access_world import HUB
from conftest import PREFIX, Connect
from mosquitto import Broker
from mqtt_util import Collector

from agent import access as A
from agent.clock import FakeClock
from agent.core.datatypes import Event
from agent.errors import AccessError, MqttError
from agent.mqtt.discovery import Discovery, discovery_payload, node_id
from agent.mqtt.hub import StateReporter
from agent.mqtt.outbox import Outbox
from agent.topics import Topics

T = Topics(PREFIX)


def test_discovery_document() -> None:
    doc = discovery_payload(T, HUB.key_id, [("porch", "Porch"), ("bedroom", "Bedroom")])
    assert doc["device"]["identifiers"] == [node_id(HUB.key_id)]
    assert doc["origin"]["name"] == "edge-privacy-agent"
    assert doc["availability"][0]["topic"] == T.available
    c = doc["components"]
    assert c["porch_privacy"]["platform"] == "sensor"
    assert c["porch_privacy"]["options"] == ["clear", "masked", "withheld"]
    assert c["porch_privacy"]["state_topic"] == T.camera_state("porch")
    assert c["bedroom_withheld"]["state_topic"] == T.camera_counters("bedroom")
    assert c["access"]["platform"] == "event" and "challenge" in c["access"]["event_types"]
    assert c["mode"]["platform"] == "sensor"  # read-only: HA cannot sign a mode change
    assert all("command_topic" not in v for v in c.values())
    ids = [v["unique_id"] for v in c.values()]
    assert len(ids) == len(set(ids))
    text = json.dumps(doc)
    assert "thumbnail" not in text and "image" not in text and "url" not in text


@pytest.mark.mqtt
def test_discovery_retained_and_republished_on_ha_birth(broker: Broker, connect: Connect) -> None:
    hub = connect(broker, "hub", availability=True)
    d = Discovery(hub, HUB.key_id, [("porch", "Porch")])
    d.start()
    d.publish()
    ha = connect(broker, "homeassistant")
    col = Collector(ha, T.ha_device_config(node_id(HUB.key_id)))
    assert col.wait_for(lambda ms: bool(ms) and ms[0].retain)
    assert json.loads(col.messages[0].payload)["components"]["porch_privacy"]["state_topic"] == T.camera_state("porch")
    ha.publish_wait(T.ha_status, b"online")  # Home Assistant restarted
    assert col.wait_count(2)
    d.remove()
    assert col.wait_for(lambda ms: ms[-1].payload == b"")


def _signed_state(payload: bytes) -> str | None:
    try:
        return A.parse_camera_state(payload, HUB.public).state
    except AccessError:
        return None  # retained by another test's hub on the shared broker


@pytest.mark.mqtt
def test_state_counters_and_events(broker: Broker, connect: Connect, tmp_path: Path) -> None:
    hub = connect(broker, "hub", availability=True)
    ob = Outbox(tmp_path / "ob.sqlite", FakeClock())
    ob.attach(hub)
    rep = StateReporter(hub, HUB, ob)
    spy = connect(broker, "spy")
    col = Collector(spy, f"{PREFIX}/#")
    rep.camera_state("porch", "masked")
    rep.camera_state("porch", "masked")  # unchanged: not published again
    rep.camera_state("porch", "withheld")
    rep.counters("porch", {"passed": 3, "masked": 5, "withheld": 2})
    for kind in ("withheld", "model_fault", "source_lost", "tamper"):
        rep.event(Event(kind, "porch", f"{kind} happened", 1.0, {"frames": 4, "frame": "no-images-here"}))
    with pytest.raises(MqttError):
        rep.camera_state("porch", "blurry")
    assert ob.flush(10)
    assert col.wait_for(lambda ms: sum(1 for m in ms if m.topic == T.events) == 4)
    states = [s for s in (_signed_state(m.payload) for m in col.messages if m.topic == T.camera_state("porch"))
              if s is not None]
    assert states == ["masked", "withheld"]  # hub-signed: a broker cannot show another state
    counters = [json.loads(m.payload) for m in col.messages if m.topic == T.camera_counters("porch") and not m.retain]
    assert counters == [{"masked": 5, "passed": 3, "withheld": 2}]
    evs = [json.loads(m.payload) for m in col.messages if m.topic == T.events]
    assert [e["kind"] for e in evs] == ["withheld", "model_fault", "source_lost", "tamper"]
    assert all(e["camera"] == "porch" and e["id"].endswith(f":{e['seq']}") for e in evs)
    ob.close()


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "cam#1", "a\x00b", "x" * 129, "ca m"])
def test_topic_levels_from_data_are_checked(bad: str) -> None:
    with pytest.raises(MqttError):
        T.camera_state(bad)
    with pytest.raises(MqttError):
        T.access_grant(bad)


def test_prefix_checked() -> None:
    for bad in ("", "a/+", "#", "a//b", "/a"):
        with pytest.raises(MqttError):
            Topics(bad)
    assert Topics("home/hub1").available == "home/hub1/available"
