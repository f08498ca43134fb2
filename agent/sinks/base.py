"""The sink interface."""

from __future__ import annotations

from typing import Protocol

from agent.redact import RedactedFrame


class Sink(Protocol):
    name: str
    plaintext: bool

    def write(self, frame: RedactedFrame) -> None:
        """Store one released frame. Raises SinkError on failure."""

    def withheld(self, camera_id: str, index: int, t_s: float) -> None:
        """Note that a frame was withheld (lets a sink cut segments on time, not frame count)."""

    def close(self) -> None:
        """Flush everything (end of source or shutdown). Raises SinkError on failure."""
