"""Assemble the hub's MQTT side from the config: client, outbox, audit log, access, discovery.

`HubMqtt.from_config(loaded, clock)` builds everything; `start()` connects (in the background:
the hub works without the broker and catches up later); `stop()` flushes and disconnects.
`privacy-agent hub serve --config FILE` runs it standalone; the pipeline's `run` can hold one
and feed it events (`on_event`) and camera state (`reporter`).

Audit records made here: `boot` (version, config hash) and `config_change` when the config hash
differs from the one recorded at the previous boot; from pipeline events (`AUDITED_EVENTS`):
clip created, uploaded and deleted, model faults and tamper.
The mode chosen by an owner-signed MQTT message is written with `agent.core.modes.write_override`,
which the pipeline's ModeController reads.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from agent import __version__
from agent import access as A
from agent.access.audit import AuditLog, audit_dir
from agent.clock import Clock, SystemClock
from agent.config import LoadedConfig, load_config
from agent.core.datatypes import Event
from agent.crypto.keys import load_hub_identity, load_roster
from agent.errors import AgentError, ConfigError
from agent.mqtt.client import MqttClient
from agent.mqtt.discovery import Discovery
from agent.mqtt.hub import HubAccessService, StateReporter
from agent.mqtt.outbox import Outbox
from agent.vocab import Mode

log = logging.getLogger(__name__)

#: Pipeline event kinds that are also audit records (event kind -> audit kind). A clip that
#: fails the pre-upload gate is tamper evidence.
AUDITED_EVENTS: dict[str, str] = {
    "clip_sealed": "clip_created",
    "clip_uploaded": "clip_uploaded",
    "clip_deleted": "clip_deleted",
    "clip_rejected": "tamper",
    "model_fault": "model_fault",
    "analysis_fault": "model_fault",
    "tamper": "tamper",
    "camera_covered": "tamper",
    "mode_changed": "mode_change",
    "model_missing": "model_fault",
    "detector_error": "model_fault",
}
#: Event details copied into the audit entry (ids and counts only).
_AUDIT_DETAILS = ("clip_id", "seq", "dest", "object", "frames", "bytes", "frame", "mode", "source")


class HubMqtt:
    def __init__(self, loaded: LoadedConfig, clock: Clock | None = None) -> None:
        cfg = loaded.config.mqtt
        if cfg is None:
            raise ConfigError(f"{loaded.path} has no `mqtt:` section")
        self.loaded = loaded
        self.clock = clock or SystemClock()
        data = loaded.data_dir
        self.hub = load_hub_identity(data)
        self.client = MqttClient.from_config(cfg, client_id=f"epa-{self.hub.key_id}", base_dir=loaded.path.parent,
                                             availability=True, session_expiry_s=3600)
        self._service: list[HubAccessService] = []
        self.audit = AuditLog(audit_dir(data), self.clock, self.hub, on_checkpoint=self._on_checkpoint)
        self.outbox = Outbox(data / "mqtt" / "outbox.sqlite", self.clock)
        self.reporter = StateReporter(self.client, self.outbox)
        cams = loaded.config.cameras
        self.access = HubAccessService(
            self.client, self.hub, lambda: load_roster(data), self.audit, data / "mqtt",
            policy=A.AccessPolicy.from_config(cfg.access), clock=self.clock,
            known_cameras=frozenset(c.id for c in cams), on_mode=self._set_mode,
        )
        self._service.append(self.access)
        self.discovery = (
            Discovery(self.client, self.hub.key_id, [(c.id, c.name or c.id) for c in cams]) if cfg.discovery else None
        )
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @classmethod
    def from_config(cls, loaded: LoadedConfig, clock: Clock | None = None) -> HubMqtt:
        return cls(loaded, clock)

    def _on_checkpoint(self, cp: Any) -> None:
        if self._service:
            self._service[0].publish_checkpoint(cp)

    def _set_mode(self, mode: str, by: str) -> None:
        from agent.core.modes import write_override

        write_override(self.loaded.data_dir, Mode(mode), by, self.clock.wall())

    def record_boot(self) -> None:
        """`boot`, plus `config_change` if the config differs from the previous boot's."""
        last = None
        try:
            from agent.access.audit import read_entries

            entries, _ = read_entries(self.audit.path) if self.audit.path.exists() else ([], [])
            for e in reversed(entries):
                if e.kind in ("boot", "config_change") and "config_sha256" in e.fields:
                    last = e.fields["config_sha256"]
                    break
        except AgentError as e:
            log.error("cannot read the audit log for the last config hash: %s", e)
        self.audit.append("boot", {"version": __version__, "config_sha256": self.loaded.sha256})
        if last is not None and last != self.loaded.sha256:
            self.audit.append("config_change", {"from_sha256": last, "config_sha256": self.loaded.sha256})

    def on_event(self, ev: Event) -> None:
        """EventLog subscriber: every event to the outbox; faults and tamper also to the audit log."""
        try:
            self.reporter.event(ev)
            kind = AUDITED_EVENTS.get(ev.kind)
            if kind is not None:
                fields: dict[str, Any] = {"camera": ev.camera_id, "event": ev.kind, "message": ev.message[:200]}
                fields.update({k: ev.details[k] for k in _AUDIT_DETAILS
                               if k in ev.details and isinstance(ev.details[k], str | int)})
                self.audit.append(kind, fields)
        except AgentError as e:
            log.error("cannot forward event %s: %s", ev.kind, e)

    def start(self) -> None:
        self.access.start()
        if self.discovery is not None:
            self.discovery.start()
        self.outbox.attach(self.client)
        self.client.start(wait_s=None)  # in the background; the outbox keeps events meanwhile
        self._ticker = threading.Thread(target=self._tick_loop, name="access-expiry", daemon=True)
        self._ticker.start()

    def _tick_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.access.tick()
            except AgentError as e:
                log.error("access expiry failed: %s", e)

    def stop(self, flush_s: float = 5.0) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(5)
        if self.client.connected:
            self.access.clear_pending()
        if self.client.connected and not self.outbox.flush(flush_s):
            log.warning("%d events stay in the MQTT outbox for the next start", self.outbox.pending())
        self.outbox.close()
        self.client.stop()
        self.audit.close()


def serve(config_path: str | Path, run_for_s: float | None = None) -> int:
    loaded = load_config(config_path)
    hub = HubMqtt.from_config(loaded)
    hub.record_boot()
    hub.start()
    print(f"hub {hub.hub.key_id} serving MQTT at {hub.client.host}:{hub.client.port} "
          f"(prefix {hub.client.topics.prefix})", flush=True)
    try:
        hub._stop.wait(run_for_s)  # None: until interrupted
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
    return 0
