"""Expiry from the config: the destinations, each camera's period, and the periodic pass of `run`.

`expire_once(loaded, outbox, audit, ...)` runs `agent.storage.deletion.expire` with the config's
encrypted destinations and `AgentConfig.retention_days_for`; `ExpiryTicker` does that at the
start of `run` and every `EXPIRE_EVERY_S` after, in its own thread with its own outbox (the
process already holds the data-dir lock), also when no retention is configured: an earlier
deletion that could not reach a destination (an owner's, say) is finished by the same pass.
A failing pass is logged and tried again at the next tick; it never stops a camera.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agent.clock import Clock
from agent.config import LoadedConfig, is_plaintext
from agent.errors import AgentError
from agent.storage.deletion import (
    AuditFn,
    EventPurger,
    ExpiryResult,
    due_for_expiry,
    expire,
    pending_deletions,
)
from agent.storage.outbox import OUTBOX_DIRNAME, Outbox, Uploader

log = logging.getLogger(__name__)

#: Seconds between expiry passes of a long-running `run`.
EXPIRE_EVERY_S = 600.0


def encrypted_uploaders(loaded: LoadedConfig) -> dict[str, Uploader]:
    """Every encrypted destination of the config, by the name the outbox records."""
    from agent.crypto.keys import load_hub_identity
    from agent.storage.sinks.clips import build_uploaders

    cfgs = [s for s in loaded.config.sinks if not is_plaintext(s)]
    if not cfgs:
        return {}
    return build_uploaders(loaded, cfgs, load_hub_identity(loaded.data_dir).public)


def retention_configured(loaded: LoadedConfig) -> bool:
    cfg = loaded.config
    return cfg.retention.days is not None or any(c.retention_days is not None for c in cfg.cameras)


def expire_once(loaded: LoadedConfig, outbox: Outbox, audit: AuditFn, now_s: float, *,
                uploaders: dict[str, Uploader] | None = None, events: EventPurger | None = None,
                dry_run: bool = False) -> ExpiryResult:
    ups = encrypted_uploaders(loaded) if uploaders is None else uploaders
    return expire(outbox, ups, loaded.config.retention_days_for, now_s, audit, events=events, dry_run=dry_run)


class ExpiryTicker:
    """Expiry at start and every `every_s` in a daemon thread, until `stop()`."""

    def __init__(self, loaded: LoadedConfig, clock: Clock, audit: AuditFn, *,
                 events: Callable[[], EventPurger | None] = lambda: None, every_s: float = EXPIRE_EVERY_S) -> None:
        self._loaded = loaded
        self._clock = clock
        self._audit = audit
        self._events = events
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self.passes = 0

    @classmethod
    def start_for(cls, loaded: LoadedConfig, clock: Clock, audit: AuditFn | None, *,
                  events: Callable[[], EventPurger | None] = lambda: None,
                  every_s: float = EXPIRE_EVERY_S) -> ExpiryTicker | None:
        """A running ticker, or None when there is nothing it could ever delete (no hub identity
        to have sealed clips, or no outbox yet and no retention configured)."""
        if audit is None:
            return None
        if not (loaded.data_dir / OUTBOX_DIRNAME / "outbox.db").exists() and not retention_configured(loaded):
            return None
        t = cls(loaded, clock, audit, events=events, every_s=every_s)
        t._thread.start()
        return t

    def _loop(self) -> None:
        outbox: Outbox | None = None
        uploaders: dict[str, Uploader] | None = None
        try:
            while not self._stop.is_set():
                try:
                    if outbox is None:
                        outbox = Outbox(self._loaded.data_dir, self._clock)
                    if uploaders is None and self._work(outbox):
                        uploaders = encrypted_uploaders(self._loaded)  # only once there is work
                    res = expire_once(self._loaded, outbox, self._audit, self._clock.wall(),
                                      uploaders=uploaders or {}, events=self._events())
                    if res.expired:
                        log.info("retention: %d clip(s) expired%s", len(res.expired),
                                 " (more next pass)" if res.more else "")
                except AgentError as e:
                    log.error("retention pass failed (tried again in %.0f s): %s", self._every_s, e)
                except Exception as e:  # noqa: BLE001 - the thread's boundary: a bug must not end expiry
                    log.error("retention pass failed unexpectedly (tried again in %.0f s): %r", self._every_s, e)
                self.passes += 1
                self._stop.wait(self._every_s)
        finally:
            if outbox is not None:
                outbox.close()

    def _work(self, outbox: Outbox) -> bool:
        """Whether this pass has anything to delete (building S3 clients costs a moment)."""
        due = due_for_expiry(outbox.list_clips(), self._loaded.config.retention_days_for, self._clock.wall())
        return bool(due) or bool(pending_deletions(outbox))

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
