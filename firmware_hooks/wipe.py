"""Wiping a hub's data directory for a factory reset: every file overwritten, then removed.

What is overwritten: every regular file that is not a sealed clip envelope, that is the hub's
identity keys (signing and box), the installed epoch key lists, the access counters, the roster,
the outbox and index databases (with their -wal/-shm), the event outbox, state files, events,
the audit log, previews and anything a plaintext test sink left. Each is overwritten with random
bytes and fsynced before it is unlinked.

What is only unlinked: sealed clip envelopes (files starting with the envelope magic: the outbox's
clips and a directory sink's under the data dir). Their keys are wrapped to the owners' devices
only; the hub never held a key that opens them, and the owners' epoch key shredding makes every
copy unreadable. Overwriting gigabytes of ciphertext would add wear, not privacy.

Overwriting is best effort on flash: an SD card's or an SSD's wear levelling may keep old blocks
the filesystem no longer points at, and no program can reach them. That is why the secrets this
matters for are small (keys, counters) and why what protects the clips is that the hub cannot
open them, not this overwrite.

Symlinks are removed, never followed: nothing outside the data directory is touched.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from agent.crypto.envelope import MAGIC

log = logging.getLogger(__name__)

_BLOCK = 1 << 20


@dataclass
class WipeReport:
    removed: int = 0
    overwritten: int = 0
    overwritten_bytes: int = 0
    failed: list[str] = field(default_factory=list)


def shred(path: Path, report: WipeReport) -> None:
    """Overwrite `path` with random bytes (unless it is a sealed clip), fsync, unlink."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        if os.path.islink(path):
            _unlink(path, report)
            return
        report.failed.append(f"{path}: {e.strerror or e}")
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and os.pread(fd, len(MAGIC), 0) != MAGIC:
            left, offset = st.st_size, 0
            while left > 0:
                n = min(left, _BLOCK)
                os.pwrite(fd, os.urandom(n), offset)
                offset += n
                left -= n
            os.fsync(fd)
            report.overwritten += 1
            report.overwritten_bytes += st.st_size
    except OSError as e:
        report.failed.append(f"{path}: cannot overwrite: {e.strerror or e}")
    finally:
        os.close(fd)
    _unlink(path, report)


def _unlink(path: Path, report: WipeReport) -> None:
    try:
        os.unlink(path)
        report.removed += 1
    except FileNotFoundError:
        pass
    except OSError as e:
        report.failed.append(f"{path}: cannot remove: {e.strerror or e}")


def wipe_tree(root: Path, keep: Collection[Path] = ()) -> WipeReport:
    """Shred every file under `root` and remove every directory below it; `root` itself and the
    files in `keep` stay. Never follows a symlink."""
    report = WipeReport()
    kept = {os.path.abspath(p) for p in keep}
    for dirpath, dirnames, filenames in os.walk(root, topdown=False, followlinks=False):
        for name in filenames:
            p = Path(dirpath) / name
            if os.path.abspath(p) in kept:
                continue
            if p.is_symlink():
                _unlink(p, report)
            else:
                shred(p, report)
        for name in dirnames:
            p = Path(dirpath) / name
            if p.is_symlink():  # a symlink to a directory: os.walk lists it here and does not enter it
                _unlink(p, report)
                continue
            try:
                os.rmdir(p)
            except OSError as e:
                report.failed.append(f"{p}: cannot remove: {e.strerror or e}")
    try:
        dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)  # the removals are durable before the reset says it is done
        finally:
            os.close(dfd)
    except OSError as e:
        log.warning("cannot fsync %s: %s", root, e.strerror or e)
    return report
