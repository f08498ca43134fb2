"""Locate and verify the shared read-only data (`../shared`): photos, videos and models.

The shared folder sits beside the repository (`<repo>/../shared`) or wherever
`EPA_SHARED_DIR` points. Each data kind (`fixtures`, `models`) is a folder with
a tab-separated `MANIFEST.tsv` (header row; columns include `file`,
`size_bytes` and `sha256`).

Invariants:
- Nothing from the shared folder is copied into the repository; callers get a
  path into it.
- `shared_file` hands out a path only after the file's size and sha256 match
  the manifest, so a swapped photo or model cannot silently change what the
  tests or the detectors see. The verification is cached per (path, mtime,
  size); a changed file is hashed again.
- Every failure is a `FixtureError` that names the file and what is wrong.
"""

from __future__ import annotations

import csv
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from agent.errors import FixtureError
from agent.fsutil import sha256_file

ENV_VAR = "EPA_SHARED_DIR"
_KIND_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_REQUIRED = ("file", "size_bytes", "sha256")

# (path, mtime_ns, size) -> sha256 already checked against the manifest.
_verified: dict[tuple[str, int, int], str] = {}
_manifests: dict[tuple[str, int, int], tuple[ManifestEntry, ...]] = {}
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One row of a MANIFEST.tsv. `extra` holds the remaining columns (license, what, source, ...)."""

    file: str
    size_bytes: int
    sha256: str
    extra: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))


def repo_dir() -> Path:
    """The repository root: the parent of the `agent` package directory."""
    return Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """The shared data folder: `$EPA_SHARED_DIR`, else `<repo>/../shared`."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return (repo_dir().parent / "shared").resolve()


def _kind_dir(kind: str) -> Path:
    if not _KIND_RE.match(kind):
        raise FixtureError(f"shared data kind {kind!r} is not a plain folder name (for example 'fixtures')")
    return shared_dir() / kind


def _stat_key(p: Path) -> tuple[str, int, int]:
    st = p.stat()
    return (str(p), st.st_mtime_ns, st.st_size)


def parse_manifest(text: str, where: str) -> tuple[ManifestEntry, ...]:
    """Parse MANIFEST.tsv text. `where` names the file in error messages."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise FixtureError(f"{where} is empty; it needs a header row with {', '.join(_REQUIRED)}")
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = [h.strip() for h in next(reader)]
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise FixtureError(f"{where}: header lacks column(s) {', '.join(missing)}")
    if len(set(header)) != len(header):
        raise FixtureError(f"{where}: header has duplicate column names")
    out: list[ManifestEntry] = []
    seen: set[str] = set()
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise FixtureError(f"{where}:{lineno}: expected {len(header)} tab-separated columns, got {len(row)}")
        rec = dict(zip(header, row, strict=True))
        name = rec["file"].strip()
        if not name or "/" in name or "\\" in name or name in {".", ".."}:
            raise FixtureError(f"{where}:{lineno}: file name {name!r} must be a plain name inside the folder")
        if name in seen:
            raise FixtureError(f"{where}:{lineno}: file {name!r} is listed twice")
        seen.add(name)
        try:
            size = int(rec["size_bytes"])
        except ValueError:
            raise FixtureError(f"{where}:{lineno}: size_bytes {rec['size_bytes']!r} is not an integer") from None
        if size < 0:
            raise FixtureError(f"{where}:{lineno}: size_bytes {size} is negative")
        digest = rec["sha256"].strip().lower()
        if not _HEX64_RE.match(digest):
            raise FixtureError(f"{where}:{lineno}: sha256 {rec['sha256']!r} is not 64 hex digits")
        extra = {k: v for k, v in rec.items() if k not in _REQUIRED}
        out.append(ManifestEntry(name, size, digest, extra))
    return tuple(out)


def manifest(kind: str) -> list[ManifestEntry]:
    """The entries of `<shared>/<kind>/MANIFEST.tsv` (cached until the file changes)."""
    path = _kind_dir(kind) / "MANIFEST.tsv"
    try:
        key = _stat_key(path)
    except FileNotFoundError:
        raise FixtureError(
            f"shared manifest {path} does not exist; set {ENV_VAR} to the shared data folder"
        ) from None
    except OSError as e:
        raise FixtureError(f"cannot read shared manifest {path}: {e}") from None
    with _lock:
        cached = _manifests.get(key)
    if cached is None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise FixtureError(f"cannot read shared manifest {path}: {e}") from None
        cached = parse_manifest(text, str(path))
        with _lock:
            _manifests[key] = cached
    return list(cached)


def manifest_entry(kind: str, name: str) -> ManifestEntry:
    for e in manifest(kind):
        if e.file == name:
            return e
    raise FixtureError(f"{name!r} is not listed in {_kind_dir(kind) / 'MANIFEST.tsv'}")


def shared_file(kind: str, name: str) -> Path:
    """Path of a shared file after checking it against the manifest (size and sha256)."""
    entry = manifest_entry(kind, name)
    path = _kind_dir(kind) / entry.file
    try:
        key = _stat_key(path)
    except FileNotFoundError:
        raise FixtureError(f"shared file {path} is listed in the manifest but missing") from None
    except OSError as e:
        raise FixtureError(f"cannot read shared file {path}: {e}") from None
    with _lock:
        if _verified.get(key) == entry.sha256:
            return path
    if key[2] != entry.size_bytes:
        raise FixtureError(
            f"shared file {path} is {key[2]} bytes but the manifest says {entry.size_bytes}; it is corrupt or replaced"
        )
    try:
        digest = sha256_file(path)
    except OSError as e:
        raise FixtureError(f"cannot read shared file {path}: {e}") from None
    if digest != entry.sha256:
        raise FixtureError(
            f"shared file {path} has sha256 {digest} but the manifest says {entry.sha256}; it is corrupt or replaced"
        )
    with _lock:
        _verified[key] = digest
    return path
