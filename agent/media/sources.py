"""Camera sources: video files, image globs, RTSP URLs and V4L2 devices.

Invariants:
- Opening a source that is missing, empty or undecodable raises
  `SourceError` naming the source and what is wrong; it never yields a
  half-decoded frame.
- Every frame leaves here as BGR uint8 HxWx3 (grey and BGRA images are
  converted) so later stages see one format.
- A single image in a glob that cannot be decoded raises `FrameDecodeError`
  for that frame only; the pipeline records it and continues.
- Live sources (`rtsp://`, `/dev/videoN`) are reopened by the pipeline with
  backoff; file sources end.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import cv2
import numpy as np

from agent.core.datatypes import Image
from agent.core.ports import FrameSource, SourceInfo
from agent.errors import FrameDecodeError, SourceError


def to_bgr(img: np.ndarray, what: str) -> Image:
    if img is None or not isinstance(img, np.ndarray) or img.size == 0:
        raise FrameDecodeError(f"{what}: empty image")
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = (img >> 8).astype(np.uint8)
        else:
            raise FrameDecodeError(f"{what}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise FrameDecodeError(f"{what}: unsupported image shape {img.shape}")


class VideoCaptureSource:
    """A video file, RTSP URL or V4L2 device through cv2.VideoCapture."""

    def __init__(self, spec: str, live: bool, fps_hint: float | None) -> None:
        self._spec = spec
        target: str | int = spec
        if spec.startswith("/dev/video") and spec[len("/dev/video"):].isdigit():
            target = int(spec[len("/dev/video"):])
        if not live:
            p = Path(spec)
            if not p.exists():
                raise SourceError(f"source {spec}: file does not exist")
            if p.is_dir():
                raise SourceError(f"source {spec}: is a directory, expected a video file or an image glob")
            if p.stat().st_size == 0:
                raise SourceError(f"source {spec}: file is empty (0 bytes)")
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"source {spec}: cannot open or decode (not a video, corrupt, or unreachable)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (0 < fps <= 240):
            fps = fps_hint or 10.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.info = SourceInfo(spec, live, fps, count if count > 0 and not live else None)
        self._read = 0

    def read(self) -> Image | None:
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
    return VideoCaptureSource(full, False, fps_hint)


class SourceOpener:
    """A callable that (re)opens one configured source; the pipeline calls it again after a loss."""

    def __init__(self, spec: str, base_dir: Path | None = None, fps_hint: float | None = None) -> None:
        self.spec = resolve_spec(spec, base_dir)
        self.live = is_live(self.spec)
        self._fps_hint = fps_hint

    def __call__(self) -> FrameSource:
        return open_source(self.spec, None, self._fps_hint)
