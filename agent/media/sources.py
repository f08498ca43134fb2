"""Camera sources: video files, image globs, RTSP URLs and V4L2 devices.

Invariants:
- Opening a source that is missing, empty or undecodable raises
  `SourceError` naming the source and what is wrong; it never yields a
  half-decoded frame.
- Every frame leaves here as BGR uint8 HxWx3 (grey and BGRA images are
  converted) so later stages see one format.
- A single image in a glob that cannot be decoded raises `FrameDecodeError`
  for that frame only; the pipeline records it and continues.
- Video files and network cameras (`rtsp://`, `rtsps://`, `http(s)://`) are
  decoded with PyAV (`agent.media.avsource`), which reports decode errors
  per packet and per frame (OpenCV hides them). A source with damage in it
  plays on past it: every frame of a damaged stretch raises
  `DamagedFrameError` instead of handing out its pixels. The stretch runs
  from the damage (and the few frames decoded just before it was noticed) to
  the next intra key frame sent after it, decoded cleanly by a reset
  decoder; until then the decoder may still be painting with a damaged
  reference, so what it returns says nothing reliable. When in doubt the
  frame is damaged: a source's first frames count as damaged until its first
  key frame (a camera joined between key frames), and a stretch with no key
  frame after it runs to the end of the file. A run of `MAX_FAILED_READS`
  reads in a row that give no frame at all raises `SourceError`, so a
  hopeless source ends rather than hangs.
- A file cut short (its data ends inside a packet) is truncated, not damaged:
  it ends after its last whole frame, and the pipeline compares that with
  the container's frame count (`source_truncated`).
- Damage the decoder does not notice (bytes that still decode as a valid
  bitstream) cannot be told from a real picture here: such frames go on to
  analysis like any other.
- File frames have exactly the pixels OpenCV would give (same swscale
  conversion, same display-matrix rotation), and `SourceInfo.fps` and
  `frame_count` follow OpenCV's rules, so zones, fixtures and benchmarks
  made with OpenCV still line up.
- Live sources (network cameras, `/dev/videoN` through OpenCV) are reopened
  by the pipeline with backoff when they stop, close or time out; file
  sources end.
- A network camera is opened on its first packet (FFmpeg's probe cut short),
  so its frames come at the camera's pace from the first, never as a burst
  of the seconds a full probe would have read; a stream that cannot open that
  way is opened again at once with the full probe, and keeps it. The
  installer's own FFmpeg options (`OPENCV_FFMPEG_CAPTURE_OPTIONS`) are passed
  to every open, and their probe setting wins.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import cv2

from agent.core.datatypes import Image
from agent.core.ports import FrameSource, SourceInfo
from agent.errors import FrameDecodeError, SourceError
from agent.media.avsource import open_file, open_stream
from agent.media.frames import MAX_FAILED_READS, to_bgr

#: The installer's FFmpeg options for network cameras ("key;value|key;value", for example
#: `rtsp_transport;tcp`): the variable OpenCV's capture reads, so an install that set it for OpenCV
#: keeps its options. Read at every open, never written.
CAPTURE_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def parse_options(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split("|"):
        key, sep, value = item.partition(";")
        if key.strip() and sep:
            out[key.strip()] = value
    return out


def _is_network(spec: str) -> bool:
    return spec.startswith(("rtsp://", "rtsps://", "http://", "https://"))


class VideoCaptureSource:
    """A V4L2 device (`/dev/videoN`) through cv2.VideoCapture.

    OpenCV hides decode errors, but a local device sends raw or MJPEG pictures one by one, with no
    reference between them for a loss to smear. Network cameras go through `open_stream`.
    """

    def __init__(self, spec: str, fps_hint: float | None) -> None:
        self._spec = spec
        target: str | int = spec
        if spec.startswith("/dev/video") and spec[len("/dev/video"):].isdigit():
            target = int(spec[len("/dev/video"):])
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"source {self._spec}: cannot open or decode (not a video, corrupt, or unreachable)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (0 < fps <= 240):
            fps = fps_hint or 10.0
        self.info = SourceInfo(self._spec, True, fps, None)
        self._read = 0

    def read(self) -> Image | None:
        ok, img = self._cap.read()
        if not ok or img is None:
            raise SourceError(f"source {self._spec}: stream stopped delivering frames")
        self._read += 1
        return to_bgr(img, f"source {self._spec} frame {self._read - 1}")

    def close(self) -> None:
        self._cap.release()


class ImageGlobSource:
    """A sorted glob of image files, one frame each."""

    def __init__(self, pattern: str, fps_hint: float | None) -> None:
        self._files = sorted(glob.glob(pattern))
        if not self._files:
            raise SourceError(f"source {pattern}: glob matches no files")
        self.info = SourceInfo(pattern, False, fps_hint or 10.0, len(self._files))
        self._i = 0

    def read(self) -> Image | None:
        if self._i >= len(self._files):
            return None
        f = self._files[self._i]
        self._i += 1
        img = cv2.imread(f, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise FrameDecodeError(f"source image {f}: cannot decode")
        return to_bgr(img, f"source image {f}")

    def close(self) -> None:
        return None


def read_clean(src: FrameSource, limit: int = MAX_FAILED_READS) -> Image | None:
    """The next frame the source gives cleanly, skipping damaged ones (at most `limit`).

    For tools that look at a few frames (zone previews, discovery, `doctor`), not for the
    pipeline, which withholds a damaged frame instead of skipping it. None at the end.
    """
    for _ in range(limit):
        try:
            return src.read()
        except FrameDecodeError:
            continue
    raise SourceError(f"source {src.info.description}: {limit} damaged frames in a row")


def public_spec(spec: str) -> str:
    """`spec` as it may be shown, logged or published: an IP camera's URL without the user and
    password it carries (`rtsp://admin:secret@cam/...` -> `rtsp://cam/...`)."""
    parts = urlsplit(spec)
    if not parts.scheme or "@" not in parts.netloc:
        return spec
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def is_live(spec: str) -> bool:
    return _is_network(spec) or spec.startswith("/dev/video")


def resolve_spec(spec: str, base_dir: Path | None) -> str:
    if is_live(spec) or base_dir is None:
        return spec
    p = Path(os.path.expanduser(spec))
    return str(p if p.is_absolute() else base_dir / p)


def open_source(spec: str, base_dir: Path | None = None, fps_hint: float | None = None) -> FrameSource:
    """Open a source spec from the config. Raises SourceError with a clear reason."""
    full = resolve_spec(spec, base_dir)
    if _is_network(full):
        # Every message names the camera without its password: they go to events.jsonl, the
        # event outbox and the broker (`source_error`, `source_lost`).
        return open_stream(full, public_spec(full), fps_hint, parse_options(os.environ.get(CAPTURE_OPTIONS_ENV, "")))
    if is_live(full):
        return VideoCaptureSource(full, fps_hint)
    if any(ch in full for ch in "*?["):
        return ImageGlobSource(full, fps_hint)
    return open_file(full, fps_hint)


class SourceOpener:
    """A callable that (re)opens one configured source; the pipeline calls it again after a loss."""

    def __init__(self, spec: str, base_dir: Path | None = None, fps_hint: float | None = None) -> None:
        self.spec = resolve_spec(spec, base_dir)
        self.live = is_live(self.spec)
        self._fps_hint = fps_hint

    def __call__(self) -> FrameSource:
        return open_source(self.spec, None, self._fps_hint)

