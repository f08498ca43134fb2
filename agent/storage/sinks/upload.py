"""Uploaders for sealed clips: a local/NAS directory and S3-compatible object storage.

Invariants:
- The pre-upload gate: every `put` verifies the envelope against *this hub's* public key while it
  reads it, and uploads exactly the bytes it verified (no check-then-reread race). Anything that
  is not a valid envelope signed by this hub raises `EnvelopeError` and is never uploaded.
- Uploads are idempotent: the same object name always carries the same bytes, so a retry after
  a crash overwrites with identical content and never makes a second copy.
- Directory uploads are atomic: a hidden temp file, fsync, rename, fsync of the directory. A
  reader never sees a half-written clip, and a full disk leaves only the temp file, removed.
- A directory proves it is the right one before anything is written: it must exist (the
  uploader never creates it), carry the marker file that `privacy-agent sink init` wrote, and,
  with `require_mount: true`, be a mount point. An unmounted NAS is an empty directory on the
  hub's own disk; writing there would record clips as delivered that never reached the NAS.
- Deletion (`delete`, for retention and the owner's right to delete) is idempotent: a clip
  already gone is fine (False), a destination that cannot say (unmounted NAS, network) is a
  `SinkError`, and the deletion is retried later.
- Failures at the destination (missing directory, full disk, network) are `SinkError`: the
  outbox keeps the clip and retries. Only the clip's own bytes failing verification is an
  `EnvelopeError`, so a destination that fails mid-copy never gets a good clip quarantined.
  Credentials are never logged.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from agent.crypto.envelope import ClipInfo, verify_clip
from agent.crypto.keys import HubPublic, read_secret_file
from agent.errors import SinkError
from agent.fsutil import atomic_write, fsync_dir
from agent.jsonlimits import loads_bounded

log = logging.getLogger(__name__)

#: The file that marks a directory as this product's sink (created by `privacy-agent sink init`).
MARKER_FILE = ".epa-sink"
MARKER_FORMAT = "epa1-sink"

_OBJECT_RE = re.compile(r"^[0-9a-f]{32}/[0-9]{12}-[0-9a-f]{32}\.epaclip$")


def _check_object_name(name: str) -> str:
    # Object names come from our own outbox, but a path is built from them: refuse anything
    # that is not exactly the expected shape (no `..`, no absolute paths).
    if not _OBJECT_RE.match(name):
        raise SinkError(f"refusing unexpected object name {name!r}")
    return name


class _TeeReader:
    """Reads from `src` and copies every byte read to `dst`: the verifier's bytes are the upload.

    A failed write to `dst` (ENOSPC on the NAS, say) is kept, not raised: raised inside the
    verifier it would look like a bad clip. Verification goes on over the source bytes, and the
    uploader then reports the write failure as what it is, a delivery failure.
    """

    def __init__(self, src: BinaryIO, dst: BinaryIO) -> None:
        self._src, self._dst = src, dst
        self.write_error: OSError | None = None

    def read(self, n: int = -1) -> bytes:
        b = self._src.read(n)
        if b and self.write_error is None:
            try:
                self._dst.write(b)
            except OSError as e:
                self.write_error = e
        return b


def gate_bytes(data: bytes, hub: HubPublic) -> ClipInfo:
    """The pre-upload gate on bytes in memory. Raises EnvelopeError."""
    return verify_clip(data, hub)


def _remove_quietly(p: Path) -> None:
    try:
        p.unlink(missing_ok=True)
    except OSError as e:  # the directory itself may be gone or not a directory
        log.debug("cannot remove %s: %s", p, e)


def init_sink_dir(root: Path) -> tuple[Path, bool]:
    """Mark an existing directory as a sink. Returns (marker path, whether it was created now).

    The directory is never created here: an installer who points this at an unmounted NAS
    should see an error, not a marker on the hub's own disk.
    """
    root = Path(root)
    if not root.is_dir():
        raise SinkError(f"{root} is not an existing directory: create it (or mount the NAS) first")
    marker = root / MARKER_FILE
    if marker.is_file():
        check_sink_dir(root, require_mount=False)
        return marker, False
    body = {"format": MARKER_FORMAT, "id": secrets.token_hex(8), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        atomic_write(marker, (json.dumps(body, sort_keys=True) + "\n").encode(), 0o644)
    except OSError as e:
        raise SinkError(f"cannot write the sink marker {marker}: {e.strerror or e}") from e
    return marker, True


def check_sink_dir(root: Path, require_mount: bool) -> None:
    """Raise SinkError unless `root` is a marked sink directory (and a mount point, if required)."""
    root = Path(root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist (is the NAS mounted?)"
        raise SinkError(f"sink directory {root} {what}; clips stay in the outbox")
    if require_mount and not is_mount_point(root):
        raise SinkError(f"sink directory {root} is not a mount point (require_mount: true): the NAS is not "
                        "mounted; clips stay in the outbox")
    marker = root / MARKER_FILE
    try:
        # The marker lives on the NAS, which anyone with access to it can write: bounded parse.
        body = loads_bounded(marker.read_bytes(), max_bytes=4096, max_depth=4, what=f"sink marker {marker}")
    except FileNotFoundError:
        raise SinkError(
            f"sink directory {root} has no {MARKER_FILE} marker: if it is the right directory, run "
            f"`privacy-agent sink init {root}`; if it is an empty mount point, mount the NAS"
        ) from None
    except (OSError, ValueError) as e:
        raise SinkError(f"sink marker {marker} cannot be read: {e}") from None
    if not isinstance(body, dict) or body.get("format") != MARKER_FORMAT:
        raise SinkError(f"sink marker {marker} is not an {MARKER_FORMAT} marker")


def is_mount_point(path: Path) -> bool:
    """Whether something is mounted at `path`, bind mounts included.

    `os.path.ismount` compares device numbers, so it misses a bind mount from the same
    filesystem; the kernel's own mount table does not.
    """
    if os.path.ismount(path):
        return True
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                # Field 5 is the mount point, with spaces and the like escaped as octal (\040).
                if len(fields) > 4 and _unescape_mount(fields[4]) == target:
                    return True
    except OSError:
        return False
    return False


def _unescape_mount(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


class DirectoryUploader:
    """Copy sealed clips into a local or NAS directory, atomically."""

    def __init__(self, root: Path, hub: HubPublic, name: str | None = None, *, require_mount: bool = False) -> None:
        self.root = Path(root)
        self.hub = hub
        self.require_mount = require_mount
        self.name = name or f"directory:{self.root}"

    def present(self, object_names: Sequence[str]) -> set[str] | None:
        """Which delivered clips are still here; None while the directory cannot be checked."""
        try:
            check_sink_dir(self.root, self.require_mount)  # once for the whole batch
        except SinkError:
            return None  # unmounted or unmarked: says nothing about the clips on the NAS
        return {n for n in object_names if (self.root / _check_object_name(n)).is_file()}

    def put(self, object_name: str, path: Path) -> None:
        target = self.root / _check_object_name(object_name)
        # Checked on every upload: a NAS can be unmounted while the hub runs.
        check_sink_dir(self.root, self.require_mount)
        # A fixed temp name per object: a retry after a crash mid-copy truncates and reuses it,
        # so no partial copy is ever left behind at the destination.
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            target.parent.mkdir(exist_ok=True)  # the stream's folder, inside the proven root
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                tee = _TeeReader(src, dst)
                verify_clip(tee, self.hub)  # type: ignore[arg-type]
                if tee.write_error is not None:
                    raise tee.write_error
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, target)
        except OSError as e:
            _remove_quietly(tmp)
            raise SinkError(f"cannot write {target}: {e.strerror or e}") from e
        except BaseException:
            # EnvelopeError (gate refused) or anything else: leave nothing half-written behind.
            _remove_quietly(tmp)
            raise
        fsync_dir(target.parent)

    def delete(self, object_name: str) -> bool:
        """Remove a clip for good: True if it was here, False if it was already gone.

        Idempotent. An unmounted or unmarked directory raises SinkError: an empty mount point
        says nothing about the clips on the NAS, so "already gone" would be a lie there. The
        unlink is made durable (the stream's directory is fsynced) before this returns.
        """
        target = self.root / _check_object_name(object_name)
        check_sink_dir(self.root, self.require_mount)
        _remove_quietly(target.with_name(f".{target.name}.tmp"))  # a copy cut short by a crash
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        except OSError as e:
            raise SinkError(f"cannot delete {target}: {e.strerror or e}") from e
        try:
            fsync_dir(target.parent)
        except OSError as e:
            raise SinkError(f"cannot make the deletion of {target} durable: {e.strerror or e}") from e
        return True


def read_credentials_file(path: Path) -> tuple[str, str]:
    """AWS shared-credentials format, `[default]` section. The file must be 0600."""
    text = read_secret_file(path)
    cp = configparser.ConfigParser()
    try:
        cp.read_string(text)
        sec = cp["default"]
        return sec["aws_access_key_id"].strip(), sec["aws_secret_access_key"].strip()
    except (configparser.Error, KeyError):
        raise SinkError(
            f"credentials file {path} needs aws_access_key_id and aws_secret_access_key under [default]"
        ) from None


def s3_client(*, endpoint: str | None, region: str, access_key_id: str | None, secret_access_key: str | None,
              timeout_s: float, attempts: int = 2) -> Any:
    """The boto3 S3 client every S3 sink and `doctor` use (no keys: boto3's own credential chain)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        # Retries here are short; the outbox owns long-term retry with backoff.
        config=Config(
            connect_timeout=min(timeout_s, 10.0), read_timeout=timeout_s,
            retries={"max_attempts": attempts, "mode": "standard"},
        ),
    )


class S3Uploader:
    """PUT sealed clips to an S3-compatible bucket (boto3)."""

    def __init__(
        self,
        bucket: str,
        hub: HubPublic,
        *,
        endpoint: str | None = None,
        prefix: str = "",
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        name: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.hub = hub
        self.name = name or f"s3:{endpoint or 'aws'}/{bucket}/{prefix}"
        try:
            self._client = s3_client(endpoint=endpoint, region=region, access_key_id=access_key_id,
                                     secret_access_key=secret_access_key, timeout_s=timeout_s)
        except Exception as e:
            raise SinkError(f"cannot set up the S3 client for bucket {bucket!r}: {e}") from e

    def put(self, object_name: str, path: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.prefix + _check_object_name(object_name)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise SinkError(f"cannot read {path} for upload: {e.strerror or e}") from e
        gate_bytes(data, self.hub)  # raises EnvelopeError: never uploaded
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType="application/vnd.epa-clip",
            )
        except (BotoCoreError, ClientError) as e:
            raise SinkError(f"upload of {key} to bucket {self.bucket!r} failed: {e}") from e

    def delete(self, object_name: str) -> bool:
        """DeleteObject: True if the object was there, False if it was already gone. Idempotent.

        S3 answers a DeleteObject of a missing key with success too, so a HEAD first tells the two
        apart (for the report only: the delete is sent either way). A bucket with versioning
        keeps older versions; this deletes the current one (see README, Retention).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.prefix + _check_object_name(object_name)
        try:
            try:
                self._client.head_object(Bucket=self.bucket, Key=key)
                existed = True
            except ClientError as e:
                if str(e.response.get("Error", {}).get("Code")) not in ("404", "NoSuchKey", "NotFound"):
                    raise
                existed = False
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as e:
            raise SinkError(f"deletion of {key} from bucket {self.bucket!r} failed: {e}") from e
        return existed
