"""Every option and positional of every `privacy-agent` command has a help line.

`--help` is the first thing a newcomer reads; an argument without help shows up there as a bare
name. The whole parser is walked, every sub-parser included, so a new argument without help
fails here with its command and name.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

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


# --- one command, one module -------------------------------------------------------------


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_command_modules_list_exactly_the_commands_each_module_registers() -> None:
    from agent.cli.main import COMMAND_MODULES

    everything = _commands(build_parser())
    assert everything == [c for _, cmds in COMMAND_MODULES for c in cmds]
    for _, cmds in COMMAND_MODULES:
        for c in cmds:
            # Built for one command, the parser has that command's module and nothing else.
            assert _commands(build_parser(c)) == list(cmds)


def test_command_word_finds_the_command_only_where_it_is_one_of_ours() -> None:
    from agent.cli.main import command_word

    assert command_word(["run", "--config", "x.yaml"]) == "run"
    assert command_word(["-v", "-v", "zones", "preview"]) == "zones"
    assert command_word(["--version"]) is None
    assert command_word(["-h"]) is None
    assert command_word([]) is None
    assert command_word(["rnu"]) is None  # a typo: the full parser says what the choices are
    assert command_word(["--", "run"]) is None


def test_run_does_not_load_what_only_other_commands_use() -> None:
    """Nor the homeowner's page (loaded only when `web.enabled`) or doctor's checks (and `ssl`)."""
    import subprocess
    import sys

    code = ("import sys; from agent.cli.main import build_parser; build_parser('run'); "
            "print(sorted(m for m in sys.modules if m.startswith(('agent.lab', 'agent.cli.owner', 'paho', "
            "'agent.web.server', 'agent.web.board', 'agent.cli.doctor', 'http.server', 'ssl'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_typo_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli.main import main

    with pytest.raises(SystemExit):
        main(["rnu"])
    err = capsys.readouterr().err
    assert "invalid choice: 'rnu'" in err and "'fixtures'" in err and "'run'" in err


def test_doctor_built_alone_has_every_check() -> None:
    """`doctor` loads only its own module: a check registered from another command's module at
    import (as the learned-scenes check once was) would silently be missing."""
    import subprocess
    import sys

    code = ("import sys; from agent.cli.main import build_parser; build_parser('doctor'); "
            "from agent.cli.doctor import CHECKS; print(sorted(c.__name__ for c in CHECKS))")
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    code_all = code.replace("build_parser('doctor')", "build_parser()")
    everything = subprocess.run([sys.executable, "-c", code_all], capture_output=True, text=True, check=True).stdout
    assert alone == everything
    assert "check_scenes" in alone
