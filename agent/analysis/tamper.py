"""Tamper detection: a covered camera and a moved camera both withhold.

Invariants:
- Covered: a frame with almost no grey-level variation (lens covered, sprayed,
  pointed at a wall in the dark) is a fault on that frame.
- Moved: the scene's edge map is learned at start. When fewer than
  `moved_threshold` of the reference edges are still found (within one
  pixel at ~160 px width) for `moved_hold_s`, the camera counts as moved and
  every frame is withheld, because the homeowner's zones no longer sit on
  what they were drawn over. It clears only when the scene matches again;
  after a deliberate re-mount the installer restarts the agent, which
  re-learns the scene (check the zones with `zones preview` first).
- People crossing the view occlude some edges (a quarter of the view costs
  about a quarter of them); the reference follows slow changes only while
  the scene clearly matches.
- A resolution change re-learns the scene (the comparison is at a fixed size).
- Time comes from the frame's stream time, so replays are exact.
"""

from __future__ import annotations

import cv2
import numpy as np

from agent.analysis.shrink import shrink
from agent.config import TamperConfig
from agent.core.datatypes import Analysis, Frame

_WORK_PX = (160, 120)
_NEAR = np.ones((3, 3), np.uint8)
# Below this share of edge pixels the scene has too little structure to tell a move.
_MIN_EDGE_SHARE = 0.005


class TamperAnalyzer:
    name = "tamper"

    def __init__(self, cfg: TamperConfig) -> None:
        self._cfg = cfg
        self._warm: list[np.ndarray] = []
        self._ref_prob: np.ndarray | None = None
        self._low_since_s: float | None = None
        self._moved = False
        self._size: tuple[int, int] | None = None
        self.last_persistence: float | None = None

    def _edges(self, frame: Frame) -> tuple[np.ndarray, float]:
        small = shrink(frame.image, _WORK_PX)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        std = float(grey.std())
        edges = cv2.Canny(cv2.GaussianBlur(grey, (3, 3), 0), 40, 120)
        return edges, std

    def analyze(self, frame: Frame) -> Analysis:
        if not self._cfg.enabled:
            return Analysis()
        if self._size != (frame.width_px, frame.height_px):
            # A new resolution (a camera switching streams) is re-learned: the
            # edge map is compared at a fixed size and would no longer line up.
            self._size = (frame.width_px, frame.height_px)
            self._ref_prob, self._warm, self._low_since_s, self._moved = None, [], None, False
        edges, std = self._edges(frame)
        faults: list[str] = []
        if std < self._cfg.covered_std:
            faults.append("tamper:covered")
        if not self._cfg.moved_enabled:
            return Analysis(faults=tuple(faults))
        if self._ref_prob is None:
            if not faults:
                self._warm.append((edges > 0).astype(np.float32))
            if len(self._warm) >= self._cfg.warmup_frames:
                self._ref_prob = np.mean(np.stack(self._warm), axis=0)
                self._warm = []
            return Analysis(faults=tuple(faults))

        ref = self._ref_prob > 0.5
        n_ref = int(ref.sum())
        if n_ref < _MIN_EDGE_SHARE * ref.size:
            return Analysis(faults=tuple(faults))
        near = cv2.dilate(edges, _NEAR) > 0
        persistence = float((ref & near).sum()) / n_ref
        self.last_persistence = persistence
        if persistence < self._cfg.moved_threshold:
            if self._low_since_s is None:
                self._low_since_s = frame.t_s
            if frame.t_s - self._low_since_s >= self._cfg.moved_hold_s:
                self._moved = True
        else:
            self._low_since_s = None
            self._moved = False
            if persistence > 0.85 and not faults:
                # Follow slow change (shadows, a moved chair) only while the scene clearly matches.
                cv2.accumulateWeighted((edges > 0).astype(np.float32), self._ref_prob, 0.02)
        if self._moved:
            faults.append("tamper:moved")
        return Analysis(faults=tuple(faults))
