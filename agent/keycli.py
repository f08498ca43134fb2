"""Key and clip commands: `keys init|show|roster`, `owner keygen|enroll|revoke`, `open`, `verify`, `outbox`.

Invariants:
- Secret key files are written 0600 and refused when looser; nothing prints key material
  except public values.
- `open` verifies the hub's signatures and the whole ciphertext before it decrypts, writes to
  `OUT.part` and renames only on success: a tampered or truncated clip leaves no output file.
- Wrong recipient, tampered, truncated, bad signature and malformed clips each map to their own
  error class, message and exit code (see agent/errors.py).
- Other modules add `owner ...` sub-commands through `owner_commands(sub)`, which returns the
  one `owner` sub-parser group whichever module registers first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from agent.envelope import check_chain, open_clip, verify_clip
from agent.errors import (
    AgentError,
    BadSignature,
    EnvelopeError,
    KeyFileError,
    MalformedEnvelope,
    RosterError,
    TamperedClip,
    TruncatedClip,
    WrongRecipient,
)
from agent.fsutil import atomic_write
from agent.keys import (
    DeviceIdentity,
    Roster,
    check_key_id,
    hub_public,
    init_hub,
    install_roster,
    load_device_identity,
    load_device_public,
    load_hub_public,
    updated_roster,
    write_device_identity,
)


def owner_commands(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `owner` group's sub-parsers (created on first use), so several modules can add to it."""
    parser = sub.choices.get("owner")
    if parser is None:
        parser = sub.add_parser("owner", help="owner device tools: keys, roster, approvals")
        parser.set_defaults(func=lambda a: (parser.print_help(), 2)[1])
        return parser.add_subparsers(dest="owner_command", metavar="OWNER_COMMAND")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="owner_command", metavar="OWNER_COMMAND")


def register_cli(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="hub identity and roster")
    keys.set_defaults(func=lambda a: (keys.print_help(), 2)[1])
    ksub = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND")
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

    osub = owner_commands(sub)
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
    p.add_argument("--hub", help="bind the roster to this hub (hub.pub file, epa1hub: value or data dir)")
    p.set_defaults(func=cmd_owner_enroll)
    p = osub.add_parser("revoke", help="sign the next roster version without a device; new clips exclude it")
    _roster_args(p)
    p.add_argument("--device", action="append", required=True, metavar="KEYID|PUB",
                   help="key id or public key of the device to revoke; repeatable")
    p.set_defaults(func=cmd_owner_revoke)

    p = sub.add_parser("open", help="verify, then decrypt a clip with an owner device identity")
    p.add_argument("clip", help="the .epaclip file")
    p.add_argument("--identity", required=True, help="owner device identity file (from `owner keygen`)")
    p.add_argument("--out", required=True, help="where to write the video (MP4)")
    p.add_argument("--hub", help="expected hub public key (hub.pub, epa1hub: value or data dir); "
                   "without it only the key named in the clip is checked")
    p.add_argument("--meta", help="also write the decrypted metadata (JSON, thumbnail included) here")
    p.set_defaults(func=cmd_open)

    p = sub.add_parser("verify", help="check clip signatures and chain without any secret key")
    p.add_argument("clips", nargs="+", help="one or more .epaclip files (several: the chain is checked too)")
    p.add_argument("--hub", required=True, help="hub public key (hub.pub, epa1hub: value or data dir)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("outbox", help="show or flush queued clip uploads")
    p.add_argument("action", choices=["status", "flush"], help="status: list queued uploads; flush: retry now")
    p.add_argument("--config", required=True, help="config file (for data_dir and sinks)")
    p.set_defaults(func=cmd_outbox)


def _roster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--identity", required=True, help="this owner device's identity file")
    p.add_argument("--roster", required=True, help="roster file: read if present, replaced by the next version")
    p.add_argument("--install", metavar="DATA_DIR", help="also install the new roster into this hub data directory")


# --- keys ---------------------------------------------------------------------------


def cmd_keys_init(args: argparse.Namespace) -> int:
    hub = init_hub(args.data)
    print(f"hub identity {hub.key_id} created in {Path(args.data) / 'keys'}")
    print(f"hub public key: {hub.public.encode()}")
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    hub = hub_public(args.data)
    print(f"hub {hub.key_id}: {hub.encode()}")
    return 0


def cmd_keys_roster(args: argparse.Namespace) -> int:
    roster = _read_roster(Path(args.install))
    if roster is None:
        raise RosterError(f"roster file {args.install} does not exist")
    changed = install_roster(args.data, roster)
    print(f"roster version {roster.version} {'installed' if changed else 'was already installed'}")
    return 0


# --- owner ----------------------------------------------------------------------------


def cmd_owner_keygen(args: argparse.Namespace) -> int:
    ident = DeviceIdentity.generate(args.name)
    pub = write_device_identity(ident, Path(args.out))
    print(f"device identity {ident.key_id} written to {args.out} (mode 0600)")
    print(f"public key in {pub}: {ident.public.encode()}")
    return 0


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
        atomic_write(path, roster.encode(), 0o644)
    except OSError as e:
        raise RosterError(f"cannot write roster {path}: {e.strerror}") from None


def _finish_roster(args: argparse.Namespace, roster: Roster) -> int:
    _write_roster(Path(args.roster), roster)
    print(f"roster version {roster.version} written to {args.roster}: "
          + ", ".join(f"{e.device.key_id} {e.device.name!r} ({e.role})" for e in roster.entries))
    if roster.revoked:
        print("revoked: " + ", ".join(roster.revoked))
    if args.install:
        install_roster(args.install, roster)
        print(f"installed in {args.install}")
    return 0


def cmd_owner_enroll(args: argparse.Namespace) -> int:
    ident = load_device_identity(args.identity)
    current = _read_roster(Path(args.roster))
    hub_id = load_hub_public(args.hub).key_id if args.hub else None
    if current is not None and hub_id is not None and current.hub_key_id not in (None, hub_id):
        raise RosterError(f"roster {args.roster} is bound to hub {current.hub_key_id}, not {hub_id}")
    roster = updated_roster(
        ident, current,
        add=[load_device_public(v) for v in args.add],
        add_owners=[load_device_public(v) for v in args.add_owner],
        hub_key_id=hub_id,
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


# --- clips --------------------------------------------------------------------------------


# A short word in front of each envelope error so the three cases the owner must tell apart
# (wrong recipient, tampered, truncated) read differently even before the details.
_KIND = (
    (WrongRecipient, "wrong recipient"),
    (TruncatedClip, "truncated"),
    (BadSignature, "bad signature"),
    (TamperedClip, "tampered"),
    (MalformedEnvelope, "malformed"),
)


def _labelled(e: EnvelopeError, clip: Path) -> EnvelopeError:
    kind = next((k for cls, k in _KIND if isinstance(e, cls)), "invalid")
    return type(e)(f"{clip}: {kind}: {e}")


def _open_clip_file(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise EnvelopeError(f"clip {p} does not exist or is not a file")
    return p


def cmd_open(args: argparse.Namespace) -> int:
    clip = _open_clip_file(args.clip)
    ident = load_device_identity(args.identity)
    hub = load_hub_public(args.hub) if args.hub else None
    out = Path(args.out)
    part = out.with_name(out.name + ".part")
    try:
        with open(clip, "rb") as src, open(part, "wb") as dst:
            opened = open_clip(src, ident, dst.write, hub)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(part, out)
    except EnvelopeError as e:
        part.unlink(missing_ok=True)
        raise _labelled(e, clip) from None
    except OSError as e:
        part.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write {out}: {e.strerror}") from None
    meta = opened.metadata
    if args.meta:
        Path(args.meta).write_text(json.dumps(dict(meta), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    h = opened.info.header
    pin = "" if hub else " (hub not pinned: pass --hub to check it is your hub)"
    print(f"{clip}: OK, signed by hub {h.hub_key_id}{pin}; clip {h.clip_id.hex()} seq {h.seq}")
    print(f"camera {meta.get('camera_id')!r} name {meta.get('camera_name')!r}, {meta.get('frames')} frames, "
          f"labels {meta.get('labels')}; {opened.payload_bytes} bytes of video written to {out}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    hub = load_hub_public(args.hub)
    infos = []
    for c in args.clips:
        p = _open_clip_file(c)
        try:
            with open(p, "rb") as f:
                info = verify_clip(f, hub)
        except EnvelopeError as e:
            raise _labelled(e, p) from None
        infos.append(info)
        h = info.header
        print(f"{p}: OK, hub {h.hub_key_id}, stream {h.stream_id.hex()[:16]} seq {h.seq}, "
              f"{info.chunk_count} chunks, recipients {', '.join(h.recipient_ids)}")
    problems = check_chain(infos)
    for msg in problems:
        print(f"chain: {msg}", file=sys.stderr)
    if problems:
        raise TamperedClip(f"{len(problems)} chain problem(s): a clip was deleted, reordered or inserted")
    if len(infos) > 1:
        print(f"chain intact over {len(infos)} clips")
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from agent.clock import SystemClock
    from agent.config import DirectorySinkConfig, load_config
    from agent.keys import load_hub_identity
    from agent.outbox import Outbox
    from agent.sinks.clips import build_uploaders

    loaded = load_config(args.config)
    ob = Outbox(loaded.data_dir, SystemClock())
    try:
        if args.action == "status":
            rows = ob.pending()
            for clip_id, dest, attempts in rows:
                print(f"{clip_id} -> {dest} ({attempts} failed attempts)")
            print(f"{len(rows)} queued upload(s)")
            return 0
        ob.recover()
        cfgs = [s for s in loaded.config.sinks if not (isinstance(s, DirectorySinkConfig) and s.plaintext)]
        ups = build_uploaders(loaded, cfgs, load_hub_identity(loaded.data_dir).public)
        res = ob.drain(ups, force=True)
        print(f"{res.uploaded} uploaded, {res.failed} failed, {res.rejected} rejected, {res.remaining} remaining")
        return 0 if res.remaining == 0 else 1
    finally:
        ob.close()
