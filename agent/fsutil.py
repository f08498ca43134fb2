"""Small filesystem helpers shared by the key store, outboxes, uploaders, state files and model checks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def fsync_dir(d: Path) -> None:
    """fsync a directory so a rename or create in it survives a power cut.

    Best effort: some filesystems (tmpfs quirks, network mounts) cannot fsync a
    directory; the file itself has been fsynced by the caller.
    """
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so a crash leaves either the old or the new content, never a torn file.

    Writes a sibling temporary file (created with `mode`), fsyncs it, renames it over `path`
    and fsyncs the directory. Raises OSError; callers turn it into their own error.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            h.update(chunk)
    return h.hexdigest()
