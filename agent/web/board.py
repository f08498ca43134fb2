"""The latest outcome per camera, as it leaves the hub: a released `RedactedFrame` or why it was withheld.

The pipeline's frame tap feeds it (`CameraPipeline.set_frame_tap`). Invariant: only a
`RedactedFrame` (checked with `require_redacted`, as the encoder does) is ever stored as a
picture; a withheld frame is stored as its reasons alone. The page's PNG is encoded from that
frame here, once per new frame, so a page polling once a second costs one encode, not one per
viewer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2

from agent.clock import Clock, SystemClock
from agent.core.datatypes import Decision
from agent.core.pipeline import FrameTap
from agent.core.redact import RedactedFrame, require_redacted
from agent.vocab import Action


@dataclass(frozen=True, slots=True)
class Latest:
    """One camera's latest outcome: the released frame, or (`frame` None) the reasons it was
    withheld and the size of the last frame seen (for a notice of the right shape). A withheld
    camera keeps no picture at all, not even its last released one."""

    frame_index: int
    frame: RedactedFrame | None
    withheld: tuple[str, ...] | None
    size_px: tuple[int, int] | None = None  # (width, height)
    png: bytes | None = None
    posted_s: float = 0.0  # monotonic time it was posted


#: Seconds without a new outcome after which a camera's last released frame is no longer shown: a
#: lost or reconnecting source gives no decision at all, and an old picture would read as live (and
#: be outlined with zones it was never masked under).
STALE_S = 10.0


class FrameBoard:
    def __init__(self, clock: Clock | None = None, stale_s: float = STALE_S) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, Latest] = {}
        self._clock = clock or SystemClock()
        self._stale_s = stale_s

    def tap(self, camera_id: str) -> FrameTap:
        def on_frame(item: RedactedFrame | Decision) -> None:
            self.post(camera_id, item)

        return on_frame

    def post(self, camera_id: str, item: RedactedFrame | Decision) -> None:
        if isinstance(item, Decision):
            if item.action is not Action.WITHHOLD:
                return  # a released frame is posted as its RedactedFrame, never as a decision
            with self._lock:
                prev = self._latest.get(camera_id)
                self._latest[camera_id] = Latest(item.frame_index, None, tuple(item.reasons) or ("withheld",),
                                                 prev.size_px if prev is not None else None,
                                                 posted_s=self._clock.monotonic())
            return
        rf = require_redacted(item)
        with self._lock:
            self._latest[camera_id] = Latest(rf.index, rf, None, (rf.width_px, rf.height_px),
                                             posted_s=self._clock.monotonic())

    def latest(self, camera_id: str) -> Latest | None:
        """The camera's latest outcome; a released frame older than `stale_s` is dropped for a
        `no_recent_frame` notice (the picture is not kept)."""
        with self._lock:
            cur = self._latest.get(camera_id)
            if cur is not None and cur.frame is not None and self._clock.monotonic() - cur.posted_s > self._stale_s:
                cur = self._latest[camera_id] = Latest(cur.frame_index, None, ("no_recent_frame",), cur.size_px,
                                                       posted_s=cur.posted_s)
            return cur

    def png(self, camera_id: str) -> tuple[Latest, bytes] | None:
        """The latest released frame as PNG (lossless: the page shows exactly the pixels that leave),
        or None while the camera withholds, has gone quiet or has released nothing yet."""
        cur = self.latest(camera_id)
        if cur is None or cur.withheld is not None or cur.frame is None:
            return None
        if cur.png is not None:
            return cur, cur.png
        ok, buf = cv2.imencode(".png", require_redacted(cur.frame).image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            return None
        data = buf.tobytes()
        with self._lock:
            if self._latest.get(camera_id) is cur:
                self._latest[camera_id] = Latest(cur.frame_index, cur.frame, None, cur.size_px, data, cur.posted_s)
        return cur, data
