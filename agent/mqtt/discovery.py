"""Home Assistant MQTT discovery: the hub as one device (`homeassistant/device/<node>/config`).

One retained device-based discovery message lists every entity:
- per camera: a `sensor` with the privacy state (`clear` / `masked` / `withheld`, enum) and
  `sensor`s for its counters (frames passed, masked, withheld; total_increasing);
- a `sensor` with the household mode (read-only: only an owner-signed message can change it,
  so Home Assistant, which cannot sign, gets no `select`);
- an `event` entity for access challenges (`event_types`: challenge, approved, granted,
  denied, expired, refused);
- per household device of the roster: a diagnostic `sensor` "epoch keys left (days)", from the
  hub's retained `P/epochs_left` (`agent.mqtt.epochs`); unknown while the device has no list;
- with `health_interval_s`, the hub's health (`agent.mqtt.health`): a heartbeat (timestamp), a
  `problem` binary sensor, disk free (data_size, MB), queued clips and the encoder in use, and
  per camera fps, analysis lag (duration, s), frames queued between stages, and the top withhold
  reason with every reason's count as attributes, its view (`ok`, `moved`: waiting for `camera
  relearn`, ...) and its private room (`none`, `bathroom`, `bedroom`). Each has `expire_after` (three intervals), so
  a hub that stops reporting shows unavailable even while its broker connection stays up.
All entities share the hub's availability topic. An empty retained payload removes the device.
The hub re-publishes discovery when Home Assistant announces `online` on `homeassistant/status`.

Invariant: discovery carries names and topics only; no image URLs, no thumbnails, no keys.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agent import __version__
from agent.core.health import SCENE_STATES
from agent.mqtt.client import Message, MqttClient
from agent.mqtt.hub import CAMERA_STATES, HA_EVENT_TYPES
from agent.topics import ONLINE, Topics, check_level

#: Home Assistant marks a health sensor unavailable after this many report intervals without one.
EXPIRE_INTERVALS = 3

COUNTERS: tuple[tuple[str, str], ...] = (
    ("passed", "frames passed"),
    ("masked", "frames masked"),
    ("withheld", "frames withheld"),
)


def node_id(hub_key_id: str) -> str:
    return check_level(f"epa_{hub_key_id}", "node id")


def discovery_payload(topics: Topics, hub_key_id: str, cameras: Sequence[tuple[str, str]],
                      devices: Sequence[tuple[str, str]] = (), health_interval_s: float | None = None) -> dict[str, Any]:
    """The device discovery document. `cameras` are (id, display name) pairs, `devices` the
    household devices as (key id, name) pairs; `health_interval_s` adds the health sensors."""
    node = node_id(hub_key_id)
    cmps: dict[str, dict[str, Any]] = {}
    for cam_id, cam_name in cameras:
        check_level(cam_id, "camera id")
        cmps[f"{cam_id}_privacy"] = {
            "platform": "sensor",
            "name": f"{cam_name} privacy",
            "unique_id": f"{node}_{cam_id}_privacy",
            "state_topic": topics.camera_state(cam_id),
            # The state is a hub-signed message; Home Assistant shows its body (it cannot check
            # the signature: `owner mode` and the owner tools do).
            "value_template": "{{ value_json.body.state }}",
            "device_class": "enum",
            "options": list(CAMERA_STATES),
            "icon": "mdi:cctv-off",
        }
        for key, label in COUNTERS:
            cmps[f"{cam_id}_{key}"] = {
                "platform": "sensor",
                "name": f"{cam_name} {label}",
                "unique_id": f"{node}_{cam_id}_{key}",
                "state_topic": topics.camera_counters(cam_id),
                "value_template": f"{{{{ value_json.{key} | default(0) }}}}",
                "state_class": "total_increasing",
                "entity_category": "diagnostic",
            }
    cmps["mode"] = {
        "platform": "sensor",
        "name": "Household mode",
        "unique_id": f"{node}_mode",
        "state_topic": topics.mode_state,
        "value_template": "{{ value_json.body.mode }}",
        "device_class": "enum",
        "options": ["home", "away", "privacy"],
        "icon": "mdi:shield-home",
    }
    cmps["access"] = {
        "platform": "event",
        "name": "Access challenge",
        "unique_id": f"{node}_access",
        "state_topic": topics.ha_access_event,
        "event_types": list(HA_EVENT_TYPES),
        "icon": "mdi:key-chain",
    }
    for key_id, name in devices:
        check_level(key_id, "device key id")
        cmps[f"epochs_{key_id}"] = {
            "platform": "sensor",
            "name": f"{name} epoch keys left (days)",
            "unique_id": f"{node}_epochs_{key_id}",
            "state_topic": topics.epochs_left,
            # null (no list installed) renders None: Home Assistant shows unknown.
            "value_template": f"{{{{ value_json['{key_id}'] | default(None) }}}}",
            "unit_of_measurement": "d",
            "device_class": "duration",
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "icon": "mdi:key-chain-variant",
        }
    if health_interval_s is not None:
        cmps.update(health_components(topics, node, cameras, health_interval_s))
    return {
        "device": {
            "identifiers": [node],
            "name": "Edge Privacy Agent",
            "manufacturer": "Edge Privacy Agent project",
            "model": "privacy hub",
            "sw_version": __version__,
            "serial_number": hub_key_id,
        },
        "origin": {"name": "edge-privacy-agent", "sw_version": __version__},
        "availability": [{"topic": topics.available, "payload_available": "online",
                          "payload_not_available": "offline"}],
        "components": cmps,
        "qos": 1,
    }


def health_components(topics: Topics, node: str, cameras: Sequence[tuple[str, str]],
                      interval_s: float) -> dict[str, dict[str, Any]]:
    """The health sensors (`agent.mqtt.health` publishes what they read)."""
    expire = int(interval_s * EXPIRE_INTERVALS) + 1

    def sensor(key: str, name: str, topic: str, template: str, **extra: Any) -> tuple[str, dict[str, Any]]:
        return key, {"platform": "sensor", "name": name, "unique_id": f"{node}_{key}", "state_topic": topic,
                     "value_template": template, "expire_after": expire, **extra}

    hub_t = topics.health
    out = dict([
        sensor("health_heartbeat", "Heartbeat", hub_t, "{{ value_json.heartbeat }}", device_class="timestamp",
               entity_category="diagnostic", icon="mdi:heart-pulse"),
        sensor("health_disk_free", "Disk free", hub_t, "{{ value_json.disk_free_mb | default(None) }}",
               device_class="data_size", unit_of_measurement="MB", state_class="measurement",
               entity_category="diagnostic"),
        sensor("health_queued_clips", "Clips queued", hub_t, "{{ value_json.queued_clips | default(None) }}",
               unit_of_measurement="clips", state_class="measurement", entity_category="diagnostic",
               icon="mdi:tray-full"),
        sensor("health_encoder", "Encoder", hub_t, "{{ value_json.encoder | default('unknown') }}",
               entity_category="diagnostic", icon="mdi:video-box"),
    ])
    out["health_problem"] = {
        "platform": "binary_sensor", "name": "Pipeline problem", "unique_id": f"{node}_health_problem",
        "state_topic": hub_t, "value_template": "{{ 'OFF' if value_json.healthy else 'ON' }}",
        "payload_on": "ON", "payload_off": "OFF", "device_class": "problem", "expire_after": expire,
        "entity_category": "diagnostic",
    }
    for cam_id, cam_name in cameras:
        t = topics.camera_health(cam_id)
        out.update([
            sensor(f"{cam_id}_fps", f"{cam_name} frame rate", t, "{{ value_json.fps | default(None) }}",
                   unit_of_measurement="fps", state_class="measurement", icon="mdi:speedometer"),
            sensor(f"{cam_id}_analysis_lag", f"{cam_name} analysis lag", t,
                   "{{ value_json.analysis_lag_s | default(None) }}", device_class="duration",
                   unit_of_measurement="s", state_class="measurement", entity_category="diagnostic"),
            sensor(f"{cam_id}_queued_frames", f"{cam_name} frames queued", t,
                   "{{ value_json.queued_frames | default(None) }}", unit_of_measurement="frames",
                   state_class="measurement", entity_category="diagnostic"),
            # The reason that withheld most frames; every reason's count is in the attributes
            # (reasons such as zone names are open-ended, so they cannot each be an entity).
            sensor(f"{cam_id}_withheld_reason", f"{cam_name} withheld for", t,
                   "{{ value_json.top_withheld_reason | default('none') }}", json_attributes_topic=t,
                   json_attributes_template="{{ value_json.withheld_by_reason | tojson }}",
                   entity_category="diagnostic", icon="mdi:eye-off"),
            # A moved camera stays withheld until its owner relearns it: the homeowner must see why.
            sensor(f"{cam_id}_scene", f"{cam_name} view", t, "{{ value_json.scene | default('ok') }}",
                   device_class="enum", options=list(SCENE_STATES), json_attributes_topic=t,
                   json_attributes_template="{{ {'note': value_json.scene_note} | tojson }}",
                   icon="mdi:camera-switch"),
            sensor(f"{cam_id}_private_room", f"{cam_name} private room", t,
                   "{{ value_json.private_room | default('none') }}", device_class="enum",
                   options=["none", "bathroom", "bedroom"], icon="mdi:shower"),
            # Frames released with fewer detector runs because the hub was behind the camera: a count
            # that keeps growing says the hub has more cameras than it can analyse in full.
            sensor(f"{cam_id}_under_load_frames", f"{cam_name} frames analysed under load", t,
                   "{{ value_json.under_load_frames | default(0) }}", unit_of_measurement="frames",
                   state_class="total_increasing", entity_category="diagnostic", icon="mdi:speedometer-slow"),
        ])
    return out


class Discovery:
    """Publishes (and re-publishes) discovery for one hub."""

    def __init__(self, client: MqttClient, hub_key_id: str, cameras: Sequence[tuple[str, str]],
                 devices: Sequence[tuple[str, str]] = (), health_interval_s: float | None = None) -> None:
        self.client = client
        self.topics = client.topics
        self.hub_key_id = hub_key_id
        self.cameras = list(cameras)
        self.devices = list(devices)
        self.health_interval_s = health_interval_s

    @property
    def topic(self) -> str:
        return self.topics.ha_device_config(node_id(self.hub_key_id))

    def start(self) -> None:
        self.client.subscribe(self.topics.ha_status, self._on_ha_status)
        self.client.add_connect_hook(self.publish)

    def publish(self) -> None:
        payload = json.dumps(discovery_payload(self.topics, self.hub_key_id, self.cameras, self.devices,
                                               self.health_interval_s), sort_keys=True)
        self.client.publish(self.topic, payload, qos=1, retain=True)

    def remove(self) -> None:
        self.client.publish_wait(self.topic, b"", qos=1, retain=True)

    def _on_ha_status(self, m: Message) -> None:
        if m.payload.decode(errors="replace").strip() == ONLINE:
            self.publish()
