"""Camera sources: video files, image globs, RTSP URLs and V4L2 devices.

Invariants:
- Opening a source that is missing, empty or undecodable raises
  `SourceError` naming the source and what is wrong; it never yields a
  half-decoded frame.
- Every frame leaves here as BGR uint8 HxWx3 (grey and BGRA images are
  converted) so later stages see one format.
- A single image in a glob that cannot be decoded raises `FrameDecodeError`
  for that frame only; the pipeline records it and continues.
- Video files are decoded with PyAV, which reports decode errors per packet
  and per frame (OpenCV hides them). A file with damage in its middle plays
  on past it: every frame of a damaged stretch raises `DamagedFrameError`
  instead of handing out its pixels. The stretch runs from the damage (and
  the few frames decoded just before it was noticed) to the next intra key
  frame sent after it, decoded cleanly by a reset decoder; until then the
  decoder may still be painting with a damaged reference, so what it returns
  says nothing reliable. When in doubt the frame is damaged: the file's first
  frames count as damaged until its first key frame, and a stretch with no
  key frame after it runs to the end of the file. A run of
  `MAX_FAILED_READS` reads in a row that give no frame at all raises
  `SourceError`, so a hopeless file ends rather than hangs.
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
- Live sources (`rtsp://`, `/dev/videoN`) go through OpenCV and are reopened
  by the pipeline with backoff; file sources end.
- A network stream is opened on its first packet (FFmpeg's probe cut short),
  so its frames come at the camera's pace from the first, never as a burst
  of the seconds a full probe would have read; a stream that cannot open or
  give a frame that way is opened again with the full probe. The installer's
  own capture options are kept, and their probe setting wins.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from agent.core.datatypes import Image
from agent.core.ports import FrameSource, SourceInfo
from agent.errors import FrameDecodeError, SourceError
from agent.media.frames import MAX_FAILED_READS, check_file, to_bgr
from agent.media.videofile import VideoFileSource

log = logging.getLogger(__name__)


#: Where OpenCV's FFmpeg reads a capture's options ("key;value|key;value"); it reads it at every open.
_CAPTURE_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
#: FFmpeg's stream probe, cut to its first packet for a network camera. By default FFmpeg reads
#: seconds of stream before it says the stream is open (about 1.8 s of a 15 fps RTSP camera here),
#: only to estimate a frame rate the live pipeline never uses (its clock stamps the frames, and the
#: config's `fps` times the clips); that video then comes out in one burst of stale frames, which
#: fills every queue at once (about 10 MiB above the steady figure with one 720p camera) and reaches
#: the first sink late. An RTSP camera's SDP, or the stream's first packet, says the codec and the
#: picture size.
_SHORT_PROBE = {"probesize": "32"}  # FFmpeg's smallest: stop after the first packet


def _parse_options(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split("|"):
        key, sep, value = item.partition(";")
        if key.strip() and sep:
            out[key.strip()] = value
    return out


def _options_text(options: dict[str, str]) -> str:
    return "|".join(f"{k};{v}" for k, v in options.items())


class _ProbeOptions:
    """The capture options of every open: the installer's own from the environment (their word
    wins, a probe setting of theirs included), plus the short probe while no full-probe open runs;
    and the streams that need the full probe.

    The variable is process-wide, so it is set under one lock from a count of full-probe opens:
    concurrent opens never leave it wrong, as threads saving and restoring it themselves could."""

    _lock = threading.Lock()
    _full_opens = 0
    #: What was last written, and the installer's options it was made from: a value found in the
    #: environment that is not ours (set by the installer or a test since) is theirs.
    _written: str | None = None
    _own: dict[str, str] = {}
    #: Streams (public specs) the short probe could not open or decode: opened with the full one.
    _full_specs: set[str] = set()

    @classmethod
    def apply(cls, full_delta: int) -> bool:
        """Count a full-probe open starting (+1) or ending (-1), or none (0), and set the variable.
        True: the short probe is in it now."""
        with cls._lock:
            cur = os.environ.get(_CAPTURE_OPTIONS, "")
            own = dict(cls._own) if cls._written is not None and cur == cls._written else _parse_options(cur)
            cls._full_opens += full_delta
            short = cls._full_opens == 0 and not ({"probesize", "analyzeduration"} & own.keys())
            text = _options_text({**own, **_SHORT_PROBE} if short else own)
            if text:
                os.environ[_CAPTURE_OPTIONS] = text
            else:
                os.environ.pop(_CAPTURE_OPTIONS, None)
            cls._written, cls._own = text, own
            return short

    @classmethod
    def needs_full(cls, spec: str) -> bool:
        with cls._lock:
            return spec in cls._full_specs

    @classmethod
    def mark(cls, spec: str, full: bool) -> None:
        with cls._lock:
            if full and spec not in cls._full_specs:
                log.info("source %s: the next open uses FFmpeg's full stream probe", spec)
                cls._full_specs.add(spec)
            elif not full:
                cls._full_specs.discard(spec)


def _open_network(target: str, spec: str) -> tuple[cv2.VideoCapture, np.ndarray | None]:
    """A capture of a network stream (opened or not), and its first frame when the short probe
    opened it (the check that it decodes; handed out by the source's first read).

    One decoding thread per stream: OpenCV's default (a thread per core, frame threading) buys
    nothing when several cameras and the detectors already keep every core busy, and each extra
    thread holds its own decoded pictures: one thread costs less CPU per frame and about 4 MiB less
    for a 720p stream (bench/bench_live.py)."""
    params = [cv2.CAP_PROP_N_THREADS, 1]
    if not _ProbeOptions.needs_full(spec) and _ProbeOptions.apply(0):
        cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            # Unreachable, or a stream whose first packet could not open it (a container that lists
            # its streams later): the pipeline opens a lost live source again after a pause, and
            # that open probes fully, so an unreachable camera does not wait twice now.
            _ProbeOptions.mark(spec, True)
            return cap, None
        # A picture size and a first frame, or the first packet did not say enough: a stream
        # joined between key frames, an SDP without the parameter sets (it can even open with a
        # size and give no frame, the decoder never having got them). FFmpeg's full probe reads
        # on until it knows.
        if cap.get(cv2.CAP_PROP_FRAME_WIDTH) > 0 and cap.get(cv2.CAP_PROP_FRAME_HEIGHT) > 0:
            ok, first = cap.read()
            if ok and first is not None:
                return cap, first
        cap.release()
        _ProbeOptions.mark(spec, True)
    _ProbeOptions.apply(+1)
    try:
        cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    finally:
        _ProbeOptions.apply(-1)
    if not cap.isOpened():
        # The full probe could not open it either: the probe was not the cause (a camera away),
        # so the next open tries the short one again.
        _ProbeOptions.mark(spec, False)
    return cap, None


class VideoCaptureSource:
    """An RTSP URL or V4L2 device (or any spec OpenCV opens) through cv2.VideoCapture.

    OpenCV hides decode errors: a live stream's damaged frames come out concealed
    and go to analysis like any other frame. Files go through `VideoFileSource`.
    """

    def __init__(self, spec: str, live: bool, fps_hint: float | None) -> None:
        # Every message and the source's description name it without its password: they go to
        # events.jsonl, the event outbox and the broker (`source_error`, `source_lost`).
        self._spec = public_spec(spec)
        target: str | int = spec
        if spec.startswith("/dev/video") and spec[len("/dev/video"):].isdigit():
            target = int(spec[len("/dev/video"):])
        if not live:
            check_file(spec)
        #: A frame already read by the open (the short probe's check), handed out by the first read.
        self._first: np.ndarray | None = None
        if isinstance(target, str):
            self._cap, self._first = _open_network(target, self._spec)
        else:
            self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"source {self._spec}: cannot open or decode (not a video, corrupt, or unreachable)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (0 < fps <= 240):
            fps = fps_hint or 10.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.info = SourceInfo(self._spec, live, fps, count if count > 0 and not live else None)
        self._read = 0

    def read(self) -> Image | None:
        if self._first is not None:
            ok, img, self._first = True, self._first, None
        else:
            ok, img = self._cap.read()
        if not ok or img is None:
            if self.info.live:
                raise SourceError(f"source {self._spec}: stream stopped delivering frames")
            if self._read == 0:
                raise SourceError(f"source {self._spec}: no decodable frames (corrupt or truncated video)")
            return None
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
    return spec.startswith(("rtsp://", "rtsps://", "http://", "https://", "/dev/video"))


def resolve_spec(spec: str, base_dir: Path | None) -> str:
    if is_live(spec) or base_dir is None:
        return spec
    p = Path(os.path.expanduser(spec))
    return str(p if p.is_absolute() else base_dir / p)


def open_source(spec: str, base_dir: Path | None = None, fps_hint: float | None = None) -> FrameSource:
    """Open a source spec from the config. Raises SourceError with a clear reason."""
    full = resolve_spec(spec, base_dir)
    if is_live(full):
        return VideoCaptureSource(full, True, fps_hint)
    if any(ch in full for ch in "*?["):
        return ImageGlobSource(full, fps_hint)
    return VideoFileSource(full, fps_hint)


class SourceOpener:
    """A callable that (re)opens one configured source; the pipeline calls it again after a loss."""

    def __init__(self, spec: str, base_dir: Path | None = None, fps_hint: float | None = None) -> None:
        self.spec = resolve_spec(spec, base_dir)
        self.live = is_live(self.spec)
        self._fps_hint = fps_hint

    def __call__(self) -> FrameSource:
        return open_source(self.spec, None, self._fps_hint)

