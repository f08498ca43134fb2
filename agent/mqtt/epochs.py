"""The hub's epoch key lists over MQTT: install what household devices publish, report horizons.

Household devices publish their signed list of public epoch keys retained on
`P/epochs/<device key id>` (`privacy-agent owner epochs publish`). `HubEpochService`:
- installs each list with `install_epoch_list` (verified against the installed roster, no
  rollback, no changed key; the list must be of the device its topic names);
- records first: `epochs_installed` (device, version, first, last) is in the audit log before the
  file is replaced; a refusal is audited as `epochs_refused` (device, reason) and logged, never
  raised into the MQTT dispatcher. The same refused payload on the same topic (a retained message
  redelivered after a reconnect) is audited once per run;
- publishes retained on `P/epochs_left` how many days each household device's installed list
  still covers (`{key id: days | null}`, for the Home Assistant sensors), after every install,
  every reconnect and once an hour.

The broker is untrusted: a list is accepted only for its signature by a roster device, whatever
topic it came on and whoever published it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from agent.access.audit import AuditLog
from agent.clock import Clock, SystemClock
from agent.crypto.keys import EpochList, Roster, epoch_horizons, install_epoch_list
from agent.errors import AgentError, MqttError
from agent.mqtt.client import Message, MqttClient
from agent.topics import Topics

log = logging.getLogger(__name__)

#: Seconds between two publications of the horizons on a quiet hub.
STATUS_EVERY_S = 3600.0


class HubEpochService:
    def __init__(
        self,
        client: MqttClient,
        data_dir: Path,
        audit: AuditLog,
        roster_loader: Callable[[], Roster | None],
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.topics: Topics = client.topics
        self.data_dir = Path(data_dir)
        self.audit = audit
        self._roster_loader = roster_loader
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._refused: dict[str, bytes] = {}
        self._last_status_mono: float | None = None
        #: (device, outcome, detail) for every list handled: tests and the bench.
        self.results: list[tuple[str, str, str]] = []
        self._cond = threading.Condition(self._lock)

    def start(self) -> None:
        self.client.subscribe(self.topics.epoch_list_filter, self._on_list)
        self.client.add_connect_hook(self.publish_status)

    # --- installing ---------------------------------------------------------------------

    def _on_list(self, m: Message) -> None:
        if not m.payload:
            return  # a cleared retained message
        try:
            device = self.topics.last_level(m.topic, self.topics.epoch_list_filter)
        except MqttError:
            log.warning("epoch list on %r: not a device topic; ignored", m.topic[:200])
            return
        changed = False
        with self._lock:
            try:
                changed = self.install(m.payload, device, what=f"epoch list on {self.topics.epoch_list(device)}")
            except Exception as e:  # noqa: BLE001 - the dispatcher must survive any message
                log.error("epoch list for device %s: %s: %s", device, type(e).__name__, e)
                self._note(device, "error", f"{type(e).__name__}: {e}")
        if changed:
            self.publish_status()

    def install(self, payload: bytes, device: str, *, what: str) -> bool:
        """Install one list (call with the lock held). Returns whether it changed anything."""
        digest = hashlib.sha256(payload).digest()
        try:
            roster = self._roster_loader()
            lst, changed = install_epoch_list(self.data_dir, payload, roster, what=what, record=self._record,
                                              expect_device=device)
        except AgentError as e:
            self._refuse(device, digest, str(e))
            return False
        self._refused.pop(device, None)
        self._note(device, "installed" if changed else "unchanged", f"version {lst.version}")
        return changed

    def _record(self, lst: EpochList) -> None:
        # Record, then act: an AuditError here stops the install (the caller refuses it).
        self.audit.append("epochs_installed", {"device": lst.device, "version": lst.version, "first": lst.first,
                                               "last": lst.last})

    def _refuse(self, device: str, digest: bytes, reason: str) -> None:
        log.warning("refusing %s", reason)
        if self._refused.get(device) != digest:
            try:
                self.audit.append("epochs_refused", {"device": device, "reason": reason[:300]})
                self._refused[device] = digest
            except AgentError as e:
                log.error("cannot record the refused epoch list of device %s: %s", device, e)
        self._note(device, "refused", reason)

    def _note(self, device: str, outcome: str, detail: str) -> None:
        self.results.append((device, outcome, detail))
        self._cond.notify_all()

    def wait_result(self, pred: Callable[[tuple[str, str, str]], bool], timeout_s: float) -> tuple[str, str, str] | None:
        """Tests: wait (real time) until a result matching `pred` was noted."""
        with self._cond:
            ok = self._cond.wait_for(lambda: any(pred(r) for r in self.results), timeout_s)
            return next((r for r in self.results if pred(r)), None) if ok else None

    # --- horizons -----------------------------------------------------------------------

    def status(self) -> dict[str, float | None]:
        try:
            roster = self._roster_loader()
        except AgentError as e:
            log.error("cannot read the roster for the epoch key status: %s", e)
            return {}
        return epoch_horizons(self.data_dir, roster, self.clock.wall())

    def publish_status(self) -> None:
        self._last_status_mono = self.clock.monotonic()
        try:
            self.client.publish(self.topics.epochs_left, json.dumps(self.status(), sort_keys=True), qos=1,
                                retain=True)
        except MqttError as e:
            log.error("cannot publish the epoch key status: %s", e)

    def tick(self) -> None:
        """Call periodically: re-publishes the horizons once an hour (they shrink with time)."""
        last = self._last_status_mono
        if last is None or self.clock.monotonic() - last >= STATUS_EVERY_S:
            self.publish_status()
