"""argparse helpers shared by the user modules of the command line."""

from __future__ import annotations

import argparse

from agent.errors import ExitCode


def command_group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command that only groups sub-commands (`keys`, `owner`, `zones`, ...).

    Given without a sub-command it prints its own help and exits `ERROR`, like any usage error.
    """
    parser = sub.add_parser(name, help=help)
    parser.set_defaults(func=lambda _args: (parser.print_help(), ExitCode.ERROR)[1])
    return parser.add_subparsers(dest=f"{name}_command", metavar=f"{name.upper()}_COMMAND")
