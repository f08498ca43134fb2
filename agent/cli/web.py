"""The homeowner's page commands: `web passwd` (set the page's password).

The password is read twice from the terminal (not echoed), or once from `--password-file FILE`
(`-`: standard input) for scripts. Only its argon2id hash is stored, in the data dir (0600).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from agent.cli.parsing import command_group
from agent.config import load_config
from agent.errors import ExitCode, WebError
from agent.web.auth import MAX_PASSWORD_BYTES, check_new_password, set_password


def _read_password(args: argparse.Namespace) -> str:
    if args.password_file:
        try:
            raw = sys.stdin.read(MAX_PASSWORD_BYTES + 2) if args.password_file == "-" else \
                Path(args.password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise WebError(f"cannot read the password from {args.password_file}: {e}") from None
        # One line: a trailing newline from `echo` or an editor is not part of the password.
        return raw.splitlines()[0] if raw.splitlines() else ""
    if not sys.stdin.isatty():
        raise WebError("no terminal to ask for the password: use --password-file FILE (or - for stdin)")
    first = getpass.getpass("new password for the homeowner's page: ")
    check_new_password(first)
    if getpass.getpass("the same password again: ") != first:
        raise WebError("the two passwords differ; nothing changed")
    return first


def cmd_web_passwd(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    password = _read_password(args)
    path = set_password(loaded.data_dir, password)
    print(f"password of the homeowner's page set ({path}, argon2id); open sessions stay valid until "
          "they expire or the agent restarts")
    return ExitCode.OK


def register_cli(sub: argparse._SubParsersAction) -> None:
    wsub = command_group(sub, "web", "the homeowner's page on the hub (web: in the config)")
    p = wsub.add_parser("passwd", help="set the password of the homeowner's page",
                        description="Reads the new password twice from the terminal, or once from "
                        "--password-file. Only an argon2id hash is stored, in the data directory (mode 0600).")
    p.add_argument("--config", required=True, help="the hub's config file (YAML)")
    p.add_argument("--password-file", help="read the password from this file (its first line; - for stdin)")
    p.set_defaults(func=cmd_web_passwd)
