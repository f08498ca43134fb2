"""Hooks for hub firmware.

- `boot-check --config FILE`: the `doctor` checks; non-zero when the hub cannot protect
  privacy (a model or key missing, a source unreadable). Firmware shows a fault LED; the
  agent still starts and withholds what it cannot protect.
- `privacy-switch on|off --config FILE`: the physical privacy switch. `on` forces `privacy`
  mode (every frame of every camera withheld). The switch has its own state file
  (`DATA/state/privacy-switch.json`, see `agent.core.modes`), apart from the override that
  `privacy-agent mode set` and MQTT write, and it wins over both and over the schedule: while it
  is on, every request for another mode is refused. `off` hands the mode back to whatever
  override or schedule applies.
- `watch-switch --config FILE --gpio-value PATH`: follow a GPIO line and apply it as the
  privacy switch. The line is read through `GpioLine`; on a hub that is a sysfs/character
  device value file, in tests a stand-in behind the same interface.

Invariant: a switch that cannot be read means privacy (fail closed).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from agent.clock import Clock, SystemClock
from agent.config import load_config
from agent.core.modes import write_switch
from agent.errors import AgentError, ExitCode
from agent.fsutil import private_umask
from agent.vocab import Mode

log = logging.getLogger(__name__)


class GpioLine(Protocol):
    def read(self) -> bool:
        """True when the switch is in the privacy position. Raises OSError if unreadable."""


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


def watch(line: GpioLine, data_dir: Path, clock: Clock, *, poll_s: float = 0.2,
          max_polls: int | None = None) -> int:
    """Poll the line and apply changes. Unreadable means privacy. Returns the number of changes applied."""
    last: bool | None = None
    changes = 0
    polls = 0
    while max_polls is None or polls < max_polls:
        polls += 1
        try:
            state = line.read()
        except OSError as e:
            log.error("privacy switch unreadable (%s): forcing privacy mode", e)
            state = True
        if state != last:
            apply_switch(data_dir, state, clock)
            log.warning("privacy switch %s",
                        "ON: every camera withheld" if state else "off: the override or the schedule decides")
            last = state
            changes += 1
        clock.sleep(poll_s)
    return changes


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m firmware_hooks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="hook", required=True)
    b = sub.add_parser("boot-check")
    b.add_argument("--config", required=True)
    s = sub.add_parser("privacy-switch")
    s.add_argument("state", choices=["on", "off"])
    s.add_argument("--config", required=True)
    w = sub.add_parser("watch-switch")
    w.add_argument("--config", required=True)
    w.add_argument("--gpio-value", required=True, type=Path)
    w.add_argument("--active-low", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # umask 077, as in `privacy-agent`: the switch writes the mode state into the data dir (and may
    # create it), which is for the agent's user alone.
    with private_umask():
        return _run_hook(args)


def _run_hook(args: argparse.Namespace) -> int:
    try:
        if args.hook == "boot-check":
            from agent.cli.main import main as cli_main

            return cli_main(["doctor", "--config", args.config])
        loaded = load_config(args.config)
        if args.hook == "privacy-switch":
            apply_switch(loaded.data_dir, args.state == "on", SystemClock())
            print(f"privacy switch {args.state}")
            return ExitCode.OK
        watch(SysfsGpioLine(args.gpio_value, args.active_low), loaded.data_dir, SystemClock())
        return ExitCode.OK
    except AgentError as e:
        print(f"firmware hook: error: {e}", file=sys.stderr)
        return e.exit_code
