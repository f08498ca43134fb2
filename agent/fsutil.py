"""Small filesystem helpers shared by the key store, the outbox and the uploaders."""

from __future__ import annotations

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
