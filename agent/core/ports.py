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
    description: str
    live: bool
    fps: float
    frame_count: int | None  # as reported by the container, if known


class FrameSource(Protocol):
    info: SourceInfo

    def read(self) -> Image | None:
        """Next frame, None at the end of a file source. Raises SourceError / FrameDecodeError."""

    def close(self) -> None: ...

class Analyzer(Protocol):
    name: str

    def analyze(self, frame: Frame) -> Analysis:
        """Analyse one frame. May raise; the pipeline withholds on any failure."""


def close_analyzer(a: Analyzer) -> None:
    """Call an analyzer's optional `close()` (background work to finish before exit)."""
    close = getattr(a, "close", None)
    if callable(close):
        close()


def merge(parts: list[Analysis]) -> Analysis:
    """Combine several analyzers' results. Faults add up; detection age is the oldest."""
    dets = tuple(d for p in parts for d in p.detections)
    zones = tuple(z for p in parts for z in p.zone_activity)
    faults = tuple(f for p in parts for f in p.faults)
    ages = [p.detections_age_s for p in parts if p.detections_age_s is not None]
    return Analysis(dets, zones, faults, max(ages) if ages else None)

class Sink(Protocol):
    name: str
    plaintext: bool

    def write(self, frame: RedactedFrame) -> None:
        """Store one released frame. Raises SinkError on failure."""

    def withheld(self, camera_id: str, index: int, t_s: float) -> None:
        """Note that a frame was withheld (lets a sink cut segments on time, not frame count)."""

    def close(self) -> None:
        """Flush everything (end of source or shutdown). Raises SinkError on failure."""

