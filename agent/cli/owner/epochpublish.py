"""Epoch key lists, both ends: `owner epochs publish` on a household device, `keys epochs install`
on the hub.

`owner epochs publish --identity KEY --list LIST`: checks that LIST is this device's own list,
correctly signed, then publishes it retained on `P/epochs/<device key id>`; the hub installs it
(`agent.mqtt.epochs`) whenever it is connected.

`keys epochs install --data DIR LIST...`: installs lists directly into `DATA/keys/epochs/`, with
the same checks as over MQTT (`install_epoch_list`) and the same audit entries
(`epochs_installed`, `epochs_refused`). It holds the data-dir lock: the running hub is the one
writer of the installed lists and of the audit log, so while it runs, publish over MQTT instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.mqttargs import add_broker_args, connect
from agent.crypto.keys import (
    EpochList,
    RosterEntry,
    install_epoch_list,
    load_device_identity,
    load_roster,
    sign_roster,
)
from agent.crypto.keys.epochs import MAX_LIST_BYTES
from agent.errors import DataDirBusy, EpochError, ExitCode


def _read_list(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_LIST_BYTES + 1)
    except OSError as e:
        raise EpochError(f"cannot read epoch list {path}: {e.strerror}") from None
    if len(data) > MAX_LIST_BYTES:
        raise EpochError(f"epoch list {path} is larger than {MAX_LIST_BYTES} bytes")
    return data


# --- owner epochs publish (household device) ------------------------------------------------


def cmd_owner_epochs_publish(args: argparse.Namespace) -> int:
    ident = load_device_identity(args.identity)
    data = _read_list(Path(args.list))
    # Verify against this device alone (a one-device roster signed here, never written): a list
    # of another device, or one whose signature does not verify, is not published.
    claimed = _claimed_device(data)
    if claimed not in ("?", ident.key_id):
        raise EpochError(f"{args.list} is the list of device {claimed}, not of this device {ident.key_id}")
    own = sign_roster(ident, 1, [RosterEntry(ident.public, "owner")])
    lst = EpochList.decode(data, own, what=f"epoch list {args.list}")
    client = connect(args, "owner")
    try:
        client.publish_wait(client.topics.epoch_list(ident.key_id), data, retain=True, timeout_s=args.timeout)
    finally:
        client.stop()
    print(f"epoch list version {lst.version} of device {ident.key_id} published (retained): epochs {lst.first}.."
          f"{lst.last}, {lst.epoch_s} s each; the hub installs it while it is connected")
    return ExitCode.OK


def add_publish_parser(esub: argparse._SubParsersAction) -> None:
    """`publish` in the `owner epochs` group."""
    p = esub.add_parser("publish", help="publish this device's signed epoch key list to the hub (retained MQTT)")
    p.add_argument("--identity", required=True, help="this device's identity file")
    p.add_argument("--list", required=True, help="the signed epoch key list (from `owner epochs generate`)")
    add_broker_args(p)
    p.set_defaults(func=cmd_owner_epochs_publish)


# --- keys epochs install (hub) ----------------------------------------------------------------


def cmd_keys_epochs_install(args: argparse.Namespace) -> int:
    from agent.storage.lock import DataDirLock

    data_dir = Path(args.data)
    try:
        with DataDirLock(data_dir, "keys epochs install"):
            return _install_all(data_dir, args.lists)
    except DataDirBusy as e:
        raise DataDirBusy(f"{e}; while the hub runs, publish the list over MQTT instead "
                          "(`privacy-agent owner epochs publish`)") from None


def _install_all(data_dir: Path, names: list[str]) -> int:
    from agent.access.recorder import open_hub_audit
    from agent.clock import SystemClock

    audit = open_hub_audit(data_dir, SystemClock())
    if audit is None:
        raise EpochError(f"{data_dir} has no hub identity; run `privacy-agent keys init --data {data_dir}` first")

    def record(lst: EpochList) -> None:
        # Record, then act: the entry is in the log before the file is replaced.
        audit.append("epochs_installed", {"device": lst.device, "version": lst.version, "first": lst.first,
                                          "last": lst.last})

    failed = 0
    try:
        roster = load_roster(data_dir)
        for name in names:
            try:
                lst, changed = install_epoch_list(data_dir, _read_list(Path(name)), roster,
                                                  what=f"epoch list {name}", record=record)
            except EpochError as e:
                failed += 1
                print(f"refused: {e}")
                audit.append("epochs_refused", {"device": _claimed_device(Path(name)), "reason": str(e)[:300]})
                continue
            state = "installed" if changed else "was already installed"
            print(f"epoch list version {lst.version} of device {lst.device} {state}: epochs {lst.first}.."
                  f"{lst.last} (keys until {_utc(lst.horizon_end_s)})")
    finally:
        audit.close()
    return ExitCode.ERROR if failed else ExitCode.OK


def _claimed_device(data: bytes | Path) -> str:
    """The device a list claims to be from (unverified: for messages and a refusal's audit entry),
    or '?'."""
    from agent.jsonlimits import loads_bounded

    try:
        raw = data.read_bytes() if isinstance(data, Path) else data
        doc = loads_bounded(raw, max_bytes=MAX_LIST_BYTES, max_depth=4, what="epoch list")
        dev = doc["list"]["device"]
        if isinstance(dev, str) and len(dev) <= 64 and dev.isalnum():
            return dev
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return "?"


def _utc(wall_s: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(wall_s, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def add_install_parser(esub: argparse._SubParsersAction) -> None:
    """`install` in the `keys epochs` group."""
    p = esub.add_parser("install", help="install household devices' signed epoch key lists on the hub "
                        "(refuses a rollback or a changed key)")
    p.add_argument("--data", required=True, help="the hub's data directory")
    p.add_argument("lists", nargs="+", metavar="LIST", help="signed epoch key list file(s)")
    p.set_defaults(func=cmd_keys_epochs_install)
