"""Key files on disk: the hub's `DATA/keys/`, owner device files and their `.pub` halves.

Secret key files are created 0600 with O_EXCL (never overwritten) and refused on load when
group or other have any permission bit.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from agent.crypto.keys.encoding import (
    DEVICE_PUB_PREFIX,
    DEVICE_SEC_PREFIX,
    HUB_PUB_PREFIX,
    HUB_SEC_PREFIX,
    b64url_decode,
)
from agent.crypto.keys.identity import DeviceIdentity, DevicePublic, HubIdentity, HubPublic
from agent.errors import InvalidKey, KeyFileError
from agent.fsutil import fsync_dir

log = logging.getLogger(__name__)


KEYS_DIRNAME = "keys"


HUB_SECRET_FILE = "hub.key"


HUB_PUBLIC_FILE = "hub.pub"


def _value_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def write_new_file(path: Path, text: str, mode: int) -> None:
    """Create `path` with `mode` (O_EXCL: never overwrite a key), write, fsync."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key file") from None
    except OSError as e:
        raise KeyFileError(f"cannot create {path}: {e.strerror}") from None
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed or (for .pub) we want exactly `mode`
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def read_secret_file(path: Path) -> str:
    """Read a secret key file, refusing one that group or others can access."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    perms = stat.S_IMODE(st.st_mode)
    if perms & 0o077:
        raise KeyFileError(
            f"key file {path} has mode {perms:04o}; secret keys must be 0600 (run: chmod 600 {path})"
        )
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"cannot read key file {path}: {e}") from None


def _single_value(text: str, path: Path | str) -> str:
    vals = _value_lines(text)
    if len(vals) != 1:
        raise KeyFileError(f"key file {path}: expected exactly one key line, found {len(vals)}")
    return vals[0]


def write_device_identity(identity: DeviceIdentity, out: Path) -> Path:
    """Write FILE (0600, secret) and FILE.pub (0644, public). Returns the .pub path."""
    out = Path(out)
    pub_path = out.with_name(out.name + ".pub")
    if pub_path.exists():
        raise KeyFileError(f"{pub_path} already exists; refusing to overwrite a key file")
    name = identity.public.name
    write_new_file(
        out,
        f"# Edge Privacy Agent owner device identity {name!r}, key id {identity.key_id}.\n"
        "# SECRET: it opens clips. Keep it on this device, mode 0600.\n"
        f"{identity.encode_secret()}\n",
        0o600,
    )
    write_new_file(
        pub_path,
        f"# Edge Privacy Agent device public key {name!r}, key id {identity.key_id}.\n"
        f"{identity.public.encode()}\n",
        0o644,
    )
    return pub_path


def load_device_identity(path: str | Path) -> DeviceIdentity:
    p = Path(path)
    value = _single_value(read_secret_file(p), p)
    try:
        return DeviceIdentity.decode_secret(value, f"key file {p}")
    except InvalidKey as e:
        raise KeyFileError(str(e)) from None


def _looks_like_value(s: str, prefix: str) -> bool:
    return s.strip().startswith(prefix)


def load_device_public(path_or_value: str | Path, base_dir: Path | None = None) -> DevicePublic:
    """Accept an encoded `epa1pub:` value or the path of a `.pub` file (relative to `base_dir`)."""
    if isinstance(path_or_value, str) and _looks_like_value(path_or_value, DEVICE_PUB_PREFIX):
        return DevicePublic.decode(path_or_value)
    p = Path(path_or_value).expanduser()
    if base_dir is not None and not p.is_absolute():
        p = base_dir / p
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"public key file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"cannot read public key file {p}: {e}") from None
    value = _single_value(text, p)
    if value.startswith(DEVICE_SEC_PREFIX):
        raise KeyFileError(f"{p} is a secret identity file; give its .pub file instead")
    return DevicePublic.decode(value, f"public key file {p}")


def keys_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / KEYS_DIRNAME


def init_hub(data_dir: str | Path) -> HubIdentity:
    """Create the hub identity under DATA/keys/ (dir 0700, key 0600). Refuses to overwrite."""
    kd = keys_dir(data_dir)
    sec, pub = kd / HUB_SECRET_FILE, kd / HUB_PUBLIC_FILE
    if sec.exists() or pub.exists():
        raise KeyFileError(f"hub identity already exists in {kd}; refusing to replace it")
    try:
        kd.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(kd, 0o700)
    except OSError as e:
        raise KeyFileError(f"cannot create {kd}: {e.strerror}") from None
    hub = HubIdentity.generate()
    write_new_file(
        sec,
        f"# Edge Privacy Agent hub signing key, key id {hub.key_id}. SECRET, mode 0600.\n"
        "# It signs clips; it cannot decrypt them.\n"
        f"{hub.encode_secret()}\n",
        0o600,
    )
    write_new_file(pub, f"# Edge Privacy Agent hub public key, key id {hub.key_id}.\n{hub.public.encode()}\n", 0o644)
    log.info("created hub identity %s in %s", hub.key_id, kd)
    return hub


def load_hub_identity(data_dir: str | Path) -> HubIdentity:
    p = keys_dir(data_dir) / HUB_SECRET_FILE
    if not p.exists():
        raise KeyFileError(f"no hub identity at {p}; run: privacy-agent keys init --data {data_dir}")
    value = _single_value(read_secret_file(p), p)
    if not value.startswith(HUB_SEC_PREFIX):
        raise KeyFileError(f"key file {p}: expected a value starting with {HUB_SEC_PREFIX!r}")
    try:
        return HubIdentity.from_seed(b64url_decode(value[len(HUB_SEC_PREFIX):], f"key file {p}"))
    except InvalidKey as e:
        raise KeyFileError(str(e)) from None


def load_hub_public(path_or_value: str | Path) -> HubPublic:
    """Accept an encoded `epa1hub:` value, a hub.pub file, or a hub data directory."""
    if isinstance(path_or_value, str) and _looks_like_value(path_or_value, HUB_PUB_PREFIX):
        return HubPublic.decode(path_or_value)
    p = Path(path_or_value).expanduser()
    if p.is_dir():
        cand = keys_dir(p) / HUB_PUBLIC_FILE
        p = cand if cand.exists() else p / HUB_PUBLIC_FILE
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"hub public key file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"cannot read hub public key file {p}: {e}") from None
    return HubPublic.decode(_single_value(text, p), f"hub public key file {p}")


def hub_public(data_dir: str | Path) -> HubPublic:
    return load_hub_public(keys_dir(data_dir) / HUB_PUBLIC_FILE)
