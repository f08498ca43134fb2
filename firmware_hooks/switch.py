"""The physical privacy switch: `privacy-switch on|off` and `watch-switch`.

`on` forces `privacy` mode (every frame of every camera withheld). The switch has its own state
file (`DATA/state/privacy-switch.json`, `agent.core.modes`), apart from the override that
`privacy-agent mode set` and MQTT write, and it wins over both and over the schedule: while it is
on, every request for another mode is refused. `off` hands the mode back to whatever override or
schedule applies.

`watch-switch` follows a GPIO line and applies it as the switch: a line on the GPIO character
device (`--chip /dev/gpiochip0 --line 17`, or `hardware.privacy_switch` in the config) read with
libgpiod (`agent.gpio.GpiodInputLine`), or a value file (`--gpio-value PATH`: a GPIO daemon's
export, or the old sysfs interface). It polls every POLL_S: a switch is a slow thing, and polling
keeps one code path for every kind of line.

Invariant: a switch that cannot be read means privacy (fail closed).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from agent.clock import Clock
from agent.config import LoadedConfig
from agent.core.modes import write_switch
from agent.errors import ConfigError
from agent.gpio import GpiodInputLine, InputLine
from agent.vocab import Mode

log = logging.getLogger(__name__)

#: Seconds between two reads of the switch.
POLL_S = 0.2

#: The interface the watcher reads (kept under its old name).
GpioLine = InputLine


class SysfsGpioLine:
    """A GPIO value file (`/sys/class/gpio/gpioN/value` or a gpio daemon's export): `1` = privacy."""

    def __init__(self, path: Path, active_low: bool = False) -> None:
        self.path = path
        self.active_low = active_low

    def read(self) -> bool:
        raw = self.path.read_text().strip()
        if raw not in ("0", "1"):
            raise OSError(f"GPIO value file {self.path} holds {raw!r}, expected 0 or 1")
        return (raw == "1") != self.active_low


def apply_switch(data_dir: Path, privacy_on: bool, clock: Clock) -> Mode | None:
    """Record the switch position. Returns the mode it forces (privacy), or None when off."""
    write_switch(data_dir, privacy_on, clock.wall())
    return Mode.PRIVACY if privacy_on else None


def watch(line: InputLine, data_dir: Path, clock: Clock, *, poll_s: float = POLL_S,
          max_polls: int | None = None) -> int:
    """Poll the line and apply changes. Unreadable means privacy. Returns the number of changes applied."""
    last: bool | None = None
    unreadable = False
    changes = 0
    polls = 0
    while max_polls is None or polls < max_polls:
        polls += 1
        try:
            state = line.read()
            unreadable = False
        except OSError as e:
            if not unreadable:  # once per episode, not five times a second
                log.error("privacy switch unreadable (%s): forcing privacy mode", e)
            unreadable = True
            state = True
        if state != last:
            apply_switch(data_dir, state, clock)
            log.warning("privacy switch %s",
                        "ON: every camera withheld" if state else "off: the override or the schedule decides")
            last = state
            changes += 1
        clock.sleep(poll_s)
    return changes


def add_watch_arguments(w: argparse.ArgumentParser) -> None:
    w.add_argument("--config", required=True)
    src = w.add_mutually_exclusive_group()
    src.add_argument("--gpio-value", type=Path, help="a GPIO value file holding 0 or 1")
    src.add_argument("--chip", help="a GPIO character device, e.g. /dev/gpiochip0 (with --line)")
    w.add_argument("--line", type=int, help="the line's offset on --chip")
    w.add_argument("--active-low", action="store_true", help="the privacy position reads as 0")


def line_from_args(args: argparse.Namespace, loaded: LoadedConfig) -> InputLine:
    """The switch's line: the command line wins over `hardware.privacy_switch`."""
    if args.gpio_value is not None:
        if args.line is not None:
            raise ConfigError("watch-switch: --line goes with --chip, not with --gpio-value")
        return SysfsGpioLine(args.gpio_value, args.active_low)
    if args.chip is not None or args.line is not None:
        if args.chip is None or args.line is None:
            raise ConfigError("watch-switch: --chip and --line go together")
        if args.line < 0:
            raise ConfigError(f"watch-switch: --line {args.line} is not a line offset (0 or more)")
        return GpiodInputLine(args.chip, args.line, args.active_low)
    sw = loaded.config.hardware.privacy_switch
    if sw is None:
        raise ConfigError(f"watch-switch: no switch line: give --chip and --line, or --gpio-value, or set "
                          f"hardware.privacy_switch in {loaded.path}")
    return GpiodInputLine(sw.chip, sw.line, sw.active_low != args.active_low)
