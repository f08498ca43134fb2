"""The MQTT client and outbox against a real Mosquitto (TLS + password file + ACL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import PREFIX, Connect
from mosquitto import Broker
from mqtt_util import Collector

from agent.clock import FakeClock
from agent.errors import MqttError
from agent.mqtt.client import MqttClient
from agent.mqtt.outbox import Deduper, Outbox
from agent.topics import Topics

pytestmark = pytest.mark.mqtt
T = Topics(PREFIX)


def test_wrong_password_is_refused(broker: Broker, connect: Connect) -> None:
    with pytest.raises(MqttError, match="cannot connect"):
        connect(broker, "hub", password="not-the-password", wait_s=2.0)


def test_unauthenticated_client_is_refused(broker: Broker) -> None:
    c = MqttClient(broker.host, broker.port, client_id="anon", topics=T, ca_file=broker.ca_file,
                   reconnect_min_s=0.05, reconnect_max_s=0.1)
    with pytest.raises(MqttError, match="cannot connect"):
        c.start(wait_s=2.0)


def test_tls_requires_the_right_ca(broker: Broker, tmp_path: Path) -> None:
    from mosquitto import make_ca_and_server_cert

    other = tmp_path / "other"
    other.mkdir()
    other_ca, _, _ = make_ca_and_server_cert(other)
    c = MqttClient(broker.host, broker.port, client_id="hub-wrong-ca", topics=T, username="hub",
                   password="hub-secret-pw", ca_file=other_ca, reconnect_min_s=0.05, reconnect_max_s=0.1)
    with pytest.raises(MqttError, match="cannot connect"):
        c.start(wait_s=2.0)


def test_acl_refuses_publish_outside_grant(broker: Broker, connect: Connect) -> None:
    intruder = connect(broker, "intruder")
    with pytest.raises(MqttError, match="refused"):
        intruder.publish_wait(T.access_decision("abc"), b"{}")
    owner = connect(broker, "owner")
    with pytest.raises(MqttError, match="refused"):
        owner.publish_wait(T.access_grant("abc"), b"{}")  # only the hub may publish grants
    owner.publish_wait(T.access_decision("abc"), b"{}")  # allowed by the ACL (the hub checks the signature)


def test_availability_is_retained_with_last_will(broker: Broker, connect: Connect) -> None:
    hub = connect(broker, "hub", availability=True, client_id="hub-avail")
    spy = connect(broker, "spy")
    col = Collector(spy, T.available)
    assert col.wait_for(lambda ms: bool(ms) and ms[-1].payload == b"online")
    # A crash (no clean disconnect): the broker publishes the retained last will.
    hub._c._sock.close()  # type: ignore[union-attr]
    assert col.wait_for(lambda ms: ms[-1].payload == b"offline", 10)
    # paho reconnects with backoff and says online again.
    assert col.wait_for(lambda ms: ms[-1].payload == b"online", 10)
    late = connect(broker, "spy")
    col2 = Collector(late, T.available)
    assert col2.wait_for(lambda ms: bool(ms) and ms[0].retain and ms[0].payload == b"online")


def _events(col: Collector) -> list[dict[str, object]]:
    return [json.loads(p) for p in col.payloads()]


def test_outbox_survives_outage_and_restart_in_order(own_broker: Broker, connect: Connect, tmp_path: Path) -> None:
    """A '5-minute outage' under event load (simulated on the injected clock): nothing lost, in order."""
    clock = FakeClock()
    spy = connect(own_broker, "spy", client_id="spy-outage")
    spy_col = Collector(spy, T.events)
    hub = connect(own_broker, "hub", client_id="hub-outage", availability=True)
    ob = Outbox(tmp_path / "outbox.sqlite", clock)
    ob.attach(hub)
    for i in range(50):
        ob.put_event(T.events, "withheld", "cam1", n=i)
    assert ob.flush(10)
    assert spy_col.wait_count(50)
    spy.stop(clean=False)  # a fresh observer below sees everything after the outage

    own_broker.stop()
    # 5 minutes of events at 10 events/s on the fake clock while the broker is down.
    n_outage = 3000
    for i in range(n_outage // 2):
        ob.put_event(T.events, "withheld", "cam1", n=50 + i)
        clock.advance(0.1)
    # The agent restarts during the outage: the outbox file carries on.
    ob.close()
    hub.stop(clean=False)
    ob = Outbox(tmp_path / "outbox.sqlite", clock)
    for i in range(n_outage // 2, n_outage):
        ob.put_event(T.events, "withheld", "cam1", n=50 + i)
        clock.advance(0.1)
    assert clock.wall_s - 1_790_000_000.0 >= 299.9
    assert ob.pending() == n_outage

    own_broker.start()
    spy2 = connect(own_broker, "spy", client_id="spy-outage-2")
    spy2_col = Collector(spy2, T.events)
    hub2 = connect(own_broker, "hub", client_id="hub-outage-2", availability=True)
    ob.attach(hub2)
    assert ob.flush(20), f"{ob.pending()} events still pending"
    total = 50 + n_outage
    assert spy2_col.wait_for(lambda ms: len({json.loads(m.payload)["seq"] for m in ms}) >= n_outage, 20)
    d = Deduper()
    got = [e for e in _events(spy_col) + _events(spy2_col) if d.accept(e)]
    ns = [e["fields"]["n"] for e in got]  # type: ignore[index]
    assert ns == list(range(total))
    seqs = [int(e["seq"]) for e in got]  # type: ignore[call-overload]
    assert seqs == sorted(seqs)
    assert len({e["stream"] for e in got}) == 1
    ob.close()


def test_broker_restart_under_load_keeps_order(own_broker: Broker, connect: Connect, tmp_path: Path) -> None:
    """Same hub client across a broker restart: paho resends what was in flight, new events wait
    for it, so no event overtakes an older one and every event is acknowledged by the broker."""
    spy = connect(own_broker, "spy", client_id="spy-persist", session_expiry_s=300)
    col = Collector(spy, T.events)
    hub = connect(own_broker, "hub", client_id="hub-restart", availability=True)
    ob = Outbox(tmp_path / "outbox.sqlite", FakeClock())
    ob.attach(hub)
    for i in range(600):
        ob.put_event(T.events, "withheld", "cam1", n=i)
    spy_connects = spy.connect_count
    own_broker.restart()  # very likely with messages in flight
    # The observer must be back (and subscribed again) before the events it is asked to see are
    # published: the broker keeps no session across its own restart. The hub's backlog from before
    # the restart may be delivered meanwhile; only order is asserted for it.
    assert spy.wait_reconnected(spy_connects, 20)
    spy.sync(20)
    for i in range(600, 1200):
        ob.put_event(T.events, "withheld", "cam1", n=i)
    assert ob.flush(20), f"{ob.pending()} events still pending"
    assert ob.delivered >= 1200

    def complete(ms: list[Any]) -> bool:
        return {json.loads(m.payload)["seq"] for m in ms} >= set(range(601, 1201))

    assert col.wait_for(complete, 20)
    # Order: every first-seen event has a higher seq than all seen before it. (Mosquitto 2.0.11
    # may drop QoS 1 messages it had queued for a subscriber when it restarts; that is the
    # broker's loss after it acknowledged them, so only order and the events after the
    # restart are asserted here. Events the broker did not acknowledge are resent.)
    seen: set[int] = set()
    top = 0
    for e in _events(col):
        seq = int(e["seq"])  # type: ignore[call-overload]
        if seq in seen:
            continue
        assert seq > top, f"event seq {seq} arrived after seq {top}"
        seen.add(seq)
        top = seq
    ob.close()


def test_deduper_drops_redelivery() -> None:
    d = Deduper()
    assert d.accept({"stream": "a", "seq": 1})
    assert not d.accept({"stream": "a", "seq": 1})
    assert d.accept({"stream": "a", "seq": 2})
    assert d.accept({"stream": "b", "seq": 1})
    assert not d.accept({"seq": 3})


def test_outbox_bound_drops_oldest_and_says_so(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "ob.sqlite", FakeClock(), max_rows=5)
    ids = [ob.put_event(T.events, "withheld", "cam1", n=i) for i in range(8)]
    assert ob.pending() == 5
    rows = ob._q.rows("SELECT seq, body FROM outbox ORDER BY seq")
    assert [r[0] for r in rows] == [4, 5, 6, 7, 8]
    payload = json.loads(ob._payload(rows[0][0], rows[0][1]))
    assert payload["dropped_total"] == 3 and payload["id"] == ids[3]
    ob.close()
    ob2 = Outbox(tmp_path / "ob.sqlite", FakeClock(), max_rows=5)  # survives a restart
    assert ob2.stream == ids[0].split(":")[0] and ob2._dropped_total == 3
    ob2.close()


def test_a_ca_file_without_a_certificate_is_a_clear_error(tmp_path: Path) -> None:
    from agent.mqtt.client import tls_context

    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate\n")
    with pytest.raises(MqttError, match=r"mqtt.ca_file .*ca.crt: not a readable PEM CA certificate"):
        tls_context(bad)
    with pytest.raises(MqttError, match="not a readable PEM"):
        tls_context(tmp_path / "missing.crt")
