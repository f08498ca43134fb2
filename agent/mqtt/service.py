"""Assemble the hub's MQTT side from the config: client, outbox, audit log, access, discovery.

`HubMqtt.from_config(loaded, clock)` builds everything; `start()` connects (in the background:
the hub works without the broker and catches up later); `stop()` flushes and disconnects.
`privacy-agent hub serve --config FILE` runs it standalone; the pipeline's `run` can hold one
and feed it events (`on_event`) and camera state (`reporter`).

Audit records: `boot` and `config_change` (`agent.access.recorder.record_boot`); the access flow
records its own steps, and the epoch key service (`agent.mqtt.epochs`) its `epochs_installed`
and `epochs_refused`. Pipeline and outbox events reach the audit log through an
`EventRecorder` that the command wires to its event log, with or without MQTT; `run` hands its
audit log in, so one process has one writer of the log.
The mode chosen by an owner-signed MQTT message is written with `agent.core.modes.write_override`,
which the pipeline's ModeController reads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent import access as A
from agent.access.audit import AuditLog, audit_dir
from agent.access.recorder import EventRecorder, record_boot
from agent.analysis.scenestore import write_request
from agent.clock import Clock, SystemClock
from agent.config import LoadedConfig, load_config
from agent.core.datatypes import Event
from agent.core.modes import ModeController, switch_engaged, write_override
from agent.crypto.keys import load_hub_identity, load_roster
from agent.errors import AgentError, ConfigError
from agent.mqtt.client import MqttClient
from agent.mqtt.discovery import Discovery
from agent.mqtt.epochs import HubEpochService
from agent.mqtt.hub import HubAccessService, StateReporter
from agent.mqtt.outbox import Outbox
from agent.storage.index import lookup_spans
from agent.storage.lock import DataDirLock
from agent.storage.outbox import OUTBOX_DIRNAME
from agent.storage.retention import ExpiryTicker
from agent.vocab import Mode

log = logging.getLogger(__name__)

#: Seconds between re-signed audit checkpoints on a quiet hub (`audit pin` warns after a day).
CHECKPOINT_REFRESH_S = 3600.0



class HubMqtt:
    def __init__(self, loaded: LoadedConfig, clock: Clock | None = None, audit: AuditLog | None = None) -> None:
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
        # One writer of the audit log per process: `run` hands in its own (and closes it itself).
        self._owns_audit = audit is None
        if audit is None:
            audit = AuditLog(audit_dir(data), self.clock, self.hub)
        self.audit = audit
        # Standalone, this service records the audited events it is fed; with a log handed in,
        # the owner of the log has its own recorder (one entry per event, never two).
        self._recorder = EventRecorder(audit) if self._owns_audit else None
        self.audit.on_checkpoint = self._on_checkpoint
        self.outbox = Outbox(data / "mqtt" / "outbox.sqlite", self.clock)
        self.reporter = StateReporter(self.client, self.hub, self.outbox, self.clock)
        cams = loaded.config.cameras
        self.access = HubAccessService(
            self.client, self.hub, lambda: load_roster(data), self.audit, data / "mqtt",
            policy=A.AccessPolicy.from_config(cfg.access), clock=self.clock,
            known_cameras=frozenset(c.id for c in cams), on_mode=self._set_mode,
            clip_lookup=self._lookup_clips, switch_on=lambda: switch_engaged(data),
            deleter=self._delete,
            # Recorded in the audit log already: the request file only tells `run` (now or at
            # its next start) to relearn the camera between two frames.
            relearner=lambda order: write_request(data, order.camera, order.device,
                                                  int(self.clock.wall() * 1000), recorded=True),
        )
        self._service.append(self.access)
        # Household devices' epoch key lists (`P/epochs/<device>`), installed into DATA/keys/epochs/.
        self.epochs = HubEpochService(self.client, data, self.audit, lambda: load_roster(data), self.clock)
        self.discovery = (
            Discovery(self.client, self.hub.key_id, [(c.id, c.name or c.id) for c in cams],
                      devices=_household_devices(data), health_interval_s=cfg.health_interval_s)
            if cfg.discovery else None
        )
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @classmethod
    def from_config(cls, loaded: LoadedConfig, clock: Clock | None = None, audit: AuditLog | None = None) -> HubMqtt:
        return cls(loaded, clock, audit)

    def _on_checkpoint(self, cp: Any) -> None:
        if self._service:
            self._service[0].publish_checkpoint(cp)

    def _set_mode(self, mode: str, by: str) -> None:
        # Raises PrivacySwitchOn while the physical switch is on and `mode` is not privacy.
        write_override(self.loaded.data_dir, Mode(mode), by, self.clock.wall())

    def _delete(self, order: A.DeleteOrder) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Carry out an owner's recorded deletion: the outbox and every encrypted destination, with
        the derived data (`agent.storage.deletion`). Places that cannot be reached stay pending and
        the retention pass finishes them."""
        from agent.storage.deletion import delete_clips, find_clips
        from agent.storage.outbox import Outbox
        from agent.storage.retention import encrypted_uploaders

        sc = order.scope
        ob = Outbox(self.loaded.data_dir, self.clock)
        try:
            if sc.clips:
                found = find_clips(ob, clip_ids=sc.clips)
                if sc.cameras:
                    found = [c for c in found if c.camera_id in sc.cameras]
            else:
                found = [c for cam in sc.cameras
                         for c in find_clips(ob, camera=cam, from_s=sc.from_ms / 1000, to_s=sc.to_ms / 1000)]
            ids = sorted({c.clip_id for c in found})
            if not ids:
                return [], []
            report = delete_clips(ob, encrypted_uploaders(self.loaded), ids, reason="owner", by=order.device,
                                  now_s=self.clock.wall(), audit=self.audit.append, events=self.outbox,
                                  plan_fields={"request_id": order.request_id})
        finally:
            ob.close()
        return report.receipt_entries()

    def _lookup_clips(self, clip_ids: Sequence[str]) -> dict[str, A.ClipMeta]:
        """The hub's own index entries (camera, start, end) for requested clips."""
        spans = lookup_spans(self.loaded.data_dir / OUTBOX_DIRNAME / "outbox.db", clip_ids)
        out = {}
        for cid, sp in spans.items():
            try:
                out[cid] = A.ClipMeta(cid, sp.camera_id, int(sp.start_wall_s * 1000), int(sp.end_wall_s * 1000))
            except AgentError as e:
                log.warning("clip index entry %s is unusable: %s", cid, e)
        return out

    def record_boot(self) -> None:
        """`boot`, plus `config_change` if the config differs from the previous boot's."""
        record_boot(self.audit, __version__, self.loaded.sha256)

    def on_event(self, ev: Event) -> None:
        """EventLog subscriber: every event to the MQTT outbox; audited kinds also to the audit log
        when this service owns it."""
        try:
            self.reporter.event(ev)
        except AgentError as e:
            log.error("cannot forward event %s: %s", ev.kind, e)
        else:
            self._record_outbox_losses(ev)
        if self._recorder is not None:
            self._recorder(ev)

    def _record_outbox_losses(self, ev: Event) -> None:
        """Events that could not enter the MQTT outbox (full disk) are audited once it works again."""
        lost, self.outbox.recovered_loss = self.outbox.recovered_loss, 0
        if not lost:
            return
        try:
            self.audit.append("events_lost", {"count": lost, "where": "mqtt outbox", "camera": ev.camera_id})
        except AgentError as e:
            log.error("cannot record %d lost MQTT event(s) in the audit log: %s", lost, e)

    def start(self) -> None:
        # The mode owners see is signed from the first moment (the pipeline, when it runs, keeps it
        # current; standalone, this is the mode the schedule, override and switch give now).
        self.access.publish_mode(str(ModeController(self.loaded.config.modes, self.loaded.data_dir,
                                                    self.clock).current()))
        self.access.start()
        self.epochs.start()
        if self.discovery is not None:
            self.discovery.start()
        self.outbox.attach(self.client)
        self.client.start(wait_s=None)  # in the background; the outbox keeps events meanwhile
        self._ticker = threading.Thread(target=self._tick_loop, name="access-expiry", daemon=True)
        self._ticker.start()

    def _tick_loop(self) -> None:
        last_cp = self.clock.monotonic()
        while not self._stop.wait(1.0):
            try:
                self.access.tick()
                self.epochs.tick()
                if self.clock.monotonic() - last_cp >= CHECKPOINT_REFRESH_S:
                    # A fresh signature on the same tree: owners can tell a live hub from a
                    # broker that keeps showing an old checkpoint.
                    last_cp = self.clock.monotonic()
                    self.audit.checkpoint()
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
        if self._owns_audit:
            self.audit.close()


def _household_devices(data_dir: Path) -> list[tuple[str, str]]:
    """(key id, name) of the roster's household devices, for their Home Assistant sensors."""
    try:
        roster = load_roster(data_dir)
    except AgentError as e:
        log.error("cannot read the roster for discovery: %s", e)
        return []
    return [] if roster is None else [(d.key_id, d.name or d.key_id) for d in roster.devices]


def serve(config_path: str | Path, run_for_s: float | None = None) -> int:
    loaded = load_config(config_path)
    # The same data directory as `run`: one of them at a time writes its audit log and state.
    with DataDirLock(loaded.data_dir, "hub serve"):
        return _serve(loaded, run_for_s)


def _serve(loaded: LoadedConfig, run_for_s: float | None) -> int:
    hub = HubMqtt.from_config(loaded)
    hub.record_boot()
    hub.start()
    # Retention and unfinished deletions, as in `run` (this process holds the data-dir lock).
    expiry = ExpiryTicker.start_for(loaded, hub.clock, hub.audit.append, events=lambda: hub.outbox)
    print(f"hub {hub.hub.key_id} serving MQTT at {hub.client.host}:{hub.client.port} "
          f"(prefix {hub.client.topics.prefix})", flush=True)
    try:
        hub._stop.wait(run_for_s)  # None: until interrupted
    except KeyboardInterrupt:
        pass
    finally:
        if expiry is not None:
            expiry.stop()
        hub.stop()
    return 0
