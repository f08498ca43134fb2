"""The hub's health on the broker, and the assembly of `run`'s service monitor.

`HealthPublisher` publishes a `HubHealth` (`agent.core.health`) retained at QoS 1:
- `P/health`: the heartbeat (ISO 8601 time of the report, for Home Assistant's timestamp
  sensor), uptime, whether every camera is healthy and what is wrong, disk free of the data dir,
  clip deliveries queued in the outbox, and the H.264 encoder in use;
- `P/camera/<cam>/health`: fps over the last seconds, frames waiting between the stages, the
  analysis lag, withheld frames by reason, whether the camera is healthy, its learned scene
  (`ok`, or `moved`: waiting for `camera relearn`, ...) and its private room (`bathroom`,
  `bedroom` or `none`: where a person withholds the whole frame).
It re-publishes the last report after every reconnect (a restarted broker may have lost it).

Not signed, like the counters: health is diagnostics that nobody decides anything on (access
and consent rest on the hub-signed camera state, mode and grants), and Home Assistant, its only
reader, cannot check a signature. The ACL lets only the hub write under its prefix; a broker that
forged a heartbeat could as well drop the real one, and `expire_after` plus the hub's
availability topic show a silent hub as unavailable either way.

Invariant: names, numbers and withhold reasons only: no image, no key.

`service_monitor` builds `run`'s `ServiceMonitor` (`agent.core.monitor`): the systemd watchdog
fed from the pipelines, and these reports when the config has an `mqtt:` section.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.clock import Clock, SystemClock
from agent.config import LoadedConfig
from agent.core.events import EventLog
from agent.core.health import CameraHealth, HubHealth
from agent.core.monitor import Alive, ServiceMonitor, Watched
from agent.errors import SinkError
from agent.storage.outbox import OUTBOX_DIRNAME, Outbox
from agent.storage.space import free_bytes

if TYPE_CHECKING:  # `run` without a broker never loads the MQTT client
    from agent.mqtt.client import MqttClient
    from agent.mqtt.service import HubMqtt

log = logging.getLogger(__name__)

def hub_document(h: HubHealth) -> dict[str, Any]:
    free = h.disk_free_bytes
    return {
        "heartbeat": datetime.datetime.fromtimestamp(h.wall_s, datetime.UTC).isoformat(timespec="seconds"),
        "wall_s": round(h.wall_s, 3),
        "uptime_s": round(h.uptime_s, 1),
        "healthy": h.healthy,
        "problems": list(h.problems),
        "cameras": [c.camera_id for c in h.cameras],
        "disk_free_bytes": free,
        "disk_free_mb": round(free / 1e6, 1) if free is not None else None,
        "queued_clips": h.queued_clips,
        "encoder": h.encoder,
    }


def camera_document(c: CameraHealth) -> dict[str, Any]:
    return {
        "healthy": c.healthy,
        "problem": c.problem,
        "fps": c.fps,
        "frames_in": c.frames_in,
        "withheld": c.withheld,
        "withheld_by_reason": dict(c.withheld_by_reason),
        "top_withheld_reason": c.withheld_by_reason[0][0] if c.withheld_by_reason else "none",
        "analysis_lag_s": c.analysis_lag_s,
        "queued_frames": c.queued_frames,
        "last_decision_age_s": c.last_decision_age_s,
        "scene": c.scene,
        "scene_note": c.scene_note,
        "private_room": c.private_room or "none",
        "under_load_frames": c.under_load_frames,
    }


class HealthPublisher:
    """Publishes each report retained; the last one again after a reconnect."""

    def __init__(self, client: MqttClient) -> None:
        self.client = client
        self.topics = client.topics
        self._lock = threading.Lock()
        self._last: list[tuple[str, str]] = []
        client.add_connect_hook(self.republish)

    def __call__(self, h: HubHealth) -> None:
        msgs = [(self.topics.health, json.dumps(hub_document(h), sort_keys=True))]
        msgs += [(self.topics.camera_health(c.camera_id), json.dumps(camera_document(c), sort_keys=True))
                 for c in h.cameras]
        with self._lock:
            self._last = msgs
        self._send(msgs)

    def republish(self) -> None:
        with self._lock:
            msgs = list(self._last)
        self._send(msgs)

    def _send(self, msgs: list[tuple[str, str]]) -> None:
        for topic, payload in msgs:
            self.client.publish(topic, payload, qos=1, retain=True)


def disk_free(path: Path) -> int | None:
    try:
        return free_bytes(path)  # what the hub's own writes may still use, as the full-disk guard counts
    except OSError as e:
        log.debug("disk free of %s unknown: %s", path, e)
        return None


def queued_deliveries(data_dir: Path, clock: Clock) -> int | None:
    """Clip deliveries waiting in the outbox; 0 without one (opening it would create it)."""
    if not (data_dir / OUTBOX_DIRNAME / "outbox.db").exists():
        return 0
    try:
        box = Outbox(data_dir, clock, exclusive=False)  # read-only: `run` itself holds the lock
        try:
            return box.pending_count()
        finally:
            box.close()
    except SinkError as e:
        log.debug("queued clips unknown: %s", e)
        return None


def service_monitor(loaded: LoadedConfig, pipes: Sequence[tuple[Watched, object]], threads: Sequence[Alive],
                    hub: HubMqtt | None, events: EventLog, clock: Clock | None = None,
                    encoder: str | None = None) -> ServiceMonitor:
    """`run`'s monitor (`start()` it once the camera threads run): the watchdog, and health over MQTT
    with a broker. `pipes` are `run`'s (pipeline, source opener) pairs, `threads` their threads."""
    clock = clock or SystemClock()
    mqtt = loaded.config.mqtt
    data = loaded.data_dir
    monitor = ServiceMonitor(
        [(p, t) for (p, _), t in zip(pipes, threads, strict=True)], clock,
        publish=HealthPublisher(hub.client) if hub is not None else None,
        disk_free=lambda: disk_free(data),
        queued_clips=lambda: queued_deliveries(data, clock),
        encoder=encoder,
        health_interval_s=float(mqtt.health_interval_s) if mqtt is not None else 30.0,
        file_cameras=[p.camera_id for p, opener in pipes if not getattr(opener, "live", False)],
    )
    events.subscribe(monitor.on_event)
    return monitor
