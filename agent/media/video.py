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
- A sink's libx264 clips (`encoder_factory`) share one encoder from clip to clip while it
  gives a packet for every frame it is given (with `zerolatency` it does). Every clip still
  starts with a key frame that refers to nothing before it, so each clip decodes alone, and
  every packet goes into the clip its frame belongs to. A kept encoder that holds frames back
  is flushed into its clip and replaced; the hardware encoder (which buffers frames) gets a new
  encoder per clip, as every encoder did before.
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


#: The container stream's codec for the packets a shared (libx264) encoder gives.
_MUX_CODEC = "h264"
#: `VideoFrame.pict_type` that asks the encoder for a key frame (AV_PICTURE_TYPE_I).
_KEY_FRAME = av.video.frame.PictureType.I


class _SharedEncoder:
    """One opened H.264 encoder, kept by an `EncoderKeeper` between the clips it encodes."""

    def __init__(self, codec: str, width_px: int, height_px: int, rate: Fraction, settings: VideoConfig) -> None:
        self.key = (codec, width_px, height_px, rate, settings)
        ctx: av.VideoCodecContext = av.CodecContext.create(codec, "w")  # type: ignore[assignment]
        configure_stream(ctx, codec, width_px, height_px, settings)  # type: ignore[arg-type]
        ctx.time_base = 1 / rate
        ctx.framerate = rate
        self.ctx = ctx
        #: The next frame's timestamp, counted across clips (each clip's packets are rebased).
        self.next_pts = 0


class EncoderKeeper:
    """Keeps one sink's encoder from one clip to the next, so a clip boundary does not tear down
    and rebuild libx264 (its buffers are about 10 MiB at 720p, and a new encoder's came on top of
    the old one's freed pages for a few seconds at every boundary: bench/bench_live.py).

    A clip takes the encoder out (`take`) and gives it back when it ended cleanly (`give_back`);
    a clip that failed, or an encoder that held frames back, gives nothing back, and the next
    clip opens a new one. Only the sink's own thread uses it.
    """

    def __init__(self) -> None:
        self._kept: _SharedEncoder | None = None

    def take(self, codec: str, width_px: int, height_px: int, rate: Fraction,
             settings: VideoConfig) -> _SharedEncoder:
        kept, self._kept = self._kept, None
        if kept is not None and kept.key == (codec, width_px, height_px, rate, settings):
            return kept
        return _SharedEncoder(codec, width_px, height_px, rate, settings)

    def give_back(self, enc: _SharedEncoder) -> None:
        self._kept = enc


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
        keeper: EncoderKeeper | None = None,
    ) -> None:
        self.width_px = width_px
        self.height_px = height_px
        self._enc_w, self._enc_h = _even(width_px), _even(height_px)
        self.frames_written = 0
        self._closed = False
        self._keeper = keeper
        self._shared: _SharedEncoder | None = None
        self._packets = 0
        self._clip_pts = 0
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(10)
        try:
            self._container = av.open(out, mode="w", format="mp4", options=MP4_OPTIONS)
            if keeper is None:
                self._stream: av.VideoStream = self._container.add_stream(codec, rate=rate)  # type: ignore[assignment]
                configure_stream(self._stream, codec, self._enc_w, self._enc_h, settings or VideoConfig())
            else:
                self._shared = keeper.take(codec, self._enc_w, self._enc_h, rate, settings or VideoConfig())
                self._clip_pts = self._shared.next_pts
                # A stream that only muxes: its parameters (SPS/PPS) come from the key frame
                # that starts the clip, which carries them in-band.
                self._stream = self._container.add_mux_stream(  # type: ignore[assignment]
                    _MUX_CODEC, rate=rate, width=self._enc_w, height=self._enc_h)
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
        try:
            if self._shared is None:
                vf.pts = self.frames_written
                for packet in self._stream.encode(vf):
                    self._container.mux(packet)
            else:
                shared = self._shared
                vf.pts = shared.next_pts
                vf.time_base = shared.ctx.time_base
                if self.frames_written == 0:
                    # A key frame (IDR: closed GOP) starts every clip, so that nothing in it refers
                    # to a frame of the clip before, which may be deleted first.
                    vf.pict_type = _KEY_FRAME
                shared.next_pts += 1
                self._mux(shared.ctx.encode(vf))
        except (av.FFmpegError, OSError) as e:
            self._shared = None  # an encoder in an unknown state never starts another clip
            raise SinkError(f"encoding failed: {e}") from e
        self.frames_written += 1

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            # The shared encoder counts frames across clips; the clip's own time starts at 0.
            if packet.pts is not None:
                packet.pts -= self._clip_pts
            if packet.dts is not None:
                packet.dts -= self._clip_pts
            packet.stream = self._stream
            self._container.mux(packet)
            self._packets += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        shared, self._shared = self._shared, None
        try:
            if self._keeper is None:  # the stream's own encoder: flush it into the clip
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
            elif shared is not None and self._packets < self.frames_written:
                # The encoder holds frames back (it has a delay): they belong to this clip, and
                # flushing ends the encoder, so the next clip opens a new one.
                self._mux(shared.ctx.encode(None))
                shared = None
            self._container.close()
        except (av.FFmpegError, OSError) as e:
            raise SinkError(f"finishing the video failed: {e}") from e
        if shared is not None and self._keeper is not None:
            self._keeper.give_back(shared)

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


EncoderFactory = Callable[[BinaryIO, int, int, float], VideoEncoder]


class SinkEncoders:
    """One sink's encoders: the run's codec with the config's `video:` options. Called once per
    clip, like a function (`EncoderFactory`)."""

    def __init__(self, codec: str, settings: VideoConfig | None) -> None:
        self.codec = codec
        self.settings = settings
        # One per sink: a sink writes from one thread. Only libx264's encoder is kept: it gives a
        # packet for every frame. The hardware encoder buffers frames, so it would be flushed and
        # replaced at every clip anyway, and it keeps the one path its probe encode checked at
        # start (`agent.media.encoders`).
        self.keeper: EncoderKeeper | None = EncoderKeeper() if codec == SOFTWARE else None

    def __call__(self, out: BinaryIO, width_px: int, height_px: int, fps: float) -> VideoEncoder:
        return VideoEncoder(out, width_px, height_px, fps, self.codec, self.settings, self.keeper)


def encoder_factory(choice: EncoderChoice | None, settings: VideoConfig | None = None) -> SinkEncoders:
    """Encoders for one sink (`SinkEncoders`), libx264's shared from clip to clip. `choice` None
    (tools and tests without a run): libx264. Each sink needs its own factory."""
    return SinkEncoders(choice.codec if choice is not None else SOFTWARE, settings)


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
