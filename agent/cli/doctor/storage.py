"""Doctor checks of where clips go: the data dir and each directory sink (there, a directory,
writable by a real write, marked, mounted when it is a NAS, free space), each S3 sink
(credentials present, the bucket answers with them) and plaintext sinks.

A NAS that is not mounted is an empty directory on the hub's own disk, or no directory at all:
both are failures with the fix, never `ok` because a parent directory happens to be writable.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from agent.cli.doctor.result import CheckResult
from agent.config import DirectorySinkConfig, LoadedConfig, S3SinkConfig
from agent.errors import AgentError, SinkError
from agent.storage.sinks.factory import plaintext_sinks

#: Seconds the S3 check waits for an endpoint (the sinks themselves wait longer).
S3_TIMEOUT_S = 5.0

#: Where NAS shares are mounted by convention: a sink here that is not a mount point is suspect.
_NAS_ROOTS = ("/mnt/", "/media/", "/srv/", "/net/", "/nfs/")

_LOW_SPACE = 1 << 30


def _write_probe(d: Path) -> str | None:
    """None if a file can really be created, written and removed in `d`, else why not."""
    try:
        with tempfile.NamedTemporaryFile(dir=d, prefix=".epa-doctor-", delete=True) as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e.strerror or str(e)
    return None


def _space(name: str, d: Path) -> CheckResult:
    free = shutil.disk_usage(d).free
    st = "ok" if free > _LOW_SPACE else "warn"
    return CheckResult(f"{name} space", st, f"{d}: {free / (1 << 30):.1f} GiB free",
                       "" if st == "ok" else "free space or point it at a larger disk")


def _check_data_dir(d: Path) -> list[CheckResult]:
    # `run` creates the data dir (0700): a missing one is fine when its parent lets it.
    probe = d if d.exists() else next((p for p in d.parents if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK):
        return [CheckResult("data_dir writable", "fail", f"{d} is not writable",
                            f"create it and give the agent's user write access: {d}")]
    return [_space("data_dir", probe)]


def _check_directory_sink(name: str, root: Path, s: DirectorySinkConfig) -> list[CheckResult]:
    from agent.storage.sinks.upload import check_sink_dir, is_mount_point

    nas = s.require_mount or str(root).startswith(_NAS_ROOTS)
    fix_missing = (f"mount the NAS at {root}, then privacy-agent sink init {root}" if nas and not s.plaintext
                   else f"create it (mkdir -p {root}) and give the agent's user write access")
    if s.plaintext and not root.exists():
        # The plaintext sink makes its own directory; what matters is that it can.
        parent = next((p for p in root.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            return [CheckResult(f"{name} path", "ok", f"{root} will be created in {parent}")]
        return [CheckResult(f"{name} path", "fail", f"{root} does not exist and {parent} is not writable", fix_missing)]
    if not root.exists():
        return [CheckResult(f"{name} path", "fail", f"{root} does not exist", fix_missing)]
    if not root.is_dir():
        return [CheckResult(f"{name} path", "fail", f"{root} is not a directory",
                            f"point `sinks[].path` at a directory, or remove the file {root}")]
    out = []
    mounted = is_mount_point(root)
    if s.require_mount and not mounted:
        out.append(CheckResult(f"{name} mount", "fail", f"{root} is not a mount point (require_mount: true): "
                               "the NAS is not mounted", f"mount the NAS at {root} (see /etc/fstab), then run "
                               "doctor again"))
    elif nas and not mounted:
        out.append(CheckResult(f"{name} mount", "warn", f"{root} is not a mount point: if it is a NAS, it is not "
                               "mounted and clips land on the hub's own disk",
                               f"mount the NAS at {root} and set `require_mount: true` on this sink"))
    elif mounted:
        out.append(CheckResult(f"{name} mount", "ok", f"{root} is a mount point"))
    why = _write_probe(root)
    if why is not None:
        out.append(CheckResult(f"{name} writable", "fail", f"cannot create a file in {root}: {why}",
                               f"give the agent's user write access to {root} (on a NAS: the share's "
                               "permissions or mount options)"))
        return out
    out.append(CheckResult(f"{name} writable", "ok", f"{root}: a test file was written and removed"))
    if not s.plaintext:
        try:
            check_sink_dir(root, s.require_mount)
            out.append(CheckResult(f"{name} marker", "ok", f"{root} is a marked sink directory"))
        except SinkError as e:
            out.append(CheckResult(f"{name} marker", "fail", str(e),
                                   f"if {root} is the right directory (the NAS mounted), run "
                                   f"`privacy-agent sink init {root}` once"))
    out.append(_space(name, root))
    return out


def check_storage(loaded: LoadedConfig | None) -> list[CheckResult]:
    if loaded is None:
        return []
    out = _check_data_dir(loaded.data_dir)
    for i, s in enumerate(loaded.config.sinks):
        if isinstance(s, DirectorySinkConfig):
            out += _check_directory_sink(f"sinks[{i}]", loaded.resolve(s.path), s)
        elif isinstance(s, S3SinkConfig):
            out += check_s3_sink(loaded, f"sinks[{i}]", s)
    for p in plaintext_sinks(loaded):
        out.append(CheckResult("plaintext sink", "warn", f"{p} writes unencrypted video",
                               "remove `plaintext: true` outside of testing"))
    if not loaded.config.sinks:
        out.append(CheckResult("sinks", "warn", "no sinks: redacted output is discarded",
                               "add a `sinks:` entry (directory or s3)"))
    return out


def check_s3_sink(loaded: LoadedConfig, name: str, s: S3SinkConfig,
                  timeout_s: float = S3_TIMEOUT_S) -> list[CheckResult]:
    """Credentials present (config, credentials file or boto3's chain), then a HEAD of the bucket
    through the client the sink itself uses."""
    import boto3.session
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    from agent.storage.sinks.clips import s3_keys
    from agent.storage.sinks.upload import s3_client

    where = f"bucket {s.bucket!r} at {s.endpoint or 'AWS S3 (' + s.region + ')'}"
    fix_keys = ("put the keys in `credentials_file` (mode 0600, [default] aws_access_key_id / "
                "aws_secret_access_key)")
    try:
        key_id, secret = s3_keys(loaded, s)
    except AgentError as e:
        return [CheckResult(f"{name} credentials", "fail", str(e), fix_keys)]
    if key_id is None and boto3.session.Session(region_name=s.region).get_credentials() is None:
        # The chain the sink's client falls back to (environment, ~/.aws) has nothing either.
        return [CheckResult(f"{name} credentials", "fail", f"no S3 credentials for {where}: none in the config, "
                            "no credentials_file, none in the environment or ~/.aws", fix_keys)]
    try:
        client = s3_client(endpoint=s.endpoint, region=s.region, access_key_id=key_id,
                           secret_access_key=secret, timeout_s=timeout_s, attempts=1)
        client.head_bucket(Bucket=s.bucket)
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("403", "Forbidden", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return [CheckResult(f"{name} bucket", "fail", f"{where} refused the credentials ({code})",
                                "check the access key id and secret in the credentials file, and that the key "
                                f"may list and write {s.bucket!r}")]
        if code in ("404", "NoSuchBucket", "NotFound"):
            return [CheckResult(f"{name} bucket", "fail", f"{where} does not exist",
                                f"create the bucket {s.bucket!r} (the agent never creates buckets), or fix "
                                "`bucket:` / `endpoint:`")]
        return [CheckResult(f"{name} bucket", "fail", f"{where} answered {code or e}",
                            "check `endpoint:`, `region:` and `bucket:` in the sink")]
    except EndpointConnectionError as e:
        return [CheckResult(f"{name} bucket", "fail", f"cannot reach {where}: {e}",
                            "check `endpoint:` (scheme, host, port) and the hub's network", unreachable=True)]
    except (BotoCoreError, ValueError) as e:
        return [CheckResult(f"{name} bucket", "fail", f"{where}: {e}",
                            "check `endpoint:` (scheme, host, port) and the hub's network")]
    return [CheckResult(f"{name} credentials", "ok", "from " + ("credentials_file" if s.credentials_file else
                                                                "the config" if key_id else "the environment")),
            CheckResult(f"{name} bucket", "ok", f"{where} answers")]
