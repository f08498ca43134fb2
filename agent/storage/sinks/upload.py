"""Uploaders for sealed clips: a local/NAS directory and S3-compatible object storage.

Invariants:
- The pre-upload gate: every `put` verifies the envelope against *this hub's* public key while it
  reads it, and uploads exactly the bytes it verified (no check-then-reread race). Anything that
  is not a valid envelope signed by this hub raises `EnvelopeError` and is never uploaded.
- Uploads are idempotent: the same object name always carries the same bytes, so a retry after
  a crash overwrites with identical content and never makes a second copy.
- Directory uploads are atomic: a hidden temp file, fsync, rename, fsync of the directory. A
  reader never sees a half-written clip, and a full disk leaves only the temp file, removed.
- Failures are `SinkError` (the outbox keeps the clip and retries). Credentials are never logged.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
from pathlib import Path
from typing import BinaryIO

from agent.crypto.envelope import ClipInfo, verify_clip
from agent.crypto.keys import HubPublic, read_secret_file
from agent.errors import SinkError
from agent.fsutil import fsync_dir

log = logging.getLogger(__name__)

_OBJECT_RE = re.compile(r"^[0-9a-f]{32}/[0-9]{12}-[0-9a-f]{32}\.epaclip$")


def _check_object_name(name: str) -> str:
    # Object names come from our own outbox, but a path is built from them: refuse anything
    # that is not exactly the expected shape (no `..`, no absolute paths).
    if not _OBJECT_RE.match(name):
        raise SinkError(f"refusing unexpected object name {name!r}")
    return name


class _TeeReader:
    """Reads from `src` and copies every byte read to `dst`: the verifier's bytes are the upload."""

    def __init__(self, src: BinaryIO, dst: BinaryIO) -> None:
        self._src, self._dst = src, dst

    def read(self, n: int = -1) -> bytes:
        b = self._src.read(n)
        if b:
            self._dst.write(b)
        return b


def gate_bytes(data: bytes, hub: HubPublic) -> ClipInfo:
    """The pre-upload gate on bytes in memory. Raises EnvelopeError."""
    return verify_clip(data, hub)


def _remove_quietly(p: Path) -> None:
    try:
        p.unlink(missing_ok=True)
    except OSError as e:  # the directory itself may be gone or not a directory
        log.debug("cannot remove %s: %s", p, e)


class DirectoryUploader:
    """Copy sealed clips into a local or NAS directory, atomically."""

    def __init__(self, root: Path, hub: HubPublic, name: str | None = None) -> None:
        self.root = Path(root)
        self.hub = hub
        self.name = name or f"directory:{self.root}"

    def put(self, object_name: str, path: Path) -> None:
        target = self.root / _check_object_name(object_name)
        # A fixed temp name per object: a retry after a crash mid-copy truncates and reuses it,
        # so no partial copy is ever left behind at the destination.
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                verify_clip(_TeeReader(src, dst), self.hub)  # type: ignore[arg-type]
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
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self.hub = hub
        self.name = name or f"s3:{endpoint or 'aws'}/{bucket}/{prefix}"
        try:
            self._client = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                # Retries here are short; the outbox owns long-term retry with backoff.
                config=Config(
                    connect_timeout=min(timeout_s, 10.0), read_timeout=timeout_s,
                    retries={"max_attempts": 2, "mode": "standard"},
                ),
            )
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
