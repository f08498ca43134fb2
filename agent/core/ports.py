"""The interfaces the per-camera pipeline is plugged into: sources, analyzers and sinks.

Implementations live above the core (`agent.media`, `agent.analysis`, `agent.storage`, the
lab's sinks); the pipeline sees only these protocols. A sink accepts nothing but a
`RedactedFrame`, which only `agent.core.redact` can build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agent.core.datatypes import Analysis, Frame, Image
from agent.core.redact import RedactedFrame


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What a source says about itself: for the log, live or file, and its frame rate."""

    description: str
    live: bool
    fps: float
    frame_count: int | None  # as reported by the container, if known


class FrameSource(Protocol):
    """A camera or recording. Its raw frames go to the pipeline and nowhere else.

    A live source may also have `backlog_s() -> float`: how many seconds after a prompt reader
    would have had it the frame just read was read (packets waiting in the network for a reader
    behind the camera). The pipeline counts the frame's age from then, so `max_lag_s` sees it.
    """

    info: SourceInfo

    def read(self) -> Image | None:
        """Next frame, None at the end of a file source. Raises SourceError / FrameDecodeError."""

    def close(self) -> None: ...


class Analyzer(Protocol):
    """Looks at raw frames and reports what it saw; it never decides and never changes the frame.

    An analyzer that raises, or takes longer than `analysis.timeout_s`, makes the pipeline
    withhold the frame with a reason; the pipeline enforces this, not the analyzer. An analyzer
    that learns the scene may have `relearn() -> None` (forget it and learn it again now): the
    pipeline calls it on the analyzer's own lane, between frames, only when the owner asks
    (`CameraPipeline.request_relearn`).
    """

    name: str

    def analyze(self, frame: Frame) -> Analysis:
        """Analyse one frame. May raise; the pipeline withholds on any failure."""


def close_analyzer(a: Analyzer) -> None:
    """Call an analyzer's optional `close()` (background work to finish before exit)."""
    close = getattr(a, "close", None)
    if callable(close):
        close()


def merge(parts: list[Analysis]) -> Analysis:
    """Combine several analyzers' results. Faults and foreground add up; detection age is the oldest;
    the foreground is ready only when every part says so."""
    dets = tuple(d for p in parts for d in p.detections)
    zones = tuple(z for p in parts for z in p.zone_activity)
    faults = tuple(f for p in parts for f in p.faults)
    ages = [p.detections_age_s for p in parts if p.detections_age_s is not None]
    rooms = {p.room for p in parts if p.room}
    # A bathroom seen by any analyzer wins: both kinds withhold a person, the name says the stricter.
    room = "bathroom" if "bathroom" in rooms else (min(rooms) if rooms else None)
    return Analysis(dets, zones, faults, max(ages) if ages else None,
                    foreground=tuple(b for p in parts for b in p.foreground),
                    foreground_ready=all(p.foreground_ready for p in parts), room=room,
                    under_load=any(p.under_load for p in parts))


class Sink(Protocol):
    """Where released frames go. `write` takes only a `RedactedFrame` and checks it with
    `agent.core.redact.require_redacted`; a failing sink raises `SinkError` and the pipeline
    reports it, never falling back to raw output. A sink may also have `hold_reason() -> str |
    None`: a reason the pipeline withholds every frame for (before any sink sees it), or None."""

    name: str
    plaintext: bool

    def write(self, frame: RedactedFrame) -> None:
        """Store one released frame. Raises SinkError on failure."""

    def withheld(self, camera_id: str, index: int, t_s: float) -> None:
        """Note that a frame was withheld (lets a sink cut segments on time, not frame count)."""

    def close(self) -> None:
        """Flush everything (end of source or shutdown). Raises SinkError on failure."""
