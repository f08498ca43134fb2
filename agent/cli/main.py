"""The `privacy-agent` command line.

Each command group lives in its own module and registers itself through
`register_cli(sub)`; this module only wires them up and turns `AgentError`
into a one-line message and a non-zero exit code. Tracebacks are for bugs.

A file the user named that is missing, unreadable or a directory (`FileNotFoundError`,
`PermissionError`, `IsADirectoryError`, `NotADirectoryError`, any `OSError` that names its file)
is bad input, not a bug: wherever a command forgot to turn it into an `AgentError`, it still
ends here as one line naming the path, exit `ERROR`. Global options (`-v`) are accepted before
or after the command name (`agent.cli.parsing.CommandParser`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

# Importing `agent` (as any `agent.*` import does) has already forced ORT_DISABLE_TELEMETRY=1,
# before any command can load ONNX Runtime: see agent/__init__.py.
from agent import __version__
from agent.cli.parsing import CommandParser, add_verbose, verbosity
from agent.errors import AgentError, ExitCode
from agent.fsutil import private_umask

log = logging.getLogger(__name__)

# Modules that contribute sub-commands, in help order, with the commands each registers (a test
# holds this list to what `register_cli` really adds). A command imports only its own module:
# `run` on a hub does not load the lab's fixtures and evaluation, the owner's tools or the MQTT
# client it never uses, which is about 3.5 MiB of the long-running process (bench/bench_live.py).
COMMAND_MODULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("agent.cli.homeowner", ("check-config", "zones", "mode", "camera")),
    ("agent.cli.installer", ("run", "models", "hub", "sink")),
    ("agent.cli.doctor", ("doctor",)),
    ("agent.cli.owner", ("keys", "owner", "open", "verify", "outbox", "clips", "audit")),
    ("agent.cli.requester", ("requester",)),
    ("agent.cli.tester", ("fixtures", "replay", "eval")),
    ("agent.cli.web", ("web",)),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with `command` (a known command's name) only the module that
    provides it: the parse, its errors and `COMMAND -h` are the same either way."""
    p = argparse.ArgumentParser(
        prog="privacy-agent",
        description="Edge Privacy Agent: private zones never leave the hub.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_verbose(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for name, commands in COMMAND_MODULES:
        if command is None or command in commands:
            importlib.import_module(name).register_cli(sub)
    return p


def command_word(argv: Sequence[str]) -> str | None:
    """The command named on a command line, if it is one of ours; else None (no command, `-h`,
    a typo), and then every command is registered, so help and "invalid choice" list them all.
    Before the command only options without a value can come (`-v`, `-h`, `--version`)."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if any(word in cmds for _, cmds in COMMAND_MODULES) else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_word(argv))
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(verbosity(args), 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitCode.ERROR
    try:
        # umask 077 for the whole command: everything it creates (the data dir, clips, events,
        # state, pictures of the home, decrypted video) is for this user alone, also where a
        # library or a plain open() picks the mode. Explicit modes (agent.fsutil) hold it too.
        with private_umask():
            return int(args.func(args) or 0)
    except AgentError as e:
        print(f"privacy-agent: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        message = file_error_message(e)
        if message is None:
            raise  # no file named: not a user's missing input, a bug (or the network) to see whole
        log.debug("file error", exc_info=True)
        print(f"privacy-agent: error: {message}", file=sys.stderr)
        return ExitCode.ERROR
    except KeyboardInterrupt:
        print("privacy-agent: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


def file_error_message(e: OSError) -> str | None:
    """One line for an OSError about a file, naming the path and what is wrong; None if it names
    no file."""
    if e.filename is None:
        return None
    path = os.fsdecode(e.filename)
    if isinstance(e, FileNotFoundError):
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            return f"{path}: directory {parent} does not exist"
        return f"{path} does not exist"
    if isinstance(e, PermissionError):
        return f"{path}: permission denied"
    if isinstance(e, IsADirectoryError):
        return f"{path} is a directory; a file is needed here"
    if isinstance(e, NotADirectoryError):
        return f"{path}: a part of this path is not a directory"
    return f"{path}: {e.strerror or e}"
