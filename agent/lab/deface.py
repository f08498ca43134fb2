"""The `deface` CLI as a baseline: find it, check it, run it on a photo or a clip.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from agent.errors import FixtureError
from agent.lab.shared_data import repo_dir

DEFACE_ENV = "EPA_DEFACE"


def default_deface_bin() -> Path:
    """`$EPA_DEFACE`, else `<repo>/.cache/deface-venv/bin/deface` (see bench/bench_pipeline.py)."""
    env = os.environ.get(DEFACE_ENV)
    return Path(env) if env else repo_dir() / ".cache" / "deface-venv" / "bin" / "deface"


def check_deface(binary: Path) -> Path:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise FixtureError(
            f"deface CLI {binary} not found; install it in its own venv (it pulls opencv-python, which clashes "
            f"with our headless OpenCV): python3 -m venv .cache/deface-venv && .cache/deface-venv/bin/pip "
            f"install deface  (or run bench/bench_pipeline.py, which does that)"
        )
    return binary


def run_deface(binary: Path, src: Path, dst: Path, timeout_s: float = 3600.0) -> float:
    """Run `deface SRC -o DST` with default settings. Returns wall seconds."""
    check_deface(binary)
    t0 = time.perf_counter()
    try:
        r = subprocess.run([str(binary), str(src), "-o", str(dst)], capture_output=True, text=True,
                           timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FixtureError(f"deface on {src} failed: {e}") from None
    el = time.perf_counter() - t0
    if r.returncode != 0 or not dst.exists():
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise FixtureError(f"deface on {src} exited {r.returncode} without writing {dst}: {' | '.join(tail)}")
    return el
