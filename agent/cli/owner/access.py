"""The owner device's side of access and audit: `owner pending|approve|deny|mode`, `audit pin|verify`.

The owner tool verifies the hub's signature on the challenge and the requester's signature on
the request before showing or approving anything; it never signs a scope wider than the request;
it re-wraps clip keys only to the requester key named in the signed request. Nothing here prints
key material.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
from agent.cli.parsing import command_group
from agent.crypto.envelope import verify_clip
from agent.crypto.keys import (
    DeviceIdentity,
    HubPublic,
    Roster,
    load_device_identity,
    load_hub_public,
)
from agent.errors import (
    AccessError,
    AuditError,
    ExitCode,
)
from agent.mqtt.client import MqttClient


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
        return ExitCode.OK
    if not chs:
        print("no pending access requests")
        return ExitCode.OK
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
    return ExitCode.OK


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
    from agent.crypto.envelope import unwrap_key, wrap_key

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
            return ExitCode.OK
        if kind == "status" and body.get("status") in ("approved", "refused"):
            A.parse_hub_message(m.payload, "status", hub)
            print(f"hub: {body['status']}: {body.get('reason', '')}")
            return ExitCode.OK if body["status"] == "approved" else ExitCode.REFUSED
    print("no answer from the hub yet", file=sys.stderr)
    return ExitCode.NO_ANSWER


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
            return ExitCode.OK
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
    return ExitCode.OK if ok else ExitCode.NO_ANSWER


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
    return ExitCode.OK


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
        return ExitCode.OK
    for p in report.problems:
        print(f"PROBLEM: {p}")
    raise AuditError(f"audit log {log_path} failed verification ({len(report.problems)} problem(s))")


def register_owner(osub: argparse._SubParsersAction) -> None:
    """`owner pending|approve|deny|mode` (run on an owner device)."""
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


def register_audit(sub: argparse._SubParsersAction) -> None:
    """`audit pin` (owner device) and `audit verify` (anyone holding the log)."""
    asub = command_group(sub, "audit", "tamper-evident audit log: pin checkpoints, verify")
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
