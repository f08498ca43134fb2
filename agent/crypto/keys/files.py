"""Key files on disk: the hub's `DATA/keys/`, owner device files and their `.pub` halves.

Secret key files are created 0600 with O_EXCL (never overwritten) and refused on load when
group or other have any permission bit.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from nacl.public import PrivateKey

from agent.crypto.keys.encoding import (
    DEVICE_PUB_PREFIX,
    DEVICE_SEC_PREFIX,
    HUB_BOX_PREFIX,
    HUB_PUB_PREFIX,
    HUB_SEC_PREFIX,
    b64url_decode,
)
from agent.crypto.keys.identity import DeviceIdentity, DevicePublic, HubIdentity, HubPublic
from agent.errors import InvalidKey, KeyFileError
from agent.fsutil import fsync_dir, make_private_dirs

log = logging.getLogger(__name__)


KEYS_DIRNAME = "keys"


HUB_SECRET_FILE = "hub.key"


HUB_PUBLIC_FILE = "hub.pub"


#: The hub's X25519 box secret (key release only; see HubIdentity).
HUB_BOX_FILE = "hub-box.key"


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


def read_secret_file(path: Path, max_bytes: int | None = None) -> str:
    """Read a secret key file (a key file, an epoch key store), refusing one that group or others
    can access, or (with `max_bytes`) one too large to be what it claims."""
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
    if max_bytes is not None and st.st_size > max_bytes:
        raise KeyFileError(f"key file {path} is larger than {max_bytes} bytes; it is damaged")
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
    """An owner or requester device identity file (0600). A public key, a key value or another
    kind of secret given instead is named as such (secret values never shown)."""
    if isinstance(path, str) and (kind := _key_kind(path)) is not None:
        if kind[2]:
            raise KeyFileError(f"{_shown(kind)} value was given where the path of a device identity file "
                               "is expected; give the file (the value is not shown here, and a secret on "
                               "the command line ends up in the shell history)")
        raise KeyFileError(f"this is {_shown(kind)} ({kind[0]}...), not a secret identity: give the secret "
                           "identity file written by `owner keygen` (the one without .pub)")
    p = Path(path)
    held = _public_kind_in(p)
    if held is not None:
        # Before the permission check: a .pub file is 0644 on purpose, and "chmod 600" would be
        # the wrong advice.
        raise KeyFileError(f"{p} is {_shown(held)} ({held[0]}...), not a secret identity: give the "
                           "secret identity file written by `owner keygen` (the one without .pub)")
    value = _single_value(read_secret_file(p), p)
    kind = _key_kind(value)
    if kind is not None and kind[0] != DEVICE_SEC_PREFIX:
        raise KeyFileError(f"key file {p} holds {_shown(kind)}, not a device identity: give the identity "
                           "file written by `owner keygen`")
    try:
        return DeviceIdentity.decode_secret(value, f"key file {p}")
    except InvalidKey as e:
        raise KeyFileError(str(e)) from None


def _looks_like_value(s: str, prefix: str) -> bool:
    return s.strip().startswith(prefix)


# Every kind of key value, by prefix: (prefix, what it is, secret?). Used to say what was given
# where another kind was expected. A message names a secret kind by its prefix only, never the
# value. No prefix is a prefix of another, so the order does not matter.
_KEY_KINDS: tuple[tuple[str, str, bool], ...] = (
    (DEVICE_PUB_PREFIX, "a device public key", False),
    (HUB_PUB_PREFIX, "a hub public key", False),
    (DEVICE_SEC_PREFIX, "a secret device identity", True),
    (HUB_SEC_PREFIX, "the hub's secret signing key", True),
    (HUB_BOX_PREFIX, "the hub's secret box key", True),
)


def _key_kind(value: str) -> tuple[str, str, bool] | None:
    v = value.strip()
    return next((k for k in _KEY_KINDS if v.startswith(k[0])), None)


def _shown(kind: tuple[str, str, bool]) -> str:
    return f"{kind[1]} ({kind[0]}...)" if kind[2] else kind[1]


def _public_kind_in(p: Path) -> tuple[str, str, bool] | None:
    """The kind of public key a small file holds, if it holds exactly one; None otherwise (the
    caller's own reading then reports what is wrong)."""
    try:
        if not p.is_file() or p.stat().st_size > 64 * 1024:
            return None
        vals = _value_lines(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    kind = _key_kind(vals[0]) if len(vals) == 1 else None
    return kind if kind is not None and not kind[2] else None


def _refuse_secret_value(value: str, expected: str) -> None:
    """A secret key value given where a public key (value or file) is expected: refuse it
    without echoing it (not even as a file name in a later "does not exist")."""
    kind = _key_kind(value)
    if kind is not None and kind[2]:
        raise KeyFileError(f"{_shown(kind)} value was given where {expected} is expected; give the "
                           "public key (the secret is not shown here; keep it off the command line)")


def load_device_public(path_or_value: str | Path, base_dir: Path | None = None) -> DevicePublic:
    """Accept an encoded `epa1pub:` value or the path of a `.pub` file (relative to `base_dir`)."""
    if isinstance(path_or_value, str):
        _refuse_secret_value(path_or_value, f"a device public key ({DEVICE_PUB_PREFIX}...)")
        if _looks_like_value(path_or_value, DEVICE_PUB_PREFIX):
            return DevicePublic.decode(path_or_value)
        if _looks_like_value(path_or_value, HUB_PUB_PREFIX):
            raise KeyFileError(f"this is a hub public key ({HUB_PUB_PREFIX}...), not a device public key "
                               f"({DEVICE_PUB_PREFIX}...): give the device's .pub file or its value")
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
    kind = _key_kind(value)
    if kind is not None and kind[2]:
        raise KeyFileError(f"{p} is a secret identity file, not a public key: it holds {_shown(kind)}; "
                           "give its .pub file instead")
    if kind is not None and kind[0] == HUB_PUB_PREFIX:
        raise KeyFileError(f"{p} holds a hub public key, not a device public key ({DEVICE_PUB_PREFIX}...)")
    return DevicePublic.decode(value, f"public key file {p}")


def keys_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / KEYS_DIRNAME


def init_hub(data_dir: str | Path) -> HubIdentity:
    """Create the hub identity under DATA/keys/ (dir 0700, every file 0600). Refuses to overwrite."""
    kd = keys_dir(data_dir)
    sec, pub = kd / HUB_SECRET_FILE, kd / HUB_PUBLIC_FILE
    if sec.exists() or pub.exists():
        raise KeyFileError(f"hub identity already exists in {kd}; refusing to replace it")
    try:
        make_private_dirs(kd)  # DATA as well, when `keys init` is the first to create it
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
    _write_box(kd / HUB_BOX_FILE, hub)
    # 0600 like everything in the data dir (which nobody else can enter anyway); the key is public,
    # so copy it out (`--hub`) to give it to an owner device.
    write_new_file(pub, f"# Edge Privacy Agent hub public key, key id {hub.key_id}.\n{hub.public.encode()}\n", 0o600)
    log.info("created hub identity %s in %s", hub.key_id, kd)
    return hub


def _write_box(path: Path, hub: HubIdentity) -> None:
    write_new_file(
        path,
        f"# Edge Privacy Agent hub box key, hub {hub.key_id}. SECRET, mode 0600.\n"
        "# It opens only the outer seal of released keys; what it opens is sealed to the requester.\n"
        f"{hub.encode_box_secret()}\n",
        0o600,
    )


def _load_box(kd: Path, hub: HubIdentity) -> HubIdentity:
    """The box key beside the signing key. A hub set up before key release had none: it gets one
    now (O_EXCL, so two processes starting at once cannot end up with two different keys)."""
    p = kd / HUB_BOX_FILE
    if not p.exists():
        fresh = hub.with_box(PrivateKey.generate())
        try:
            _write_box(p, fresh)
            log.info("created the hub box key in %s", p)
            return fresh
        except KeyFileError:
            if not p.exists():
                raise
    value = _single_value(read_secret_file(p), p)
    if not value.startswith(HUB_BOX_PREFIX):
        raise KeyFileError(f"key file {p}: expected a value starting with {HUB_BOX_PREFIX!r}")
    raw = b64url_decode(value[len(HUB_BOX_PREFIX):], f"key file {p}")
    if len(raw) != 32:
        raise KeyFileError(f"key file {p}: the box secret must be 32 bytes")
    try:
        return hub.with_box(PrivateKey(raw))
    except InvalidKey as e:
        raise KeyFileError(f"key file {p}: {e}") from None


def load_hub_identity(data_dir: str | Path) -> HubIdentity:
    p = keys_dir(data_dir) / HUB_SECRET_FILE
    if not p.exists():
        raise KeyFileError(f"no hub identity at {p}; run: privacy-agent keys init --data {data_dir}")
    value = _single_value(read_secret_file(p), p)
    if not value.startswith(HUB_SEC_PREFIX):
        raise KeyFileError(f"key file {p}: expected a value starting with {HUB_SEC_PREFIX!r}")
    try:
        hub = HubIdentity.from_seed(b64url_decode(value[len(HUB_SEC_PREFIX):], f"key file {p}"))
    except InvalidKey as e:
        raise KeyFileError(str(e)) from None
    return _load_box(p.parent, hub)


def load_hub_public(path_or_value: str | Path) -> HubPublic:
    """Accept an encoded `epa1hub:` value, a hub.pub file, or a hub data directory."""
    if isinstance(path_or_value, str):
        _refuse_secret_value(path_or_value, f"the hub public key ({HUB_PUB_PREFIX}...)")
        if _looks_like_value(path_or_value, HUB_PUB_PREFIX):
            return HubPublic.decode(path_or_value)
        if _looks_like_value(path_or_value, DEVICE_PUB_PREFIX):
            raise KeyFileError(f"this is a device public key ({DEVICE_PUB_PREFIX}...), not the hub's "
                               f"({HUB_PUB_PREFIX}...): give hub.pub, its value or the hub's data directory")
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
    value = _single_value(text, p)
    kind = _key_kind(value)
    if kind is not None and kind[2]:
        raise KeyFileError(f"{p} is a secret key file, not the hub public key: it holds {_shown(kind)}; "
                           f"give {HUB_PUBLIC_FILE}, its {HUB_PUB_PREFIX} value or the hub's data directory")
    if kind is not None and kind[0] == DEVICE_PUB_PREFIX:
        raise KeyFileError(f"{p} holds a device public key, not the hub's ({HUB_PUB_PREFIX}...): give "
                           f"{HUB_PUBLIC_FILE}, its value or the hub's data directory")
    return HubPublic.decode(value, f"hub public key file {p}")


def hub_public(data_dir: str | Path) -> HubPublic:
    return load_hub_public(keys_dir(data_dir) / HUB_PUBLIC_FILE)
