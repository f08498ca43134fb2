"""Injected clocks, so tests never sleep.

`monotonic()` is for timeouts, lag and expiry (a Pi has no RTC and its wall
time jumps at boot); `wall()` is only for schedules and display.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class FakeClock:
    """A clock that only moves when told to (or when `sleep` is called)."""

    mono_s: float = 1000.0
    wall_s: float = 1_790_000_000.0

    def monotonic(self) -> float:
        return self.mono_s

    def wall(self) -> float:
        return self.wall_s

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.mono_s += seconds
        self.wall_s += seconds
