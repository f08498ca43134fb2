"""Activity and presence in `withhold` zones.

Invariants:
- Presence counts, not only motion. Each withhold zone keeps an *empty
  reference* (what the zone looks like with nobody in it). A zone becomes
  occupied on motion or when it differs from its empty reference, and stays
  occupied until it matches the reference again, with no motion, for
  `hold_s`. A person who stops moving (asleep, on a toilet) still differs
  from the empty reference, so their frames stay withheld.
- The background model is frozen (learning rate 0) while any zone is
  occupied, so a still person is never learned into the background; the
  empty reference is only refreshed while its zone is empty.
- Start-up, resolution changes and `relearn()` (`camera relearn`) begin with
  a warm-up during which every withhold zone counts as occupied (unknown
  means withhold).
- Work happens on a small grey copy of the frame (~320 px wide): cheap on a
  Pi and insensitive to codec noise.
- Time comes from the frame's stream time (`t_s`), so replays are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.analysis.shrink import shrink_frame
from agent.config import MotionConfig
from agent.core.datatypes import Analysis, Frame, ZoneActivity
from agent.core.policy import ZonePolicy
from agent.core.zones import zone_mask

_WORK_WIDTH_PX = 320
# Activity is looked for in a guard band around each zone, so a person is
# caught as they reach the zone rather than once they are well inside.
_GUARD_REL = 0.02


@dataclass
class _ZoneState:
    mask: np.ndarray  # bool, work resolution, zone + guard band
    area_px: int
    empty_ref: np.ndarray | None = None  # float32 grey, work resolution
    occupied: bool = True
    clear_since_s: float | None = None
    reason: str = "warmup"


class MotionAnalyzer:
    """Background subtraction + empty-reference presence test for withhold zones."""

    name = "motion"

    def __init__(self, zones: tuple[ZonePolicy, ...], motion: MotionConfig) -> None:
        self._zones = zones
        self._cfg = motion
        self._size: tuple[int, int] | None = None
        self._work: tuple[int, int] = (0, 0)
        self._states: dict[str, _ZoneState] = {}
        self._bg: cv2.BackgroundSubtractor | None = None
        self._frames_seen = 0
        self._warm: list[np.ndarray] = []

    def _reset(self, w: int, h: int) -> None:
        self._size = (w, h)
        ww = min(_WORK_WIDTH_PX, w)
        wh = max(1, int(round(h * ww / w)))
        self._work = (ww, wh)
        guard_px = max(1, int(round(_GUARD_REL * ww)))
        kernel = np.ones((2 * guard_px + 1, 2 * guard_px + 1), np.uint8)
        self._states = {}
        for z in self._zones:
            m = cv2.dilate(zone_mask(z.points, ww, wh), kernel) > 0
            self._states[z.name] = _ZoneState(mask=m, area_px=max(1, int(m.sum())))
        self._bg = cv2.createBackgroundSubtractorMOG2(history=300, varThreshold=25, detectShadows=False)
        self._frames_seen = 0
        self._warm = []

    def relearn(self) -> None:
        """Learn the zones' empty references again (after a deliberate re-mount): a new warm-up,
        during which every withhold zone counts as occupied."""
        self._size = None

    def _grey(self, frame: Frame) -> np.ndarray:
        small = shrink_frame(frame, self._work)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(grey, (5, 5), 0)

    def analyze(self, frame: Frame) -> Analysis:
        w, h = frame.width_px, frame.height_px
        if self._size != (w, h):
            self._reset(w, h)
        if not self._zones:
            return Analysis()
        grey = self._grey(frame)

        assert self._bg is not None
        any_occupied = any(s.occupied for s in self._states.values())
        # Freeze the background while anyone may be in a zone: a person who
        # keeps still must not fade into the background model.
        rate = 0.0 if (any_occupied and self._frames_seen >= self._cfg.warmup_frames) else -1.0
        fg = self._bg.apply(grey, learningRate=rate) > 0
        self._frames_seen += 1
        greyf = grey.astype(np.float32)

        if self._frames_seen <= self._cfg.warmup_frames:
            self._warm.append(greyf)
            if self._frames_seen == self._cfg.warmup_frames:
                ref = np.median(np.stack(self._warm), axis=0).astype(np.float32)
                for st in self._states.values():
                    st.empty_ref = ref.copy()
                    st.occupied, st.reason, st.clear_since_s = False, "", None
                self._warm = []
            else:
                return Analysis(zone_activity=tuple(ZoneActivity(n, True, "warmup") for n in self._states))

        acts = []
        for z in self._zones:
            st = self._states[z.name]
            assert st.empty_ref is not None
            motion_frac = float(fg[st.mask].sum()) / st.area_px
            # Presence: the share of zone pixels that differ from the empty
            # reference. A share, not a mean, so a small still figure in a
            # large zone is not averaged away.
            changed = np.abs(greyf[st.mask] - st.empty_ref[st.mask]) > self._cfg.clear_diff
            changed_frac = float(changed.sum()) / st.area_px
            active = motion_frac >= self._cfg.min_area_rel
            present = changed_frac >= self._cfg.min_area_rel
            if active or present:
                st.occupied = True
                st.reason = "presence" if present else "motion"
                st.clear_since_s = None
            elif st.occupied:
                if st.clear_since_s is None:
                    st.clear_since_s = frame.t_s
                if frame.t_s - st.clear_since_s >= z.hold_s:
                    st.occupied, st.reason, st.clear_since_s = False, "", None
                else:
                    st.reason = "hold"
            if not st.occupied:
                # Follow slow lighting drift only while the zone is empty.
                cv2.accumulateWeighted(greyf, st.empty_ref, 0.05, mask=st.mask.astype(np.uint8))
            acts.append(ZoneActivity(z.name, st.occupied, st.reason))
        return Analysis(zone_activity=tuple(acts))
