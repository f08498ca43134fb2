"""Shared pytest fixtures. Keep each section small and say who uses it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# First, before pytest collects a test module that imports onnxruntime itself (e.g.
# test_detect_centerface.py): importing `agent` forces ORT_DISABLE_TELEMETRY=1, so running the
# tests leaves no ONNX Runtime device id in the developer's HOME either.
import agent  # noqa: F401

# --- generated fixtures with ground truth (agent.lab.fixtures) --------------------
# Used by test_fixtures*.py, test_eval.py, test_canary.py and test_person_leak.py. Scenarios are
# rendered lazily, once per session, at a small size so the suite stays fast.
# Treat the directories as read-only: copy one before changing it, and replay
# into your own tmp_path rather than into the fixture directory.

FIXTURE_SIZE = (320, 240)
FIXTURE_SECONDS = 7.0


@pytest.fixture(scope="session")
def scenario_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`scenario_dir(name)` -> directory of that generated scenario (video/frames, config.yaml, truth.json)."""
    from agent.lab.fixtures import make_scenario
    from agent.lab.scenarios import Params

    root = tmp_path_factory.mktemp("scenarios")
    made: dict[str, Path] = {}
    params = Params(FIXTURE_SIZE[0], FIXTURE_SIZE[1], FIXTURE_SECONDS)

    def get(name: str) -> Path:
        if name not in made:
            made[name] = make_scenario(name, root / name, params)
        return made[name]

    return get


# --- model cache for every test (agent.detect) ---------------------------------
# Detection is on by default, so any test that runs the pipeline needs the real
# models. Install them once per session from ../shared/models (sha256-checked by
# the real installer) and point EPA_MODEL_CACHE at that cache for the whole run,
# subprocesses included. Tests about missing models pass their own empty cache.


@pytest.fixture(scope="session", autouse=True)
def _installed_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    from detect_support import model_cache

    cache = model_cache(tmp_path_factory)
    os.environ["EPA_MODEL_CACHE"] = str(cache)
    return cache


# --- real storage back ends: a moto S3 server and small filesystems -------------------
# `s3_endpoint`: test_upload_s3.py, test_retention.py, test_epochs.py (one server per module, so
# bucket names never meet). `mount`: test_storage_faults.py, test_full_disk.py (root is available
# in CI; tmpfs and bind mounts are real filesystems with real ENOSPC and EROFS).


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from clip_helpers import free_port
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """`mount(path, size_kib=...)` a tmpfs, or `mount(path, bind=src)`; all unmounted afterwards."""
    import subprocess

    done: list[Path] = []

    def do(path: Path, *, size_kib: int | None = None, bind: Path | None = None) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        cmd = (["mount", "--bind", str(bind), str(path)] if bind is not None
               else ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(path)])
        subprocess.run(cmd, check=True, capture_output=True)
        done.append(path)
        return path

    yield do
    for p in reversed(done):
        subprocess.run(["umount", "-l", str(p)], check=False, capture_output=True)


# --- the repository stays clean -----------------------------------------------------
# A command run by a test with a default output path (a receipt, a picture) writes into the
# working directory, which is the repository: such files were once committed by accident. A new
# top-level entry after the session fails the run and names it.

_REPO = Path(__file__).resolve().parent.parent
#: Made by the tools themselves (caches, the venv, the demo's output), never by a test.
_REPO_OWN = {".venv", ".cache", "out", "build", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
             ".grimp_cache", ".import_linter_cache", "edge_privacy_agent.egg-info", "__pycache__"}


def _top_level() -> set[str]:
    return {p.name for p in _REPO.iterdir()}


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_top_key] = _top_level()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_top_key, None)
    if before is None:
        return
    new = sorted(_top_level() - before - _REPO_OWN)
    if new:
        print(f"\nerror: the tests left new files in the repository root: {', '.join(new)} "
              "(give the command an output path under tmp_path, or monkeypatch.chdir(tmp_path))")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_top_key = pytest.StashKey[set[str]]()
