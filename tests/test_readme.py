"""The README's command blocks run as written.

Every ```` ```sh ```` block of README.md carries a marker comment right above it:
`<!-- readme-test: run (...) -->` or `<!-- readme-test: skip (why) -->`; a block without one fails
this test, so a new example cannot quietly drift out of reach. The blocks marked `run` are run in
order, in one shell (a variable set in one command is seen by the next), in a fresh temporary
directory, with `privacy-agent` from this checkout's .venv first on PATH, the shared data in
`$EPA_SHARED_DIR` and an empty model cache (so `models install` really installs). Each command
must exit 0, or the code its line documents with a trailing `# exits N`.

Skipped today, each with its reason in README.md:
- `scripts/demo` / `scripts/test`: the demo and this test suite themselves.
- the access flow: a requester, two owner devices and a broker on another host, each step on a
  different device, with ids known only once the earlier step ran; `tests/mqtt/test_access_cli.py`
  drives the same flow (request, pending, approve, open, audit pin/verify) against the suite's own
  Mosquitto. Running this block itself there is not done yet.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.lab.shared_data import shared_dir

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

_BLOCK = re.compile(r"(?:<!-- readme-test: (?P<mark>run|skip)\b(?P<why>[^>]*)-->\n)?```sh\n(?P<body>.*?)^```$",
                    re.S | re.M)
_HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")
_EXITS = re.compile(r"#\s*exits\s+(\d+)\s*$")


@dataclass(frozen=True)
class Command:
    text: str
    expected: int


def readme_blocks() -> list[tuple[str | None, str, str]]:
    """(mark, reason, body) of every `sh` block, in README order."""
    return [(m["mark"], (m["why"] or "").strip(" ()"), m["body"]) for m in _BLOCK.finditer(README.read_text())]


def commands(body: str) -> list[Command]:
    """Split a block into commands: `\\` continues a line, a heredoc runs to its terminator."""
    out: list[Command] = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        cmd = [lines[i]]
        while cmd[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd.append(lines[i])
        doc = _HEREDOC.search(cmd[-1])
        if doc:
            while i + 1 < len(lines) and lines[i].strip() != doc.group(1):
                i += 1
                cmd.append(lines[i])
        i += 1
        text = "\n".join(cmd)
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        m = _EXITS.search(cmd[0] if doc else cmd[-1])
        out.append(Command(text, int(m.group(1)) if m else 0))
    return out


def script(cmds: list[Command]) -> str:
    """One shell script: each command, then a check of its exit code that stops at the first miss."""
    parts = []
    for n, c in enumerate(cmds, 1):
        first = c.text.splitlines()[0]
        parts.append(
            f"{c.text}\nrc=$?\nif [ $rc -ne {c.expected} ]; then\n"
            f"  echo 'README command {n} exited '$rc', expected {c.expected}: '{_quote(first)} >&2\n  exit 99\nfi\n"
        )
    return "".join(parts)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def test_every_sh_block_is_marked_run_or_skip_with_a_reason() -> None:
    blocks = readme_blocks()
    assert blocks, "README.md has no ```sh blocks: did the fence change?"
    unmarked = [body.splitlines()[0] for mark, _, body in blocks if mark is None]
    assert not unmarked, f"mark these README blocks <!-- readme-test: run|skip (why) -->: {unmarked}"
    assert all(why for mark, why, _ in blocks if mark == "skip"), "a skipped block must say why"
    assert any(mark == "run" for mark, _, _ in blocks)


def test_command_splitting_keeps_continuations_and_heredocs_whole() -> None:
    body = "a \\\n  --x 1\ncat > f <<EOF\nk: v\n# not a comment here\nEOF\n# a comment\nb  # exits 3\n"
    assert commands(body) == [
        Command("a \\\n  --x 1", 0), Command("cat > f <<EOF\nk: v\n# not a comment here\nEOF", 0), Command("b  # exits 3", 3),
    ]


@pytest.mark.slow  # the walkthrough runs the whole CCTV clip through the pipeline: ~8 s
def test_readme_command_blocks_run_as_written(tmp_path: Path) -> None:
    cmds = [c for mark, _, body in readme_blocks() if mark == "run" for c in commands(body)]
    work = tmp_path / "fresh"
    work.mkdir()
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["EPA_SHARED_DIR"] = str(shared_dir().resolve())
    env["EPA_MODEL_CACHE"] = str(tmp_path / "model-cache")  # empty: the README installs the models itself
    proc = subprocess.run(["bash", "-c", script(cmds)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    # What the walkthrough promises: clips listed from the hub's index, checked and opened by both devices.
    assert "hallway" in proc.stdout and "uploaded to directory:" in proc.stdout
    assert "chain intact" in proc.stdout
    assert (work / "clip.mp4").stat().st_size > 0 and (work / "tab.mp4").stat().st_size > 0
