"""Small filesystem helpers shared by the key store, outboxes, uploaders, state files and model checks.

Everything the agent keeps locally is private to the user it runs as: the data directory and every
directory under it are 0700, every file in it 0600 (keys, clips, the SQLite databases with their
`-wal`/`-shm` files, events, state, audit, checkpoints), and so are the pictures and clips it writes
for the homeowner. Three layers hold that, each enough on its own for what it covers:
- the entry points run commands under `private_umask()`, so nothing is created group- or
  world-readable by accident (a library's default mode, a file a later change forgets);
- the helpers here create with explicit modes (`atomic_write`, `make_private_dirs`,
  `open_private_append`, `create_private`, `write_private`);
- `tighten_private_tree` takes group and other bits off a data directory made by an older
  version (or loosened by hand) when a command opens it for writing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TextIO

#: Directories of the data dir, and directories the agent creates for its own output.
PRIVATE_DIR_MODE = 0o700
#: Every file in the data dir, and every picture or decrypted clip the agent writes.
PRIVATE_FILE_MODE = 0o600
#: The process umask of every entry point: no group or other bit on anything created.
PRIVATE_UMASK = 0o077


@contextmanager
def private_umask() -> Iterator[None]:
    """Run the block with umask 077, restoring the previous umask after it.

    The entry points (`privacy-agent`, the firmware hooks) wrap the whole command in this: the
    process only ever writes frames of a home, clips, keys and their state, so nothing it creates
    should be readable by another user, whatever mode a library or a forgotten `open()` asks for.
    Restoring it afterwards keeps in-process callers (tests) unaffected.
    """
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def make_private_dirs(d: Path) -> None:
    """`mkdir -p d` where every directory it creates is 0700.

    `Path.mkdir(parents=True, mode=...)` gives the parents the umask's mode, not `mode`: a new
    `DATA/outbox/clips` left `DATA/outbox` (and `DATA` itself) 0755. Directories that exist already
    are left as they are (they may be the homeowner's, such as `--out-dir .`); see
    `tighten_private_tree` for the data directory. Raises OSError.
    """
    make_dirs(d, PRIVATE_DIR_MODE)


def make_dirs(d: Path, mode: int) -> None:
    """`mkdir -p d` giving exactly `mode` to every directory it creates (whatever the umask)."""
    d = Path(d)
    if d.is_dir():
        return
    if d.parent != d:
        make_dirs(d.parent, mode)
    try:
        os.mkdir(d, mode)
    except FileExistsError:
        if d.is_dir():
            return  # created meanwhile by another thread or process
        raise
    # Exactly `mode`: under the entry points' umask 077 a public 0755 would come out 0700, and a
    # stricter umask (0277) would leave a private directory unwritable.
    os.chmod(d, mode)


def open_private_append(path: Path) -> TextIO:
    """Open `path` for appending text, creating it 0600 (never with the umask's default mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def create_private(path: Path) -> BinaryIO:
    """Create `path` for writing, 0600, failing with FileExistsError if it exists (O_EXCL)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def install_file(tmp: Path, dest: Path, *, replace: bool) -> None:
    """Move the finished file `tmp` to `dest` (same directory), then fsync the directory.

    With `replace=False` an existing `dest` is never replaced, also one that appeared meanwhile:
    a hard link fails with FileExistsError where a rename would silently replace. A filesystem
    without hard links (FAT on a USB stick) falls back to a check, then the rename.
    """
    if replace:
        os.replace(tmp, dest)
    else:
        try:
            os.link(tmp, dest, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:
            if os.path.lexists(dest):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dest)) from None
            os.replace(tmp, dest)
        else:
            os.unlink(tmp)
    fsync_dir(dest.parent)


def write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Write `data` to `path` 0600 through `PATH.part` (never a torn file); see `install_file` for
    `replace=False`. Raises OSError (FileExistsError for an existing `path`)."""
    tmp = path.with_name(path.name + ".part")
    tmp.unlink(missing_ok=True)  # a leftover of a crash: its mode is not ours to trust
    try:
        with create_private(tmp) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        install_file(tmp, path, replace=replace)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def tighten_private_tree(root: Path) -> list[Path]:
    """Take every group and other permission bit off `root` and everything under it.

    For a data directory made by an older version, which created `DATA/outbox`, `DATA/state`,
    `events.jsonl`, the `-wal`/`-shm` files and checkpoints group- and world-readable: after this
    the agent's directories are 0700 and its files 0600. Only `& ~0o077`, never more: the owner's
    own bits stay as they are, so a data dir that also holds something else is not broken.
    Directories are fixed before they are entered, so nobody else can add an entry meanwhile.
    Symlinks under `root` are neither followed nor changed; entries of another user are left (and
    returned).

    Returns the paths it could not fix (best effort: the caller logs them; a data dir it cannot
    tighten is still private when `root` itself is).
    """
    failed: list[Path] = []
    uid = os.geteuid()

    def fix(p: Path, st: os.stat_result) -> bool:
        mode = stat.S_IMODE(st.st_mode)
        if not mode & 0o077:
            return True
        if st.st_uid != uid:
            failed.append(p)
            return False
        try:
            os.chmod(p, mode & ~0o077)
        except OSError:
            failed.append(p)
            return False
        return True

    def walk(d: Path) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            failed.append(d)
            return
        for e in entries:
            p = Path(e.path)
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                failed.append(p)
                continue
            if stat.S_ISDIR(st.st_mode):
                if fix(p, st):
                    walk(p)
            elif stat.S_ISREG(st.st_mode):
                fix(p, st)

    try:
        st = os.stat(root)  # `root` itself may be a symlink to the disk that holds the data
    except FileNotFoundError:
        return failed
    except OSError:
        return [Path(root)]
    if stat.S_ISDIR(st.st_mode) and fix(Path(root), st):
        walk(Path(root))
    return failed


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

    Writes a sibling temporary file (created with `mode`, narrowed by the umask as usual), fsyncs
    it, renames it over `path` and fsyncs the directory. The result is never more open than `mode`,
    also when a crash left an older, looser temporary file behind. Raises OSError; callers turn it
    into their own error.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        # O_CREAT keeps the mode of a file that exists: a stale 0644 `.tmp` would become `path`.
        have = stat.S_IMODE(os.fstat(fd).st_mode)
        if have & ~mode:
            os.fchmod(fd, have & mode)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
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
