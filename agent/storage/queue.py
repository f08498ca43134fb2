"""The durable SQLite queue core shared by the clip outbox and the MQTT event outbox.

Both outboxes are a queue whose rows must survive a crash: a row is committed before the work it
stands for is acknowledged to the rest of the agent, and deleted only once its destination has
it. What that takes lives here, once:

- **Opening:** WAL journal (readers never block the writer), a `synchronous` level chosen by the
  caller, the caller's schema plus a small `meta` table, and the file readable by its owner only
  (0600, and so are its `-wal` and `-shm`); the `-wal` is checkpointed every
  `WAL_CHECKPOINT_PAGES` pages and truncated to `WAL_LIMIT_BYTES`, so it stays small on a full disk.
  `FULL` is for rows that stand for a file that must survive power loss (a sealed clip);
  `NORMAL` loses nothing on a process crash (kill -9) and at most the last rows on power loss,
  which the event outbox accepts.
- **Transactions:** `BEGIN IMMEDIATE ... COMMIT` under one lock, so a transaction never waits on
  a reader halfway through. A ROLLBACK is issued only while a transaction is open: a failed
  COMMIT can already have ended it, and a ROLLBACK with no transaction would raise a second error
  that hides the first.
- **Writes that fail:** every write goes through `write()`, which runs the caller's statements
  in one transaction and, when SQLite reports an operational failure (disk full, I/O error,
  busy), rolls back and tries again a few times before it gives up with the last error. A
  transient failure therefore costs nothing; a lasting one reaches the caller, which withholds
  and reports (it never leaves the connection in a transaction, so the next write can succeed
  as soon as space returns).
- **Bookkeeping:** the `meta` key/value table, and the retry delay of a failed delivery.

Every method may raise `sqlite3.Error` (and opening `OSError`); each outbox turns it into its own
typed error with a message that names its file, because only it knows what the row meant.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from agent.fsutil import PRIVATE_FILE_MODE

T = TypeVar("T")

#: Tries of one write before its error reaches the caller, and the pause between them.
WRITE_ATTEMPTS = 3
WRITE_PAUSE_S = 0.05
#: Pages between automatic checkpoints of the `-wal` (SQLite's default: 1000, some 4 MB).
WAL_CHECKPOINT_PAGES = 128
#: Bytes the `-wal` file is truncated to after a checkpoint (SQLite's default: never).
WAL_LIMIT_BYTES = 512 * 1024

_META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);"


class SqliteQueue:
    """One connection to a queue database, safe to share between threads."""

    def __init__(
        self,
        path: Path,
        schema: str,
        *,
        synchronous: Literal["FULL", "NORMAL"],
        timeout_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(path)
        self._sleep = sleep
        # Re-entrant: a caller may read (for example a count) inside its own transaction.
        self.lock = threading.RLock()
        # Created 0600 before SQLite sees it: SQLite gives the `-wal` and `-shm` files it creates the
        # database file's mode, so a database made with the default mode and chmodded afterwards
        # left both of them (a copy of recent rows) 0644.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE))
        self._db = sqlite3.connect(
            str(self.path), timeout=timeout_s, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        # A bounded `-wal`: by default it grows to ~4 MB and never shrinks, space that no eviction
        # on a full disk could ever win back (`agent.storage.space`).
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        self._db.executescript(schema + "\n" + _META_SCHEMA)
        # A database (and its -wal/-shm) that an older version created 0644.
        for p in (self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm"))):
            try:
                if os.stat(p).st_mode & 0o077:
                    os.chmod(p, PRIVATE_FILE_MODE)
            except OSError:
                pass  # best effort (absent, or not ours): the queue's directory is private as well

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE`, the caller's statements, `COMMIT`; rolled back on any failure."""
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def write(self, statements: Callable[[sqlite3.Connection], T]) -> T:
        """Run `statements(db)` in one transaction; retried on an operational failure.

        `statements` may run more than once, so it must only issue SQL (its effects roll back
        with the transaction); anything it does outside the database is the caller's to undo.
        """
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self.transaction() as db:
                    return statements(db)
            except sqlite3.OperationalError:
                if attempt == WRITE_ATTEMPTS:
                    raise
                self._sleep(WRITE_PAUSE_S * attempt)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def execute(self, sql: str, args: Iterable[Any] = ()) -> None:
        """One write statement, with the retries of `write()`."""
        params = tuple(args)
        self.write(lambda db: db.execute(sql, params))

    def rows(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        with self.lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def scalar(self, sql: str, args: Iterable[Any] = ()) -> Any:
        """The first column of the first row, or None when there is no row."""
        with self.lock:
            row = self._db.execute(sql, tuple(args)).fetchone()
        return None if row is None else row[0]

    def meta_get(self, key: str) -> str | None:
        value = self.scalar("SELECT v FROM meta WHERE k=?", (key,))
        return None if value is None else str(value)

    def meta_set(self, key: str, value: str) -> None:
        """Set a bookkeeping value; inside a caller's transaction it commits with it."""
        with self.lock:
            self._db.execute(
                "INSERT INTO meta(k, v) VALUES(?, ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v", (key, value)
            )

    def close(self) -> None:
        with self.lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass  # closing at shutdown; the WAL is consistent either way


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Delay before the next try after `attempts` failures: doubling from `base_s`, capped at `max_s`."""
    return min(max_s, base_s * (2 ** min(max(attempts, 1) - 1, 30)))
