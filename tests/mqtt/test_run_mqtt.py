"""`privacy-agent run` with an `mqtt:` section, against the real broker.

Camera state (retained), counters and events reach the broker; the audit log
records the boot and every sealed clip; nothing on the broker is an image,
video or key.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from conftest import PREFIX, Connect
from mosquitto import Broker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hubkit import enrolled_hub, hub_password_file
from videokit import walker_frames, write_video

from agent import access as A
from agent.access.audit import LOG_FILE, audit_dir, read_entries
from agent.cli.main import main
from agent.crypto.keys import hub_public
from agent.errors import AccessError
from agent.mqtt.client import Message

MAGIC = (b"ftyp", b"mdat", b"moof", b"\xff\xd8\xff", b"\x1aE\xdf\xa3", b"epa1sec:", b"epa1hubsec:")


def test_run_publishes_state_events_and_audits_clips(broker: Broker, connect: Connect, tmp_path: Path) -> None:
    data = enrolled_hub(tmp_path)
    write_video(tmp_path / "v.mp4", walker_frames(40))
    (tmp_path / "clips").mkdir()
    assert main(["sink", "init", str(tmp_path / "clips")]) == 0
    pw = hub_password_file(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""\
data_dir: {data}
detection: {{enabled: false}}
recipients: [{tmp_path / 'owner.key.pub'}]
cameras:
  - id: porch
    source: v.mp4
    zones:
      - name: door
        points: [[0.7, 0], [1, 0], [1, 1], [0.7, 1]]
        action: withhold
sinks:
  - type: directory
    path: clips
    segment_s: 10
mqtt:
  host: 127.0.0.1
  port: {broker.port}
  ca_file: {broker.ca_file}
  username: hub
  password_file: {pw}
  topic_prefix: {PREFIX}
  client_id: hub-run-test
  reconnect_min_s: 0.05
  reconnect_max_s: 0.2
""")
    seen: list[Message] = []
    lock = threading.Lock()
    got_state = threading.Event()

    def on_msg(m: Message) -> None:
        with lock:
            seen.append(m)
        if m.topic == f"{PREFIX}/camera/porch/state":
            got_state.set()

    spy = connect(broker, "spy")
    spy.subscribe("#", on_msg)

    assert main(["run", "--config", str(cfg)]) == 0
    assert got_state.wait(10), "camera state never reached the broker"
    with lock:
        topics = {m.topic for m in seen}
        payloads = [m.payload for m in seen]
    hub_pub = hub_public(data)
    # Retained messages of other tests' hubs may be on the broker: only this hub's signature counts.
    states = [_signed(lambda p: A.parse_camera_state(p, hub_pub).state, m.payload)
              for m in seen if m.topic == f"{PREFIX}/camera/porch/state"]
    assert "withheld" in states
    assert f"{PREFIX}/events" in topics
    kinds = {json.loads(m.payload).get("kind") for m in seen if m.topic == f"{PREFIX}/events"}
    assert "withheld" in kinds
    for p in payloads:
        assert not any(x in p for x in MAGIC), "an image, video or key reached the broker"

    entries, problems = read_entries(audit_dir(data) / LOG_FILE)
    assert not problems
    audit_kinds = [e.kind for e in entries]
    assert audit_kinds[0] == "boot" and "clip_created" in audit_kinds and "mode_change" in audit_kinds
    assert "clip_stream_start" in audit_kinds  # the head of the new clip chain is on record
    assert any(m.topic == f"{PREFIX}/mode/state"
               and _signed(lambda p: A.parse_mode_state(p, hub_pub).mode, m.payload) == "home" for m in seen)
    assert list((tmp_path / "clips").rglob("*.epaclip"))


def _signed(parse: Callable[[bytes], str], payload: bytes) -> str | None:
    try:
        return parse(payload)
    except AccessError:
        return None
