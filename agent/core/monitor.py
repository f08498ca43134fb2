"""The service monitor of `run`: the systemd watchdog fed from the pipelines' health, and health reports.

`ServiceMonitor` reads each camera's pipeline (its counters, analysis lag and queued frames, and
whether its thread is alive) every few seconds, builds a `HubHealth` (`agent.core.health`), and:
- tells systemd `READY=1` when started (after the camera threads), `STATUS=` a one-line summary,
  and `STOPPING=1` when stopped (`agent.core.sdnotify`);
- sends `WATCHDOG=1` only while every camera is healthy: a camera stuck in a read, behind an
  analyzer that never returns, or behind a sink stage that stopped taking frames, stops the
  pings and systemd restarts the service. The stall bound is half of systemd's watchdog
  interval (`WATCHDOG_USEC`), so a stall is seen while a ping is still due;
- hands the snapshot to `publish` (the hub's MQTT side) at start and every `health_interval_s`.

Not a timer: a monitor thread that is itself stuck sends nothing, which systemd also treats as a
hang. The clock is injected; `tick()` is one step, so tests drive it without sleeping.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from agent.clock import Clock
from agent.core.datatypes import Event
from agent.core.health import (
    DEFAULT_STALL_S,
    SOURCE_RETRY_EVENTS,
    CameraSample,
    HealthTracker,
    HubHealth,
)
from agent.core.pipeline import PipelineStats
from agent.core.sdnotify import Notifier
from agent.errors import AgentError

log = logging.getLogger(__name__)

#: Longest pause between two looks at the pipelines.
MAX_TICK_S = 5.0


class Watched(Protocol):
    """What the monitor reads of a pipeline (`agent.core.pipeline.CameraPipeline`)."""

    @property
    def camera_id(self) -> str: ...

    @property
    def stats(self) -> PipelineStats: ...

    @property
    def analysis_lag_s(self) -> float | None: ...

    @property
    def queued_frames(self) -> int: ...

    @property
    def scene_state(self) -> str | None: ...

    @property
    def private_room(self) -> str | None: ...


class Alive(Protocol):
    def is_alive(self) -> bool: ...


def sample(p: Watched, thread: Alive, file_source: bool = False) -> CameraSample:
    s = p.stats
    alive = thread.is_alive()
    return CameraSample(p.camera_id, alive, s.frames_in, s.withheld, dict(s.reasons),
                        p.analysis_lag_s, p.queued_frames, done=file_source and not alive,
                        scene=p.scene_state, private_room=p.private_room, under_load=s.under_load)


class ServiceMonitor:
    def __init__(
        self,
        cameras: Sequence[tuple[Watched, Alive]],
        clock: Clock,
        *,
        notifier: Notifier | None = None,
        publish: Callable[[HubHealth], None] | None = None,
        disk_free: Callable[[], int | None] | None = None,
        queued_clips: Callable[[], int | None] | None = None,
        encoder: str | None = None,
        health_interval_s: float = 30.0,
        file_cameras: Collection[str] = (),
    ) -> None:
        self.cameras = list(cameras)
        #: Cameras reading a file: they end on their own (a live camera's thread never should).
        self.file_cameras = frozenset(file_cameras)
        self.clock = clock
        self.notifier = notifier or Notifier()
        wd = self.notifier.watchdog_s
        #: Seconds between pings: twice per half interval, systemd's advice with a margin.
        self.ping_every_s = wd / 4 if wd else None
        self.tracker = HealthTracker(clock.monotonic(), clock.wall(), stall_s=wd / 2 if wd else DEFAULT_STALL_S)
        self.publish = publish
        self.disk_free = disk_free
        self.queued_clips = queued_clips
        self.encoder = encoder
        self.health_interval_s = health_interval_s
        self.tick_s = min(MAX_TICK_S, health_interval_s, self.ping_every_s or MAX_TICK_S)
        self._lock = threading.Lock()
        self._last_ping_s: float | None = None
        self._last_publish_s: float | None = None
        self._last_status: str | None = None
        self._unhealthy: tuple[str, ...] = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: How many WATCHDOG=1 were sent (for tests and the log).
        self.pings = 0

    # -- inputs -------------------------------------------------------------------------

    def on_event(self, ev: Event) -> None:
        """EventLog subscriber: a camera reopening its source is alive, not stalled."""
        if ev.kind in SOURCE_RETRY_EVENTS and ev.camera_id is not None:
            with self._lock:
                self.tracker.source_retry(ev.camera_id, self.clock.monotonic())

    # -- one step -----------------------------------------------------------------------

    def tick(self) -> HubHealth:
        now = self.clock.monotonic()
        due = self._last_publish_s is None or now - self._last_publish_s >= self.health_interval_s
        extras = self._extras() if due and self.publish is not None else {}
        with self._lock:
            health = self.tracker.observe([sample(p, t, p.camera_id in self.file_cameras) for p, t in self.cameras],
                                          now, encoder=self.encoder, **extras)
        self._watchdog(health, now)
        if due and self.publish is not None:
            self._last_publish_s = now
            try:
                self.publish(health)
            except Exception as e:  # noqa: BLE001 - reporting must never stop the watchdog or the cameras
                log.warning("cannot publish the hub's health: %s: %s", type(e).__name__, e)
        return health

    def _extras(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for key, fn in (("disk_free_bytes", self.disk_free), ("queued_clips", self.queued_clips)):
            try:
                out[key] = fn() if fn is not None else None
            except (OSError, AgentError) as e:
                log.debug("health: %s unknown: %s", key, e)
                out[key] = None
        return out

    def _watchdog(self, health: HubHealth, now: float) -> None:
        problems = health.problems
        # Logged once per change of which cameras are stalled, not once per tick.
        stalled = tuple(c.camera_id for c in health.cameras if c.problem)
        if stalled != self._unhealthy:
            if stalled:
                log.error("pipeline stalled, the systemd watchdog is no longer fed: %s", "; ".join(problems))
            else:
                log.info("all cameras healthy again")
            self._unhealthy = stalled
        status = health.summary()
        if status != self._last_status:  # one small datagram per tick at most
            self.notifier.status(status)
            self._last_status = status
        if problems or self.ping_every_s is None:
            return
        if self._last_ping_s is None or now - self._last_ping_s >= self.ping_every_s:
            if self.notifier.watchdog():
                self.pings += 1
            self._last_ping_s = now

    # -- life ---------------------------------------------------------------------------

    def start(self) -> ServiceMonitor:
        """READY=1 (the camera threads are running), a first snapshot, then the monitor thread."""
        self.notifier.ready(f"{len(self.cameras)} camera(s) started")
        self.tick()
        self._thread = threading.Thread(target=self._loop, name="service-monitor", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        self.notifier.stopping("stopping: sealing open clips")
        if self._thread is not None:
            self._thread.join(self.tick_s + 5.0)
        self.notifier.close()
