"""Every MQTT topic the agent uses, in one place (README.md lists the same table).

On the ground floor because two packages speak these names: the homeowner's config (its
`mqtt.topic_prefix`) and the MQTT transport (`agent.mqtt`). It imports only `agent.errors`.

All hub topics live under one prefix (config `mqtt.topic_prefix`, default
`privacy-agent`). Use one prefix per hub: the broker ACL is written per prefix.

| topic                                    | dir   | retained | QoS | payload                         |
|------------------------------------------|-------|----------|-----|---------------------------------|
| P/available                              | hub → | yes      | 1   | `online` / `offline` (last will)|
| P/camera/<cam>/state                     | hub → | yes      | 1   | signed `camera_state` (hub)     |
| P/camera/<cam>/counters                  | hub → | yes      | 1   | JSON counters                   |
| P/camera/<cam>/health                    | hub → | yes      | 1   | JSON camera health (fps, lag...)|
| P/health                                 | hub → | yes      | 1   | JSON hub heartbeat and health   |
| P/events                                 | hub → | no       | 1   | JSON event from the outbox      |
| P/mode/state                             | hub → | yes      | 1   | signed `mode_state` (hub)       |
| P/mode/set                               | → hub | no       | 1   | signed `mode_set` (owner device)|
| P/mode/result/<device key id>            | hub → | no       | 1   | signed `mode_result` (hub)      |
| P/relearn/request                        | → hub | no       | 1   | signed `relearn` (owner device) |
| P/relearn/result/<device key id>         | hub → | no       | 1   | signed `relearn_result` (hub)   |
| P/access/request/<request_id>            | → hub | no       | 1   | signed `request` (requester)    |
| P/access/challenge/<challenge_id>        | hub → | yes*     | 1   | signed `challenge` (hub)        |
| P/access/decision/<challenge_id>         | → hub | no       | 1   | signed `decision` (owner device)|
| P/access/grant/<request_id>              | hub → | no       | 1   | signed `grant` or `denial` (hub)|
| P/access/status/<request_id>             | hub → | no       | 1   | signed `status` (hub): refusals |
| P/delete/request/<request_id>            | → hub | yes      | 1   | signed `delete_request` (owner) |
| P/delete/receipt/<request_id>            | hub → | yes      | 1   | signed `delete_receipt` (hub)   |
| P/epochs/<device key id>                 | → hub | yes      | 1   | signed epoch key list (device)  |
| P/epochs_left                            | hub → | yes      | 1   | `{device key id: days or null}` |
| P/audit/checkpoint                       | hub → | yes      | 1   | C2SP signed-note checkpoint     |
| P/audit/proof/request                    | → hub | no       | 1   | `{"from","to","nonce"}` (owner) |
| P/audit/proof/<nonce>                    | hub → | no       | 1   | consistency proof (JSON)        |
| P/ha/access_event                        | hub → | no       | 1   | `{"event_type": ...}` for HA    |
| homeassistant/device/<node>/config       | hub → | yes      | 1   | HA device discovery             |
| homeassistant/status                     | → hub | -        | 1   | `online` when HA restarts       |

(*) a challenge stays retained while it is pending; the hub clears it (empty
retained payload) when it is granted, denied or expires.

Invariants:
- Topic levels built from data (camera ids, request and challenge ids) are
  checked: no `+`, `#`, `/` or NUL, so a crafted id cannot widen a filter
  or address another topic.
- No topic ever carries images, plaintext video or secret keys. Wrapped clip
  keys appear only sealed: to the hub's box key inside decisions, to one
  requester inside signed grants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.errors import MqttError

DEFAULT_PREFIX = "privacy-agent"
HA_DISCOVERY_PREFIX = "homeassistant"

ONLINE = "online"
OFFLINE = "offline"

_LEVEL_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}(/[A-Za-z0-9_.-]{1,64}){0,3}$")


def check_level(value: str, what: str) -> str:
    """One topic level taken from data. Wildcards and separators are refused."""
    if not isinstance(value, str) or not _LEVEL_RE.match(value):
        raise MqttError(
            f"{what} {value!r} cannot be used in an MQTT topic: use 1-128 of A-Z a-z 0-9 _ . : -"
        )
    return value


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise MqttError(
            f"topic prefix {prefix!r} must be 1-4 levels of A-Z a-z 0-9 _ . - separated by '/'"
        )
    return prefix


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names for one hub prefix. Build with `Topics(prefix)`; all methods are pure."""

    prefix: str = DEFAULT_PREFIX
    discovery_prefix: str = HA_DISCOVERY_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        check_prefix(self.discovery_prefix)

    # --- hub state ---------------------------------------------------------
    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    def camera_state(self, camera_id: str) -> str:
        return f"{self.prefix}/camera/{check_level(camera_id, 'camera id')}/state"

    def camera_counters(self, camera_id: str) -> str:
        return f"{self.prefix}/camera/{check_level(camera_id, 'camera id')}/counters"

    def camera_health(self, camera_id: str) -> str:
        return f"{self.prefix}/camera/{check_level(camera_id, 'camera id')}/health"

    @property
    def health(self) -> str:
        return f"{self.prefix}/health"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def mode_state(self) -> str:
        return f"{self.prefix}/mode/state"

    @property
    def mode_set(self) -> str:
        return f"{self.prefix}/mode/set"

    def mode_result(self, device_key_id: str) -> str:
        return f"{self.prefix}/mode/result/{check_level(device_key_id, 'device key id')}"

    # --- relearn (a camera moved on purpose) -------------------------------
    @property
    def relearn_request(self) -> str:
        return f"{self.prefix}/relearn/request"

    def relearn_result(self, device_key_id: str) -> str:
        return f"{self.prefix}/relearn/result/{check_level(device_key_id, 'device key id')}"

    # --- access flow -------------------------------------------------------
    def access_request(self, request_id: str) -> str:
        return f"{self.prefix}/access/request/{check_level(request_id, 'request id')}"

    @property
    def access_request_filter(self) -> str:
        return f"{self.prefix}/access/request/+"

    def access_challenge(self, challenge_id: str) -> str:
        return f"{self.prefix}/access/challenge/{check_level(challenge_id, 'challenge id')}"

    @property
    def access_challenge_filter(self) -> str:
        return f"{self.prefix}/access/challenge/+"

    def access_decision(self, challenge_id: str) -> str:
        return f"{self.prefix}/access/decision/{check_level(challenge_id, 'challenge id')}"

    @property
    def access_decision_filter(self) -> str:
        return f"{self.prefix}/access/decision/+"

    def access_grant(self, request_id: str) -> str:
        return f"{self.prefix}/access/grant/{check_level(request_id, 'request id')}"

    @property
    def access_grant_filter(self) -> str:
        return f"{self.prefix}/access/grant/+"

    def access_status(self, request_id: str) -> str:
        return f"{self.prefix}/access/status/{check_level(request_id, 'request id')}"

    @property
    def access_status_filter(self) -> str:
        return f"{self.prefix}/access/status/+"

    # --- deletion ----------------------------------------------------------
    def delete_request(self, request_id: str) -> str:
        return f"{self.prefix}/delete/request/{check_level(request_id, 'request id')}"

    @property
    def delete_request_filter(self) -> str:
        return f"{self.prefix}/delete/request/+"

    def delete_receipt(self, request_id: str) -> str:
        return f"{self.prefix}/delete/receipt/{check_level(request_id, 'request id')}"

    # --- epoch keys --------------------------------------------------------
    def epoch_list(self, device_key_id: str) -> str:
        return f"{self.prefix}/epochs/{check_level(device_key_id, 'device key id')}"

    @property
    def epoch_list_filter(self) -> str:
        return f"{self.prefix}/epochs/+"

    @property
    def epochs_left(self) -> str:
        # Outside `P/epochs/#`, which owner devices may write: only the hub writes this.
        return f"{self.prefix}/epochs_left"

    # --- audit -------------------------------------------------------------
    @property
    def audit_checkpoint(self) -> str:
        return f"{self.prefix}/audit/checkpoint"

    @property
    def audit_proof_request(self) -> str:
        return f"{self.prefix}/audit/proof/request"

    def audit_proof(self, nonce: str) -> str:
        return f"{self.prefix}/audit/proof/{check_level(nonce, 'proof nonce')}"

    # --- Home Assistant ----------------------------------------------------
    @property
    def ha_access_event(self) -> str:
        return f"{self.prefix}/ha/access_event"

    def ha_device_config(self, node_id: str) -> str:
        return f"{self.discovery_prefix}/device/{check_level(node_id, 'node id')}/config"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    # --- helpers -----------------------------------------------------------
    def last_level(self, topic: str, filter_: str) -> str:
        """The `+` level of `topic` matched against a one-`+`-at-the-end filter like `P/x/+`."""
        head = filter_[:-1]
        if not filter_.endswith("/+") or not topic.startswith(head):
            raise MqttError(f"topic {topic!r} does not match {filter_!r}")
        return check_level(topic[len(head):], "topic level")
