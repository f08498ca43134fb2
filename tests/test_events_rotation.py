"""events.jsonl is bounded: rotated to .1 .. .K at a size limit, files 0600, no event lost."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from agent.core.datatypes import Event
from agent.core.events import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, EventLog


def ev(i: int, pad: int = 40) -> Event:
    return Event("info", "cam", f"event {i} " + "x" * pad, float(i), {"i": i})


def numbers(p: Path) -> list[int]:
    return [json.loads(line)["details"]["i"] for line in p.read_text().splitlines()]


def all_numbers(path: Path, backups: int) -> list[int]:
    out: list[int] = []
    for k in range(backups, 0, -1):
        older = path.with_name(f"{path.name}.{k}")
        if older.exists():
            out += numbers(older)
    return out + numbers(path)


def test_rotates_at_the_limit_keeps_k_files_and_drops_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=1000, backups=2)
    for i in range(100):
        log(ev(i))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 1000
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        for line in p.read_text().splitlines():
            json.loads(line)  # every line whole
    kept = all_numbers(path, 2)
    # The newest events, in order, without a gap; the oldest were dropped with the oldest file.
    assert kept == list(range(kept[0], 100)) and kept[0] > 0
    assert log.total == 100


def test_an_existing_large_file_is_rotated_at_the_first_write(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(ev(0).to_json()) + "\n" + "{}\n" * 600)
    os.chmod(path, 0o600)
    EventLog(path, max_bytes=1000, backups=3)(ev(1))
    assert numbers(path) == [1]
    assert (tmp_path / "events.jsonl.1").stat().st_size > 1000


def test_a_line_larger_than_the_limit_is_written_alone(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=200, backups=1)
    log(ev(0, pad=10))
    log(ev(1, pad=500))
    log(ev(2, pad=10))
    assert numbers(path) == [2] and numbers(tmp_path / "events.jsonl.1") == [1]


def test_a_crash_between_renames_loses_nothing(tmp_path: Path) -> None:
    """Rotation is renames, oldest first: stopped after any of them, every event is still in
    exactly one file and the next rotation carries on."""
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=400, backups=3)
    for i in range(12):
        log(ev(i))
    before = all_numbers(path, 3)
    # What a crash after `.2 -> .3` and before `.1 -> .2` leaves: a gap at .2.
    (tmp_path / "events.jsonl.2").rename(tmp_path / "events.jsonl.3")
    log2 = EventLog(path, max_bytes=400, backups=3)
    for i in range(12, 16):
        log2(ev(i))
    after = all_numbers(path, 3)
    assert after[-4:] == [12, 13, 14, 15]
    assert set(before) - set(after) <= set(before[:len(before) // 2])  # only the oldest may go


def test_a_failed_rotation_still_writes_the_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=300, backups=2)
    for i in range(3):
        log(ev(i))

    def refuse(src: object, dst: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("agent.core.events.os.replace", refuse)
    for i in range(3, 8):
        log(ev(i))
    assert all_numbers(path, 2)[-5:] == [3, 4, 5, 6, 7]


def test_lost_events_are_still_counted_across_a_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: events that cannot be written are counted, and the first line that gets
    through (here into a freshly rotated file) is preceded by `events_lost`."""
    import agent.core.events as events_mod

    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=400, backups=2)
    for i in range(4):
        log(ev(i))
    real = events_mod.open_private_append

    def full(p: Path):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(events_mod, "open_private_append", full)
    for i in range(4, 7):
        log(ev(i))
    monkeypatch.setattr(events_mod, "open_private_append", real)
    log(ev(7))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lost = [e for e in lines if e["kind"] == "events_lost"]
    assert lost and lost[0]["details"]["count"] == 3 and lines[-1]["details"]["i"] == 7
    assert log.counts["events_lost"] == 1


def test_defaults_bound_the_file() -> None:
    assert DEFAULT_MAX_BYTES * (DEFAULT_BACKUPS + 1) <= 64 << 20
    with pytest.raises(ValueError):
        EventLog(None, max_bytes=0)
