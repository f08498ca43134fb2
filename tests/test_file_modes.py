"""Local files are private to the agent's user: the data dir and every directory in it 0700, every
file 0600 (SQLite `-wal`/`-shm`, events, state, checkpoints included); an older, looser data dir is
tightened when `run` opens it; `open` writes decrypted video 0600 and never over a file without
`--force`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clip_helpers import device_from, sink_dir
from videokit import walker_frames, write_video

from agent.cli.main import build_parser, main
from agent.crypto.keys import init_hub, write_device_identity
from agent.errors import ExitCode, OutputExists
from agent.fsutil import atomic_write, make_private_dirs, tighten_private_tree
from agent.storage.queue import SqliteQueue

REPO = Path(__file__).resolve().parents[1]
OWNER = device_from(2, "owner")

CONFIG = """\
data_dir: data
detection: {enabled: false}
recipients: [owner.key.pub]
cameras:
  - id: cam
    source: v.mp4
    zones:
      - name: left
        points: [[0.0, 0.0], [0.3, 0.0], [0.3, 1.0], [0.0, 1.0]]
sinks:
  - type: directory
    path: ./nas
    segment_s: 10
"""


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The usual 022: whatever ends up private here was made so by the agent, not by the test."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    """Every directory and file under `root` (and `root` itself), with its permission bits."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            found[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return found


def _loose(modes: dict[str, int], root: Path) -> dict[str, str]:
    return {k: oct(m) for k, m in modes.items()
            if m != (0o700 if (root / k).is_dir() else 0o600)}


def _house(tmp_path: Path) -> Path:
    init_hub(tmp_path / "data")
    write_device_identity(OWNER, tmp_path / "owner.key")
    sink_dir(tmp_path / "nas")
    write_video(tmp_path / "v.mp4", walker_frames(150))  # 15 s at 10 fps: at least one sealed clip
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG, encoding="utf-8")
    return cfg


@pytest.fixture
def house(tmp_path: Path) -> Path:
    return _house(tmp_path)


def test_run_leaves_every_directory_0700_and_every_file_0600(house: Path) -> None:
    assert main(["run", "--config", str(house)]) == 0
    assert main(["mode", "set", "away", "--config", str(house)]) == 0
    data = house.parent / "data"
    modes = _modes(data)
    # The walk saw what matters: the outbox database, events, state, keys, the lock.
    for f in ("outbox/outbox.db", "events.jsonl", "state/mode.json", "keys/hub.key", "keys/hub.pub", "agent.lock"):
        assert f in modes, (f, sorted(modes))
    assert _loose(modes, data) == {}, _loose(modes, data)
    assert list((house.parent / "nas").rglob("*.epaclip"))


def test_sqlite_wal_and_shm_are_0600_while_the_database_is_open(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "q.db", "CREATE TABLE IF NOT EXISTS t (x INTEGER);", synchronous="FULL")
    try:
        q.execute("INSERT INTO t VALUES (1)")
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    finally:
        q.close()
    assert {"q.db", "q.db-wal", "q.db-shm"} <= set(files), files
    assert set(files.values()) == {0o600}, files


def _run_process(cfg: Path) -> None:
    """`privacy-agent run` in a process of its own, as on a hub, under this test's umask 022."""
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(cfg)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_tightens_a_data_dir_an_older_version_left_open(house: Path) -> None:
    # Processes of their own: `run` leaves its clip outboxes (and their hold on the data-dir lock)
    # open until the process exits, so in this process a second run would find the lock held.
    _run_process(house)
    data = house.parent / "data"
    # What an older version left: 0755 directories, 0644 files (also stale -wal/-shm, a state file).
    (data / "state").mkdir(exist_ok=True)
    (data / "state" / "mode.json").write_text('{"mode": "home"}')
    for name in ("outbox.db-wal", "outbox.db-shm"):
        (data / "outbox" / name).touch()
    for dirpath, _dirnames, filenames in os.walk(data):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            if f not in ("hub.key", "hub-box.key"):  # secret keys are refused, not repaired, when loose
                os.chmod(Path(dirpath) / f, 0o644)
    assert _loose(_modes(data), data)
    write_video(house.parent / "v.mp4", walker_frames(20))
    _run_process(house)
    modes = _modes(data)
    assert _loose(modes, data) == {}, _loose(modes, data)


def test_tightening_never_follows_a_symlink_nor_takes_the_owners_bits(tmp_path: Path) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "theirs.txt").write_text("x")
    os.chmod(elsewhere / "theirs.txt", 0o644)
    make_private_dirs(data / "a" / "b")
    assert stat.S_IMODE(data.stat().st_mode) == stat.S_IMODE((data / "a").stat().st_mode) == 0o700
    (data / "link").symlink_to(elsewhere)
    tool = data / "tool.sh"
    tool.write_text("#!/bin/sh\n")
    os.chmod(tool, 0o755)
    os.chmod(data, 0o755)
    assert tighten_private_tree(data) == []
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE(tool.stat().st_mode) == 0o700  # group/other off, the owner's x kept
    assert stat.S_IMODE((elsewhere / "theirs.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755


def test_atomic_write_over_a_stale_loose_temporary_file_stays_private(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    stale = tmp_path / "state.json.tmp"
    stale.write_text("left by a crash")
    os.chmod(stale, 0o666)
    atomic_write(target, b"{}", 0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and not stale.exists()


# --- `open` ------------------------------------------------------------------------------------


def _open_args(house: Path, out: Path, *extra: str) -> list[str]:
    clip = sorted((house.parent / "nas").rglob("*.epaclip"))[0]
    return ["open", str(clip), "--identity", str(house.parent / "owner.key"), "--out", str(out),
            "--hub", str(house.parent / "data"), *extra]


def test_open_writes_0600_and_refuses_to_overwrite_without_force(
        house: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(house)]) == 0
    out, meta = house.parent / "clip.mp4", house.parent / "clip.json"
    # Called without `main` (and so without its umask 077): the command's own modes.
    args = build_parser().parse_args(_open_args(house, out, "--meta", str(meta)))
    assert args.func(args) == ExitCode.OK
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and stat.S_IMODE(meta.stat().st_mode) == 0o600
    video = out.read_bytes()
    assert video
    # An existing output is not replaced: a clear error naming the file, exit ERROR, file untouched.
    out.write_bytes(b"mine")
    os.chmod(out, 0o644)
    capsys.readouterr()
    assert main(_open_args(house, out)) == ExitCode.ERROR
    err = capsys.readouterr().err
    assert f"{out} already exists" in err and "--force" in err and "Traceback" not in err
    assert out.read_bytes() == b"mine" and not (house.parent / "clip.mp4.part").exists()
    # The metadata file is guarded the same way, before anything is decrypted.
    other = house.parent / "other.mp4"
    with pytest.raises(OutputExists, match="clip.json already exists"):
        args = build_parser().parse_args(_open_args(house, other, "--meta", str(meta)))
        args.func(args)
    assert not other.exists()
    # --force replaces it, and the result is 0600 whatever the old file's mode was.
    assert main(_open_args(house, out, "--force")) == ExitCode.OK
    assert out.read_bytes() == video and stat.S_IMODE(out.stat().st_mode) == 0o600
    # A dangling symlink at --out is an existing output as well, not a way to write elsewhere.
    link = house.parent / "link.mp4"
    link.symlink_to(house.parent / "nowhere.mp4")
    assert main(_open_args(house, link)) == ExitCode.ERROR
    assert not (house.parent / "nowhere.mp4").exists()
