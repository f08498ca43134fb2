"""Replay recorder: `redacted.mp4` for a tester to inspect exactly what would leave the hub.

Invariants: accepts only `RedactedFrame`; withheld frames are absent from the
video; a resolution change mid-stream is letterboxed into the first frame's
size (the frame is already redacted, so scaling it reveals nothing new).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from agent.errors import SinkError
from agent.redact import RedactedFrame, require_redacted
from agent.video import VideoEncoder


class ReplayVideoSink:
    plaintext = True

    def __init__(self, path: Path, fps: float) -> None:
        self.name = f"replay:{path}"
        self._path = path
        self._fps = fps
        self._enc: VideoEncoder | None = None
        self._fh: BinaryIO | None = None

    def write(self, frame: RedactedFrame) -> None:
        rf = require_redacted(frame)
        if self._enc is None:
            try:
                self._fh = open(self._path, "wb")
            except OSError as e:
                raise SinkError(f"cannot create {self._path}: {e.strerror or e}") from e
            self._enc = VideoEncoder(self._fh, rf.width_px, rf.height_px, self._fps)
        try:
            self._enc.write(rf)
        except OSError as e:
            raise SinkError(f"cannot write {self._path}: {e.strerror or e}") from e

    def withheld(self, camera_id: str, index: int, t_s: float) -> None:
        return None

    def close(self) -> None:
        if self._enc is not None:
            self._enc.close()
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError as e:
                raise SinkError(f"cannot close {self._path}: {e.strerror or e}") from e
