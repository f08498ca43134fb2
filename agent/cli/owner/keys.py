"""The owner's key commands: `keys init|show|roster|epochs` on the hub, `owner keygen|enroll|revoke` on a device.

Secret key files are written 0600 and refused when looser; nothing prints key material except
public values. A roster file is replaced atomically, and `--install` refuses a rollback.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.access.state import init_state, reset_state, state_path
from agent.cli.owner import epochpublish
from agent.cli.parsing import command_group
from agent.crypto.keys import (
    REQUESTER_ROLES,
    DeviceIdentity,
    Roster,
    check_key_id,
    hub_public,
    init_hub,
    install_roster,
    load_device_identity,
    load_device_public,
    load_hub_public,
    load_roster,
    updated_roster,
    write_device_identity,
)
from agent.errors import (
    AgentError,
    ExitCode,
    RosterError,
)
from agent.fsutil import atomic_write


def register_keys(sub: argparse._SubParsersAction) -> None:
    """`keys init|show|roster` (run on the hub)."""
    ksub = command_group(sub, "keys", "hub identity and roster")
    p = ksub.add_parser("init", help="create the hub's signing identity in DATA/keys/")
    p.add_argument("--data", required=True, help="the hub's data directory (the config's data_dir)")
    p.set_defaults(func=cmd_keys_init)
    p = ksub.add_parser("show", help="print the hub's public key (give it to owner devices for `verify`)")
    p.add_argument("--data", required=True, help="the hub's data directory")
    p.set_defaults(func=cmd_keys_show)
    p = ksub.add_parser("roster", help="install an owner-signed roster on the hub (refuses a rollback)")
    p.add_argument("--data", required=True, help="the hub's data directory")
    p.add_argument("--install", required=True, metavar="ROSTER", help="roster file written by `owner enroll`")
    p.set_defaults(func=cmd_keys_roster)
    esub = command_group(ksub, "epochs", "household devices' epoch key lists, installed on the hub")
    epochpublish.add_install_parser(esub)
    p = ksub.add_parser(
        "reset-access-state",
        help="replace lost or damaged access counters (DATA/mqtt/access-state.json) by a floor of now: every "
        "decision or mode change signed before this moment stays refused; the reset is audited")
    p.add_argument("--data", required=True, help="the hub's data directory")
    p.set_defaults(func=cmd_keys_reset_state)


def register_owner(osub: argparse._SubParsersAction) -> None:
    """`owner keygen|enroll|revoke` (run on an owner device)."""
    p = osub.add_parser("keygen", help="create an owner device identity (FILE, 0600) and FILE.pub")
    p.add_argument("--out", required=True, help="where to write the secret identity; the public part goes to FILE.pub")
    p.add_argument("--name", default="", help="device name shown in rosters (for example 'alice-phone')")
    p.set_defaults(func=cmd_owner_keygen)
    p = osub.add_parser("enroll", help="sign the next roster version, adding devices")
    _roster_args(p)
    p.add_argument("--add", action="append", default=[], metavar="PUB",
                   help="device public key (.pub file or epa1pub: value) to add as a member; repeatable")
    p.add_argument("--add-owner", action="append", default=[], metavar="PUB",
                   help="device to add as an owner (may sign rosters and approvals); repeatable")
    p.add_argument("--add-requester", action="append", default=[], metavar="PUB",
                   help="requester key (from `requester keygen`) the owners vouch for; its name and the "
                   "--requester-role are what the hub applies and owners see; repeatable")
    p.add_argument("--requester-role", choices=REQUESTER_ROLES,
                   help="the role of every --add-requester (re-enrolling a key changes its role)")
    p.add_argument("--hub", help="bind the roster to this hub (hub.pub file, epa1hub: value or data dir)")
    p.set_defaults(func=cmd_owner_enroll)
    p = osub.add_parser("revoke", help="sign the next roster version without a device; new clips exclude it")
    _roster_args(p)
    p.add_argument("--device", action="append", required=True, metavar="KEYID|PUB",
                   help="key id or public key of the device to revoke; repeatable")
    p.set_defaults(func=cmd_owner_revoke)


def _roster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--identity", required=True, help="this owner device's identity file")
    p.add_argument("--roster", required=True, help="roster file: read if present, replaced by the next version")
    p.add_argument("--install", metavar="DATA_DIR", help="also install the new roster into this hub data directory")


def cmd_keys_init(args: argparse.Namespace) -> int:
    hub = init_hub(args.data)
    print(f"hub identity {hub.key_id} created in {Path(args.data) / 'keys'}")
    print(f"hub public key: {hub.public.encode()}")
    return ExitCode.OK


def cmd_keys_show(args: argparse.Namespace) -> int:
    hub = hub_public(args.data)
    print(f"hub {hub.key_id}: {hub.encode()}")
    return ExitCode.OK


def _install(data_dir: str | Path, roster: Roster) -> bool:
    """Install a roster on the hub. Before the FIRST roster, the (empty) access counter state is
    created: from then on a missing state file means lost counters, and the hub refuses to start."""
    if load_roster(data_dir) is None:
        init_state(data_dir)
    return install_roster(data_dir, roster)


def cmd_keys_reset_state(args: argparse.Namespace) -> int:
    from agent.access.recorder import open_hub_audit
    from agent.clock import SystemClock
    from agent.storage.lock import DataDirLock

    clock = SystemClock()
    with DataDirLock(Path(args.data), "keys reset-access-state"):
        audit = open_hub_audit(Path(args.data), clock)
        floor = int(clock.wall() * 1000)
        # Record, then act: the reset is in the audit log before the new state takes effect.
        if audit is not None:
            try:
                audit.append("access_state_reset", {"floor_ms": floor, "file": str(state_path(args.data))})
            finally:
                audit.close()
        reset_state(args.data, floor)
    print(f"access state reset: every decision or mode change signed before {floor} ms stays refused")
    return ExitCode.OK


def cmd_keys_roster(args: argparse.Namespace) -> int:
    roster = _read_roster(Path(args.install))
    if roster is None:
        raise RosterError(f"roster file {args.install} does not exist")
    changed = _install(args.data, roster)
    print(f"roster version {roster.version} {'installed' if changed else 'was already installed'}")
    return ExitCode.OK


def cmd_owner_keygen(args: argparse.Namespace) -> int:
    ident = DeviceIdentity.generate(args.name)
    pub = write_device_identity(ident, Path(args.out))
    print(f"device identity {ident.key_id} written to {args.out} (mode 0600)")
    print(f"public key in {pub}: {ident.public.encode()}")
    return ExitCode.OK


def _read_roster(path: Path) -> Roster | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RosterError(f"cannot read roster {path}: {e.strerror}") from None
    return Roster.decode(data, str(path))


def _write_roster(path: Path, roster: Roster) -> None:
    try:
        atomic_write(path, roster.encode(), 0o600)
    except OSError as e:
        raise RosterError(f"cannot write roster {path}: {e.strerror}") from None


def _finish_roster(args: argparse.Namespace, roster: Roster) -> int:
    _write_roster(Path(args.roster), roster)
    print(f"roster version {roster.version} written to {args.roster}: "
          + ", ".join(f"{e.device.key_id} {e.device.name!r} ({e.role})" for e in roster.entries))
    if roster.requesters:
        print("enrolled requesters: " + ", ".join(f"{e.device.key_id} {e.device.name!r} ({e.role})"
                                               for e in roster.requesters))
    if roster.revoked:
        print("revoked: " + ", ".join(roster.revoked))
    if args.install:
        _install(args.install, roster)
        print(f"installed in {args.install}")
    return ExitCode.OK


def cmd_owner_enroll(args: argparse.Namespace) -> int:
    ident = load_device_identity(args.identity)
    current = _read_roster(Path(args.roster))
    hub_id = load_hub_public(args.hub).key_id if args.hub else None
    if current is not None and hub_id is not None and current.hub_key_id not in (None, hub_id):
        raise RosterError(f"roster {args.roster} is bound to hub {current.hub_key_id}, not {hub_id}")
    if args.add_requester and not args.requester_role:
        raise RosterError("--add-requester needs --requester-role (the owners, not the requester, say who it is)")
    roster = updated_roster(
        ident, current,
        add=[load_device_public(v) for v in args.add],
        add_owners=[load_device_public(v) for v in args.add_owner],
        hub_key_id=hub_id,
        add_requesters=[(load_device_public(v), args.requester_role) for v in args.add_requester],
    )
    return _finish_roster(args, roster)


def cmd_owner_revoke(args: argparse.Namespace) -> int:
    ident = load_device_identity(args.identity)
    current = _read_roster(Path(args.roster))
    if current is None:
        raise RosterError(f"roster file {args.roster} does not exist; nothing to revoke from")
    ids = []
    for v in args.device:
        try:
            ids.append(check_key_id(v))
        except AgentError:
            ids.append(load_device_public(v).key_id)
    return _finish_roster(args, updated_roster(ident, current, revoke=ids))
