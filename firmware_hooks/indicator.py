"""The privacy LED, as the firmware sees it: `led-test`, and where the LED is driven from.

While `run` runs, it drives the LED itself (`agent.core.indicator`, from `hardware.indicator_led`):
lit whenever frames are being recorded or streamed, or an access grant is active; off otherwise,
and off when `run` stops. The firmware does not drive that line while the service runs (a GPIO
line has one holder at a time).

`led-test --config FILE [--seconds N]` is for the installer, with the service stopped: it lights
the configured LED for N seconds, then switches it off, so a wrong line, a wrong polarity
(`active_low`) or a missing LED shows at once. A line that cannot be driven exits FAILED with the
reason.
"""

from __future__ import annotations

import argparse

from agent.clock import Clock
from agent.config import LoadedConfig
from agent.core.indicator import PrivacyIndicator, indicator_state
from agent.errors import ConfigError, ExitCode
from agent.gpio import GpiodOutputLine, OutputLine, SimulatedLine

__all__ = ["GpiodOutputLine", "OutputLine", "PrivacyIndicator", "SimulatedLine", "indicator_state", "led_test"]


def add_led_test_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True)
    p.add_argument("--seconds", type=float, default=3.0, help="how long the LED stays lit (default 3)")


def led_line(loaded: LoadedConfig) -> OutputLine:
    led = loaded.config.hardware.indicator_led
    if led is None:
        raise ConfigError(f"led-test: no LED configured: set hardware.indicator_led in {loaded.path}")
    return GpiodOutputLine(led.chip, led.line, led.active_low)


def led_test(line: OutputLine, clock: Clock, seconds: float) -> tuple[ExitCode, str]:
    """Light the LED for `seconds`, then switch it off. Returns the exit code and a one-line report."""
    if not 0 <= seconds <= 600:
        raise ConfigError(f"led-test: --seconds {seconds:g} is not 0..600")
    try:
        line.set(True)
        clock.sleep(seconds)
        line.set(False)
    except OSError as e:
        return ExitCode.FAILED, f"the privacy LED cannot be driven: {e}"
    finally:
        line.close()
    return ExitCode.OK, f"the privacy LED was lit for {seconds:g} s and is off again"
