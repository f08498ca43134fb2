"""What the page shows besides frames: the mode, each camera's counters, pending challenges, the audit verdict.

All of it is read-only. The mode is changed only by an owner device's signature (or the privacy
switch); a challenge is approved only with an owner device's key: the page lists challenges and
offers no control over them. The audit verdict is `audit verify --data`'s: the hash chain
checked against the hub's signed checkpoint.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.access.audit import CHECKPOINT_FILE, audit_dir, verify_with_checkpoint
from agent.clock import Clock
from agent.crypto.keys import load_hub_public
from agent.errors import AgentError

#: Seconds an audit verdict is reused while the log has not changed (verifying reads the whole log).
AUDIT_RECHECK_S = 30.0


def audit_verdict(data_dir: Path) -> dict[str, Any]:
    """`audit verify --data DATA_DIR`, as data: ok, entries, problems, warnings."""
    log_path = audit_dir(data_dir) / "log.jsonl"
    if not log_path.exists():
        return {"ok": None, "entries": 0, "summary": "no audit log yet (the hub has no identity, or it never ran)",
                "problems": [], "warnings": []}
    try:
        hub = load_hub_public(data_dir)
    except AgentError as e:
        return {"ok": False, "entries": 0, "summary": f"cannot verify: {e}", "problems": [str(e)], "warnings": []}
    try:
        report = verify_with_checkpoint(log_path, hub, audit_dir(data_dir) / CHECKPOINT_FILE)
    except AgentError as e:
        return {"ok": False, "entries": 0, "summary": f"cannot verify: {e}", "problems": [str(e)], "warnings": []}
    summary = ("OK: chain intact and matching every signed checkpoint" if report.ok
               else f"FAILED verification ({len(report.problems)} problem(s))")
    return {"ok": report.ok, "entries": report.entries, "summary": summary,
            "problems": list(report.problems), "warnings": list(report.warnings)}


class AuditStatus:
    """The audit verdict, recomputed when the log changes or after AUDIT_RECHECK_S."""

    def __init__(self, data_dir: Path, clock: Clock) -> None:
        self._data_dir = data_dir
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int], float, dict[str, Any]] | None = None

    def get(self) -> dict[str, Any]:
        try:
            st = os.stat(audit_dir(self._data_dir) / "log.jsonl")
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = (-1, -1)
        now = self._clock.monotonic()
        with self._lock:
            c = self._cached
            if c is not None and c[0] == stamp and now - c[1] < AUDIT_RECHECK_S:
                return c[2]
            verdict = audit_verdict(self._data_dir)
            self._cached = (stamp, now, verdict)
            return verdict


def pending_challenges(state: Any, now_mono_s: float) -> list[dict[str, Any]]:
    """Open challenges from the hub's access state (`agent.access.machine.HubState`): who asks, as
    what, for which cameras and window, and when the challenge expires. No approve control exists."""
    if state is None:
        return []
    out = []
    pending: Mapping[str, Any] = getattr(state, "pending", {})
    for cid, p in sorted(pending.items()):
        req = p.request
        out.append({
            "challenge": cid[:12],
            "requester": req.requester.name or req.requester.key_id[:16],
            "requester_key": req.requester.key_id[:16],
            "enrolled": bool(p.enrolled),
            "role": p.role or req.role,
            "cameras": list(req.scope.cameras),
            "clips": len(req.scope.clips),
            "from_ms": req.scope.from_ms,
            "to_ms": req.scope.to_ms,
            "purpose": req.purpose,
            "expires_in_s": max(0, round(p.expires_mono_s - now_mono_s)),
            "approvals": f"{len(p.approvals)} of {p.needed}",
        })
    return out


def camera_counters(stats: Any) -> dict[str, Any]:
    return {"frames_in": stats.frames_in, "frames_out": stats.frames_out, "passed": stats.passed,
            "masked": stats.masked, "withheld": stats.withheld, "decode_errors": stats.decode_errors,
            "sink_errors": stats.sink_errors, "reasons": dict(stats.reasons)}


AccessState = Callable[[], Any]
