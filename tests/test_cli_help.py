"""Every option and positional of every `privacy-agent` command has a help line.

`--help` is the first thing a newcomer reads; an argument without help shows up there as a bare
name. The whole parser is walked, every sub-parser included, so a new argument without help
fails here with its command and name.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from agent.cli.main import build_parser


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                # An alias points at the same parser: walk it once, under its first name.
                if sub is not parser:
                    yield from _walk(sub, f"{path} {name}")


def _missing_help(parser: argparse.ArgumentParser) -> list[str]:
    missing = []
    seen: set[int] = set()
    for path, p in _walk(parser, "privacy-agent"):
        if id(p) in seen:
            continue
        seen.add(id(p))
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if action.help is None or not str(action.help).strip():
                name = "/".join(action.option_strings) or action.dest
                missing.append(f"{path}: {name}")
    return missing


def test_walk_reaches_nested_commands() -> None:
    paths = {path for path, _ in _walk(build_parser(), "privacy-agent")}
    assert {"privacy-agent run", "privacy-agent doctor", "privacy-agent hub serve"} <= paths
    assert len(paths) > 20


def test_every_option_and_positional_has_help() -> None:
    missing = _missing_help(build_parser())
    assert not missing, "arguments without help:\n  " + "\n  ".join(missing)


def test_an_argument_without_help_is_found() -> None:
    p = argparse.ArgumentParser(prog="x")
    sub = p.add_subparsers()
    s = sub.add_parser("cmd", help="a command")
    s.add_argument("--bare")
    s.add_argument("thing", help="has help")
    assert _missing_help(p) == ["privacy-agent cmd: --bare"]
