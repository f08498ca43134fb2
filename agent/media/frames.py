"""What every source shares: frames as BGR uint8 arrays, the check of a file before opening it,
and FFmpeg kept quiet (our errors say once, in our words, what went wrong)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import cv2
import numpy as np

from agent.core.datatypes import Image
from agent.errors import FrameDecodeError, SourceError

# FFmpeg's own log lines ("moov atom not found", "[rtsp @ 0x...] ...") would reach the terminal
# before our `SourceError` says the same thing once, in our words. Every source module imports
# this one, and every command imports a source module before running: this is the one place.
# PyAV (files and network cameras): no log callback at all (its default today; pinned, so an
# upgrade cannot turn it back on). OpenCV's bundled FFmpeg (V4L2 devices) reads
# OPENCV_FFMPEG_LOGLEVEL when it opens its first capture (-8 is AV_LOG_QUIET). A value already in
# that variable wins for both, so a camera can still be debugged with
# `OPENCV_FFMPEG_LOGLEVEL=24 privacy-agent run ...` (FFmpeg's lines then name the URL it was
# given, password and all: a debugging session's terminal, never an event).
FFMPEG_LOGLEVEL_ENV = "OPENCV_FFMPEG_LOGLEVEL"


def _ffmpeg_level(text: str | None) -> int | None:
    """FFmpeg's log level the variable asks for; None (quiet) when unset, negative or not a number."""
    try:
        level = int(text or "-8")
    except ValueError:
        return None
    return level if level >= 0 else None


av.logging.set_level(_ffmpeg_level(os.environ.get(FFMPEG_LOGLEVEL_ENV)))
os.environ.setdefault(FFMPEG_LOGLEVEL_ENV, "-8")


# Reads in a row that yield no frame at all (unreadable container data or
# packets the decoder rejects) before a file is given up as hopeless. Well
# above what a damaged sector or a cut in transit costs (a few dozen packets),
# and each failed read is cheap, so the bound only ends files that are
# garbage from there on.
MAX_FAILED_READS = 250


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


def check_file(spec: str) -> None:
    p = Path(spec)
    if not p.exists():
        raise SourceError(f"source {spec}: file does not exist")
    if p.is_dir():
        raise SourceError(f"source {spec}: is a directory, expected a video file or an image glob")
    if p.stat().st_size == 0:
        raise SourceError(f"source {spec}: file is empty (0 bytes)")

