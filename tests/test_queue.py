"""The shared SQLite queue core under the clip and event outboxes (`agent.storage.queue`)."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from agent.storage.queue import SqliteQueue, backoff_s

SCHEMA = "CREATE TABLE IF NOT EXISTS q (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);"


def test_rows_commit_and_survive_reopening(tmp_path: Path) -> None:
    db = tmp_path / "q.sqlite"
    q = SqliteQueue(db, SCHEMA, synchronous="FULL")
    with q.transaction() as c:
        c.execute("INSERT INTO q(body) VALUES ('a')")
        c.execute("INSERT INTO q(body) VALUES ('b')")
    q.meta_set("stream", "s1")
    q.close()
    q = SqliteQueue(db, SCHEMA, synchronous="NORMAL")
    assert [r[0] for r in q.rows("SELECT body FROM q ORDER BY seq")] == ["a", "b"]
    assert q.meta_get("stream") == "s1" and q.meta_get("missing") is None
    assert q.scalar("SELECT COUNT(*) FROM q") == 2
    assert q.scalar("SELECT body FROM q WHERE seq = 99") is None
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert q.rows("PRAGMA journal_mode")[0][0] == "wal"
    q.close()


def test_a_failed_transaction_rolls_back_and_reports_its_own_error(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "q.sqlite", SCHEMA, synchronous="FULL")
    with pytest.raises(sqlite3.IntegrityError), q.transaction() as c:
        c.execute("INSERT INTO q(body) VALUES ('kept out')")
        q.meta_set("k", "rolled back with the row")
        c.execute("INSERT INTO q(body) VALUES (NULL)")  # NOT NULL: the original error surfaces
    assert q.scalar("SELECT COUNT(*) FROM q") == 0 and q.meta_get("k") is None
    with q.transaction() as c:  # the connection is usable again: no transaction was left open
        c.execute("INSERT INTO q(body) VALUES ('next')")
    assert q.scalar("SELECT COUNT(*) FROM q") == 1


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(n, 2.0, 600.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff_s(40, 2.0, 600.0) == 600.0 and backoff_s(0, 2.0, 600.0) == 2.0
