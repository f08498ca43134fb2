"""The exclusive lock on a hub's data directory: one process at a time owns the outbox.

`run`, `outbox flush` and `hub serve` hold it for their whole life, and so does every `Outbox`
opened for writing. A second process gets `DataDirBusy`, which names the process that holds the
lock and exits with its own code, instead of deleting the `.part` files the first one is still
writing (recovery deletes unfinished segments, which is only safe when nobody else can be
writing one).

The lock is `flock(2)` on `DATA/agent.lock`: the kernel releases it when the holder exits, also
after kill -9, so a crash never leaves a stale lock behind. flock belongs to an open file, so a
process takes it once per data directory and counts the holders inside itself: the pipeline's
outboxes and the command that started them share it.

Taking the lock is also when a data directory is made private: it is created 0700 and, once
locked, every group and other bit under it is taken off (`agent.fsutil.tighten_private_tree`),
so an installation made by an older version, with a 0755 `outbox/` and 0644 `-wal` files, is
fixed by the next `run`, `outbox flush` or `hub serve`.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from pathlib import Path

from agent.errors import DataDirBusy, SinkError
from agent.fsutil import PRIVATE_FILE_MODE, make_private_dirs, tighten_private_tree

log = logging.getLogger(__name__)

LOCK_FILE = "agent.lock"

_registry_lock = threading.Lock()
# resolved data dir -> (open lock file descriptor, holders in this process)
_held: dict[Path, tuple[int, int]] = {}


def _key(data_dir: Path) -> Path:
    return Path(data_dir).resolve()


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "another process"
    return text or "another process"


def acquire(data_dir: Path, purpose: str) -> None:
    """Take the lock for this process (again, if it holds it already). Raises DataDirBusy."""
    key = _key(data_dir)
    with _registry_lock:
        held = _held.get(key)
        if held is not None:
            _held[key] = (held[0], held[1] + 1)
            return
        try:
            make_private_dirs(key)
            fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
        except OSError as e:
            raise SinkError(f"cannot open the lock file in {key}: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DataDirBusy(
                    f"data directory {key} is in use by {_holder(key / LOCK_FILE)}; "
                    "stop it first, or use another data_dir"
                ) from None
            raise SinkError(f"cannot lock {key / LOCK_FILE}: {e.strerror or e}") from e
        # Who holds it, for the message a second process prints. Best effort: the lock itself
        # is the flock, not this text.
        note = f"pid {os.getpid()} ({purpose}, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note, 0)
        except OSError:
            pass  # a full disk must not stop the owner from running
        _held[key] = (fd, 1)
    _make_private(key)


def _make_private(key: Path) -> None:
    # After the flock: only the one owner of the data dir walks it. Best effort: an entry another
    # user owns cannot be changed by us, and is no reason to stop protecting the cameras.
    failed = tighten_private_tree(key)
    if failed:
        shown = ", ".join(str(p) for p in failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
        log.warning("cannot make %s private to this user (group or others keep access to %s); "
                    "fix the owner or run: chmod -R go-rwx %s", key, shown, key)


def release(data_dir: Path) -> None:
    """Give back one hold; the last one unlocks."""
    key = _key(data_dir)
    with _registry_lock:
        held = _held.get(key)
        if held is None:
            return
        fd, n = held
        if n > 1:
            _held[key] = (fd, n - 1)
            return
        del _held[key]
        os.close(fd)  # closing the only descriptor releases the flock


def held(data_dir: Path) -> bool:
    """Whether this process holds the lock on `data_dir`."""
    with _registry_lock:
        return _key(data_dir) in _held


class DataDirLock:
    """`with DataDirLock(data_dir, "run"):` holds the lock for the block."""

    def __init__(self, data_dir: Path, purpose: str) -> None:
        self.data_dir = Path(data_dir)
        self.purpose = purpose

    def __enter__(self) -> DataDirLock:
        acquire(self.data_dir, self.purpose)
        return self

    def __exit__(self, *exc: object) -> None:
        release(self.data_dir)
