"""The hub's health: a pure snapshot over what the running pipelines already know.

`HealthTracker.observe(samples, now_s)` turns one `CameraSample` per camera (read from its
pipeline: counters, the analysis lag, frames between stages, whether its thread is alive) into a
`HubHealth`: per camera the fps over a short window, withheld counts by reason, the lag, the
queue depth, and whether the camera is healthy; plus the hub's disk free, queued clips and the
encoder in use. The tracker keeps only what it needs between samples (when each camera last
made progress, a few recent frame counts); it reads no clock and touches no file, so tests drive
it with plain numbers.

A camera is healthy while (all on the monotonic clock):
- its thread is alive (a file camera whose file has ended is done, not stalled);
- it has reached a decision within `stall_s` (a frame released OR withheld: withholding is the
  pipeline failing closed, which is working); a camera whose source is being reopened (a
  `source_error` / `source_lost` event, then backoff up to `RECONNECT_GRACE_S`) counts as making
  progress for that long, because restarting the agent cannot bring a camera back online;
- some of those decisions had their analysis back within `stall_s`: frames withheld only because
  an analyzer never returned (`analysis_busy`, `analysis_timeout`) are the pipeline coping with
  a hung analyzer, which a restart cures. (In privacy mode frames are withheld before the
  analysis is looked at, so a hung analyzer shows only once the mode changes.)
The watchdog (`agent.core.monitor`) feeds systemd only while every camera is healthy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Withhold reasons that mean "this frame's analysis did not come back" (`agent.core.lanes`).
ANALYSIS_STUCK_REASONS = ("analysis_busy", "analysis_timeout")

#: Events that show a camera's reader is alive and reopening its source (`agent.core.pipeline`).
SOURCE_RETRY_EVENTS = frozenset({"source_error", "source_lost"})

#: Seconds a camera may go without decisions after a source retry event: the pipeline's longest
#: backoff between reopen attempts (`agent.core.pipeline._BACKOFF_MAX_S`) plus margin.
RECONNECT_GRACE_S = 60.0

#: Seconds of recent samples the fps is measured over.
FPS_WINDOW_S = 10.0

#: `stall_s` when systemd gives no watchdog interval.
DEFAULT_STALL_S = 60.0

#: The scene states tamper reports (`agent.analysis.tamper`) and what to do about each.
SCENE_NOTES = {
    "moved": "moved: waiting for relearn (check the zones, then run privacy-agent camera relearn {camera})",
    "unreadable": "stored scene unreadable: withheld until privacy-agent camera relearn {camera}",
    "unsaved": "the learned scene cannot be stored in the data dir: withheld until it can",
    "unverified": "checking the view against the learned scene",
}
#: The same states, short enough for one line of the zones picture's legend (`zones preview`, the
#: page): what to do, in the same words. States that need nothing of the homeowner have none.
SCENE_LEGEND = {
    "moved": "moved: run privacy-agent camera relearn {camera}",
    "unreadable": "stored scene unreadable: run privacy-agent camera relearn {camera}",
}
#: Every value of `CameraHealth.scene` (the Home Assistant sensor's options).
SCENE_STATES = ("ok", "learning", *SCENE_NOTES)


@dataclass(frozen=True, slots=True)
class CameraSample:
    """One camera's pipeline, read at one instant."""

    camera_id: str
    alive: bool
    frames_in: int
    withheld: int
    reasons: Mapping[str, int]
    analysis_lag_s: float | None = None
    queued_frames: int = 0
    #: A file camera that reached the end of its file: its thread ending is its work done, not a stall.
    done: bool = False
    #: What tamper says of the learned scene (`CameraPipeline.scene_state`): None (fine), "moved", ...
    scene: str | None = None
    #: The private room the policy reports for the camera ("bathroom", "bedroom"), None if none.
    private_room: str | None = None
    #: Released frames whose face run was skipped while the hub was behind the camera.
    under_load: int = 0


@dataclass(frozen=True, slots=True)
class CameraHealth:
    camera_id: str
    healthy: bool
    #: Why the camera is not healthy (None when it is), in words for `systemctl status`.
    problem: str | None
    fps: float | None
    frames_in: int
    withheld: int
    #: Withheld frames per reason since start, largest first.
    withheld_by_reason: tuple[tuple[str, int], ...]
    analysis_lag_s: float | None
    queued_frames: int
    #: Seconds since the camera last reached a decision.
    last_decision_age_s: float
    #: The learned scene: "ok", or why the camera waits (`SCENE_NOTES`). Not a stall: a moved
    #: camera is withheld on purpose, and restarting the agent would not cure it.
    scene: str = "ok"
    private_room: str | None = None
    #: Released frames since start whose face run was skipped while the hub was behind the camera
    #: (`detection.under_load`): a hub that often sheds needs fewer cameras or a faster board.
    under_load_frames: int = 0

    @property
    def scene_note(self) -> str | None:
        """What the homeowner should do about the scene, in words (None when it is fine)."""
        note = SCENE_NOTES.get(self.scene)
        return note.format(camera=self.camera_id) if note else None


@dataclass(frozen=True, slots=True)
class HubHealth:
    wall_s: float
    uptime_s: float
    cameras: tuple[CameraHealth, ...]
    #: Clip deliveries still waiting in the outbox; None when unknown (no outbox, unreadable).
    queued_clips: int | None = None
    disk_free_bytes: int | None = None
    #: The H.264 encoder in use (an FFmpeg encoder name), None when not known.
    encoder: str | None = None

    @property
    def healthy(self) -> bool:
        return all(c.healthy for c in self.cameras)

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(f"{c.camera_id}: {c.problem}" for c in self.cameras if c.problem)

    def summary(self) -> str:
        """One line for `systemctl status` (sd_notify STATUS=)."""
        if not self.cameras:
            return "no cameras running"
        parts = []
        for c in self.cameras:
            if c.problem:
                parts.append(f"{c.camera_id} STALLED ({c.problem})")
                continue
            fps = f"{c.fps:.1f} fps" if c.fps is not None else "starting"
            top = f", withholding: {c.withheld_by_reason[0][0]}" if c.withheld_by_reason else ""
            scene = f", {c.scene_note}" if c.scene in ("moved", "unreadable", "unsaved") else ""
            parts.append(f"{c.camera_id} {fps}{top}{scene}")
        return "; ".join(parts)


@dataclass(slots=True)
class _Progress:
    since_s: float
    last_decision_s: float
    last_analysed_s: float
    frames_in: int = 0
    analysed: int = 0
    last_retry_s: float | None = None
    window: deque[tuple[float, int]] = field(default_factory=deque)


def _analysed(s: CameraSample) -> int:
    # A frame withheld for both reasons is subtracted twice: at worst this under-counts progress
    # in the instant a lane times out, never hides a lane that stays stuck.
    return s.frames_in - sum(int(s.reasons.get(r, 0)) for r in ANALYSIS_STUCK_REASONS)


class HealthTracker:
    """Keeps per camera when it last made progress; `observe` gives a snapshot."""

    def __init__(self, started_s: float, wall_started_s: float, *, stall_s: float = DEFAULT_STALL_S,
                 fps_window_s: float = FPS_WINDOW_S) -> None:
        self.started_s = started_s
        self._wall_offset = wall_started_s - started_s
        self.stall_s = stall_s
        self.fps_window_s = fps_window_s
        self._cams: dict[str, _Progress] = {}

    def _progress(self, camera_id: str, now_s: float) -> _Progress:
        p = self._cams.get(camera_id)
        if p is None:
            # A camera just started has the stall bound to reach its first decision.
            p = self._cams[camera_id] = _Progress(now_s, now_s, now_s)
        return p

    def source_retry(self, camera_id: str, now_s: float) -> None:
        """A camera's reader failed to open or lost its source and will try again."""
        self._progress(camera_id, now_s).last_retry_s = now_s

    def observe(self, samples: Sequence[CameraSample], now_s: float, *, queued_clips: int | None = None,
                disk_free_bytes: int | None = None, encoder: str | None = None) -> HubHealth:
        cams = tuple(self._camera(s, now_s) for s in samples)
        return HubHealth(wall_s=now_s + self._wall_offset, uptime_s=max(0.0, now_s - self.started_s), cameras=cams,
                         queued_clips=queued_clips, disk_free_bytes=disk_free_bytes, encoder=encoder)

    def _camera(self, s: CameraSample, now_s: float) -> CameraHealth:
        p = self._progress(s.camera_id, now_s)
        if s.frames_in > p.frames_in:
            p.last_decision_s = now_s
        analysed = _analysed(s)
        if analysed > p.analysed:
            p.last_analysed_s = now_s
        p.frames_in, p.analysed = s.frames_in, analysed
        p.window.append((now_s, s.frames_in))
        # Keep one sample at or before the window's start, so the rate spans the whole window.
        while len(p.window) > 2 and p.window[1][0] <= now_s - self.fps_window_s:
            p.window.popleft()
        t0, n0 = p.window[0]
        fps = (s.frames_in - n0) / (now_s - t0) if now_s - t0 >= 1.0 else None
        return CameraHealth(
            camera_id=s.camera_id,
            healthy=(problem := self._problem(s, p, now_s)) is None,
            problem=problem,
            fps=round(fps, 2) if fps is not None else None,
            frames_in=s.frames_in,
            withheld=s.withheld,
            withheld_by_reason=tuple(sorted(((str(k), int(v)) for k, v in s.reasons.items()),
                                            key=lambda kv: (-kv[1], kv[0]))),
            analysis_lag_s=round(s.analysis_lag_s, 3) if s.analysis_lag_s is not None else None,
            queued_frames=s.queued_frames,
            last_decision_age_s=round(now_s - p.last_decision_s, 3),
            scene=s.scene or "ok",
            private_room=s.private_room,
            under_load_frames=s.under_load,
        )

    def _problem(self, s: CameraSample, p: _Progress, now_s: float) -> str | None:
        if s.done:
            return None
        if not s.alive:
            return "its pipeline thread has stopped"
        retrying = p.last_retry_s is not None and now_s - p.last_retry_s <= RECONNECT_GRACE_S + self.stall_s
        if now_s - p.last_decision_s > self.stall_s and not retrying:
            return f"no decision for {now_s - p.last_decision_s:.0f} s"
        if now_s - p.last_analysed_s > self.stall_s and not retrying:
            return f"analysis has not returned for {now_s - p.last_analysed_s:.0f} s"
        return None
