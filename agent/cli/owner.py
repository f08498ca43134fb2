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
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from agent import access as A
from agent.access.audit import Checkpoint, audit_dir, pin_checkpoint, read_pins, verify_log
from agent.cli.mqttargs import (
    Inbox,
    add_broker_args,
    connect,
    format_ms,
    hub_key,
    next_counter,
    now_ms,
    parse_ms,
)
from agent.crypto.envelope import check_chain, open_clip, verify_clip
from agent.crypto.keys import (
    DeviceIdentity,
    HubPublic,
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
from agent.errors import (
    AccessError,
    AgentError,
    AuditError,
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
from agent.mqtt.client import MqttClient


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


def _register_keys(sub: argparse._SubParsersAction) -> None:
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
    from agent.crypto.keys import load_hub_identity
    from agent.storage.outbox import Outbox
    from agent.storage.sinks.clips import build_uploaders

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



def register_cli(sub: argparse._SubParsersAction) -> None:
    _register_keys(sub)
    _register_access(sub)

def _fetch_challenges(client: MqttClient, hub: HubPublic, timeout_s: float) -> list[A.Challenge]:
    inbox = Inbox()
    client.subscribe(client.topics.access_challenge_filter, inbox, wait_s=timeout_s)
    client.sync(timeout_s)
    out = []
    with inbox.cond:
        msgs = list(inbox.messages)
    for m in msgs:
        if not m.payload:
            continue
        try:
            out.append(A.parse_challenge(m.payload, hub))
        except AccessError as e:
            # Retained messages come from an untrusted broker: skip what the hub did not sign.
            print(f"ignoring a message on {m.topic}: {e}", file=sys.stderr)
    return out


def cmd_owner_pending(args: argparse.Namespace) -> int:
    hub = hub_key(args)
    client = connect(args, "owner")
    try:
        chs = _fetch_challenges(client, hub, args.timeout)
    finally:
        client.stop()
    if args.json:
        print(json.dumps([{
            "challenge_id": c.challenge_id, "request_id": c.request.request_id,
            "requester": c.request.requester.key_id, "requester_name": c.request.requester.name,
            "role": c.request.role, "scope": c.request.scope.to_json(), "purpose": c.request.purpose,
            "legal_ref": c.request.legal_ref, "approvals_needed": c.approvals_needed,
            "issued_ms": c.issued_ms, "ttl_s": c.ttl_s,
        } for c in chs], indent=2))
        return 0
    if not chs:
        print("no pending access requests")
        return 0
    for c in chs:
        r = c.request
        print(f"challenge {c.challenge_id[:16]}  ({c.approvals_needed} owner approval(s) needed, "
              f"open {c.ttl_s // 60} min from {format_ms(c.issued_ms)})")
        print(f"  requester: {r.requester.name!r} ({r.role}), key {r.requester.key_id}")
        print(f"  purpose:   {r.purpose}")
        print(f"  legal ref: {r.legal_ref}")
        print(f"  cameras:   {', '.join(r.scope.cameras) or '-'}")
        print(f"  clips:     {', '.join(r.scope.clips) or '-'}")
        print(f"  window:    {format_ms(r.scope.from_ms)} .. {format_ms(r.scope.to_ms)}")
    return 0


def _find_challenge(chs: list[A.Challenge], wanted: str) -> A.Challenge:
    wanted = wanted.lower()
    if len(wanted) < 8:
        raise AccessError("give at least the first 8 characters of the challenge id")
    hits = [c for c in chs if c.challenge_id.startswith(wanted)]
    if len(hits) != 1:
        raise AccessError(f"no single pending challenge starts with {wanted!r} ({len(hits)} match)")
    return hits[0]


def _rewrap(identity: DeviceIdentity, clip_dirs: list[str], clip_ids: tuple[str, ...], hub: HubPublic,
            requester: Any) -> tuple[A.WrappedKey, ...]:
    from agent.crypto.envelope import unwrap_key, verify_clip, wrap_key

    found: dict[str, Path] = {}
    for d in clip_dirs:
        for p in Path(d).rglob("*.epaclip"):
            found.setdefault(p.stem, p)
    out = []
    for cid in clip_ids:
        path = found.get(cid)
        if path is None:
            raise AccessError(f"clip {cid} not found under {clip_dirs or ['(no --clips-dir)']}; "
                              "give --clips-dir, or narrow the approval with --clip")
        info = verify_clip(path.read_bytes(), hub)
        if info.clip_id_hex != cid:
            raise AccessError(f"{path} holds clip {info.clip_id_hex}, not {cid}")
        k = unwrap_key(identity, info.header)  # this device must be a recipient of the clip
        out.append(A.WrappedKey(cid, wrap_key(requester, info.header.clip_id, k).sealed))
        del k
    return tuple(out)


def _decide(args: argparse.Namespace, verdict: str) -> int:
    identity_path = Path(args.identity)
    ident = load_device_identity(identity_path)
    hub = hub_key(args)
    client = connect(args, "owner")
    try:
        ch = _find_challenge(_fetch_challenges(client, hub, args.timeout), args.challenge)
        if args.roster:
            local = Roster.decode(Path(args.roster).read_bytes(), args.roster)
            if local.version > ch.roster_version:
                raise AccessError(
                    f"the hub uses roster version {ch.roster_version} but you hold version {local.version}: "
                    "install it on the hub (`privacy-agent keys roster`) before deciding"
                )
        scope = None
        keys: tuple[A.WrappedKey, ...] = ()
        if verdict == "approve":
            req = ch.request.scope
            scope = A.Scope.make(
                args.camera if args.camera else req.cameras,
                [c.lower() for c in args.clip] if args.clip else req.clips,
                parse_ms(args.start, req.from_ms), parse_ms(args.end, req.to_ms),
            )
            why = scope.escalation(req)
            if why is not None:
                raise AccessError(why)
            keys = _rewrap(ident, args.clips_dir, scope.clips, hub, ch.request.requester)
        data = A.make_decision(ident, ch, verdict, next_counter(identity_path), ch.roster_version, now_ms(),
                               scope, keys)
        rid = ch.request.request_id
        inbox = Inbox()
        client.subscribe(client.topics.access_status(rid), inbox)
        client.subscribe(client.topics.access_grant(rid), inbox)
        client.publish_wait(client.topics.access_decision(ch.challenge_id), data, timeout_s=args.timeout)
        print(f"{verdict} sent for challenge {ch.challenge_id[:16]} (request {rid})")

        def answered() -> bool:
            for m in inbox.messages:
                body = json.loads(m.payload).get("body", {}) if m.payload else {}
                if body.get("type") in ("grant", "denial") or body.get("status") in ("approved", "refused"):
                    return True
            return False

        with inbox.cond:
            inbox.cond.wait_for(answered, args.timeout)
            msgs = list(inbox.messages)
    finally:
        client.stop()
    for m in msgs:
        if not m.payload:
            continue
        body = json.loads(m.payload).get("body", {})
        kind = body.get("type")
        if kind in ("grant", "denial"):
            A.parse_hub_message(m.payload, kind, hub)
            print(f"hub: {'granted' if kind == 'grant' else 'denied'}")
            return 0
        if kind == "status" and body.get("status") in ("approved", "refused"):
            A.parse_hub_message(m.payload, "status", hub)
            print(f"hub: {body['status']}: {body.get('reason', '')}")
            return 0 if body["status"] == "approved" else 4
    print("no answer from the hub yet", file=sys.stderr)
    return 3


def cmd_owner_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


def cmd_owner_deny(args: argparse.Namespace) -> int:
    return _decide(args, "deny")


def cmd_owner_mode(args: argparse.Namespace) -> int:
    hub = hub_key(args)
    client = connect(args, "owner")
    try:
        inbox = Inbox()
        client.subscribe(client.topics.mode_state, inbox, wait_s=args.timeout)
        client.sync(args.timeout)
        if args.mode is None:
            with inbox.cond:
                cur = inbox.messages[-1].payload.decode(errors="replace") if inbox.messages else "unknown"
            print(f"mode: {cur}")
            return 0
        identity_path = Path(args.identity) if args.identity else None
        if identity_path is None:
            raise AccessError("changing the mode needs --identity (an owner device signs it)")
        ident = load_device_identity(identity_path)
        chs_rv = args.roster_version
        if chs_rv is None:
            raise AccessError("give --roster-version (the version of the roster installed on the hub)")
        data = A.make_mode_set(ident, hub.key_id, args.mode, next_counter(identity_path), chs_rv, now_ms())
        with inbox.cond:
            inbox.messages.clear()
        client.publish_wait(client.topics.mode_set, data, timeout_s=args.timeout)
        with inbox.cond:
            inbox.cond.wait_for(lambda: any(m.payload == args.mode.encode() for m in inbox.messages), args.timeout)
            ok = any(m.payload == args.mode.encode() for m in inbox.messages)
    finally:
        client.stop()
    print(f"mode {'is now' if ok else 'change sent, not confirmed:'} {args.mode}")
    return 0 if ok else 3


def cmd_audit_pin(args: argparse.Namespace) -> int:
    hub = hub_key(args)
    if args.checkpoint:
        raw = Path(args.checkpoint).read_bytes()
    else:
        client = connect(args, "owner")
        try:
            inbox = Inbox()
            client.subscribe(client.topics.audit_checkpoint, inbox, wait_s=args.timeout)
            client.sync(args.timeout)
            with inbox.cond:
                msgs = [m for m in inbox.messages if m.payload]
        finally:
            client.stop()
        if not msgs:
            raise AuditError("the broker holds no audit checkpoint for this hub")
        raw = msgs[-1].payload
    cp = Checkpoint.decode(raw, hub)
    added = pin_checkpoint(Path(args.pins), cp, hub)
    print(f"{'pinned' if added else 'already pinned'}: {cp.size} entries, head {cp.head[:16]}…")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    if args.log:
        log_path = Path(args.log)
        hub = hub_key(args)
    elif args.data:
        log_path = audit_dir(args.data) / "log.jsonl"
        hub = load_hub_public(args.hub or args.data)
    else:
        raise AuditError("give --data DIR (the hub's data directory) or --log FILE")
    pins = read_pins(Path(args.pins), hub) if args.pins else []
    report = verify_log(log_path, hub, pins)
    if args.data and (audit_dir(args.data) / "checkpoint.json").exists():
        # The hub's own latest checkpoint must also describe this log (a prefix of it).
        try:
            own = Checkpoint.decode((audit_dir(args.data) / "checkpoint.json").read_bytes(), hub)
            extra = verify_log(log_path, hub, [own]).problems
        except AuditError as e:
            extra = (f"hub checkpoint: {e}",)
        report = dataclasses.replace(report, problems=report.problems + tuple(
            p for p in extra if p not in report.problems))
    print(f"audit log {log_path}: {report.entries} entries, head {report.head[:16]}…, "
          f"{report.pinned_checked} pinned checkpoint(s) checked")
    if report.ok:
        print("OK: chain intact and consistent with every pinned checkpoint")
        return 0
    for p in report.problems:
        print(f"PROBLEM: {p}")
    raise AuditError(f"audit log {log_path} failed verification ({len(report.problems)} problem(s))")


def _register_access(sub: argparse._SubParsersAction) -> None:
    osub = owner_commands(sub)
    p = osub.add_parser("pending", help="list open access challenges (verified hub and requester signatures)")
    p.add_argument("--hub", required=True, help="the hub's public key")
    p.add_argument("--identity", help="owner device identity (not needed to list)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_broker_args(p)
    p.set_defaults(func=cmd_owner_pending)
    for name, fn, helptext in (("approve", cmd_owner_approve, "approve a challenge (scope may only narrow)"),
                               ("deny", cmd_owner_deny, "deny a challenge")):
        p = osub.add_parser(name, help=helptext)
        p.add_argument("challenge", help="challenge id (at least its first 8 characters)")
        p.add_argument("--identity", required=True, help="owner device identity file")
        p.add_argument("--hub", required=True, help="the hub's public key")
        p.add_argument("--roster", help="the roster file you signed: refuse if the hub runs an older one")
        if name == "approve":
            p.add_argument("--camera", action="append", default=[], help="approve only these cameras")
            p.add_argument("--clip", action="append", default=[], help="approve only these clips")
            p.add_argument("--from", dest="start", help="approve only from this time")
            p.add_argument("--to", dest="end", help="approve only up to this time")
            p.add_argument("--clips-dir", action="append", default=[],
                           help="where the approved clips are (their keys are re-wrapped to the requester)")
        add_broker_args(p)
        p.set_defaults(func=fn)
    p = osub.add_parser("mode", help="show the household mode, or set it with an owner-signed message")
    p.add_argument("mode", nargs="?", choices=A.MODES, help="new mode (omit to show)")
    p.add_argument("--identity", help="owner device identity file (to set)")
    p.add_argument("--hub", required=True, help="the hub's public key")
    p.add_argument("--roster-version", type=int, help="version of the roster installed on the hub")
    add_broker_args(p)
    p.set_defaults(func=cmd_owner_mode)

    au = sub.add_parser("audit", help="tamper-evident audit log: pin checkpoints, verify")
    au.set_defaults(func=lambda a: (au.print_help(), 2)[1])
    asub = au.add_subparsers(dest="audit_command", metavar="AUDIT_COMMAND")
    p = asub.add_parser("pin", help="pin the hub's latest signed checkpoint (owner device; never goes back)")
    p.add_argument("--hub", required=True, help="the hub's public key")
    p.add_argument("--pins", required=True, help="pin file on the owner device (one checkpoint per line)")
    p.add_argument("--checkpoint", help="read the checkpoint from this file instead of the broker")
    add_broker_args(p)
    p.set_defaults(func=cmd_audit_pin)
    p = asub.add_parser("verify", help="detect edited, removed, reordered or truncated entries")
    p.add_argument("--data", help="the hub's data directory")
    p.add_argument("--log", help="an audit log file (instead of --data)")
    p.add_argument("--hub", help="the hub's public key (default: from --data)")
    p.add_argument("--pins", help="the owner's pin file (truncation is only detectable against it)")
    p.set_defaults(func=cmd_audit_verify)
