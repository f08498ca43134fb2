"""Tamper detection: a covered camera and a moved camera both withhold.

Invariants:
- Covered: a frame with almost no grey-level variation (lens covered, sprayed,
  pointed at a wall in the dark) is a fault on that frame.
- Moved: the scene's edge map is learned once, at the first start, and kept
  in the data dir (`agent.analysis.scenestore`, `DATA/state/scene/<camera>/`).
  When fewer than `moved_threshold` of the reference edges are still found
  (within one pixel at ~160 px width) for `moved_hold_s`, the camera counts as
  moved and every frame is withheld, because the homeowner's zones no longer
  sit on what they were drawn over. Moved is latched and stored: it clears
  only on `privacy-agent camera relearn` (`relearn()`), never by a restart, a
  power cycle or the view coming back. Relearning is never automatic.
- After a start with a stored reference, frames are withheld
  (`tamper:unverified`) until the view has matched it once: a camera turned
  while the agent was off is never released for `moved_hold_s` first.
- A stored reference that cannot be read or fails its checksum withholds
  every frame (`tamper:scene_unreadable`) until relearned, and so does one
  that cannot be written (`tamper:scene_unsaved`, retried every second): a
  restart must not learn a new view in its place.
- Covered frames say nothing about the mount: they never count towards moved.
- People crossing the view occlude some edges (a quarter of the view costs
  about a quarter of them); the reference follows slow changes only while
  the scene clearly matches, and that drift is saved every few minutes.
- A resolution change does not relearn: the comparison is at a fixed size,
  so the same view at another resolution still matches and another view
  does not (a different crop or aspect ratio is a different view).
- Time comes from the frame's stream time, so replays are exact.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from agent.analysis.scenestore import SceneStore
from agent.analysis.shrink import shrink_frame
from agent.config import TamperConfig
from agent.core.datatypes import Analysis, Frame
from agent.errors import SceneStateError

log = logging.getLogger(__name__)

_WORK_PX = (160, 120)
_NEAR = np.ones((3, 3), np.uint8)
# Below this share of edge pixels the scene has too little structure to tell a move.
_MIN_EDGE_SHARE = 0.005
_REF_NAME = "tamper"
_REF_SHAPE = (_WORK_PX[1], _WORK_PX[0])
# Stream seconds between saves of the slowly followed reference, and between retries of a failed save.
_SAVE_EVERY_S = 300.0
_RETRY_S = 1.0


class TamperAnalyzer:
    name = "tamper"

    def __init__(self, cfg: TamperConfig, store: SceneStore | None = None) -> None:
        self._cfg = cfg
        self._store = store
        self._warm: list[np.ndarray] = []
        self._ref_prob: np.ndarray | None = None
        self._low_since_s: float | None = None
        self._moved = False
        self._verified = True
        self._broken: str | None = None
        self._unsaved = False
        self._saved_t_s: float | None = None
        self.last_persistence: float | None = None
        if store is not None and cfg.enabled and cfg.moved_enabled:
            try:
                self._ref_prob = store.load(_REF_NAME, _REF_SHAPE, "float32")
            except SceneStateError as e:
                log.error("camera %s: %s", store.camera_id, e)
                self._broken = str(e)
            self._moved = store.moved
            self._verified = self._ref_prob is None

    def relearn(self) -> None:
        """The owner says the view is right: forget the stored scene and learn it again now."""
        self._ref_prob, self._warm, self._low_since_s = None, [], None
        self._moved, self._verified, self._broken, self._unsaved = False, True, None, False
        log.info("camera %s: relearning the scene", getattr(self._store, "camera_id", "?"))

    def _grey(self, frame: Frame) -> tuple[np.ndarray, float]:
        """The frame at the work size in grey, and its grey-level spread (the covered test)."""
        grey = cv2.cvtColor(shrink_frame(frame, _WORK_PX), cv2.COLOR_BGR2GRAY)
        return grey, float(grey.std())

    @staticmethod
    def _edges(grey: np.ndarray) -> np.ndarray:
        return cv2.Canny(cv2.GaussianBlur(grey, (3, 3), 0), 40, 120)

    def _save(self, t_s: float, *, moved_cleared: bool = False) -> None:
        if self._store is None or self._ref_prob is None:
            return
        try:
            self._store.save(_REF_NAME, self._ref_prob)
            if moved_cleared:
                self._store.set_moved(False)
            self._unsaved = False
        except OSError as e:
            if not self._unsaved:
                log.error("camera %s: cannot store the learned scene in %s: %s; withholding until it is stored",
                          self._store.camera_id, self._store.dir, e.strerror or e)
            self._unsaved = True
        self._saved_t_s = t_s

    def _latch_moved(self, persistence: float) -> None:
        self._moved = True
        if self._store is not None:
            try:
                self._store.set_moved(True, {"persistence": round(persistence, 3)})
            except OSError as e:  # still moved in memory: this run withholds regardless
                log.error("camera %s: cannot record that the camera moved: %s", self._store.camera_id, e)

    def analyze(self, frame: Frame) -> Analysis:
        if not self._cfg.enabled:
            return Analysis()
        grey, std = self._grey(frame)
        faults: list[str] = []
        if std < self._cfg.covered_std:
            faults.append("tamper:covered")
        if not self._cfg.moved_enabled:
            return Analysis(faults=tuple(faults))  # edges are for the moved check only
        edges = self._edges(grey)
        if self._broken is not None:
            return Analysis(faults=(*faults, "tamper:scene_unreadable"))
        if self._saved_t_s is not None and frame.t_s < self._saved_t_s:
            self._saved_t_s = frame.t_s  # a file source started again: stream time went back
        if self._unsaved and self._saved_t_s is not None and frame.t_s - self._saved_t_s >= _RETRY_S:
            self._save(frame.t_s, moved_cleared=not self._moved)
        if self._ref_prob is None:
            if not faults:
                self._warm.append((edges > 0).astype(np.float32))
            if len(self._warm) >= self._cfg.warmup_frames:
                self._ref_prob = np.mean(np.stack(self._warm), axis=0).astype(np.float32)
                self._warm = []
                # A latched move stays latched through a new reference (its reference may have been
                # lost: a failed save, a deleted file): only `camera relearn` clears it.
                self._save(frame.t_s, moved_cleared=not self._moved)
            moved = ("tamper:moved",) if self._moved else ()
            return Analysis(faults=tuple(faults) + moved + (("tamper:scene_unsaved",) if self._unsaved else ()))

        ref = self._ref_prob > 0.5
        n_ref = int(ref.sum())
        if n_ref < _MIN_EDGE_SHARE * ref.size:
            # Too little structure to tell a move from this reference: nothing to verify against.
            self._verified = True
            return Analysis(faults=tuple(faults) + self._standing_faults())
        if "tamper:covered" in faults:
            # A covered lens says nothing about the mount (and is withheld as covered already).
            return Analysis(faults=tuple(faults) + self._standing_faults())
        near = cv2.dilate(edges, _NEAR) > 0
        persistence = float((ref & near).sum()) / n_ref
        self.last_persistence = persistence
        if persistence < self._cfg.moved_threshold:
            if self._low_since_s is None:
                self._low_since_s = frame.t_s
            if not self._moved and frame.t_s - self._low_since_s >= self._cfg.moved_hold_s:
                self._latch_moved(persistence)
        else:
            self._low_since_s = None
            self._verified = True
            if persistence > 0.85 and not self._moved:
                # Follow slow change (shadows, a moved chair) only while the scene clearly matches.
                cv2.accumulateWeighted((edges > 0).astype(np.float32), self._ref_prob, 0.02)
                if self._saved_t_s is None or frame.t_s - self._saved_t_s >= _SAVE_EVERY_S:
                    self._save(frame.t_s)
        return Analysis(faults=tuple(faults) + self._standing_faults())

    def _standing_faults(self) -> tuple[str, ...]:
        if self._moved:
            return ("tamper:moved",)
        out = () if self._verified else ("tamper:unverified",)
        return out + (("tamper:scene_unsaved",) if self._unsaved else ())
