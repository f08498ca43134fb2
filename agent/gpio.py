"""GPIO lines of the hub: the privacy LED (an output) and the privacy switch (an input).

Real lines go through the Linux GPIO character device (`/dev/gpiochipN`) with libgpiod's Python
bindings (the `gpiod` package, libgpiod v2), never through the deprecated sysfs interface.
`SimulatedLine` stands behind the same two interfaces where no GPIO chip exists (tests, a
development machine), driven by the test.

Invariants:
- Every failure to drive or read a line is an `OSError` (whatever gpiod raised), so callers
  have one thing to catch: the LED's driver reports it, the switch's reader treats it as
  privacy (fail closed).
- A line is requested lazily and requested again after a failure: a chip that appears late at
  boot, or a line another process held for a moment, is picked up on the next call.
- An output line is requested with the value it is first set to, so the LED never shows "off"
  for an instant while it should be on.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

#: The consumer name `gpioinfo` shows for lines this agent holds.
CONSUMER = "privacy-agent"


class OutputLine(Protocol):
    def set(self, on: bool) -> None:
        """Drive the line active (`on`) or inactive. Raises OSError if it cannot be driven."""

    def close(self) -> None:
        """Release the line."""


class InputLine(Protocol):
    def read(self) -> bool:
        """True when the line is active (for the switch: the privacy position). Raises OSError."""


def _gpiod_error(chip: str, offset: int, e: Exception) -> OSError:
    why = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return OSError(f"GPIO line {offset} on {chip}: {why}")


class _GpiodLine:
    """One line on a GPIO chip, requested through libgpiod v2."""

    def __init__(self, chip: str | Path, offset: int, active_low: bool = False) -> None:
        self.chip = str(chip)
        self.offset = int(offset)
        self.active_low = bool(active_low)
        self._req: Any = None
        self._lock = threading.Lock()

    def _settings(self, output: bool, value: bool) -> Any:
        import gpiod
        from gpiod.line import Direction, Value

        if output:
            return gpiod.LineSettings(direction=Direction.OUTPUT, active_low=self.active_low,
                                      output_value=Value.ACTIVE if value else Value.INACTIVE)
        return gpiod.LineSettings(direction=Direction.INPUT, active_low=self.active_low)

    def _request(self, output: bool, value: bool = False) -> Any:
        import gpiod

        try:
            return gpiod.request_lines(self.chip, consumer=CONSUMER,
                                       config={self.offset: self._settings(output, value)})
        except (OSError, ValueError, TypeError) as e:
            raise _gpiod_error(self.chip, self.offset, e) from None

    def _drop(self) -> None:
        req, self._req = self._req, None
        if req is not None:
            try:
                req.release()
            except (OSError, ValueError, RuntimeError):
                pass  # already gone with the chip; nothing else to give back

    def close(self) -> None:
        with self._lock:
            self._drop()


class GpiodOutputLine(_GpiodLine):
    """An output line (the privacy LED): `set(True)` drives it active (lit)."""

    def set(self, on: bool) -> None:
        from gpiod.line import Value

        with self._lock:
            if self._req is None:
                self._req = self._request(output=True, value=on)
                return
            try:
                self._req.set_value(self.offset, Value.ACTIVE if on else Value.INACTIVE)
            except (OSError, ValueError, RuntimeError) as e:
                self._drop()  # request it again on the next call
                raise _gpiod_error(self.chip, self.offset, e) from None


class GpiodInputLine(_GpiodLine):
    """An input line (the privacy switch): `read()` is True when the line is active."""

    def read(self) -> bool:
        from gpiod.line import Value

        with self._lock:
            if self._req is None:
                self._req = self._request(output=False)
            try:
                return bool(self._req.get_value(self.offset) == Value.ACTIVE)
            except (OSError, ValueError, RuntimeError) as e:
                self._drop()
                raise _gpiod_error(self.chip, self.offset, e) from None


class SimulatedLine:
    """A line with no hardware behind it, for tests: both an `OutputLine` and an `InputLine`.

    `value` is the line's level (True: active). `failing` makes every call raise OSError, as a
    line whose chip vanished would. `history` lists every value the line was driven to."""

    def __init__(self, value: bool = False) -> None:
        self.value = value
        self.failing = False
        self.closed = False
        self.history: list[bool] = []

    def set(self, on: bool) -> None:
        if self.failing:
            raise OSError("simulated GPIO line: cannot be driven")
        self.value = on
        self.history.append(on)

    def read(self) -> bool:
        if self.failing:
            raise OSError("simulated GPIO line: cannot be read")
        return self.value

    def close(self) -> None:
        self.closed = True
