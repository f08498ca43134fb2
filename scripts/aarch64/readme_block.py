"""Prints the README's Raspberry Pi install steps: every `sh` block whose readme-test marker names
scripts/test-aarch64, in README order. That script runs them inside an arm64 root, so the
documented steps are the proven ones; at least one such block must exist."""

from __future__ import annotations

import re
import sys
from pathlib import Path

_BLOCK = re.compile(r"<!-- readme-test: skip \((?P<why>[^>]*)\) -->\n```sh\n(?P<body>.*?)^```$", re.S | re.M)
MARK = "scripts/test-aarch64"


def pi_blocks(readme: str) -> str:
    bodies = [m["body"] for m in _BLOCK.finditer(readme) if MARK in m["why"]]
    if not bodies:
        raise SystemExit(f"readme_block: no sh block of README.md is marked for {MARK}")
    return "".join(bodies)


if __name__ == "__main__":
    sys.stdout.write(pi_blocks(Path(sys.argv[1]).read_text(encoding="utf-8")))
