"""Which H.264 encoder this hub uses, decided once at start with a probe encode.

`select_encoder(setting)` turns `video.encoder` (`auto | libx264 | h264_v4l2m2m`) into an
`EncoderChoice` (codec and why). `auto` prefers the hardware V4L2 M2M encoder (a Raspberry Pi 4
has one, a Pi 5 has none) when this PyAV build has it and a probe encode works, and falls back to
libx264 with a log line. An explicit choice that fails its probe raises `EncoderUnavailable`: an
installer who asked for one encoder is told, not silently given another.

Invariants:
- The probe encodes synthetic black frames made here, through the same stream settings and the
  same fragmented-MP4 muxer as the real encoder (`configure_stream`), and decodes the result: the
  hardware encoder's known failures (no SPS/PPS for the MP4 header, device busy, no device) show
  at start, not mid-clip.
  It never sees a camera frame: only `agent.media.video.VideoEncoder`, which takes a
  `RedactedFrame`, encodes those.
- The probe is bounded in time (a wedged V4L2 device must not hang `run` or `doctor`).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from agent.config import VideoConfig
from agent.core.datatypes import Event
from agent.errors import ConfigError, SinkError

log = logging.getLogger(__name__)

SOFTWARE = "libx264"
HARDWARE = "h264_v4l2m2m"

#: Fragmented MP4: no seeking, so a streaming (encrypting) writer can sit underneath.
MP4_FRAG = "frag_keyframe+empty_moov+default_base_moof"

#: The muxer's options: a fragment at every key frame and at least every second. Without the
#: second rule a fragment ends only at a key frame, which the encoder makes every 250 frames, so
#: the muxer held a whole clip's encoded video (10 s, a few MiB at 720p) in memory and handed it
#: to the encrypting writer only when the clip closed. Now at most a second of it waits, in
#: memory, unencrypted; a fragment may start between key frames, as fragmented MP4 allows.
MP4_OPTIONS = {"movflags": MP4_FRAG, "frag_duration": "1000000"}

#: Seconds a probe encode may take. A working encoder needs well under one; the bound is for a
#: device that accepts the open and then never answers.
PROBE_TIMEOUT_S = 5.0

_PROBE_W, _PROBE_H, _PROBE_FRAMES = 160, 120, 5


@dataclass(frozen=True, slots=True)
class EncoderChoice:
    """The encoder a run uses (`codec`, an FFmpeg encoder name) and why (`reason`, for people)."""

    codec: str
    reason: str


class EncoderProbeFailed(SinkError):
    """A probe encode with one codec did not work; the message says why."""


class EncoderUnavailable(ConfigError):
    """`video.encoder` names an encoder that cannot work on this hub (or no H.264 encoder works)."""


Probe = Callable[[str], None]


def configure_stream(stream: av.VideoStream, codec: str, width_px: int, height_px: int,
                     settings: VideoConfig) -> None:
    """The one place encoder options are set, for the real encoder and the probe alike."""
    stream.width = width_px
    stream.height = height_px
    # Both encoders take yuv420p; the hardware one takes nothing else.
    stream.pix_fmt = "yuv420p"
    if codec == SOFTWARE:
        # One thread: x264's sliced threads split every frame over the cores and join them again,
        # which buys nothing when decode and detection already keep every core busy, and each
        # camera's encoder would add threads waking each other at every frame.
        stream.options = {"preset": settings.preset, "tune": "zerolatency", "crf": str(settings.crf),
                          "threads": "1"}
    elif codec == HARDWARE:
        # V4L2 M2M has no constant-quality mode: a target bitrate. Its buffer counts keep
        # FFmpeg's defaults (16 output, 4 capture), which the Pi's driver accepts.
        stream.bit_rate = settings.bitrate_kbps * 1000


def video_frame(bgr: np.ndarray) -> av.VideoFrame:
    """An even-sized BGR image as the yuv420p frame both encoders take.

    OpenCV converts (BT.601, video range: what FFmpeg's own conversion gives): about 1 ms less per
    720p frame than handing PyAV a BGR frame for FFmpeg's swscale, one 2.6 MiB frame copy less, and
    closer to the camera's colours (bench/bench_live.py). It runs on pixels already redacted: a
    masked pixel is black before any chroma is averaged.

    The frame wraps the converted array rather than copying it: `from_ndarray` copies 1.4 MiB a
    720p frame while holding the GIL (0.5 ms, which every other camera's thread waited for). The
    array is new, owned by nobody else, and the frame's buffer holds a reference to it until
    FFmpeg lets go, so no other pixels can take its place while the encoder reads it.
    """
    return av.VideoFrame.from_numpy_buffer(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), format="yuv420p")


def _encode_black_frames(codec: str) -> None:
    out = io.BytesIO()
    container = av.open(out, mode="w", format="mp4", options=MP4_OPTIONS)
    try:
        stream: av.VideoStream = container.add_stream(codec, rate=Fraction(10))  # type: ignore[assignment]
        configure_stream(stream, codec, _PROBE_W, _PROBE_H, VideoConfig())
        black = np.zeros((_PROBE_H, _PROBE_W, 3), np.uint8)  # synthetic: no camera pixel is used
        packets = 0
        for i in range(_PROBE_FRAMES):
            vf = video_frame(black)
            vf.pts = i
            for p in stream.encode(vf):
                container.mux(p)
                packets += 1
        for p in stream.encode(None):
            container.mux(p)
            packets += 1
    finally:
        container.close()
    if packets == 0:
        raise EncoderProbeFailed(f"{codec} produced no output for {_PROBE_FRAMES} frames")
    # Decode what was written: some V4L2 M2M builds give the MP4 muxer no SPS/PPS, which muxes
    # without error into a file nothing can play.
    out.seek(0)
    try:
        with av.open(out, mode="r", format="mp4") as check:
            decoded = sum(1 for _ in check.decode(video=0))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise EncoderProbeFailed(f"{codec} wrote an MP4 that does not decode: {e}") from None
    if decoded == 0:
        raise EncoderProbeFailed(f"{codec} wrote an MP4 with no decodable frame (no SPS/PPS?)")


def probe_encode(codec: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Encode a few black frames with `codec` into fragmented MP4 in memory.

    Raises EncoderProbeFailed with the reason (no device, FFmpeg's error, timed out)."""
    if codec == HARDWARE and not any(Path("/dev").glob("video*")):
        raise EncoderProbeFailed("no V4L2 device (/dev/video*): this board has no hardware H.264 encoder")
    failure: list[str] = []

    def work() -> None:
        try:
            _encode_black_frames(codec)
        except EncoderProbeFailed as e:
            failure.append(str(e))
        except (av.FFmpegError, OSError, ValueError) as e:
            failure.append(f"{type(e).__name__}: {e}")

    t = threading.Thread(target=work, name=f"probe-{codec}", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        # The thread is left behind (a daemon): a blocked ioctl cannot be interrupted from here.
        raise EncoderProbeFailed(f"probe encode did not finish in {timeout_s:g} s")
    if failure:
        raise EncoderProbeFailed(f"probe failed: {failure[0]}")


def select_encoder(setting: str, probe: Probe | None = None,
                   available: Collection[str] | None = None) -> EncoderChoice:
    """The encoder for `video.encoder` = `setting`. `probe` (default `probe_encode`) raises
    EncoderProbeFailed for a codec that does not work; `available`: the codecs of this PyAV build
    (default `av.codecs_available`). Raises EncoderUnavailable when the setting cannot work."""
    probe = probe or probe_encode
    codecs = av.codecs_available if available is None else available
    if setting not in ("auto", SOFTWARE, HARDWARE):
        raise EncoderUnavailable(f"video.encoder: unknown encoder {setting!r} (auto, {SOFTWARE} or {HARDWARE})")
    if setting == HARDWARE:
        why = _try(HARDWARE, probe, codecs)
        if why is not None:
            raise EncoderUnavailable(
                f"video.encoder: {HARDWARE} cannot be used on this hub ({why}); set `video.encoder: auto` to "
                f"fall back to {SOFTWARE}, or `{SOFTWARE}`")
        return EncoderChoice(HARDWARE, "video.encoder is h264_v4l2m2m and its probe encode worked")
    hw_why: str | None = None
    if setting == "auto":
        hw_why = _try(HARDWARE, probe, codecs)
        if hw_why is None:
            return EncoderChoice(HARDWARE, "auto: the hardware encoder's probe encode worked")
        log.warning("hardware H.264 encoder not used (%s); encoding with %s", hw_why, SOFTWARE)
    sw_why = _try(SOFTWARE, probe, codecs)
    if sw_why is not None:
        extra = f"; {HARDWARE}: {hw_why}" if hw_why else ""
        raise EncoderUnavailable(f"video.encoder: no H.264 encoder works on this hub ({SOFTWARE}: {sw_why}{extra}); "
                                 "install a PyAV build with libx264 (the aarch64 and x86-64 wheels have it)")
    if setting == "auto":
        return EncoderChoice(SOFTWARE, f"auto: {HARDWARE} not usable ({hw_why}); software encoder")
    return EncoderChoice(SOFTWARE, "video.encoder is libx264")


def _try(codec: str, probe: Probe, codecs: Collection[str]) -> str | None:
    """None if `codec` works, else why not."""
    if codec not in codecs:
        return f"{codec} is not in this PyAV build"
    try:
        probe(codec)
    except EncoderProbeFailed as e:
        return str(e)
    return None


def start_encoder(setting: str, on_event: Callable[[Event], None], monotonic_s: float,
                  probe: Probe | None = None) -> EncoderChoice:
    """`run`'s one choice of encoder, at start, recorded as an `encoder_selected` event (codec and
    reason). Raises EncoderUnavailable, before any camera starts, when `setting` cannot work."""
    choice = select_encoder(setting, probe)
    on_event(Event("encoder_selected", None, f"H.264 encoder {choice.codec}: {choice.reason}", monotonic_s,
                   {"codec": choice.codec, "reason": choice.reason, "setting": setting}))
    return choice
