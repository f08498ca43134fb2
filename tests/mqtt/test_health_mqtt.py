"""A real `privacy-agent run` publishes the hub's health, retained, and talks sd_notify to "systemd".

The broker is the suite's Mosquitto; systemd's notify socket is a datagram socket bound here.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from pathlib import Path

import pytest
from conftest import PREFIX, Connect
from mosquitto import Broker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hubkit import enrolled_hub, hub_password_file
from videokit import walker_frames, write_video

from agent.cli.main import main
from agent.crypto.keys import load_hub_identity
from agent.mqtt.client import Message
from agent.mqtt.discovery import node_id

CAM = "healthcam"


def test_run_publishes_retained_health_and_notifies_systemd(broker: Broker, connect: Connect, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    data = enrolled_hub(tmp_path)
    write_video(tmp_path / "v.mp4", walker_frames(30))
    pw = hub_password_file(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""\
data_dir: {data}
detection: {{enabled: false}}
cameras:
  - id: {CAM}
    source: v.mp4
sinks: []
mqtt:
  host: 127.0.0.1
  port: {broker.port}
  ca_file: {broker.ca_file}
  username: hub
  password_file: {pw}
  topic_prefix: {PREFIX}
  client_id: hub-health-test
  health_interval_s: 30
  reconnect_min_s: 0.05
  reconnect_max_s: 0.2
""")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "120000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))

    seen: dict[str, list[Message]] = {}
    lock = threading.Lock()
    got = threading.Event()

    def on_msg(m: Message) -> None:
        with lock:
            seen.setdefault(m.topic, []).append(m)
            if f"{PREFIX}/camera/{CAM}/health" in seen and f"{PREFIX}/health" in seen:
                got.set()

    ha = connect(broker, "homeassistant")
    ha.subscribe(f"{PREFIX}/#", on_msg)
    ha.subscribe("homeassistant/device/+/config", on_msg)
    try:
        assert main(["run", "--config", str(cfg)]) == 0
        assert got.wait(10), "no health reached the broker"
        keys = []
        while True:
            try:
                keys += notify.recv(4096).decode().splitlines()
            except BlockingIOError:
                break
    finally:
        notify.close()

    # systemd heard: ready once the camera ran, a status line, a watchdog ping, stopping at the end.
    assert keys.index("READY=1") < keys.index("WATCHDOG=1") < keys.index("STOPPING=1")
    assert "WATCHDOG=1" in keys
    assert any(k.startswith(f"STATUS={CAM} ") for k in keys)

    with lock:
        hub_docs = [json.loads(m.payload) for m in seen[f"{PREFIX}/health"]]
        cam_msgs = list(seen[f"{PREFIX}/camera/{CAM}/health"])
        discovery = [m for t, ms in seen.items() if t.startswith("homeassistant/device/") for m in ms]
    hub = next(d for d in hub_docs if d.get("cameras") == [CAM])
    assert hub["healthy"] is True and hub["heartbeat"].endswith("+00:00")
    assert hub["encoder"] == "libx264"  # no hardware encoder in this machine
    assert hub["disk_free_bytes"] > 0 and hub["queued_clips"] == 0
    cam = json.loads(cam_msgs[-1].payload)
    assert {"fps", "analysis_lag_s", "queued_frames", "withheld_by_reason", "healthy"} <= set(cam)

    # Retained: a late subscriber (Home Assistant restarting) still gets the last report.
    late = connect(broker, "homeassistant")
    again = threading.Event()
    late.subscribe(f"{PREFIX}/camera/{CAM}/health", lambda m: again.set() if m.retain else None)
    assert again.wait(10), "camera health is not retained"

    # Discovery carries the health sensors, reading these very topics.
    node = node_id(load_hub_identity(data).key_id)
    doc = next(json.loads(m.payload) for m in discovery if m.topic.endswith(f"/{node}/config") and m.payload)
    c = doc["components"]
    assert c[f"{CAM}_fps"]["state_topic"] == f"{PREFIX}/camera/{CAM}/health"
    assert c["health_heartbeat"]["state_topic"] == f"{PREFIX}/health"
    assert c["health_heartbeat"]["expire_after"] == 91
