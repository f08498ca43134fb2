"""argparse helpers shared by the user modules of the command line.

`CommandParser` is the class of every sub-command parser: `build_parser` passes it to the top-level
`add_subparsers`, and argparse gives nested groups (`owner approve`, `zones preview`, ...) the class
of the parser they hang off, so every command, present or future, accepts the global options
after its name too: `privacy-agent doctor -v` is `privacy-agent -v doctor`.
"""

from __future__ import annotations

import argparse
from typing import Any

from agent.errors import ExitCode

#: Where `-v` given after the command name is counted; `verbosity` adds it to the top-level `-v`.
#: A destination of its own, because a sub-parser's defaults overwrite the top level's values.
SUB_VERBOSE_DEST = "verbose_after_command"


def add_verbose(parser: argparse.ArgumentParser, dest: str = "verbose", default: Any = 0) -> None:
    """The global `-v/--verbose` option (count)."""
    parser.add_argument("-v", "--verbose", action="count", dest=dest, default=default,
                        help="more log output (-vv for debug), before or after the command name")


class CommandParser(argparse.ArgumentParser):
    """A sub-command parser that also takes the global options (`-v/--verbose`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # SUPPRESS: given nowhere, it leaves no attribute, so a nested group's parser does not
        # reset a count its parent parser made.
        add_verbose(self, SUB_VERBOSE_DEST, argparse.SUPPRESS)


def verbosity(args: argparse.Namespace) -> int:
    """How many `-v` were given, before and after the command name."""
    return int(getattr(args, "verbose", 0) or 0) + int(getattr(args, SUB_VERBOSE_DEST, 0) or 0)


def command_group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command that only groups sub-commands (`keys`, `owner`, `zones`, ...).

    Given without a sub-command it prints its own help and exits `ERROR`, like any usage error.
    """
    parser = sub.add_parser(name, help=help)
    parser.set_defaults(func=lambda _args: (parser.print_help(), ExitCode.ERROR)[1])
    return parser.add_subparsers(dest=f"{name}_command", metavar=f"{name.upper()}_COMMAND")
