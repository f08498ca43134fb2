"""What the hub writes into its audit log on its own: boots, config changes, and the events of
the pipeline and the outbox that an owner must be able to account for.

`EventRecorder` subscribes to an `EventLog`. It is wired by every command that runs pipelines or
delivers clips (`run`, `outbox flush`), with or without MQTT, so no path that seals, uploads or
rejects a clip leaves it out of the log. Entries carry ids, counts and reasons only, never
frames, keys or tokens. A failing append is logged and never stops a camera: the audit log has
its own integrity checks (`audit verify`), and the event that failed stays in `events.jsonl`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agent.access.audit import AuditLog, audit_dir, read_entries
from agent.clock import Clock
from agent.core.datatypes import Event
from agent.crypto.keys import HUB_SECRET_FILE, keys_dir, load_hub_identity
from agent.errors import AgentError

log = logging.getLogger(__name__)

#: Pipeline and storage event kinds that are also audit records (event kind -> audit kind). A
#: clip that fails the pre-upload gate is tamper evidence.
AUDITED_EVENTS: Mapping[str, str] = MappingProxyType({
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
    "events_lost": "events_lost",
    "clip_vanished": "clip_vanished",
    "clip_stream_started": "clip_stream_start",
})
#: Event details copied into the audit entry (ids and counts only).
_AUDIT_DETAILS = ("clip_id", "seq", "dest", "object", "frames", "bytes", "frame", "mode", "source", "count",
                  "stream")


class EventRecorder:
    """An `EventLog` subscriber that appends the audited kinds to the audit log."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def __call__(self, ev: Event) -> None:
        kind = AUDITED_EVENTS.get(ev.kind)
        if kind is None:
            return
        fields: dict[str, Any] = {"camera": ev.camera_id, "event": ev.kind, "message": ev.message[:200]}
        fields.update({k: ev.details[k] for k in _AUDIT_DETAILS
                       if k in ev.details and isinstance(ev.details[k], str | int)})
        try:
            self.audit.append(kind, fields)
        except AgentError as e:
            log.error("cannot record event %s in the audit log: %s", ev.kind, e)


def record_boot(audit: AuditLog, version: str, config_sha256: str) -> None:
    """`boot`, plus `config_change` if the config differs from the previous boot's."""
    last = None
    try:
        entries, _ = read_entries(audit.path) if audit.path.exists() else ([], [])
        for e in reversed(entries):
            if e.kind in ("boot", "config_change") and "config_sha256" in e.fields:
                last = e.fields["config_sha256"]
                break
    except AgentError as e:
        log.error("cannot read the audit log for the last config hash: %s", e)
    audit.append("boot", {"version": version, "config_sha256": config_sha256})
    if last is not None and last != config_sha256:
        audit.append("config_change", {"from_sha256": last, "config_sha256": config_sha256})


def open_hub_audit(data_dir: Path, clock: Clock) -> AuditLog | None:
    """The hub's audit log, signed with its identity; None while the hub has no identity yet
    (a plaintext test setup: without `keys init` there are no clips to account for)."""
    if not (keys_dir(data_dir) / HUB_SECRET_FILE).exists():
        return None
    return AuditLog(audit_dir(data_dir), clock, load_hub_identity(data_dir))
