"""Structural invariants of the code base that keep the privacy guarantees honest."""

from __future__ import annotations

import re
from pathlib import Path

AGENT = Path(__file__).resolve().parents[1] / "agent"


def test_only_redact_mints_redacted_frames() -> None:
    offenders = []
    for f in AGENT.rglob("*.py"):
        if f.name == "redact.py" and f.parent == AGENT / "core":
            continue
        text = f.read_text()
        if "_MINT" in text or re.search(r"RedactedFrame\s*\(", text):
            offenders.append(str(f.relative_to(AGENT)))
    assert not offenders, f"only agent/core/redact.py may build a RedactedFrame: {offenders}"


def test_no_bare_except_and_every_module_has_a_docstring() -> None:
    for f in AGENT.rglob("*.py"):
        text = f.read_text()
        assert not re.search(r"^\s*except\s*:", text, re.M), f"bare except in {f}"
        stripped = text.lstrip()
        assert stripped.startswith('"""') or not stripped, f"{f} has no module docstring"


def test_readme_lists_every_exit_code() -> None:
    from agent.errors import ExitCode

    readme = (AGENT.parent / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", readme, re.M)
    assert [(int(c), n) for c, n in rows] == [(int(e), e.name) for e in ExitCode]
