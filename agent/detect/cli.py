"""`privacy-agent models list | install [NAME ...] [--from DIR] | verify`.

Thin wrapper over `models.install`; errors are `ModelError`, which the CLI
prints as one line with a non-zero exit code.
"""

from __future__ import annotations

import argparse

from models.install import add_arguments


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list, install and verify detector models",
        description="Detector models live in a cache ($EPA_MODEL_CACHE or ~/.cache/edge-privacy-agent/models) "
        "and are checked against models/MANIFEST.tsv (sha256) on install and on every load.",
    )
    add_arguments(p)
    p.set_defaults(func=lambda args: _help(p))
