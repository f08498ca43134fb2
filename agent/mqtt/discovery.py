"""Home Assistant MQTT discovery: the hub as one device (`homeassistant/device/<node>/config`).

One retained device-based discovery message lists every entity:
- per camera: a `sensor` with the privacy state (`clear` / `masked` / `withheld`, enum) and
  `sensor`s for its counters (frames passed, masked, withheld; total_increasing);
- a `sensor` with the household mode (read-only: only an owner-signed message can change it,
  so Home Assistant, which cannot sign, gets no `select`);
- an `event` entity for access challenges (`event_types`: challenge, approved, granted,
  denied, expired, refused);
- per household device of the roster: a diagnostic `sensor` "epoch keys left (days)", from the
  hub's retained `P/epochs_left` (`agent.mqtt.epochs`); unknown while the device has no list.
All entities share the hub's availability topic. An empty retained payload removes the device.
The hub re-publishes discovery when Home Assistant announces `online` on `homeassistant/status`.

Invariant: discovery carries names and topics only; no image URLs, no thumbnails, no keys.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agent import __version__
from agent.mqtt.client import Message, MqttClient
from agent.mqtt.hub import CAMERA_STATES, HA_EVENT_TYPES
from agent.topics import ONLINE, Topics, check_level

COUNTERS: tuple[tuple[str, str], ...] = (
    ("passed", "frames passed"),
    ("masked", "frames masked"),
    ("withheld", "frames withheld"),
)


def node_id(hub_key_id: str) -> str:
    return check_level(f"epa_{hub_key_id}", "node id")


def discovery_payload(topics: Topics, hub_key_id: str, cameras: Sequence[tuple[str, str]],
                      devices: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The device discovery document. `cameras` are (id, display name) pairs, `devices` the
    household devices as (key id, name) pairs."""
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


class Discovery:
    """Publishes (and re-publishes) discovery for one hub."""

    def __init__(self, client: MqttClient, hub_key_id: str, cameras: Sequence[tuple[str, str]],
                 devices: Sequence[tuple[str, str]] = ()) -> None:
        self.client = client
        self.topics = client.topics
        self.hub_key_id = hub_key_id
        self.cameras = list(cameras)
        self.devices = list(devices)

    @property
    def topic(self) -> str:
        return self.topics.ha_device_config(node_id(self.hub_key_id))

    def start(self) -> None:
        self.client.subscribe(self.topics.ha_status, self._on_ha_status)
        self.client.add_connect_hook(self.publish)

    def publish(self) -> None:
        payload = json.dumps(discovery_payload(self.topics, self.hub_key_id, self.cameras, self.devices), sort_keys=True)
        self.client.publish(self.topic, payload, qos=1, retain=True)

    def remove(self) -> None:
        self.client.publish_wait(self.topic, b"", qos=1, retain=True)

    def _on_ha_status(self, m: Message) -> None:
        if m.payload.decode(errors="replace").strip() == ONLINE:
            self.publish()
