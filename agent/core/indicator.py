"""The privacy LED: lit whenever frames are being recorded or streamed, or an access grant is
active; off otherwise.

`indicator_state` is the rule, pure. `PrivacyIndicator` applies it to an `OutputLine`
(`agent.gpio`) on every tick, asking injected providers what is happening now: "a frame went to
a sink in the last RECORDING_WINDOW_S" (the pipelines' `last_release_s`), "a frame is being
streamed" and "a grant is active" (the hub's access service). `start_indicator` builds it from
the `hardware.indicator_led` config and runs it on a thread of its own for `run`.

What happens when it cannot tell, or cannot drive the LED (decided here, documented in
firmware_hooks/CONTRACT.md):
- A provider that raises counts as "yes": the LED is lit. It must never say "off" while frames
  might be recorded.
- A line that cannot be driven (chip gone, line held by another process) is logged and reported
  once per episode as an `indicator_fault` event; it is retried on every tick and an
  `indicator_recovered` event follows when it works again. Recording does not stop: the LED
  tells people in the room what the hub is doing, and a broken LED must not become a way to
  switch cameras off or on. The fault goes to the owners with the other events (MQTT, the event
  file), so a dark LED on a recording hub is a visible fault, not a silent one.
- The line is set on every tick, not only on changes, so something else changing it (a line
  re-requested after a fault) is corrected within one tick.
- When `run` stops, the LED is switched off and released: nothing is being recorded any more.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from agent.clock import Clock
from agent.config import HardwareConfig
from agent.core.datatypes import Event
from agent.core.events import EventCallback, emit_safely
from agent.gpio import GpiodOutputLine, OutputLine

log = logging.getLogger(__name__)

#: A camera counts as recording for this long after a frame was last released to its sinks: a
#: pipeline releases frames at the camera's rate, so a gap longer than this means it stopped.
RECORDING_WINDOW_S = 2.0
#: Seconds between ticks: the LED follows a change within this.
TICK_S = 0.2


def indicator_state(recording: bool, streaming: bool, grant_active: bool) -> bool:
    """Whether the privacy LED is lit: frames are being recorded or streamed, or a grant is active."""
    return recording or streaming or grant_active


class ReleasesFrames(Protocol):
    """A camera pipeline, as far as the LED cares: when it last released a frame to its sinks."""

    @property
    def last_release_s(self) -> float | None: ...


class HasGrants(Protocol):
    def grant_active(self, now_wall_s: float) -> bool: ...


Provider = Callable[[], bool]


def _never() -> bool:
    return False


class PrivacyIndicator:
    """Drives the LED from the providers, once per `tick()`."""

    def __init__(self, line: OutputLine, clock: Clock, *, recording: Provider, streaming: Provider = _never,
                 grant_active: Provider = _never, on_event: EventCallback | None = None) -> None:
        self.line = line
        self.clock = clock
        self._providers = (("recording", recording), ("streaming", streaming), ("grant_active", grant_active))
        self._on_event = on_event
        self.lit: bool | None = None  # what the line was last driven to; None: unknown (a fault)
        self.faulty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _ask(self, name: str, provider: Provider) -> bool:
        try:
            return bool(provider())
        except Exception as e:  # noqa: BLE001 - a provider we cannot ask counts as "yes": never dark while recording
            log.error("privacy LED: cannot tell whether %s (%s: %s); lighting it", name, type(e).__name__, e)
            return True

    def wanted(self) -> bool:
        """What the LED should show now."""
        recording, streaming, grant = (self._ask(n, p) for n, p in self._providers)
        return indicator_state(recording, streaming, grant)

    def tick(self) -> bool:
        """Set the line to what it should show now. Returns that state."""
        want = self.wanted()
        self._drive(want)
        return want

    def _drive(self, want: bool) -> None:
        try:
            self.line.set(want)
        except OSError as e:
            self.lit = None
            if not self.faulty:
                self.faulty = True
                log.error("privacy LED cannot be driven (%s); recording goes on, retrying", e)
                self._event("indicator_fault", f"the privacy LED cannot be driven: {e}; it may not show "
                            "that the hub is recording", wanted="on" if want else "off")
            return
        self.lit = want
        if self.faulty:
            self.faulty = False
            log.warning("privacy LED works again")
            self._event("indicator_recovered", "the privacy LED works again", wanted="on" if want else "off")

    def _event(self, kind: str, message: str, **details: object) -> None:
        emit_safely(self._on_event, Event(kind, None, message, self.clock.monotonic(), details))

    # --- the thread `run` uses ------------------------------------------------------------

    def start(self, tick_s: float = TICK_S) -> PrivacyIndicator:
        self.tick()  # lit (or not) before the first frame can reach a sink
        self._thread = threading.Thread(target=self._loop, args=(tick_s,), name="privacy-led", daemon=True)
        self._thread.start()
        return self

    def _loop(self, tick_s: float) -> None:
        # Real time on purpose (Event.wait): the thread must notice stop() at once; tests call tick().
        while not self._stop.wait(tick_s):
            self.tick()

    def stop(self) -> None:
        """Stop ticking, switch the LED off (nothing is recorded any more) and release it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self._drive(False)
        try:
            self.line.close()
        except OSError as e:
            log.warning("privacy LED: cannot release the line: %s", e)


def recording_provider(pipelines: Sequence[ReleasesFrames], clock: Clock,
                       window_s: float = RECORDING_WINDOW_S) -> Provider:
    """True while any pipeline released a frame (to its sinks or the page) within the last `window_s`."""

    def recording() -> bool:
        now = clock.monotonic()
        return any(t is not None and now - t <= window_s for t in (p.last_release_s for p in pipelines))

    return recording


def start_indicator(cfg: HardwareConfig, pipelines: Sequence[ReleasesFrames], access: HasGrants | None,
                    on_event: EventCallback, clock: Clock, *, line: OutputLine | None = None) -> PrivacyIndicator | None:
    """For `run`: the LED of `hardware.indicator_led`, ticking on its own thread; None without one.
    `run` shows nothing but released frames (the homeowner's page taps them), and every released
    frame counts as recording, with or without a sink, so its LED has no separate streaming input."""
    led = cfg.indicator_led
    if led is None and line is None:
        return None
    if line is None:
        assert led is not None
        line = GpiodOutputLine(led.chip, led.line, led.active_low)
    grants: Provider = _never if access is None else (lambda: access.grant_active(clock.wall()))
    return PrivacyIndicator(line, clock, recording=recording_provider(pipelines, clock),
                            grant_active=grants, on_event=on_event).start()
