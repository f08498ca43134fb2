"""The hub's installed epoch key lists: `DATA/keys/epochs/<device key id>.json` (0600, atomic).

A household device publishes its signed list of public epoch keys (`agent.crypto.keys.epochs`);
the hub installs it here, from the CLI (`keys epochs install`) or from MQTT (`P/epochs/<device>`),
and wraps each clip key to the key of the clip's epoch.

Invariants:
- Nothing is installed unless `EpochList.decode` verified it against the installed roster (signed
  by a listed, non-revoked household device, for this hub) and `check_epoch_update` allows it
  over the installed list of that device (no rollback, no epoch whose key changes). A refusal
  leaves the installed list as it was.
- The file is named by the device key id the signature was checked for, never by what a topic
  or file name claims.
- An installed list that no longer verifies (the device was revoked or left the roster, the file
  is damaged) is not used (`load_epoch_lists` drops it), and it blocks installing a new one for
  that device until an operator removes it: replacing it blindly would lose the rollback check.
- Public keys only: nothing here is secret, but the files are private like everything in DATA.

Pure of MQTT and the audit log: callers record (`record` runs after the checks, before the
write) and report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from agent.crypto.keys.encoding import check_key_id
from agent.crypto.keys.epochs import EpochList, check_epoch_update
from agent.crypto.keys.files import keys_dir
from agent.crypto.keys.roster import Roster
from agent.errors import AgentError, EpochError, InvalidKey
from agent.fsutil import atomic_write, make_private_dirs

log = logging.getLogger(__name__)

EPOCHS_DIRNAME = "epochs"
DAY_S = 86_400.0


def epochs_dir(data_dir: str | Path) -> Path:
    return keys_dir(data_dir) / EPOCHS_DIRNAME


def epoch_list_path(data_dir: str | Path, device_key_id: str) -> Path:
    return epochs_dir(data_dir) / f"{check_key_id(device_key_id, 'device key id')}.json"


def _read_installed(path: Path, device: str, roster: Roster) -> EpochList | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise EpochError(f"cannot read the installed epoch list {path}: {e.strerror}") from None
    lst = EpochList.decode(data, roster, what=str(path))
    if lst.device != device:
        raise EpochError(f"{path}: holds the list of device {lst.device}, not {device}")
    return lst


def install_epoch_list(
    data_dir: str | Path,
    data: bytes,
    roster: Roster | None,
    *,
    what: str = "epoch list",
    record: Callable[[EpochList], None] | None = None,
    expect_device: str | None = None,
) -> tuple[EpochList, bool]:
    """Verify `data` and install it. Returns (list, changed); changed is False when exactly this
    list was installed already. Raises EpochError (nothing installed) with the reason.

    `record(list)` is called after every check and before the file is written, only for a list
    that changes something (record, then act: an AgentError from it stops the install).
    `expect_device`: the device the list must be of (the MQTT topic it came on)."""
    if roster is None:
        raise EpochError(f"{what}: no owner-signed roster is installed on this hub; install one first "
                         "(`privacy-agent keys roster`)")
    new = EpochList.decode(data, roster, what=what)
    if expect_device is not None and new.device != expect_device:
        raise EpochError(f"{what}: a list of device {new.device} published as device {expect_device}'s")
    path = epoch_list_path(data_dir, new.device)
    try:
        current = _read_installed(path, new.device, roster)
    except EpochError as e:
        raise EpochError(f"{what}: the installed list of device {new.device} does not verify any more ({e}); "
                         f"an operator must remove {path} before a new one can be installed") from None
    if not check_epoch_update(current, new):
        return new, False
    if record is not None:
        record(new)
    try:
        make_private_dirs(path.parent)
        atomic_write(path, new.encode(), 0o600)
    except OSError as e:
        raise EpochError(f"cannot write {path}: {e.strerror or e}") from None
    log.info("installed the epoch list of device %s: version %d, epochs %d..%d", new.device, new.version,
             new.first, new.last)
    return new, True


def load_epoch_lists(data_dir: str | Path, roster: Roster | None) -> dict[str, EpochList]:
    """The installed lists that verify against `roster`, by device key id. Lists of devices that
    left the roster or were revoked, and damaged files, are left out (logged)."""
    d = epochs_dir(data_dir)
    if roster is None:
        return {}
    try:
        paths = sorted(d.glob("*.json"))
    except OSError as e:
        log.error("cannot list the installed epoch lists in %s: %s", d, e.strerror)
        return {}
    out: dict[str, EpochList] = {}
    for p in paths:
        try:
            device = check_key_id(p.stem, "epoch list file name")
        except InvalidKey:
            log.warning("ignoring %s: not named by a device key id", p)
            continue
        if roster.is_revoked(device) or roster.find(device) is None:
            log.info("ignoring the epoch list of device %s: not a current roster device", device)
            continue
        try:
            lst = _read_installed(p, device, roster)
        except AgentError as e:
            log.error("ignoring the installed epoch list %s: %s", p, e)
            continue
        if lst is not None:
            out[device] = lst
    return out


def days_left(lst: EpochList | None, wall_s: float) -> float | None:
    """Days until `lst` runs out at wall time `wall_s` (negative: it ran out), None without a list."""
    return None if lst is None else (lst.horizon_end_s - wall_s) / DAY_S


def epoch_horizons(data_dir: str | Path, roster: Roster | None, wall_s: float) -> dict[str, float | None]:
    """Every household device of `roster` -> days its installed list still covers (None: no
    usable list), rounded to 0.1 day. What `doctor` shows and the hub publishes for Home Assistant."""
    if roster is None:
        return {}
    lists = load_epoch_lists(data_dir, roster)
    out: dict[str, float | None] = {}
    for d in roster.devices:
        left = days_left(lists.get(d.key_id), wall_s)
        out[d.key_id] = None if left is None else round(max(left, 0.0), 1)
    return out
