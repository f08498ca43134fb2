"""The per-camera pipeline: source -> analysis -> policy.decide -> redact.apply -> sinks.

Stages are connected by bounded queues (reader thread -> processing ->
sink thread), so a slow sink or analyzer applies back-pressure instead of
growing memory. Analysis runs on lanes, one worker thread per analyzer, a
few frames ahead of the frame being decided: the object detector can work
on frame k+2 while the face detector is on frame k+1 and frame k is being
redacted, which keeps both cores of a hub busy. Each lane sees every frame
in order, so the results are those of running the analyzers one by one.

Invariants (fail closed):
- Every frame gets exactly one Decision, and only `redact.apply` turns a
  frame plus its decision into something a sink accepts. A frame without a
  decision never reaches a sink.
- Any exception or timeout in analysis, any exception in policy or
  redaction, lag on a live source, or a backlog in front of the sinks makes
  the frame WITHHELD and records an event. Nothing falls back to "pass".
- While a timed-out analyzer is still running, following frames are
  withheld ("analysis_busy") without queueing more work on its lane (frames
  already queued behind it are cancelled and withheld the same way); when it
  returns, analysis resumes (recovery).
- A sink that fails (unwritable directory, full disk) is reported and
  skipped; the pipeline never writes raw frames anywhere as a fallback.
- A sink may ask for the camera's frames to be withheld before they are
  released at all (optional `hold_reason()`, for example an encrypted sink
  without an epoch key for a recipient): the frame is WITHHELD with that
  reason, for every sink. A `hold_reason` that raises withholds too.
- A source that cannot be opened or decoded gives an event, not a crash
  loop: live sources are reopened with exponential backoff on the injected
  clock; file sources end.
- The policy can be replaced while the pipeline runs (`swap_policy`, the
  homeowner's page saving zones): one reference swap of a frozen policy,
  read once per frame, so each frame is decided under exactly one policy. A
  new policy whose withhold zones or detection rules differ from those the
  analyzers were built for withholds every frame ("restart_needed") until the
  agent restarts: the analyzers would watch the old zones.
- A frame is released only once the next frame is decided (`policy.look_ahead`):
  masked wherever the next one masks foreground, a person or a face, withheld
  whenever the next one is withheld. The first sliver of someone
  entering is too thin to tell from noise on its own frame, and plain on the
  next. So one more raw frame is held per camera, a frame interval of latency
  added; a live frame whose next one does not come within `max_lag_s` is
  withheld for lag. Only the end of a source (or a stop) releases a frame on
  its own decision: nothing follows it.
- A live frame is as old as the camera's timestamps say (`_backlog`), and a
  frame read more than `CATCH_UP_AT` of `max_lag_s` behind is withheld for lag
  unanalysed while the source catches up (`_catch_up`).
- A frame tap (`set_frame_tap`) sees each frame's outcome after the sinks'
  checks: the `RedactedFrame` that was released, or the withholding
  `Decision`. It never sees a raw frame.
- `request_relearn()` (the owner's `camera relearn`, from any thread) is a
  flag the reader honours before the next frame: each analyzer with a
  `relearn()` runs it on its own lane, in order, so no analyzer's state is
  touched while it analyses a frame. Nothing else ever asks for a relearn.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent.clock import Clock, SystemClock
from agent.core import redact
from agent.core.datatypes import Analysis, Decision, Event, Frame
from agent.core.events import EventCallback
from agent.core.lanes import AnalysisRunner, PendingAnalysis
from agent.core.policy import UNDER_LOAD, CameraPolicy, decide, look_ahead, own_reason, reason_key
from agent.core.ports import Analyzer, FrameSource, Sink
from agent.core.redact import RedactedFrame
from agent.errors import FrameDecodeError, FrameSkipped, SourceError
from agent.vocab import Action, Mode

log = logging.getLogger(__name__)


DecisionCallback = Callable[[Decision, int | None], None]
#: Sees every frame's outcome: the released RedactedFrame, or the Decision that withheld it.
FrameTap = Callable[[RedactedFrame | Decision], None]


# Small queues: enough to overlap decode, analysis and encode on separate
# cores, while a 1080p frame is 6 MiB and memory on a Pi is scarce.
# The reader submits each frame to the analysis lanes as soon as it is decoded,
# then waits for room in its queue: so up to _QUEUE_FRAMES + 1 frames are being
# analysed ahead of the one being decided. Enough for the object detector (one
# run every few frames, 1-2x a face run) to stay ahead of the face detector.
_QUEUE_FRAMES = 2


_BACKOFF_MAX_S = 60.0

#: The share of `max_lag_s` a live frame may be behind its camera when read and still be analysed.
#: Further behind, it is withheld for lag unanalysed and the source catches up (`_catch_up`). A
#: frame analysed closer to the limit still has its analysis, the next frame's decision and its
#: release ahead of it, and is withheld for lag at the end of them: an overloaded hub that spent
#: its time on such frames only fell further behind, every camera hovering at the limit.
CATCH_UP_AT = 0.5

#: Tamper faults about the learned scene (`agent.analysis.tamper`), most serious first.
_SCENE_FAULTS = {"tamper:scene_unreadable": "unreadable", "tamper:moved": "moved",
                 "tamper:scene_unsaved": "unsaved", "tamper:unverified": "unverified"}


# Real seconds a stopping pipeline waits for a reader stuck in a read (wall time on purpose: the
# process must stop within seconds of SIGTERM whatever the injected clock says).
_READER_GRACE_S = 2.0


@dataclass
class PipelineStats:
    frames_in: int = 0
    frames_out: int = 0
    passed: int = 0
    masked: int = 0
    withheld: int = 0
    decode_errors: int = 0
    sink_errors: int = 0
    #: Released frames whose face run was skipped because the hub was behind the camera
    #: (`detection.under_load`; each released with the next frame's faces).
    under_load: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def count(self, d: Decision) -> None:
        self.frames_in += 1
        if d.action is Action.WITHHOLD:
            self.withheld += 1
        elif d.action is Action.MASK:
            self.masked += 1
        else:
            self.passed += 1
        if d.action is not Action.WITHHOLD and UNDER_LOAD in d.reasons:
            self.under_load += 1
        if d.action is Action.WITHHOLD:
            for r in d.reasons:
                key = reason_key(r)  # "lag:2.31s" varies per frame: counted as "lag"
                self.reasons[key] = self.reasons.get(key, 0) + 1


def _lag_reason(seconds: float) -> str:
    """The withhold reason of a live frame `seconds` behind its camera (counted as `lag`)."""
    return f"lag:{seconds:.2f}s"


def _backlog(src: FrameSource) -> float:
    """Seconds the frame just read waited before this reader took it (a live source's optional
    `backlog_s()`, from the stream's own timestamps); 0 for a source that cannot say."""
    backlog = getattr(src, "backlog_s", None)
    return max(0.0, float(backlog())) if callable(backlog) else 0.0


def _source_failure(e: Exception, what: str, doing: str) -> str:
    """The event text for a source that failed. A `SourceError` is ours and says it in our words,
    the source named without its password; any other exception (OpenCV, FFmpeg, a plugin) is
    named by its type only: libraries put the URL they were given, password and all, in their
    messages, and the event goes to events.jsonl and the broker."""
    if isinstance(e, SourceError):
        return str(e)
    return f"{what}: {doing} failed unexpectedly ({type(e).__name__})"


class CameraPipeline:
    def __init__(
        self,
        policy: CameraPolicy,
        analyzers: Sequence[Analyzer],
        sinks: Sequence[Sink],
        mode: Callable[[], Mode],
        on_event: EventCallback,
        *,
        clock: Clock | None = None,
        analysis_timeout_s: float = 2.0,
        max_lag_s: float = 2.0,
        on_decision: DecisionCallback | None = None,
    ) -> None:
        self.policy = policy
        self.camera_id = policy.camera_id
        self._runner = AnalysisRunner(analyzers, analysis_timeout_s)
        self._sinks = list(sinks)
        # sink index -> (monotonic time of the next attempt, current backoff)
        self._failed_sinks: dict[int, tuple[float, float]] = {}
        self._mode = mode
        self._on_event = on_event
        self._clock = clock or SystemClock()
        self._max_lag_s = max_lag_s
        self._on_decision = on_decision
        self.stats = PipelineStats()
        self._stop = threading.Event()
        # Set when the sink stage's thread has died: from then on frames are withheld, never
        # queued for a stage that will not take them (a full queue would block the pipeline).
        self._sink_stage_dead = threading.Event()
        self._last_withhold_reason: str | None = None
        #: Monotonic time a redacted frame was last handed to the sinks (read by the privacy LED).
        self.last_release_s: float | None = None
        # What the analyzers were built to feed: a swapped-in policy needing other analysis withholds.
        self._analysis_basis = _analysis_basis(policy)
        self._restart_needed = False
        self._tap: FrameTap | None = None
        self._relearn = threading.Event()
        #: What the analyzers last said about the learned scene: "moved", "unreadable", ... or
        #: None while they said nothing (read by health and the homeowner's page).
        self.scene_state: str | None = None
        #: The private room the policy last reported for this camera ("bathroom", "bedroom"), or None.
        self.private_room: str | None = None

    # -- live changes -------------------------------------------------------------

    def swap_policy(self, policy: CameraPolicy) -> bool:
        """Decide the following frames under `policy` (already validated); from any thread.

        Returns False when the new policy needs analysis the running analyzers do not do (other
        withhold zones or detection rules): the camera then withholds until restarted.
        """
        if not isinstance(policy, CameraPolicy) or policy.camera_id != self.camera_id:
            raise ValueError(f"a policy for camera {getattr(policy, 'camera_id', '?')!r} cannot replace "
                             f"the policy of camera {self.camera_id!r}")
        needs_restart = _analysis_basis(policy) != self._analysis_basis
        # The flag first: a frame decided between the two assignments withholds (never the reverse).
        if needs_restart:
            self._restart_needed = True
        self.policy = policy
        if not needs_restart:
            self._restart_needed = False
        self._event("policy_changed", "camera policy replaced while running" +
                    ("; its withhold zones or detection rules changed, so frames are withheld until "
                     "the agent restarts" if needs_restart else ""), zones=len(policy.zones))
        return not needs_restart

    def request_relearn(self) -> None:
        """Forget the learned scene and learn it again from the next frame (from any thread)."""
        self._relearn.set()

    @property
    def restart_needed(self) -> bool:
        return self._restart_needed

    def set_frame_tap(self, tap: FrameTap | None) -> None:
        """Hand each frame's outcome (RedactedFrame or withholding Decision) to `tap` (one tap)."""
        self._tap = tap

    def _notify_tap(self, item: RedactedFrame | Decision) -> None:
        tap = self._tap
        if tap is None:
            return
        try:
            tap(item)
        except Exception as e:  # noqa: BLE001 - a viewer's failure never stops or changes the pipeline
            log.warning("camera %s: frame tap failed: %s: %s", self.camera_id, type(e).__name__, e)

    # -- events -----------------------------------------------------------------

    def _event(self, kind: str, message: str, **details: object) -> None:
        self._on_event(Event(kind, self.camera_id, message, self._clock.monotonic(), details))

    # -- one frame ----------------------------------------------------------------

    def process(self, frame: Frame, live: bool) -> tuple[Decision, RedactedFrame | None]:
        """Decide and redact one frame on its own (`run` also looks ahead to the next frame's
        decision; a single frame has none). Never raises; every failure withholds."""
        decision, raw = self._decide(self._submit(frame, live), live)
        # No next frame to wait for: what look-ahead does at a source's end (a frame whose face
        # run was skipped under load is withheld).
        return self._redact(raw, look_ahead(decision, None))

    def _lagging(self, frame: Frame, live: bool) -> Decision | None:
        lag = self._clock.monotonic() - frame.captured_monotonic_s
        if live and lag > self._max_lag_s:
            return Decision(self.camera_id, frame.index, frame.t_s, Action.WITHHOLD, (_lag_reason(lag),))
        return None

    def _submit(self, frame: Frame, live: bool) -> PendingAnalysis | Decision:
        """Start analysing a frame, or withhold it at once when a live source lags (no work queued)."""
        if self._relearn.is_set():
            self._relearn.clear()
            names = self._runner.relearn()
            self._event("scene_relearn", "relearning the scene from this frame (the owner asked): "
                        + (", ".join(names) or "no analyzer keeps a learned scene"), frame=frame.index,
                        analyzers=names)
        return self._lagging(frame, live) or self._runner.submit(frame)

    def _decide(self, pending: PendingAnalysis | Decision, live: bool) -> tuple[Decision, Frame | None]:
        """The frame's own decision, and the frame (None when it was withheld before analysis)."""
        if isinstance(pending, Decision):
            return pending, None
        frame = pending.frame
        analysis, problem = self._runner.collect(pending)
        # How far analysis is behind capture (the service's health reports it).
        self.analysis_lag_s = self._clock.monotonic() - frame.captured_monotonic_s
        if problem:
            self._event("analysis_fault", problem, frame=frame.index)
        self._note_scene(analysis)
        # A frame that waited for its analysis may have fallen behind a live source meanwhile.
        lagging = self._lagging(frame, live)
        policy = self.policy  # read once: this frame is decided under one policy
        if lagging is not None:
            return lagging, frame
        if self._restart_needed:
            return Decision(self.camera_id, frame.index, frame.t_s, Action.WITHHOLD, ("restart_needed",)), frame
        try:
            return decide(policy, frame, analysis, self._mode()), frame
        except Exception as e:  # noqa: BLE001 - stage boundary: policy failure withholds
            self._event("policy_fault", f"{type(e).__name__}: {e}", frame=frame.index)
            return Decision(self.camera_id, frame.index, frame.t_s, Action.WITHHOLD,
                            (f"policy_error:{type(e).__name__}",)), frame

    def _redact(self, frame: Frame | None, decision: Decision, *,
                note: bool = True) -> tuple[Decision, RedactedFrame | None]:
        out: RedactedFrame | None = None
        if frame is not None and decision.action is not Action.WITHHOLD:
            try:
                out = redact.apply(frame, decision)
            except Exception as e:  # noqa: BLE001 - stage boundary: redaction failure withholds
                self._event("redact_fault", f"{type(e).__name__}: {e}", frame=frame.index)
                decision = Decision(self.camera_id, frame.index, frame.t_s, Action.WITHHOLD,
                                    (f"redact_error:{type(e).__name__}",))
                out = None
            if out is None and decision.action is not Action.WITHHOLD:
                decision = Decision(self.camera_id, frame.index, frame.t_s, Action.WITHHOLD, ("redact_refused",))
        if note:
            self._note_withhold(decision)
        return decision, out

    def _note_scene(self, analysis: Analysis) -> None:
        """Keep the scene signal health and the homeowner's page show (tamper's faults)."""
        faults = analysis.faults
        scene = next((state for fault, state in _SCENE_FAULTS.items() if fault in faults), None)
        # A frame whose analysis did not come back says nothing about the scene: keep the last word.
        if scene is not None or not any(f.startswith("analysis_") for f in faults):
            self.scene_state = scene

    def _note_room(self, d: Decision) -> None:
        # `decide` names the room (configured, or seen under `auto`) in every decision it reaches.
        # A released frame passed `decide`, so one without a room reason is in no private room (a
        # relearn un-latched it); a withheld one may have stopped earlier and keeps the last word.
        rooms = [r.split(":")[1] for r in d.reasons if r.startswith("room:")]
        if rooms:
            self.private_room = rooms[0]
        elif d.action is not Action.WITHHOLD:
            self.private_room = None

    def _note_withhold(self, d: Decision) -> None:
        self._note_room(d)
        # One event per change of withhold reason, not one per frame. A frame withheld for what the
        # next one shows (`ahead:`) starts the next one's stretch: the same reasons, one event.
        # By kind: one event for a stretch withheld for lag, not one per frame for its figure.
        reason = (",".join(dict.fromkeys(own_reason(reason_key(r)) for r in d.reasons))
                  if d.action is Action.WITHHOLD else None)
        if reason != self._last_withhold_reason:
            if reason is not None:
                self._event("withheld", f"withholding frames: {reason}", frame=d.frame_index, reasons=list(d.reasons))
                tamper = [r for r in d.reasons if r.startswith("tamper:")]
                if tamper:
                    self._event("tamper", f"camera tampering suspected: {', '.join(tamper)}", frame=d.frame_index)
            elif self._last_withhold_reason is not None:
                self._event("released", "frames released again", frame=d.frame_index)
            self._last_withhold_reason = reason

    # -- sinks --------------------------------------------------------------------

    def _write(self, item: RedactedFrame | Decision) -> None:
        now = self._clock.monotonic()
        if isinstance(item, RedactedFrame):
            # Every released frame lights the LED, sinks or none: the homeowner's page shows released
            # frames too (a camera with no sink is still watched). Set before the sinks write, so the
            # LED is never late to the record.
            self.last_release_s = now
        for i, s in enumerate(self._sinks):
            failed = self._failed_sinks.get(i)
            if failed is not None and now < failed[0]:
                continue  # still backing off: this sink misses the frame (never a raw fallback)
            try:
                if isinstance(item, RedactedFrame):
                    s.write(item)
                else:
                    s.withheld(item.camera_id, item.frame_index, item.t_s)
            except Exception as e:  # noqa: BLE001 - stage boundary: any sink failure is retried, never fatal
                # A full disk or a vanished NAS may come back: retry with backoff
                # rather than dropping the sink for the rest of the run. An unexpected error
                # (a bug, a raw database error) is handled the same way: the sink's output is
                # withheld and reported, and the pipeline keeps going.
                backoff = min(_BACKOFF_MAX_S, failed[1] * 2) if failed else 1.0
                self._failed_sinks[i] = (now + backoff, backoff)
                self.stats.sink_errors += 1
                self._event("sink_error", f"sink {s.name} failed: {e}; retrying in {backoff:g}s, its output is "
                            "withheld meanwhile", sink=s.name)
                continue
            if failed is not None:
                del self._failed_sinks[i]
                self._event("sink_recovered", f"sink {s.name} works again", sink=s.name)

    def _close_sinks(self) -> None:
        for s in self._sinks:
            try:
                s.close()
            except Exception as e:  # noqa: BLE001 - stage boundary: one sink failing must not skip the others
                self.stats.sink_errors += 1
                self._event("sink_error", f"sink {s.name} failed while closing: {e}", sink=s.name)

    # -- the loop -----------------------------------------------------------------

    def stop(self) -> None:
        """Stop soon (from any thread, a signal handler included): sinks are told to finish fast."""
        self._stop.set()
        for s in self._sinks:
            interrupt = getattr(s, "interrupt", None)
            if callable(interrupt):
                interrupt()

    @property
    def sinks_alive(self) -> bool:
        return not self._sink_stage_dead.is_set()

    @property
    def queued_frames(self) -> int:
        """Frames waiting between the stages right now (the service's health reports it)."""
        return sum(size() for size in self._queue_sizes)

    def stored_frames(self) -> dict[str, int | None]:
        """Per sink, the frames it has durably stored (None: the sink does not say)."""
        return {s.name: getattr(s, "frames_stored", None) for s in self._sinks}

    def run(self, open_source: Callable[[], FrameSource]) -> PipelineStats:
        """Process a source to its end (files) or until `stop()` (live). Returns stats."""
        frames: queue.Queue[PendingAnalysis | Decision | None] = queue.Queue(maxsize=_QUEUE_FRAMES)
        out_q: queue.Queue[RedactedFrame | Decision | None] = queue.Queue(maxsize=_QUEUE_FRAMES)
        self._queue_sizes = (frames.qsize, out_q.qsize)
        reader = threading.Thread(target=self._reader, args=(open_source, frames), name=f"src-{self.camera_id}",
                                  daemon=True)
        writer = threading.Thread(target=self._writer, args=(out_q,), name=f"sink-{self.camera_id}", daemon=True)
        reader.start()
        writer.start()
        # The frame decided last, not yet released: it waits for the next frame's decision
        # (`policy.look_ahead`). Only ever one, so at most one more raw frame is held.
        held: tuple[Decision, Frame] | None = None
        try:
            while True:
                try:
                    item = frames.get(timeout=0.2)
                except queue.Empty:
                    # A live camera gone quiet: the held frame waits for the next one no longer
                    # than a frame may lag, then goes out withheld for lag. A file always has a
                    # next frame or an end: its frame waits, whatever the pace.
                    if held is not None and self._live and self._lagging(held[1], True) is not None:
                        self._release(*held, None, out_q)
                        held = None
                    # Asked to stop while the reader is stuck in a read (a live source that went
                    # quiet): stop without it; the reader is a daemon thread and is abandoned.
                    if self._stop.is_set():
                        break
                    continue
                if item is None:
                    break
                decision, frame = self._decide(item, self._live)
                item = None
                if held is not None:
                    self._release(*held, decision, out_q)
                    held = None
                if frame is None or decision.action is Action.WITHHOLD:
                    self._release(decision, frame, None, out_q)  # looking ahead never releases a withheld frame
                else:
                    held = (decision, frame)
                frame = None
            if held is not None:
                self._release(*held, None, out_q)  # the source ended (or was stopped): nothing follows
            held = None
        finally:
            self._stop.set()
            self._put(out_q, None)
            writer.join()
            # Unblock the reader if it is waiting on a full queue. A reader stuck inside a read
            # of a live source is given a few seconds, then abandoned (it is a daemon thread).
            deadline = time.monotonic() + _READER_GRACE_S
            while reader.is_alive() and time.monotonic() < deadline:
                try:
                    frames.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._runner.close()
        return self.stats

    def _release(self, decision: Decision, frame: Frame | None, following: Decision | None,
                 out_q: queue.Queue[RedactedFrame | Decision | None]) -> None:
        """Redact a decided frame, given the next frame's decision, and hand it to the sink stage."""
        live = self._live
        decision = look_ahead(decision, following)
        if frame is not None and decision.action is not Action.WITHHOLD:
            # It also waited for the next frame's analysis: it may have fallen behind meanwhile.
            decision = self._lagging(frame, live) or decision
        # Noted once, after the sinks' checks: a frame released by the policy and then
        # held for a sink is one withheld frame, not a "released" and a "withheld" event.
        decision, out = self._redact(frame, decision, note=False)
        frame = None
        out_index: int | None = None
        if out is not None and self._sink_stage_dead.is_set():
            out, decision = None, self._withhold_for_sinks(decision, "sink_failed")
        if out is not None:
            hold = self._sink_hold()
            if hold is not None:
                out, decision = None, self._withhold_for_sinks(decision, hold)
        if out is not None and live and out_q.full():
            # Never let a slow sink turn into unbounded memory; a
            # dropped frame is a withheld frame, never a raw one.
            out, decision = None, self._withhold_for_sinks(decision, "sink_backlog")
        self._note_withhold(decision)
        self.stats.count(decision)
        if out is not None:
            out_index = self.stats.frames_out
            self.stats.frames_out += 1
            self._put(out_q, out)
        else:
            self._put(out_q, decision)
        if self._on_decision is not None:
            self._on_decision(decision, out_index)
        self._notify_tap(out if out is not None else decision)

    _live = False
    _queue_sizes: tuple[Callable[[], int], ...] = ()
    #: Seconds from capture to analysis of the latest analysed frame; None before the first.
    analysis_lag_s: float | None = None

    def _reader(self, open_source: Callable[[], FrameSource],
                frames: queue.Queue[PendingAnalysis | Decision | None]) -> None:
        backoff_s = 1.0
        index = 0
        # The stretch of frames the source could not give cleanly, as (first frame,
        # frames, decode errors): one event when it starts and one when it ends,
        # not one per frame of a damaged file.
        damage: tuple[int, int, int] | None = None
        try:
            while not self._stop.is_set():
                try:
                    src = open_source()
                except Exception as e:  # noqa: BLE001 - stage boundary: a source that cannot open is an error
                    self._event("source_error", _source_failure(e, f"camera {self.camera_id}'s source", "opening"))
                    if not self._is_live_spec(open_source):
                        return
                    self._clock.sleep(backoff_s)
                    backoff_s = min(_BACKOFF_MAX_S, backoff_s * 2)
                    continue
                self._live = src.info.live
                start = self._clock.monotonic()
                lost: Exception | None = None
                try:
                    while not self._stop.is_set():
                        try:
                            img = src.read()
                        except FrameDecodeError as e:
                            # A frame the source could not give, or gives as unreliable (a damaged
                            # stretch of a video file): it still gets its decision, WITHHOLD, so the
                            # decision log and the sinks' timeline have no holes. One skipped while
                            # the source catches up with its camera is no damage: withheld for lag.
                            if isinstance(e, FrameSkipped):
                                reason = _lag_reason(e.behind_s)
                            else:
                                damage = self._decode_failed(e, index, damage)
                                reason = getattr(e, "reason", "decode_error")
                            t_s = (self._clock.monotonic() - start) if src.info.live else index / src.info.fps
                            frames.put(Decision(self.camera_id, index, t_s, Action.WITHHOLD, (reason,)))
                            index += 1
                            continue
                        except Exception as e:  # noqa: BLE001 - whatever the source raised, it is lost
                            # Only the read: a failure of this stage's own work (a relearn, the
                            # analysis hand-off) is not the camera's and must not pass for it.
                            lost = e
                            break
                        if damage is not None:
                            first, count, errors = damage
                            damage = None
                            if img is None:
                                self._event("decode_unrecovered",
                                            f"source ended {count} frame(s) into damage from frame {first} that "
                                            f"decoding never recovered from ({errors} decode error(s)); those "
                                            "frames were withheld", frame=first, frames=count, errors=errors)
                            else:
                                self._event("decode_recovered",
                                            f"decoding clean again at frame {index}: {count} frame(s) from frame "
                                            f"{first} withheld ({errors} decode error(s))",
                                            frame=index, first=first, frames=count, errors=errors)
                        if img is None:
                            expected = src.info.frame_count
                            if expected is not None and index < expected:
                                self._event("source_truncated",
                                            f"source ended after {index} of {expected} frames",
                                            frames=index, expected=expected)
                            self._event("source_ended", f"source ended after {index} frames", frames=index)
                            return
                        now = self._clock.monotonic()
                        t_s = (now - start) if src.info.live else index / src.info.fps
                        # A frame that waited in the network for a reader behind the camera is as
                        # old as that wait, not fresh (`_backlog`).
                        backlog = _backlog(src) if src.info.live else 0.0
                        if backlog > self._max_lag_s * CATCH_UP_AT:
                            frames.put(self._catch_up(src, index, t_s, backlog))
                        else:
                            frames.put(self._submit(Frame(self.camera_id, index, t_s, now - backlog, img, backlog),
                                                    src.info.live))
                        # The frame is the queue's now: a reference kept here would hold a whole
                        # decoded picture for as long as the next read waits for the camera.
                        img = None
                        index += 1
                        backoff_s = 1.0
                finally:
                    src.close()
                if lost is not None:
                    self._event("source_lost", _source_failure(lost, f"source {src.info.description}", "reading"),
                                frame=index)
                    if not src.info.live:
                        return
                    self._clock.sleep(backoff_s)
                    backoff_s = min(_BACKOFF_MAX_S, backoff_s * 2)
        except Exception as e:  # noqa: BLE001 - stage boundary: the reader's own failure ends the camera
            # Not a source fault (those are handled above): the camera stops reading, so nothing more
            # of it is released, and says why instead of dying with a traceback.
            self._event("reader_failed", f"camera {self.camera_id}: reading stopped at frame {index} "
                        f"({type(e).__name__}: {e})", frame=index)
        finally:
            frames.put(None)

    def _catch_up(self, src: FrameSource, index: int, t_s: float, backlog_s: float) -> Decision:
        """A live frame read more than `CATCH_UP_AT` of `max_lag_s` behind its camera: withheld
        for lag unanalysed, and the source asked to catch up (its optional `catch_up`)."""
        catch_up = getattr(src, "catch_up", None)
        if callable(catch_up):
            catch_up(self._max_lag_s * CATCH_UP_AT)
        return Decision(self.camera_id, index, t_s, Action.WITHHOLD, (_lag_reason(backlog_s),))

    def _decode_failed(self, e: FrameDecodeError, index: int,
                       damage: tuple[int, int, int] | None) -> tuple[int, int, int]:
        """Count a frame the source could not give; the first of a stretch gets an event.

        A `DamagedFrameError` says how many decode errors it stands for (0 for a frame
        withheld only because it follows damage); any other FrameDecodeError is one.
        """
        errors = int(getattr(e, "errors", 1))
        self.stats.decode_errors += errors
        if damage is None:
            self._event("decode_error", f"{e}; withholding until the source decodes cleanly again", frame=index)
            return index, 1, errors
        first, count, total = damage
        return first, count + 1, total + errors

    @staticmethod
    def _is_live_spec(open_source: Callable[[], FrameSource]) -> bool:
        return bool(getattr(open_source, "live", False))

    def _sink_hold(self) -> str | None:
        """The first sink's reason to withhold the frame before any sink sees it (fail closed)."""
        for s in self._sinks:
            hold = getattr(s, "hold_reason", None)
            if not callable(hold):
                continue
            try:
                reason = hold()
            except Exception as e:  # noqa: BLE001 - stage boundary: a sink that cannot say withholds
                log.error("camera %s: sink %s cannot say whether to withhold: %s", self.camera_id, s.name, e)
                return "sink_hold_error"
            if reason is not None:
                return str(reason)
        return None

    def _withhold_for_sinks(self, d: Decision, reason: str) -> Decision:
        """A released frame the sink stage cannot take becomes a withheld one (never queued raw)."""
        return Decision(self.camera_id, d.frame_index, d.t_s, Action.WITHHOLD, (reason,))

    def _put(self, out_q: queue.Queue[RedactedFrame | Decision | None], item: RedactedFrame | Decision | None) -> None:
        """Hand an item to the sink stage; never blocks for good on a stage that has died."""
        while not self._sink_stage_dead.is_set():
            try:
                out_q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _writer(self, out_q: queue.Queue[RedactedFrame | Decision | None]) -> None:
        try:
            while True:
                item = out_q.get()
                if item is None:
                    break
                self._write(item)
                item = None  # written: not held while the next one is awaited
            self._close_sinks()
        except BaseException as e:  # noqa: BLE001 - stage boundary: a dead sink stage withholds, never blocks
            self._sink_stage_dead.set()
            self.stats.sink_errors += 1
            log.error("camera %s: the sink stage stopped: %s: %s", self.camera_id, type(e).__name__, e)
            self._event("sink_failed", f"the sink stage stopped ({type(e).__name__}: {e}); frames are withheld "
                        "until the camera is restarted", error=f"{type(e).__name__}: {e}"[:200])


def _analysis_basis(policy: CameraPolicy) -> tuple[object, ...]:
    """What a camera's analyzers are built from (`agent.analysis.build`): its withhold zones, their
    points and hold times, its detection rules and its foreground layer. Mask zones are pure policy."""
    return (policy.withhold_capable_zones(), policy.detection_rules, policy.foreground)
