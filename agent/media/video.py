"""Encoding redacted frames to MP4 (H.264 via PyAV, fragmented, into any file-like object).

Invariants:
- `VideoEncoder.write` accepts only `RedactedFrame` (checked at run time):
  no raw camera frame can reach an encoder.
- The encoder writes to a caller-supplied binary file object, so an
  encrypting writer or an in-memory buffer can sit underneath and no
  plaintext segment needs to touch persistent storage.
- Fragmented MP4 (`empty_moov`) needs no seeking, so a streaming writer works.
- A resolution change mid-stream is handled by scaling the already-redacted
  frame into the encoder's size with black letterbox bars (never raw pixels).
- The codec is the run's `EncoderChoice` (`agent.media.encoders`: libx264 or the hardware
  h264_v4l2m2m), with its options from `video:` set in one place (`configure_stream`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import cv2
import numpy as np

from agent.config import VideoConfig
from agent.core.datatypes import Image
from agent.core.redact import RedactedFrame, require_redacted
from agent.errors import SinkError, SourceError
from agent.media.encoders import MP4_OPTIONS, SOFTWARE, EncoderChoice, configure_stream, video_frame

log = logging.getLogger(__name__)


def _even(v: int) -> int:
    return v + (v % 2)


def fit_into(img: Image, width_px: int, height_px: int) -> Image:
    """Scale `img` to fit (width, height) keeping aspect, padding with black."""
    h, w = img.shape[:2]
    if (w, h) == (width_px, height_px):
        return img
    scale = min(width_px / w, height_px / h)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((height_px, width_px, 3), np.uint8)
    y0, x0 = (height_px - nh) // 2, (width_px - nw) // 2
    canvas[y0 : y0 + nh, x0 : x0 + nw] = resized
    return canvas


class VideoEncoder:
    """Encode RedactedFrames into a fragmented MP4 written to `out`."""

    def __init__(
        self,
        out: BinaryIO | str,
        width_px: int,
        height_px: int,
        fps: float,
        codec: str = SOFTWARE,
        settings: VideoConfig | None = None,
    ) -> None:
        self.width_px = width_px
        self.height_px = height_px
        self._enc_w, self._enc_h = _even(width_px), _even(height_px)
        self.frames_written = 0
        self._closed = False
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(10)
        try:
            self._container = av.open(out, mode="w", format="mp4", options=MP4_OPTIONS)
            self._stream: av.VideoStream = self._container.add_stream(codec, rate=rate)  # type: ignore[assignment]
            configure_stream(self._stream, codec, self._enc_w, self._enc_h, settings or VideoConfig())
        except (av.FFmpegError, OSError, ValueError) as e:
            raise SinkError(f"cannot start {codec} encoder: {e}") from e

    def write(self, frame: RedactedFrame) -> None:
        rf = require_redacted(frame)
        img = rf.image
        if (rf.width_px, rf.height_px) != (self.width_px, self.height_px):
            img = fit_into(img, self.width_px, self.height_px)
        if (self._enc_w, self._enc_h) != (self.width_px, self.height_px):
            img = cv2.copyMakeBorder(
                img, 0, self._enc_h - self.height_px, 0, self._enc_w - self.width_px, cv2.BORDER_CONSTANT, value=0
            )
        vf = video_frame(np.ascontiguousarray(img))
        vf.pts = self.frames_written
        try:
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as e:
            raise SinkError(f"encoding failed: {e}") from e
        self.frames_written += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except (av.FFmpegError, OSError) as e:
            raise SinkError(f"finishing the video failed: {e}") from e

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


EncoderFactory = Callable[[BinaryIO, int, int, float], VideoEncoder]


def encoder_factory(choice: EncoderChoice | None, settings: VideoConfig | None = None) -> EncoderFactory:
    """Encoders for a sink: the run's chosen codec with the config's `video:` options.
    `choice` None (tools and tests without a run): libx264."""
    codec = choice.codec if choice is not None else SOFTWARE

    def make(out: BinaryIO, width_px: int, height_px: int, fps: float) -> VideoEncoder:
        return VideoEncoder(out, width_px, height_px, fps, codec, settings)

    return make


def video_frames(path: Path) -> Iterator[Image]:
    """Decode every frame of a video file (for evaluation and tests, not for camera sources)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SourceError(f"cannot open video {path}")
    try:
        while True:
            ok, img = cap.read()
            if not ok or img is None:
                return
            yield np.asarray(img, dtype=np.uint8)
    finally:
        cap.release()
