"""The detection analyzer: faces every frame, objects on a cadence, failing closed.

It runs the face detector and the object detector (YuNet-s and YOLOX-Nano by
default) at their own cadence and reports `Detection`s with policy labels.
Between runs, the last result is carried forward with each box grown by
`grow_rel_per_s` times its age, so something that moves between runs stays
covered.

Invariants (each has a test):
- `Analysis.detections_age_s` is the age of the OLDEST detector result used
  for the frame (0 on a frame a detector just ran on). The policy withholds a
  frame whose age exceeds `max_detection_age_s`; the analyzer also forces a
  run once a result is half that old, so withholding is the exception.
- Age is measured on both stream time and the injected clock, taking the
  larger: a replay that runs fast or a live camera that stalls can only make
  a result look older, never younger.
- A missing or corrupt model never passes frames: every frame gets the fault
  `model_missing:<model>` until a reload (tried every `model_retry_s`)
  succeeds; an event is raised when it goes missing and when it comes back.
- A detector that raises yields the fault `detector_error:<model>` for that
  frame (plus an event at the start of a failure streak and at recovery); its
  stale result is not reused for that frame.
- A frame from a new source (size change, stream time going backwards)
  discards carried results instead of applying them to the wrong scene.
- With `objects.asynchronous`, the object detector runs on a worker thread:
  frames never wait for it (except the very first, which has no result to
  carry), a result is aged from the frame it was computed on, a hung worker
  shows as a growing age (so the policy withholds), and a result computed
  before a source change is discarded.
- A scene cut (the whole view changes between two frames: a mean absolute
  difference of two 32x18 grey thumbnails, brightness taken out, above
  `scene_cut.threshold`) drops every carried result and runs the detectors
  on the cut frame itself: boxes of the previous scene are never applied to
  the new one. With `objects.asynchronous`, frames are withheld
  (`scene_cut:pending`) until the run started on the cut frame is in.
- `Analysis.room`: once an object run reports a bed (bedroom) or a toilet
  or sink (bathroom), every later frame of the run carries that kind. It
  latches, because a private room does not stop being one when the
  fixture is hidden for a while (a person in front of the toilet, a towel
  over the sink): un-latching would release frames of exactly the moments
  the room is in use. In `run` the latch is kept in the camera's scene store,
  so a restart does not un-latch it either; only the owner's relearn does.
- Under load (`detection.under_load`): once a live frame was read `behind_s`
  behind its camera (`Frame.behind_s`), the face detector runs on every
  second frame and the object detector every `object_every_n_frames`, until
  frames have been read less than half of `behind_s` behind for `calm_s` of
  stream time. A frame whose face run was skipped for it is marked
  `Analysis.under_load`; the policy releases it only with the next frame's
  own faces (`policy.look_ahead`). The state is a function of the frames
  seen (their `behind_s` and stream time), so both lanes of a camera agree;
  files (`behind_s` 0) never shed.
- Time comes only from the injected clock; no sleeping, no wall time.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from agent.analysis.shrink import shrink_frame
from agent.clock import Clock
from agent.config import ROOM_LABELS, DetectionConfig
from agent.core.datatypes import Analysis, Detection, Event, Frame
from agent.core.events import emit_safely
from agent.detect.base import Detector
from agent.errors import AnalysisError, ModelError

if TYPE_CHECKING:
    from agent.analysis.scenestore import SceneStore

log = logging.getLogger(__name__)

Loader = Callable[[str, str], Detector]  # (role, model name) -> detector; raises ModelError
EventSink = Callable[[Event], None]

ROLES: tuple[str, ...] = ("faces", "objects")

# Run a detector before its result is this fraction of max_detection_age_s old.
_FORCE_RUN_AGE_REL = 0.5
_EWMA = 0.2
_THUMB_PX = (32, 18)


@dataclass
class _Slot:
    """Mutable per-detector state, private to one analyzer (one camera)."""

    role: str  # "faces" | "objects"
    model: str
    every_n: int
    detector: Detector | None = None
    missing: str = ""  # why the model is unavailable ("" = loaded)
    last_attempt_mono_s: float = -math.inf
    result: tuple[Detection, ...] = ()
    result_t_s: float | None = None
    result_mono_s: float | None = None
    frames_since_run: int = 0
    infer_s: float | None = None  # EWMA of inference time on the injected clock
    failing: bool = False
    runs: int = 0  # successful detector runs, for stats
    asynchronous: bool = False
    pending: _Job | None = None
    generation: int = 0  # bumped by forget(): a job from an older generation is discarded
    cut_pending: bool = False  # asynchronous: no result yet from the run started on a scene cut

    def age_s(self, frame: Frame) -> float | None:
        if self.result_t_s is None or self.result_mono_s is None:
            return None
        return max(0.0, frame.t_s - self.result_t_s, frame.captured_monotonic_s - self.result_mono_s)

    def forget(self) -> None:
        self.result, self.result_t_s, self.result_mono_s = (), None, None
        self.frames_since_run = 0
        self.pending = None
        self.generation += 1


@dataclass
class _Load:
    """Whether the hub is behind this camera (`detection.under_load`), private to one analyzer."""

    on: bool = False
    calm_since_t_s: float | None = None  # stream time from which frames were read close to the camera
    shed: int = 0  # frames whose face run was skipped under load, for stats


@dataclass
class _Job:
    """One asynchronous detector run; written by its worker thread once, then `done` is set."""

    t_s: float
    mono_s: float
    started_mono_s: float
    generation: int
    done: threading.Event = field(default_factory=threading.Event)
    detections: tuple[Detection, ...] = ()
    error: BaseException | None = None
    finished_mono_s: float = 0.0


class DetectionAnalyzer:
    """`agent.core.ports.Analyzer` for on-device detection on one camera.

    `roles` picks the detectors this instance runs. The pipeline builds one
    instance per role so that each runs on its own analysis lane (the object
    detector on frame k+2 while the face detector is on frame k); results
    are the same as one instance with both roles, because the roles share
    no state.
    """

    def __init__(self, cfg: DetectionConfig, camera_id: str, clock: Clock, on_event: EventSink,
                 loader: Loader, roles: tuple[str, ...] = ROLES, store: SceneStore | None = None) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise AnalysisError(f"unknown detection roles {sorted(unknown)}")
        self.name = "detection" if set(roles) == set(ROLES) else "detection:" + "+".join(roles)
        self.cfg = cfg
        self.camera_id = camera_id
        self.clock = clock
        self.on_event = on_event
        self.loader = loader
        self.slots: list[_Slot] = []
        if cfg.faces_active and "faces" in roles:
            self.slots.append(_Slot("faces", cfg.faces.model, cfg.faces.every_n_frames))
        if cfg.objects_active and "objects" in roles:
            self.slots.append(_Slot("objects", cfg.objects.model, cfg.objects.every_n_frames,
                                    asynchronous=cfg.objects.asynchronous))
        self._shape: tuple[int, int] | None = None
        self._prev_t_s: float | None = None
        self._frame_interval_s: float | None = None
        self._thumb: np.ndarray | None = None
        # The latched private-room kind (see the module docstring). With a store (`run`) it outlives
        # the process: a restart with the fixtures out of view must not un-latch it.
        self._store = store
        self.room: str | None = store.room if store is not None else None
        self.scene_cuts = 0
        self._pressure = _Load()
        # One lane of a camera tells the log and the events: the faces lane, or the objects lane
        # when the camera has no face detector (both see the same frames and agree).
        self._announces = "faces" in roles or not cfg.faces_active
        for slot in self.slots:
            self._load(slot)

    def stats(self) -> dict[str, dict[str, object]]:
        """Per role: model, runs so far, mean inference time (EWMA, ms), missing reason. No image data."""
        return {
            s.role: {
                "model": s.model,
                "runs": s.runs,
                "infer_ms": None if s.infer_s is None else round(s.infer_s * 1000, 2),
                "interval_frames": self._interval(s),
                "missing": s.missing,
                "under_load": self._pressure.on,
                "shed_frames": self._pressure.shed if s.role == "faces" else 0,
            }
            for s in self.slots
        }

    # --- model loading -----------------------------------------------------------

    @property
    def missing_models(self) -> list[str]:
        return [s.missing for s in self.slots if s.missing]

    def _load(self, slot: _Slot) -> None:
        slot.last_attempt_mono_s = self.clock.monotonic()
        was_missing = bool(slot.missing)
        try:
            slot.detector = self.loader(slot.role, slot.model)
        except ModelError as e:
            slot.detector = None
            first = not was_missing
            slot.missing = str(e)
            if first:
                log.error("camera %s: %s model unavailable, withholding its frames: %s",
                          self.camera_id, slot.role, e)
                self._emit("model_missing", f"{slot.role} model {slot.model} is missing or corrupt; "
                           "frames are withheld", slot, error=str(e))
            return
        slot.missing = ""
        slot.forget()
        if was_missing:
            log.warning("camera %s: %s model %s loaded; detection resumes", self.camera_id, slot.role, slot.model)
            self._emit("model_loaded", f"{slot.role} model {slot.model} loaded; detection resumes", slot)

    def _emit(self, kind: str, message: str, slot: _Slot, **details: object) -> None:
        ev = Event(kind=kind, camera_id=self.camera_id, message=message, monotonic_s=self.clock.monotonic(),
                   details={"role": slot.role, "model": slot.model, **details})
        emit_safely(self.on_event, ev)  # a broken event sink must not stop detection

    # --- cadence -----------------------------------------------------------------

    def _interval(self, slot: _Slot) -> int:
        n = self._configured_interval(slot)
        if not self._pressure.on:
            return n
        # Every second frame and no sparser: a skipped frame then always has a face run on each
        # side of it, the one before carried and the one after added by look-ahead.
        return max(n, 2) if slot.role == "faces" else max(n, self.cfg.under_load.object_every_n_frames)

    def _configured_interval(self, slot: _Slot) -> int:
        if slot.role != "objects" or not self.cfg.objects.adaptive:
            return slot.every_n
        oc = self.cfg.objects
        if slot.infer_s is None or not self._frame_interval_s:
            return slot.every_n
        # The small epsilon keeps float noise (0.2 / 0.05 = 4.000000000000001) from adding a frame.
        n = math.ceil(slot.infer_s / (self._frame_interval_s * oc.budget_rel) - 1e-9)
        return max(1, min(oc.max_every_n_frames, n))

    def _due(self, slot: _Slot, frame: Frame) -> bool:
        age = slot.age_s(frame)
        if age is None or slot.failing:
            return True
        if age >= self.cfg.max_detection_age_s * _FORCE_RUN_AGE_REL:
            return True
        return slot.frames_since_run >= self._interval(slot)

    def _weigh_load(self, frame: Frame) -> None:
        """Enter or leave the under-load state on this frame (`detection.under_load`)."""
        ul = self.cfg.under_load
        st = self._pressure
        if not ul.enabled:
            return
        behind = frame.behind_s
        if not st.on:
            if behind >= ul.behind_s:
                st.on, st.calm_since_t_s = True, None
                self._tell_load(f"the hub read frame {frame.index} {behind:.2f} s behind the camera: the face "
                                "detector runs on every second frame (each frame between is masked with the "
                                "faces of the frames beside it) and the object detector every "
                                f"{ul.object_every_n_frames} frames until it has caught up", behind)
            return
        if behind >= ul.behind_s / 2:
            st.calm_since_t_s = None
            return
        if st.calm_since_t_s is None:
            st.calm_since_t_s = frame.t_s
        if frame.t_s - st.calm_since_t_s >= ul.calm_s:
            st.on, st.calm_since_t_s = False, None
            self._tell_load(f"the hub has kept up with the camera for {ul.calm_s:g} s: the detectors run at "
                            "their configured cadence again", behind)

    def _tell_load(self, message: str, behind_s: float) -> None:
        if not self._announces:
            return
        kind = "under_load" if self._pressure.on else "load_eased"
        log.log(logging.WARNING if self._pressure.on else logging.INFO, "camera %s: %s", self.camera_id, message)
        ev = Event(kind=kind, camera_id=self.camera_id, message=message, monotonic_s=self.clock.monotonic(),
                   details={"behind_s": round(behind_s, 3)})
        emit_safely(self.on_event, ev)

    def _new_source(self, frame: Frame) -> bool:
        shape = (frame.width_px, frame.height_px)
        new = (self._shape is not None and shape != self._shape) or (
            self._prev_t_s is not None and frame.t_s < self._prev_t_s
        )
        if self._prev_t_s is not None and frame.t_s > self._prev_t_s and not new:
            dt = frame.t_s - self._prev_t_s
            self._frame_interval_s = dt if self._frame_interval_s is None else (
                (1 - _EWMA) * self._frame_interval_s + _EWMA * dt)
        self._shape = shape
        self._prev_t_s = frame.t_s
        return new

    def _scene_cut(self, frame: Frame) -> bool:
        """True when this frame's whole view differs from the previous frame's (a new scene)."""
        if not self.cfg.scene_cut.enabled:
            return False
        thumb = cv2.cvtColor(shrink_frame(frame, _THUMB_PX), cv2.COLOR_BGR2GRAY).astype(np.float32)
        thumb -= float(thumb.mean())  # a brightness change alone is not a cut
        prev, self._thumb = self._thumb, thumb
        return prev is not None and float(np.abs(thumb - prev).mean()) > self.cfg.scene_cut.threshold

    # --- the analyzer ------------------------------------------------------------

    def analyze(self, frame: Frame) -> Analysis:
        if not self.slots:
            return Analysis()
        if self._new_source(frame):
            log.info("camera %s: new source geometry or timeline; dropping carried detections", self.camera_id)
            self._frame_interval_s = None
            self._thumb = None
            self._pressure.calm_since_t_s = None  # stream time starts again
            for s in self.slots:
                s.forget()
        self._weigh_load(frame)
        shed = False
        if self._scene_cut(frame):
            self.scene_cuts += 1
            log.info("camera %s: scene cut at frame %d; dropping carried detections", self.camera_id, frame.index)
            for s in self.slots:
                s.forget()
                s.cut_pending = s.asynchronous
        faults: list[str] = []
        detections: list[Detection] = []
        ages: list[float] = []
        for slot in self.slots:
            if slot.detector is None:
                if self.clock.monotonic() - slot.last_attempt_mono_s >= self.cfg.model_retry_s:
                    self._load(slot)
                if slot.detector is None:
                    faults.append(f"model_missing:{slot.model}")
                    continue
            slot.frames_since_run += 1
            if slot.asynchronous and (slot.result_t_s is not None or slot.cut_pending):
                if not self._step_async(slot, frame):
                    faults.append(f"detector_error:{slot.model}")
                    continue
                if slot.cut_pending:
                    faults.append("scene_cut:pending")
                    continue
            elif self._due(slot, frame):
                if not self._run(slot, frame):
                    faults.append(f"detector_error:{slot.model}")
                    continue
            elif slot.role == "faces" and slot.frames_since_run >= self._configured_interval(slot):
                shed = True  # its configured cadence would have run it: skipped for the load alone
            age = slot.age_s(frame)
            if age is None:  # cannot happen after a successful run; fail closed anyway
                faults.append(f"no_detection:{slot.model}")
                continue
            ages.append(age)
            grow = self.cfg.grow_rel_per_s * age
            if grow > 0:
                detections.extend(
                    Detection(d.label, d.score, d.box.grown_abs(grow), d.detector) for d in slot.result
                )
            else:
                detections.extend(slot.result)
        if shed:
            self._pressure.shed += 1
        if self.room != "bathroom":
            for d in detections:
                kind = ROOM_LABELS.get(d.label)
                if kind is not None and (self.room is None or kind == "bathroom"):
                    if self.room != kind:
                        log.info("camera %s: a %s is in view: private room (%s)", self.camera_id, d.label, kind)
                        self._keep_room(kind)
                    self.room = kind
        return Analysis(
            detections=tuple(detections),
            faults=tuple(faults),
            detections_age_s=max(ages) if ages else None,
            room=self.room,
            under_load=shed,
        )

    def _run(self, slot: _Slot, frame: Frame) -> bool:
        assert slot.detector is not None
        t0 = self.clock.monotonic()
        try:
            dets = slot.detector.detect(frame.image, frame.half)
        except Exception as e:  # noqa: BLE001  (stage boundary: any detector failure withholds the frame)
            return self._failed(slot, e)
        return self._succeeded(slot, dets, frame.t_s, frame.captured_monotonic_s,
                               max(0.0, self.clock.monotonic() - t0))

    def _failed(self, slot: _Slot, e: BaseException) -> bool:
        slot.forget()
        if not slot.failing:
            slot.failing = True
            log.error("camera %s: %s detector %s failed: %s", self.camera_id, slot.role, slot.model, e)
            self._emit("detector_error", f"{slot.role} detector {slot.model} failed; frames are withheld",
                       slot, error=f"{type(e).__name__}: {e}")
        return False

    def _succeeded(self, slot: _Slot, dets: tuple[Detection, ...], t_s: float, mono_s: float, dt: float) -> bool:
        slot.infer_s = dt if slot.infer_s is None else (1 - _EWMA) * slot.infer_s + _EWMA * dt
        if slot.failing:
            slot.failing = False
            log.warning("camera %s: %s detector %s recovered", self.camera_id, slot.role, slot.model)
            self._emit("detector_recovered", f"{slot.role} detector {slot.model} recovered", slot)
        slot.result = dets
        slot.result_t_s = t_s
        slot.result_mono_s = mono_s
        slot.frames_since_run = 0
        slot.runs += 1
        slot.cut_pending = False
        return True

    # --- asynchronous runs (objects.asynchronous) ----------------------------------

    def _keep_room(self, kind: str | None) -> None:
        if self._store is None:
            return
        try:
            self._store.set_room(kind)
        except OSError as e:
            # The latch still holds for this run; only a restart before the disk recovers loses it.
            log.error("camera %s: cannot record the private room (%s): %s", self.camera_id, kind, e)

    def relearn(self) -> None:
        """The owner says the view is right: the room is learned again from what is now in view."""
        self.room = None
        # Only the lane that can see a bed or a toilet owns the stored latch: the faces lane clearing
        # it too could race the objects lane's new latch, which would then not outlive a restart.
        if any(slot.role == "objects" for slot in self.slots):
            self._keep_room(None)

    def close(self, timeout_s: float = 10.0) -> None:
        """Let a running asynchronous job finish: ONNX Runtime aborts the process if the
        interpreter exits while one of its sessions is still running on another thread."""
        for slot in self.slots:
            job = slot.pending
            if job is not None and not job.done.wait(timeout_s):
                log.error("camera %s: %s detector still running at shutdown", self.camera_id, slot.role)

    def _step_async(self, slot: _Slot, frame: Frame) -> bool:
        """Collect a finished job, then start one if due. False when the finished job failed."""
        job = slot.pending
        if job is not None and job.done.is_set():
            slot.pending = None
            if job.generation == slot.generation:
                if job.error is not None:
                    return self._failed(slot, job.error)
                self._succeeded(slot, job.detections, job.t_s, job.mono_s,
                                max(0.0, job.finished_mono_s - job.started_mono_s))
        if slot.pending is None and self._due(slot, frame):
            self._start(slot, frame)
        return True

    def _start(self, slot: _Slot, frame: Frame) -> None:
        detector = slot.detector
        assert detector is not None
        job = _Job(frame.t_s, frame.captured_monotonic_s, self.clock.monotonic(), slot.generation)
        clock = self.clock

        def work() -> None:
            try:
                job.detections = detector.detect(frame.image, frame.half)
            except Exception as e:  # noqa: BLE001  (reported on the analyzer's thread; the frame fails closed)
                job.error = e
            job.finished_mono_s = clock.monotonic()
            job.done.set()

        slot.pending = job
        # A daemon thread per run (every few frames): a hung detector cannot
        # block shutdown, and its growing age makes the policy withhold.
        threading.Thread(target=work, name=f"detect-{self.camera_id}-{slot.role}", daemon=True).start()
