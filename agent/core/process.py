"""Process-wide settings for running camera pipelines (`run` and `replay` call `tune_process` once)."""

from __future__ import annotations

import ctypes
import logging
import platform

import cv2

log = logging.getLogger(__name__)


def tune_process() -> None:
    """Process-wide settings for running camera pipelines; `run` and `replay` call it once.

    OpenCV's own thread pool is turned off: the pipeline already keeps both
    cores busy with decode, one lane per analyzer and the encoder, so OpenCV
    splitting each resize over every core only adds wake-ups and contention
    (about 1.5 ms less CPU per 720p frame, measured with bench/bench_pipeline.py).

    glibc's malloc is capped at two arenas: by default every thread that
    allocates (reader, one per analysis lane, sink, encoder) gets its own
    arena, up to eight per core, and each keeps frame-sized buffers it freed.
    The cap saves about 7 MiB for one camera (bench/bench_memory.py), with
    no throughput change measured. Elsewhere than glibc this is skipped.
    """
    cv2.setNumThreads(1)
    _cap_malloc_arenas(2)


# mallopt() parameter number for the arena cap, from glibc's <malloc.h>.
_M_ARENA_MAX = -8


def _cap_malloc_arenas(n: int) -> None:
    if platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_ARENA_MAX, n)
    except (OSError, AttributeError) as e:
        log.info("malloc arenas not capped: %s", e)
        return
    if not ok:
        log.info("malloc arenas not capped: mallopt refused")
