"""The `privacy-agent` command line.

Each command group lives in its own module and registers itself through
`register_cli(sub)`; this module only wires them up and turns `AgentError`
into a one-line message and a non-zero exit code. Tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from agent import __version__
from agent.errors import AgentError, ExitCode

log = logging.getLogger(__name__)

# Modules that contribute sub-commands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "agent.cli.homeowner",   # check-config, zones, mode
    "agent.cli.installer",   # run, doctor, models, hub
    "agent.cli.owner",       # keys, owner, open, verify, outbox, audit
    "agent.cli.requester",   # requester
    "agent.cli.tester",      # fixtures, replay, eval
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="privacy-agent",
        description="Edge Privacy Agent: private zones never leave the hub.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitCode.ERROR
    try:
        return int(args.func(args) or 0)
    except AgentError as e:
        print(f"privacy-agent: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("privacy-agent: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
