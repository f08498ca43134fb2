"""Plaintext directory sink: redacted MP4 segments in a local or NAS directory.

This sink writes *unencrypted* (but redacted) video and exists for testing
and for installers who explicitly ask for it (`plaintext: true`).

Invariants:
- Accepts only `RedactedFrame` (checked by the encoder).
- A segment is written to `<name>.partial` and renamed when complete, so a
  crash or a full disk never leaves a half-written file that looks finished;
  on failure the partial file is removed and `SinkError` is raised.
- A resolution change starts a new segment rather than rescaling.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agent.core.redact import RedactedFrame, require_redacted
from agent.errors import SinkError
from agent.media.video import EncoderFactory, VideoEncoder, encoder_factory

log = logging.getLogger(__name__)


class PlaintextDirectorySink:
    plaintext = True

    def __init__(self, root: Path, camera_id: str, fps: float, segment_s: float = 10.0,
                 make_encoder: EncoderFactory | None = None) -> None:
        self.name = f"directory:{root}"
        self._dir = root / camera_id
        self._camera_id = camera_id
        self._fps = fps
        self._segment_s = segment_s
        self._enc: VideoEncoder | None = None
        self._make_encoder = make_encoder or encoder_factory(None)
        self._file: object = None
        self._partial: Path | None = None
        self._seg_start_s = 0.0
        self._seq = 0
        self._seg_frames = 0
        self.segments: list[Path] = []
        #: Frames inside finished segments: what was actually stored.
        self.frames_stored = 0
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"output directory {self._dir} cannot be created: {e.strerror or e}") from e
        if not os.access(self._dir, os.W_OK):
            raise SinkError(f"output directory {self._dir} is not writable")

    def _open(self, frame: RedactedFrame) -> None:
        name = f"{self._camera_id}-{self._seq:06d}-{frame.index:08d}.mp4"
        self._partial = self._dir / (name + ".partial")
        try:
            fh = open(self._partial, "wb")
        except OSError as e:
            raise SinkError(f"cannot create segment {self._partial}: {e.strerror or e}") from e
        self._file = fh
        self._enc = self._make_encoder(fh, frame.width_px, frame.height_px, self._fps)
        self._seg_start_s = frame.t_s
        self._seg_frames = 0
        self._seq += 1

    def _finish(self) -> None:
        enc, fh, partial = self._enc, self._file, self._partial
        self._enc, self._file, self._partial = None, None, None
        if enc is None or partial is None:
            return
        try:
            enc.close()
            fh.flush()  # type: ignore[attr-defined]
            os.fsync(fh.fileno())  # type: ignore[attr-defined]
            fh.close()  # type: ignore[attr-defined]
            final = partial.with_suffix("")
            os.replace(partial, final)
            self.segments.append(final)
            self.frames_stored += self._seg_frames
        except (OSError, SinkError) as e:
            self._discard(fh, partial)
            raise SinkError(f"cannot finish segment {partial}: {e}") from e

    @staticmethod
    def _discard(fh: object, partial: Path) -> None:
        try:
            fh.close()  # type: ignore[attr-defined]
        except OSError:
            pass
        partial.unlink(missing_ok=True)

    def write(self, frame: RedactedFrame) -> None:
        rf = require_redacted(frame)
        if self._enc is not None and (
            (rf.width_px, rf.height_px) != (self._enc.width_px, self._enc.height_px)
            or rf.t_s - self._seg_start_s >= self._segment_s
        ):
            self._finish()
        if self._enc is None:
            self._open(rf)
        assert self._enc is not None
        try:
            self._enc.write(rf)
        except (SinkError, OSError) as e:
            if self._partial is not None:
                self._discard(self._file, self._partial)
            self._enc, self._file, self._partial = None, None, None
            raise SinkError(f"writing segment failed: {e}") from e
        self._seg_frames += 1

    def withheld(self, camera_id: str, index: int, t_s: float) -> None:
        # Cut on time even across withheld stretches, so a segment's name
        # and duration stay honest.
        if self._enc is not None and t_s - self._seg_start_s >= self._segment_s:
            self._finish()

    def close(self) -> None:
        self._finish()
