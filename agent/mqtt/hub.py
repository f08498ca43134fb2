"""The hub side of MQTT: access flow, signed mode changes, audit checkpoints, state and events.

`HubAccessService` wires the pure state machine (`agent.access`) to a broker connection:
- subscribes to requests, decisions, signed mode changes, deletions and relearns (a camera moved
  on purpose: recorded, then handed to the camera through `relearner`, then answered);
- runs each message through the state machine under one lock (so a challenge is consumed
  atomically, before anything else can see it);
- RECORDS FIRST: the audit entries and the per-device counters (`DATA/mqtt/access-state.json`,
  `agent.access.state`) are fsynced before anything is published or applied. If either cannot be
  written, no grant goes out and no mode changes (fail closed), and a replayed message stays
  refused after a restart. Open challenges are NOT persisted: the monotonic clock does not
  survive a reboot, so a restart closes them (owners simply see them vanish);
- looks up every requested clip in the hub's own clip index (camera, start, end), so requests
  and approvals are bound to what the clips really are;
- lets the physical privacy switch win: no remote mode change leaves privacy while it is on;
- publishes the mode hub-signed (`mode_state`) and answers each owner device's mode change with a
  signed `mode_result`, so a broker cannot show one mode while the hub applies another;
- answers audit consistency-proof requests (for `audit pin`), and re-signs the checkpoint
  periodically so owners can tell a live hub from a replayed checkpoint;
- re-publishes retained state after every reconnect (a restarted broker may have lost it);
- reloads the owner-signed roster from `DATA/keys/roster.json` when the file changes, and never
  accepts one whose version went backwards.

`StateReporter` publishes per-camera privacy state (hub-signed) and counters (retained) and
forwards pipeline events through the durable outbox.

Invariants: nothing published carries images, plaintext video or keys that anyone but one
requester can open; the broker is untrusted: every message that changes anything is verified by
signature.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent import access as A
from agent.access.audit import AuditLog, Checkpoint, read_entries
from agent.access.state import STATE_FILE, Counters, load_state, save_state
from agent.clock import Clock, SystemClock
from agent.core.datatypes import Event
from agent.crypto.keys import HubIdentity, Roster, b64url_encode, check_roster_update
from agent.errors import (
    AccessError,
    AgentError,
    AuditError,
    MqttError,
    PrivacySwitchOn,
    RosterError,
)
from agent.jsonlimits import loads_bounded
from agent.mqtt.client import Message, MqttClient
from agent.mqtt.outbox import Outbox
from agent.topics import Topics

log = logging.getLogger(__name__)

CAMERA_STATES: tuple[str, ...] = ("clear", "masked", "withheld")
HA_EVENT_TYPES: tuple[str, ...] = ("challenge", "approved", "granted", "denied", "expired", "refused")

#: Consistency proofs served per second at most (the request topic is writable by owner devices).
PROOFS_PER_S = 5.0

ClipLookup = Callable[[Sequence[str]], Mapping[str, A.ClipMeta]]
#: Carries out a recorded deletion: returns (deleted, pending) receipt entries.
Deleter = Callable[[A.DeleteOrder], tuple[list[dict[str, Any]], list[dict[str, Any]]]]


def _grants_until_ms(audit: AuditLog, ttl_s: int) -> int:
    """When the newest grant in the audit log expires (its entry's time plus the grant TTL)."""
    try:
        entries, _ = read_entries(audit.path) if audit.path.exists() else ([], [])
    except AgentError as e:
        log.error("cannot read the audit log for active grants: %s", e)
        return 0
    return max((e.wall_ms + ttl_s * 1000 for e in entries if e.kind == "access_grant"), default=0)


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
        clip_lookup: ClipLookup | None = None,
        switch_on: Callable[[], bool] | None = None,
        deleter: Deleter | None = None,
        relearner: Callable[[A.RelearnOrder], object] | None = None,
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
        self._clip_lookup = clip_lookup
        self._switch_on = switch_on or (lambda: False)
        self._deleter = deleter
        self._relearner = relearner
        self._lock = threading.RLock()
        self._state_path = Path(state_dir) / STATE_FILE
        roster = roster_loader()
        if roster is None:
            raise AccessError("no owner-signed roster is installed; run `privacy-agent keys roster` first")
        stored = load_state(self._state_path, roster_installed=True)
        self.state = A.new_state(hub.key_id, roster, stored.by_device, stored.floor)
        self.mode: str | None = None
        self._mode_seq = 0
        self._mode_msg: bytes | None = None
        self.results: list[A.Result] = []  # for tests and the bench: every result, in order
        self.unauthenticated = 0
        self._result_cond = threading.Condition(self._lock)
        self._proof_times: list[float] = []
        # Wall ms until which a grant this hub issued is valid (the privacy LED, `grant_active`),
        # from the audit log first: a restart does not end a grant.
        self._grant_until_ms = _grants_until_ms(audit, self.policy.grant_ttl_s)

    # --- persistence -------------------------------------------------------------------

    def _save_counters(self) -> None:
        save_state(self._state_path, Counters(self.state.counters, self.state.counter_floor))

    # --- wiring ------------------------------------------------------------------------

    def start(self) -> None:
        t = self.topics
        self.client.subscribe(t.access_request_filter, self._on_request)
        self.client.subscribe(t.access_decision_filter, self._on_decision)
        self.client.subscribe(t.mode_set, self._on_mode_set)
        self.client.subscribe(t.access_challenge_filter, self._on_retained_challenge)
        self.client.subscribe(t.audit_proof_request, self._on_proof_request)
        self.client.subscribe(t.delete_request_filter, self._on_delete_request)
        self.client.subscribe(t.relearn_request, self._on_relearn)
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
        """On a clean stop: open challenges die with this process (monotonic time does not survive);
        refusals still being tallied are audited now."""
        with self._lock:
            pending = list(self.state.pending)
            self.state, summary = A.flush_tally(self.state, now_mono_s=self.clock.monotonic(), policy=self.policy,
                                                force=True)
            for kind, fields in summary:
                try:
                    self.audit.append(kind, fields)
                except AgentError as e:
                    log.error("cannot record the refusal summary: %s", e)
        for cid in pending:
            try:
                self.client.publish_wait(self.topics.access_challenge(cid), b"", qos=1, retain=True, timeout_s=2)
            except MqttError as e:
                log.warning("cannot clear challenge %s: %s", cid[:16], e)

    def publish_checkpoint(self, cp: Checkpoint) -> None:
        """AuditLog's `on_checkpoint`: retained, so an owner device can pin it any time."""
        self.client.publish(self.topics.audit_checkpoint, cp.encode(), qos=1, retain=True)

    def publish_mode(self, mode: str) -> None:
        """The household mode as the pipeline applies it (schedule, switch, local override or MQTT),
        hub-signed and retained."""
        with self._lock:
            self.mode = mode
            now = self._now_ms()
            # Strictly increasing, also across restarts (the wall clock is its floor).
            self._mode_seq = max(self._mode_seq + 1, now)
            self._mode_msg = A.mode_state_message(self.hub, mode, switch_on=self._switch(),
                                                  roster_version=self.state.roster.version,
                                                  seq=self._mode_seq, issued_ms=now)
            msg = self._mode_msg
        self.client.publish(self.topics.mode_state, msg, retain=True)

    def _switch(self) -> bool:
        try:
            return bool(self._switch_on())
        except Exception as e:  # noqa: BLE001 - an unreadable switch means privacy (fail closed)
            log.error("cannot read the privacy switch (%s): treating it as on", e)
            return True

    def republish(self) -> None:
        """Retained state a restarted broker may have lost: open challenges, mode, checkpoint."""
        with self._lock:
            pending = list(self.state.pending.values())
            mode_msg = self._mode_msg
        for p in pending:
            self.client.publish(self.topics.access_challenge(p.challenge_id), p.challenge_raw, retain=True)
        if mode_msg is not None:
            self.client.publish(self.topics.mode_state, mode_msg, retain=True)
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

    def _requested_clips(self, payload: bytes) -> Mapping[str, A.ClipMeta]:
        """The hub's index entries for the clips a request names (looked up before the pure
        machine runs; a request that does not parse gets nothing and is refused there)."""
        if self._clip_lookup is None:
            return {}
        try:
            # Shape only: the machine verifies the signature (once). Looking ids up is read-only,
            # so an unverified list costs at most one bounded index query.
            m = A.parse_message(payload, "request")
            scope = A.Scope.from_json(m.body.get("scope"), "request: scope")
        except AccessError:
            return {}
        if not scope.clips:
            return {}
        try:
            return self._clip_lookup(scope.clips)
        except AgentError as e:
            log.error("cannot read the clip index (%s): requests naming clips are refused", e)
            return {}

    def _on_request(self, m: Message) -> None:
        if not m.payload:
            return
        clips = self._requested_clips(m.payload)
        with self._lock:
            self._refresh_roster()
            state, r = A.on_request(
                self.state, m.payload, hub=self.hub, policy=self.policy, now_mono_s=self.clock.monotonic(),
                now_wall_ms=self._now_ms(), challenge_id=self._rand(32), known_cameras=self.known_cameras,
                clip_index=clips,
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
                                     now_wall_ms=self._now_ms(), switch_on=self._switch())
            # Record, then act: the audit entry and the consumed counter are durable before the
            # mode is applied. If they cannot be written, the change does not happen at all.
            if not self._record(state, r):
                return
            if r.mode is not None and self._on_mode is not None:
                # The machine's own record names the signer (no second parse of the payload).
                signer = next((str(f.get("by")) for k, f in r.audit if k == "mode_change"), "?")
                try:
                    self._on_mode(r.mode, f"owner device {signer}")
                except PrivacySwitchOn as e:
                    # The switch turned on between the check and the write: it still wins.
                    r = self._mode_not_applied(r, signer, str(e))
                except AgentError as e:
                    log.error("cannot apply mode %s: %s", r.mode, e)
                    r = self._mode_not_applied(r, signer, f"the hub could not apply it: {e}")
            self._publish(r)
            if r.mode is not None:
                self.publish_mode(r.mode)

    def _on_delete_request(self, m: Message) -> None:
        """An owner's signed deletion: recorded first, then carried out, then a signed receipt."""
        if not m.payload:
            return
        with self._lock:
            self._refresh_roster()
            state, r, order = A.on_delete_request(self.state, m.payload, hub=self.hub,
                                                  now_mono_s=self.clock.monotonic(), now_wall_ms=self._now_ms(),
                                                  known_cameras=self.known_cameras, retained=m.retain)
            if r.status == "duplicate" or not self._record(state, r):
                if r.status == "duplicate":
                    self._note(r)
                return
            if order is not None:
                r = self._carry_out(order, r)
            self._publish(r)

    def _on_relearn(self, m: Message) -> None:
        """An owner's signed relearn: recorded first, then handed to the camera, then answered."""
        if not m.payload:
            return
        with self._lock:
            self._refresh_roster()
            now_ms = self._now_ms()
            state, r, order = A.on_relearn(self.state, m.payload, hub=self.hub, now_mono_s=self.clock.monotonic(),
                                           now_wall_ms=now_ms, known_cameras=self.known_cameras)
            if r.status == "duplicate" or not self._record(state, r):
                if r.status == "duplicate":
                    self._note(r)
                return
            if order is not None:
                status, reason = "applied", ""
                if self._relearner is None:
                    status, reason = "refused", "this hub runs no camera"
                else:
                    try:
                        self._relearner(order)
                    except (AgentError, OSError) as e:
                        # Recorded, not carried out: the camera stays withheld; the owner asks again.
                        log.error("relearn of camera %s failed: %s", order.camera, e)
                        status, reason = "refused", f"the hub could not ask the camera to relearn: {e}"
                msg = A.relearn_result_message(self.hub, order.request_id, order.device, order.camera, order.counter,
                                               status, reason, now_ms)
                r = dataclasses.replace(r, status="relearn" if status == "applied" else "refused", reason=reason,
                                        outbound=(A.Outbound("relearn_result", order.device, msg),))
            self._publish(r)

    def _carry_out(self, order: A.DeleteOrder, r: A.Result) -> A.Result:
        deleted: list[dict[str, Any]] = []
        pending: list[dict[str, Any]] = []
        status, reason = "deleted", ""
        if self._deleter is None:
            status, reason = "refused", "this hub has no storage to delete from"
        else:
            try:
                deleted, pending = self._deleter(order)
            except AgentError as e:
                # Recorded already: the deletion stays pending and is retried by the storage side.
                log.error("deletion %s failed: %s", order.request_id, e)
                reason = f"not finished: {e}"[:500]
        receipt = A.delete_receipt_message(self.hub, order.request_id, order.device, status, reason, order.scope,
                                           deleted, pending, self._now_ms())
        return dataclasses.replace(r, outbound=(A.Outbound("delete_receipt", order.request_id, receipt,
                                                           retain=True),))

    def _mode_not_applied(self, r: A.Result, signer: str, reason: str) -> A.Result:
        try:
            self.audit.append("access_refused", {"device": signer, "reason": f"mode not applied: {reason}"[:200]})
        except AgentError as e:
            log.error("cannot record that mode %s was not applied: %s", r.mode, e)
        body = json.loads(r.outbound[0].payload)["body"] if r.outbound else None
        out: tuple[A.Outbound, ...] = ()
        if body is not None:
            msg = A.sign_message("mode_result", {**body, "status": "refused", "reason": reason[:500]},
                                 self.hub.signing_key, self.hub.key_id)
            out = (A.Outbound("mode_result", body["device"], msg),)
        return dataclasses.replace(r, status="refused", reason=reason, outbound=out, mode=None)

    def _on_proof_request(self, m: Message) -> None:
        """`audit pin` asks for a consistency proof between two tree sizes. Unauthenticated (the
        proof is checked against two hub-signed checkpoints), so it is rate-limited and bounded."""
        if not m.payload:
            return
        now = time.monotonic()
        self._proof_times = [t for t in self._proof_times if now - t < 1.0]
        if len(self._proof_times) >= PROOFS_PER_S:
            log.warning("audit proof requests: rate limit reached, dropping one")
            return
        self._proof_times.append(now)
        try:
            doc = loads_bounded(m.payload, max_bytes=512, max_depth=2, what="audit proof request")
            if not isinstance(doc, dict) or set(doc) != {"from", "to", "nonce"}:
                raise ValueError("expected exactly from, to, nonce")
            old, new, nonce = doc["from"], doc["to"], doc["nonce"]
            if not (isinstance(old, int) and isinstance(new, int) and isinstance(nonce, str)
                    and len(nonce) == 32 and all(c in "0123456789abcdef" for c in nonce)):
                raise ValueError("from/to must be integers and nonce 32 hex digits")
            proof = self.audit.consistency(old, new)
        except (ValueError, AuditError) as e:
            log.warning("audit proof request refused: %s", e)
            return
        body = {"from": old, "to": new, "proof": [b64url_encode(h) for h in proof]}
        try:
            self.client.publish(self.topics.audit_proof(nonce), json.dumps(body, sort_keys=True), qos=1)
        except MqttError as e:
            log.error("cannot publish an audit proof: %s", e)

    def tick(self) -> A.Result:
        """Expire challenges whose TTL ran out (call periodically; traffic also triggers it)."""
        with self._lock:
            state, r = A.expire(self.state, now_mono_s=self.clock.monotonic(), hub=self.hub,
                                now_wall_ms=self._now_ms(), policy=self.policy)
            if r.outbound or r.audit:
                self._apply(state, r)
            else:
                self.state = state
            return r

    def _apply(self, state: A.HubState, r: A.Result) -> None:
        if self._record(state, r):
            self._publish(r)

    def _record(self, state: A.HubState, r: A.Result) -> bool:
        """Make the result durable (audit entries, then counters) and adopt the new state.

        On failure nothing is published or applied and the state does not move on, except that a
        consumed counter is kept in memory (a message that could not be recorded stays refused)."""
        counters_changed = state.counters != self.state.counters
        if r.status in ("refused", "duplicate"):
            if not r.authenticated:
                self.unauthenticated += 1
            log.warning("access: %s: %s", r.status, r.reason)
        try:
            for kind, fields in r.audit:
                self.audit.append(kind, fields)
            if counters_changed:
                save_state(self._state_path, Counters(state.counters, state.counter_floor))
        except AgentError as e:
            log.error("access: cannot record %s (%s); nothing is published or applied", r.status, e)
            self.state = dataclasses.replace(self.state, counters=state.counters, seen=state.seen,
                                             high_mono_s=state.high_mono_s)
            self._note(dataclasses.replace(r, status="refused", reason=f"not recorded: {e}", outbound=(),
                                           mode=None))
            return False
        self.state = state
        if r.status == "granted":  # read a little after the machine's own clock: the LED errs towards lit
            self._grant_until_ms = max(self._grant_until_ms, self._now_ms() + self.policy.grant_ttl_s * 1000)
        return True

    def grant_active(self, now_wall_s: float) -> bool:
        """Whether a grant this hub issued (since it started) is still within its expiry. Read-only."""
        return now_wall_s * 1000 < self._grant_until_ms

    def _publish(self, r: A.Result) -> None:
        for o in r.outbound:
            try:
                self.client.publish(self._topic(o), o.payload, qos=1, retain=o.retain)
            except MqttError as e:
                log.error("access: cannot publish %s: %s", o.channel, e)
        ha = {"challenged": "challenge", "approved": "approved", "granted": "granted", "denied": "denied",
              "expired": "expired"}.get(r.status)
        if r.status == "refused" and r.authenticated and r.audit:
            ha = "refused"
        if ha is not None:
            self._ha_event(ha, r)
        self._note(r)

    def _note(self, r: A.Result) -> None:
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
        if o.channel == "mode_result":
            return t.mode_result(o.key)
        if o.channel == "delete_receipt":
            return t.delete_receipt(o.key)
        if o.channel == "relearn_result":
            return t.relearn_result(o.key)
        raise MqttError(f"unknown outbound channel {o.channel!r}")

    def _ha_event(self, event_type: str, r: A.Result) -> None:
        # Home Assistant sees that something happened, not who asked for which clip.
        payload = {"event_type": event_type, "challenge": (r.challenge_id or "")[:16], "reason": r.reason[:120]}
        try:
            self.client.publish(self.topics.ha_access_event, json.dumps(payload, sort_keys=True), qos=1)
        except MqttError as e:
            log.error("cannot publish the Home Assistant event: %s", e)


class StateReporter:
    """Per-camera privacy state (hub-signed) and counters (retained), and events (through the
    durable outbox)."""

    def __init__(self, client: MqttClient, hub: HubIdentity, outbox: Outbox | None = None,
                 clock: Clock | None = None) -> None:
        self.client = client
        self.topics: Topics = client.topics
        self.hub = hub
        self.outbox = outbox
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}
        self._signed: dict[str, bytes] = {}
        self._seq = 0
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
            now = int(self.clock.wall() * 1000)
            self._seq = max(self._seq + 1, now)
            msg = A.camera_state_message(self.hub, camera_id, state, seq=self._seq, issued_ms=now)
            self._signed[camera_id] = msg
        self.client.publish(self.topics.camera_state(camera_id), msg, retain=True)

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
            states = dict(self._signed)
            counters = {k: dict(v) for k, v in self._counters.items()}
        for cam, msg in states.items():
            self.client.publish(self.topics.camera_state(cam), msg, retain=True)
        for cam, c in counters.items():
            self.client.publish(self.topics.camera_counters(cam), json.dumps(c, sort_keys=True), retain=True)
