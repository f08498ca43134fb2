"""Process-wide settings for running camera pipelines (`run` and `replay` call `tune_process` once),
and the heap trimmer `run` keeps going while its cameras run.

`HeapTrimmer` hands the C heap's free pages back to the kernel every few seconds.

A camera frame is a few MiB (2.6 at 720p, 6 at 1080p) and the pipeline allocates and frees
several per frame on several threads. glibc's malloc serves them from its heaps once the first
one has been freed (its mmap threshold rises to the largest block freed), which is fast, but a
heap shrinks only from its top: the free space between live blocks stays resident for good.
`malloc_trim(0)` releases every whole free page of every heap (madvise), so the process holds
what it uses rather than its high-water mark: about 15 MiB less for one 720p camera
(bench/bench_live.py). A trim costs well under a millisecond here; a page it releases is faulted
back in when it is used again, once per interval, not once per frame as a lower mmap threshold
would.

Elsewhere than glibc (musl has no `malloc_trim`), or if the call cannot be found, this does
nothing. It never frees anything in use: it only returns pages malloc already holds as free.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import sys
import threading
from collections.abc import Callable

import cv2

log = logging.getLogger(__name__)


def tune_process() -> None:
    """Process-wide settings for running camera pipelines; `run` and `replay` call it once.

    OpenCV's own thread pool is turned off: the pipeline already keeps both
    cores busy with decode, one lane per analyzer and the encoder, so OpenCV
    splitting each resize over every core only adds wake-ups and contention
    (about 1.5 ms less CPU per 720p frame, measured with bench/bench_pipeline.py).

    glibc's malloc is held to one arena: by default every thread that
    allocates (reader, one per analysis lane, sink, encoder) gets its own
    arena, up to eight per core, and each keeps frame-sized buffers it freed.
    A frame is allocated on one thread and freed on another, and a block freed
    into one arena cannot serve a request made in another, so each arena grew
    its own set of frame-sized blocks. Two arenas saved about 7 MiB for one
    camera against the default (bench/bench_memory.py); one saves more again:
    with four live cameras 357-364 against 375-404 MiB steady and 400-401
    against 405-421 at peak, with one 202-205 against 205-209 steady (30 s
    runs, interleaved), for the same CPU and frames read: the threads spend
    their time in native code that allocates little, so they hardly ever wait
    for the arena's lock. Elsewhere than glibc this is skipped.

    The interpreter's switch interval goes from 5 ms to `SWITCH_INTERVAL_S`. Each camera has
    several threads, and nearly all of their work is native calls (decode, inference, OpenCV,
    numpy, encode) that let go of the GIL and must take it back on return. A thread coming back
    waits until the holder lets go, which a thread running Python does only when the interval
    is up: with four cameras that wait was 4 ms on average and 21 ms at the 99th percentile, a
    few times per frame on every thread. With four live 720p cameras (the streams of
    bench/bench_live.py, two pairs of 75 s runs), the slowest camera read 1,032-1,034 frames at
    1 ms against 897-954 at 5 ms, for about the same process CPU.
    """
    cv2.setNumThreads(1)
    _cap_malloc_arenas(1)
    sys.setswitchinterval(SWITCH_INTERVAL_S)


#: Seconds a thread running Python may keep the GIL while another waits for it.
SWITCH_INTERVAL_S = 0.001


# mallopt() parameter number for the arena cap, from glibc's <malloc.h>.
_M_ARENA_MAX = -8


def _glibc() -> ctypes.CDLL | None:
    """The C library, when it is glibc (whose malloc the tuning here is about); else None."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def _cap_malloc_arenas(n: int) -> None:
    libc = _glibc()
    if libc is None:
        return
    try:
        ok = libc.mallopt(_M_ARENA_MAX, n)
    except AttributeError as e:
        log.info("malloc arenas not capped: %s", e)
        return
    if not ok:
        log.info("malloc arenas not capped: mallopt refused")


#: Seconds between trims: short enough that a burst (a clip being finished, a model run on a
#: scene cut) is given back soon, long enough that re-faulting the pages costs nothing measurable.
TRIM_EVERY_S = 2.0


def glibc_trim() -> Callable[[], object] | None:
    """glibc's `malloc_trim(0)` as a callable, or None where there is none."""
    fn = getattr(_glibc(), "malloc_trim", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: fn(0)


class HeapTrimmer:
    """A daemon thread that calls `trim` every `every_s` seconds until `stop()`."""

    def __init__(self, trim: Callable[[], object] | None = None, every_s: float = TRIM_EVERY_S) -> None:
        self._trim = trim if trim is not None else glibc_trim()
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.trims = 0

    @property
    def active(self) -> bool:
        return self._trim is not None

    def start(self) -> HeapTrimmer:
        if self._trim is None:
            log.debug("no malloc_trim in this C library; the heap is left to malloc")
            return self
        self._thread = threading.Thread(target=self._loop, name="heap-trim", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            self.tick()

    def tick(self) -> None:
        if self._trim is None:
            return
        try:
            self._trim()
        except Exception as e:  # noqa: BLE001 - a failed trim only means memory stays cached
            log.debug("malloc_trim failed: %s; not trying again", e)
            self._trim = None
            return
        self.trims += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
