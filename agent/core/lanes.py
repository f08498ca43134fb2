"""Analysis lanes: each analyzer on its own one-thread worker, a few frames ahead of the decision.

The object detector can work on frame k+2 while the face detector is on frame k and frame k-1 is
being redacted. Each lane sees every frame in order, so the results equal running the analyzers
one after another. A lane that raises or times out withholds that frame; the frames queued
behind a hung call are withheld as `analysis_busy` until the call returns (it owns its analyzer).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field

from agent.core.datatypes import Analysis, Frame
from agent.core.ports import Analyzer, close_analyzer, merge

log = logging.getLogger(__name__)


@dataclass
class _Lane:
    """One analyzer on its own worker thread. Frames reach it in order, so its state stays sequential."""

    analyzer: Analyzer
    pool: ThreadPoolExecutor
    # A call that timed out and is still running: until it returns, the lane
    # takes no new work and its frames are withheld as "analysis_busy".
    stuck: Future[Analysis] | None = None
    queued: deque[Future[Analysis]] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class PendingAnalysis:
    """The analysis of one frame in flight: one future per lane (None: the lane was busy)."""

    frame: Frame
    futures: tuple[Future[Analysis] | None, ...]


class AnalysisRunner:
    """Runs each analyzer on its own lane (a one-thread worker), several frames ahead.

    Lanes are what lets analysis overlap itself: the object detector works on
    frame k+2 while the face detector is on frame k and frame k-1 is being
    redacted. Each lane sees every frame in order, so results are the same as
    running the analyzers one after another. A lane that raises or times out
    makes that frame's analysis carry a fault (so policy withholds); a lane
    whose call timed out takes no new work until that call returns.
    """

    def __init__(self, analyzers: Sequence[Analyzer], timeout_s: float) -> None:
        self._timeout_s = timeout_s
        # submit() runs on the reader thread, collect() on the processing thread.
        self._lock = threading.Lock()
        self._lanes = [
            _Lane(a, ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"analysis-{getattr(a, 'name', i)}"))
            for i, a in enumerate(analyzers)
        ]

    def submit(self, frame: Frame) -> PendingAnalysis:
        """Queue `frame` on every lane that is not stuck. Never blocks on analysis, never raises."""
        futures: list[Future[Analysis] | None] = []
        with self._lock:
            for lane in self._lanes:
                if lane.stuck is not None:
                    if not lane.stuck.done():
                        futures.append(None)
                        continue
                    lane.stuck = None  # the hung call returned: the lane recovers
                fut = lane.pool.submit(lane.analyzer.analyze, frame)
                lane.queued.append(fut)
                futures.append(fut)
        return PendingAnalysis(frame, tuple(futures))

    def collect(self, pending: PendingAnalysis) -> tuple[Analysis, str | None]:
        """(analysis, problem) for a submitted frame, waiting at most `timeout_s` for it.

        Must be called once per `submit`, in the same order. On any problem the
        analysis carries a fault, so policy withholds.
        """
        deadline = time.monotonic() + self._timeout_s
        parts: list[Analysis] = []
        faults: list[str] = []
        problems: list[str] = []
        for lane, fut in zip(self._lanes, pending.futures, strict=True):
            if fut is None:
                faults.append("analysis_busy")
                continue
            with self._lock:
                if lane.queued and lane.queued[0] is fut:
                    lane.queued.popleft()
            if fut.cancelled():  # queued behind a call that timed out
                faults.append("analysis_busy")
                continue
            try:
                parts.append(fut.result(timeout=max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                with self._lock:
                    lane.stuck = fut
                    # Frames queued behind the hung call would only wait for it; they are withheld instead.
                    for later in lane.queued:
                        later.cancel()
                faults.append("analysis_timeout")
                problems.append(f"analyzer {getattr(lane.analyzer, 'name', '?')} took longer than "
                                f"{self._timeout_s}s")
            except CancelledError:
                faults.append("analysis_busy")  # cancelled while this frame waited
            except Exception as e:  # noqa: BLE001 - stage boundary: any failure withholds
                faults.append(f"analysis_error:{type(e).__name__}")
                problems.append(f"{type(e).__name__}: {e}")
        if faults:
            return Analysis(faults=tuple(dict.fromkeys(faults))), "; ".join(problems) or None
        return merge(parts), None

    def relearn(self) -> list[str]:
        """Queue each analyzer's optional `relearn()` on its own lane, ahead of the next frame: the
        lane runs it between two frames, never during one. Returns the analyzers asked."""
        names: list[str] = []
        with self._lock:
            for i, lane in enumerate(self._lanes):
                fn = getattr(lane.analyzer, "relearn", None)
                if not callable(fn):
                    continue
                name = str(getattr(lane.analyzer, "name", i))
                names.append(name)
                lane.pool.submit(fn).add_done_callback(_relearn_done(name))
        return names

    def analyze(self, frame: Frame) -> tuple[Analysis, str | None]:
        """Submit and collect one frame (no look-ahead)."""
        return self.collect(self.submit(frame))

    def close(self) -> None:
        for lane in self._lanes:
            lane.pool.shutdown(wait=False, cancel_futures=True)
            running = [f for f in lane.queued if not f.done()]
            if lane.stuck is None and running:
                # Frames still in flight (the run ended early): give them the usual time.
                if futures_wait(running, timeout=self._timeout_s).not_done:
                    lane.stuck = running[0]
            if lane.stuck is None or lane.stuck.done():
                # Not while a timed-out call is still running: it owns the analyzer.
                close_analyzer(lane.analyzer)


def _relearn_done(name: str) -> Callable[[Future[object]], None]:
    def done(fut: Future[object]) -> None:
        # An analyzer that could not relearn keeps what it had: a moved camera stays withheld.
        if not fut.cancelled() and fut.exception() is not None:
            log.error("analyzer %s could not relearn the scene: %s", name, fut.exception())
    return done
