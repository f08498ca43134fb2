"""The hub side of MQTT: access flow, signed mode changes, audit checkpoints, state and events.

`HubAccessService` wires the pure state machine (`agent.access`) to a broker connection:
- subscribes to requests, decisions and signed mode changes;
- runs each message through the state machine under one lock (so a challenge is consumed
  atomically, before anything else can see it);
- writes the audit entries FIRST and publishes only if that succeeded: if the audit log cannot
  be written, no grant goes out (fail closed);
- persists per-device counters (`DATA/mqtt/access-state.json`) so a replayed decision or mode
  change stays refused after a restart. Open challenges are NOT persisted: the monotonic clock
  does not survive a reboot, so a restart closes them (owners simply see them vanish);
- re-publishes retained state after every reconnect (a restarted broker may have lost it);
- reloads the owner-signed roster from `DATA/keys/roster.json` when the file changes, and never
  accepts one whose version went backwards.

`StateReporter` publishes per-camera privacy state and counters (retained) and forwards
pipeline events through the durable outbox.

Invariants: nothing published carries images, plaintext video or keys; the broker is
untrusted: every message that changes anything is verified by signature.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent import access as A
from agent.access.audit import AuditLog, Checkpoint
from agent.clock import Clock, SystemClock
from agent.core.datatypes import Event
from agent.crypto.keys import HubIdentity, Roster, check_roster_update
from agent.errors import AccessError, AgentError, AuditError, MqttError, RosterError
from agent.fsutil import atomic_write
from agent.mqtt.client import Message, MqttClient
from agent.mqtt.outbox import Outbox
from agent.topics import Topics

log = logging.getLogger(__name__)

STATE_FILE = "access-state.json"
CAMERA_STATES: tuple[str, ...] = ("clear", "masked", "withheld")
HA_EVENT_TYPES: tuple[str, ...] = ("challenge", "approved", "granted", "denied", "expired", "refused")


class HubAccessService:
    def __init__(
        self,
        client: MqttClient,
        hub: HubIdentity,
        roster_loader: Callable[[], Roster | None],
        audit: AuditLog,
        state_dir: Path,
        *,
        policy: A.AccessPolicy | None = None,
        clock: Clock | None = None,
        known_cameras: frozenset[str] | None = None,
        on_mode: Callable[[str, str], None] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.client = client
        self.topics: Topics = client.topics
        self.hub = hub
        self._roster_loader = roster_loader
        self.audit = audit
        self.policy = policy or A.AccessPolicy()
        self.clock = clock or SystemClock()
        self.known_cameras = known_cameras
        self._on_mode = on_mode
        self._rand = random_bytes
        self._lock = threading.RLock()
        self._state_path = Path(state_dir) / STATE_FILE
        roster = roster_loader()
        if roster is None:
            raise AccessError("no owner-signed roster is installed; run `privacy-agent keys roster` first")
        self.state = A.new_state(hub.key_id, roster, self._load_counters())
        self.mode: str | None = None
        self.results: list[A.Result] = []  # for tests and the bench: every result, in order
        self.unauthenticated = 0
        self._result_cond = threading.Condition(self._lock)

    # --- persistence -------------------------------------------------------------------

    def _load_counters(self) -> dict[str, int]:
        try:
            doc = json.loads(self._state_path.read_text(encoding="utf-8"))
            counters = doc["counters"]
            if not isinstance(counters, dict) or not all(
                isinstance(k, str) and isinstance(v, int) for k, v in counters.items()
            ):
                raise ValueError("counters must map key ids to integers")
            return dict(counters)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as e:
            # Losing the counters would let old decisions replay: refuse to start instead.
            raise AccessError(f"access state {self._state_path} is unreadable ({e}); refusing to start") from None

    def _save_counters(self) -> None:
        try:
            self._state_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self._state_path,
                         json.dumps({"counters": dict(self.state.counters)}, sort_keys=True).encode())
        except OSError as e:
            raise AccessError(f"cannot write access state {self._state_path}: {e.strerror}") from None

    # --- wiring ------------------------------------------------------------------------

    def start(self) -> None:
        t = self.topics
        self.client.subscribe(t.access_request_filter, self._on_request)
        self.client.subscribe(t.access_decision_filter, self._on_decision)
        self.client.subscribe(t.mode_set, self._on_mode_set)
        self.client.subscribe(t.access_challenge_filter, self._on_retained_challenge)
        self.client.add_connect_hook(self.republish)

    def _on_retained_challenge(self, m: Message) -> None:
        """Clear challenges left retained by an earlier run (they closed when it stopped)."""
        if not m.payload:
            return
        try:
            cid = self.topics.last_level(m.topic, self.topics.access_challenge_filter)
        except MqttError:
            return
        with self._lock:
            stale = cid not in self.state.pending
        if stale:
            log.info("clearing stale retained challenge %s", cid[:16])
            self.client.publish(m.topic, b"", qos=1, retain=True)

    def clear_pending(self) -> None:
        """On a clean stop: open challenges die with this process (monotonic time does not survive)."""
        with self._lock:
            pending = list(self.state.pending)
        for cid in pending:
            try:
                self.client.publish_wait(self.topics.access_challenge(cid), b"", qos=1, retain=True, timeout_s=2)
            except MqttError as e:
                log.warning("cannot clear challenge %s: %s", cid[:16], e)

    def publish_checkpoint(self, cp: Checkpoint) -> None:
        """AuditLog's `on_checkpoint`: retained, so an owner device can pin it any time."""
        self.client.publish(self.topics.audit_checkpoint, cp.encode(), qos=1, retain=True)

    def publish_mode(self, mode: str) -> None:
        """The household mode as the pipeline applies it (schedule, local override or MQTT), retained."""
        with self._lock:
            self.mode = mode
        self.client.publish(self.topics.mode_state, mode, retain=True)

    def republish(self) -> None:
        """Retained state a restarted broker may have lost: open challenges, mode, checkpoint."""
        with self._lock:
            pending = list(self.state.pending.values())
            mode = self.mode
        for p in pending:
            self.client.publish(self.topics.access_challenge(p.challenge_id), p.challenge_raw, retain=True)
        if mode is not None:
            self.client.publish(self.topics.mode_state, mode, retain=True)
        try:
            cp = self.audit.latest_checkpoint()
        except AuditError as e:
            log.error("cannot republish the audit checkpoint: %s", e)
            cp = None
        if cp is not None:
            self.publish_checkpoint(cp)

    def _refresh_roster(self) -> None:
        try:
            roster = self._roster_loader()
        except RosterError as e:
            log.error("installed roster is unreadable (%s); keeping version %d", e, self.state.roster.version)
            return
        if roster is None or roster.version == self.state.roster.version:
            return
        try:
            if check_roster_update(self.state.roster, roster, self.hub.key_id):
                self.state = A.with_roster(self.state, roster)
                log.info("access: now using roster version %d", roster.version)
        except (RosterError, AccessError) as e:
            log.error("refusing the installed roster: %s", e)

    # --- message handlers (dispatcher thread) -----------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock.wall() * 1000)

    def _on_request(self, m: Message) -> None:
        if not m.payload:
            return
        with self._lock:
            self._refresh_roster()
            state, r = A.on_request(
                self.state, m.payload, hub=self.hub, policy=self.policy, now_mono_s=self.clock.monotonic(),
                now_wall_ms=self._now_ms(), challenge_id=self._rand(32), known_cameras=self.known_cameras,
            )
            self._apply(state, r)

    def _on_decision(self, m: Message) -> None:
        if not m.payload:
            return
        with self._lock:
            self._refresh_roster()
            state, r = A.on_decision(self.state, m.payload, hub=self.hub, policy=self.policy,
                                     now_mono_s=self.clock.monotonic(), now_wall_ms=self._now_ms())
            self._apply(state, r)

    def _on_mode_set(self, m: Message) -> None:
        if not m.payload:
            return
        with self._lock:
            self._refresh_roster()
            state, r = A.on_mode_set(self.state, m.payload, hub=self.hub, now_mono_s=self.clock.monotonic(),
                                     now_wall_ms=self._now_ms())
            if r.mode is not None and self._on_mode is not None:
                try:
                    self._on_mode(r.mode, f"owner device {json.loads(m.payload)['signer']}")
                except AgentError as e:
                    log.error("cannot apply mode %s: %s", r.mode, e)
                    return
            if r.mode is not None:
                self.mode = r.mode
            self._apply(state, r)

    def tick(self) -> A.Result:
        """Expire challenges whose TTL ran out (call periodically; traffic also triggers it)."""
        with self._lock:
            state, r = A.expire(self.state, now_mono_s=self.clock.monotonic(), hub=self.hub,
                                now_wall_ms=self._now_ms())
            if r.outbound or r.audit:
                self._apply(state, r)
            else:
                self.state = state
            return r

    def _apply(self, state: A.HubState, r: A.Result) -> None:
        counters_changed = state.counters != self.state.counters
        self.state = state
        if r.status in ("refused", "duplicate"):
            if not r.authenticated:
                self.unauthenticated += 1
            log.warning("access: %s: %s", r.status, r.reason)
        # Record before publishing: a grant that is not in the audit log never goes out.
        try:
            for kind, fields in r.audit:
                self.audit.append(kind, fields)
            if counters_changed:
                self._save_counters()
        except AgentError as e:
            log.error("access: cannot record %s (%s); nothing is published", r.status, e)
            self._record(r)
            return
        for o in r.outbound:
            try:
                self.client.publish(self._topic(o), o.payload, qos=1, retain=o.retain)
            except MqttError as e:
                log.error("access: cannot publish %s: %s", o.channel, e)
        ha = {"challenged": "challenge", "approved": "approved", "granted": "granted", "denied": "denied",
              "expired": "expired"}.get(r.status)
        if r.status == "refused" and r.authenticated:
            ha = "refused"
        if ha is not None:
            self._ha_event(ha, r)
        self._record(r)

    def _record(self, r: A.Result) -> None:
        self.results.append(r)
        self._result_cond.notify_all()

    def wait_result(self, pred: Callable[[A.Result], bool], timeout_s: float) -> A.Result | None:
        """Tests and the bench: wait (real time) until a result matching `pred` was recorded."""
        with self._result_cond:
            ok = self._result_cond.wait_for(lambda: any(pred(r) for r in self.results), timeout_s)
            return next((r for r in self.results if pred(r)), None) if ok else None

    def _topic(self, o: A.Outbound) -> str:
        t = self.topics
        if o.channel in ("challenge", "challenge_clear"):
            return t.access_challenge(o.key)
        if o.channel == "grant":
            return t.access_grant(o.key)
        if o.channel == "status":
            return t.access_status(o.key)
        if o.channel == "mode_state":
            return t.mode_state
        raise MqttError(f"unknown outbound channel {o.channel!r}")

    def _ha_event(self, event_type: str, r: A.Result) -> None:
        # Home Assistant sees that something happened, not who asked for which clip.
        payload = {"event_type": event_type, "challenge": (r.challenge_id or "")[:16], "reason": r.reason[:120]}
        try:
            self.client.publish(self.topics.ha_access_event, json.dumps(payload, sort_keys=True), qos=1)
        except MqttError as e:
            log.error("cannot publish the Home Assistant event: %s", e)


class StateReporter:
    """Per-camera privacy state and counters (retained) and events (through the durable outbox)."""

    def __init__(self, client: MqttClient, outbox: Outbox | None = None) -> None:
        self.client = client
        self.topics: Topics = client.topics
        self.outbox = outbox
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}
        self._counters: dict[str, dict[str, int]] = {}
        client.add_connect_hook(self.republish)

    def camera_state(self, camera_id: str, state: str) -> None:
        """`clear`, `masked` or `withheld`; published (retained) only when it changes."""
        if state not in CAMERA_STATES:
            raise MqttError(f"camera state {state!r} is not one of {', '.join(CAMERA_STATES)}")
        with self._lock:
            if self._state.get(camera_id) == state:
                return
            self._state[camera_id] = state
        self.client.publish(self.topics.camera_state(camera_id), state, retain=True)

    def counters(self, camera_id: str, counts: Mapping[str, int]) -> None:
        c = {str(k): int(v) for k, v in counts.items()}
        with self._lock:
            if self._counters.get(camera_id) == c:
                return
            self._counters[camera_id] = c
        self.client.publish(self.topics.camera_counters(camera_id), json.dumps(c, sort_keys=True), retain=True)

    def event(self, ev: Event) -> str | None:
        """Queue a pipeline event (withheld, model_fault, source_lost, tamper, ...) for `P/events`."""
        if self.outbox is None:
            return None
        details: dict[str, Any] = {k: v for k, v in ev.details.items() if isinstance(v, str | int | float | bool)}
        return self.outbox.put_event(self.topics.events, ev.kind, ev.camera_id, message=ev.message, **details)

    def republish(self) -> None:
        with self._lock:
            states = dict(self._state)
            counters = {k: dict(v) for k, v in self._counters.items()}
        for cam, s in states.items():
            self.client.publish(self.topics.camera_state(cam), s, retain=True)
        for cam, c in counters.items():
            self.client.publish(self.topics.camera_counters(cam), json.dumps(c, sort_keys=True), retain=True)
