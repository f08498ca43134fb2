"""Reference CLIs for the access flow and the audit log.

    privacy-agent requester keygen  --out FILE
    privacy-agent requester request --identity KEY --hub HUBPUB --role ROLE --camera C [--clip ID]...
    privacy-agent requester open    CLIP --identity KEY --hub HUBPUB --grant GRANT --out clip.mp4
    privacy-agent owner pending     --identity KEY --hub HUBPUB
    privacy-agent owner approve     CHALLENGE --identity KEY --hub HUBPUB [--clips-dir DIR] [narrowing]
    privacy-agent owner deny        CHALLENGE --identity KEY --hub HUBPUB
    privacy-agent owner mode        [home|away|privacy] --identity KEY --hub HUBPUB
    privacy-agent audit pin         --hub HUBPUB --pins FILE (--checkpoint FILE | broker options)
    privacy-agent audit verify      (--data DIR | --log FILE) --hub HUBPUB [--pins FILE]
    privacy-agent hub serve         --config FILE   (the hub's MQTT side, standalone)

Broker options (every networked command): `--config FILE` takes host, port, CA and prefix from a
hub config's `mqtt:` section; `--host/--port/--ca-file/--prefix` override; the user name comes
from `--username` and the password from `--password-file` or the `EPA_MQTT_PASSWORD`
environment variable (never a command-line argument: it would show in `ps`).

Invariants: the owner tool verifies the hub's signature on the challenge and the requester's
signature on the request before showing or approving anything; it never signs a scope wider
than the request; it re-wraps clip keys only to the requester key named in the signed request.
The requester tool decrypts only clips named in a grant that the pinned hub key signed.
Nothing here prints key material.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any

from agent import access as A
from agent.audit import (
    Checkpoint,
    audit_dir,
    pin_checkpoint,
    read_pins,
    verify_log,
)
from agent.errors import (
    AccessError,
    AgentError,
    AuditError,
    ConfigError,
    EnvelopeError,
    KeyFileError,
)
from agent.fsutil import atomic_write
from agent.keycli import owner_commands
from agent.keys import (
    DeviceIdentity,
    HubPublic,
    Roster,
    load_device_identity,
    load_hub_public,
    write_device_identity,
)
from agent.mqtt.client import Message, MqttClient
from agent.mqtt.config import MqttConfig
from agent.mqtt.topics import DEFAULT_PREFIX

# --- broker connection ------------------------------------------------------------------


def _conn_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("broker")
    g.add_argument("--config", help="hub config file whose `mqtt:` section names the broker")
    g.add_argument("--host", help="broker host (overrides the config)")
    g.add_argument("--port", type=int, help="broker port (default 8883)")
    g.add_argument("--ca-file", help="CA certificate of the broker (PEM)")
    g.add_argument("--prefix", help=f"topic prefix of the hub (default {DEFAULT_PREFIX})")
    g.add_argument("--username", help="broker user name")
    g.add_argument("--password-file", help="file whose first line is the broker password (mode 0600); "
                   "or set EPA_MQTT_PASSWORD")
    g.add_argument("--no-tls", action="store_true", help="plain TCP (test brokers only)")
    g.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker and answers")


def _mqtt_config(args: argparse.Namespace) -> tuple[MqttConfig, Path | None]:
    base: dict[str, Any] = {}
    base_dir: Path | None = None
    if getattr(args, "config", None):
        from agent.config import load_config

        loaded = load_config(args.config)
        if loaded.config.mqtt is None:
            raise ConfigError(f"{args.config} has no `mqtt:` section")
        base = loaded.config.mqtt.model_dump()
        base_dir = loaded.path.parent
        # The hub's own credentials are not the owner's or requester's.
        base.update({"username": None, "password": None, "password_file": None, "client_id": None})
    for key, attr in (("host", "host"), ("port", "port"), ("ca_file", "ca_file"), ("topic_prefix", "prefix")):
        v = getattr(args, attr, None)
        if v is not None:
            base[key] = v
    if getattr(args, "no_tls", False):
        base["tls"] = False
    if "host" not in base:
        raise ConfigError("name the broker with --host (or --config with an `mqtt:` section)")
    password = os.environ.get("EPA_MQTT_PASSWORD")
    if args.password_file:
        base["password_file"] = str(Path(args.password_file).resolve())
    elif password is not None:
        base["password"] = password
    if args.username:
        base["username"] = args.username
    try:
        return MqttConfig.model_validate(base), base_dir
    except ValueError as e:
        raise ConfigError(f"broker options: {e}") from None


def _connect(args: argparse.Namespace, role: str) -> MqttClient:
    cfg, base_dir = _mqtt_config(args)
    client = MqttClient.from_config(cfg, client_id=f"epa-{role}-{os.urandom(4).hex()}", base_dir=base_dir)
    client.start(wait_s=args.timeout)
    return client


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.cond = threading.Condition()

    def __call__(self, m: Message) -> None:
        with self.cond:
            self.messages.append(m)
            self.cond.notify_all()


def _hub(args: argparse.Namespace) -> HubPublic:
    return load_hub_public(args.hub)


def _ms(text: str | None, default: int) -> int:
    """A time as ISO 8601 (UTC if no zone) or integer milliseconds since the epoch."""
    if text is None:
        return default
    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"time {text!r} must be ISO 8601 (2026-01-31T18:00) or epoch milliseconds") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def _fmt_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


# --- owner-device counter -------------------------------------------------------------------


def next_counter(identity_path: Path) -> int:
    """Strictly increasing per device: max(last + 1, now in ms), stored in IDENTITY.counter (0600).

    Using the time as a floor keeps the counter increasing even if the state file is lost."""
    p = identity_path.with_name(identity_path.name + ".counter")
    last = 0
    try:
        last = int(p.read_text().strip() or 0)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        raise KeyFileError(f"counter file {p} is unreadable: {e}") from None
    n = max(last + 1, _now_ms())
    atomic_write(p, f"{n}\n".encode(), 0o600)
    return n


# --- requester --------------------------------------------------------------------------


def cmd_requester_keygen(args: argparse.Namespace) -> int:
    ident = DeviceIdentity.generate(args.name)
    pub = write_device_identity(ident, Path(args.out))
    print(f"requester identity {ident.key_id} written to {args.out} (mode 0600); public key in {pub}")
    return 0


def cmd_requester_request(args: argparse.Namespace) -> int:
    ident = load_device_identity(args.identity)
    hub = _hub(args)
    now = _now_ms()
    scope = A.Scope.make(args.camera, [c.lower() for c in args.clip],
                         _ms(args.start, now - 86_400_000), _ms(args.end, now))
    rid = os.urandom(16)
    data = A.make_request(ident, hub.key_id, rid, args.role, scope, args.purpose, args.legal_ref, now)
    client = _connect(args, "requester")
    try:
        t = client.topics
        inbox = _Inbox()
        client.subscribe(t.access_grant(rid.hex()), inbox)
        client.publish_wait(t.access_request(rid.hex()), data, timeout_s=args.timeout)
        print(f"request {rid.hex()} sent to hub {hub.key_id}")
        if args.wait <= 0:
            return 0
        with inbox.cond:
            inbox.cond.wait_for(lambda: bool(inbox.messages), args.wait)
        if not inbox.messages:
            print(f"no decision within {args.wait:g} s; the owners may still decide", file=sys.stderr)
            return 3
        raw = inbox.messages[0].payload
    finally:
        client.stop()
    grant = A.parse_grant(raw, hub)  # raises AccessError "denied"
    if grant.requester != ident.key_id or grant.request_id != rid.hex():
        raise AccessError("the grant is not for this request")
    out = Path(args.out or f"grant-{rid.hex()[:12]}.json")
    out.write_bytes(raw)
    print(f"granted by {', '.join(grant.approvers)}: cameras {list(grant.scope.cameras)}, "
          f"{len(grant.keys)} clip key(s), until {_fmt_ms(grant.expires_ms)}; saved to {out}")
    return 0


def cmd_requester_open(args: argparse.Namespace) -> int:
    from agent.envelope import Stanza, decrypt_verified, unwrap_key, verify_clip

    ident = load_device_identity(args.identity)
    hub = _hub(args)
    grant = A.parse_grant(Path(args.grant).read_bytes(), hub)
    if grant.requester != ident.key_id:
        raise AccessError(f"grant is for requester {grant.requester}, not {ident.key_id}")
    if grant.expires_ms < _now_ms():
        raise AccessError(f"grant expired at {_fmt_ms(grant.expires_ms)}")
    clip_path = Path(args.clip)
    try:
        data = clip_path.read_bytes()
    except OSError as e:
        raise AgentError(f"cannot read clip {clip_path}: {e.strerror}") from None
    info = verify_clip(data, hub)
    key = next((k for k in grant.keys if k.clip == info.clip_id_hex), None)
    if key is None:
        raise AccessError(f"clip {info.clip_id_hex} is not in the grant (granted: {list(grant.scope.clips)})")
    # The granted key is a stanza sealed to this requester and bound to this clip id.
    k = unwrap_key(ident, dataclasses.replace(info.header, stanzas=(Stanza(ident.key_id, key.sealed),)))
    out = Path(args.out)
    part = out.with_name(out.name + ".part")
    try:
        with open(part, "wb") as f:
            meta, n = decrypt_verified(data, info, k, f.write)
        os.replace(part, out)
    except (EnvelopeError, OSError):
        part.unlink(missing_ok=True)
        raise
    print(f"clip {info.clip_id_hex} ({meta.get('camera_id', '?')}): {n} bytes written to {out}")
    return 0


# --- owner ---------------------------------------------------------------------------------


def _fetch_challenges(client: MqttClient, hub: HubPublic, timeout_s: float) -> list[A.Challenge]:
    inbox = _Inbox()
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
    hub = _hub(args)
    client = _connect(args, "owner")
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
              f"open {c.ttl_s // 60} min from {_fmt_ms(c.issued_ms)})")
        print(f"  requester: {r.requester.name!r} ({r.role}), key {r.requester.key_id}")
        print(f"  purpose:   {r.purpose}")
        print(f"  legal ref: {r.legal_ref}")
        print(f"  cameras:   {', '.join(r.scope.cameras) or '-'}")
        print(f"  clips:     {', '.join(r.scope.clips) or '-'}")
        print(f"  window:    {_fmt_ms(r.scope.from_ms)} .. {_fmt_ms(r.scope.to_ms)}")
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
    from agent.envelope import unwrap_key, verify_clip, wrap_key

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
    hub = _hub(args)
    client = _connect(args, "owner")
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
                _ms(args.start, req.from_ms), _ms(args.end, req.to_ms),
            )
            why = scope.escalation(req)
            if why is not None:
                raise AccessError(why)
            keys = _rewrap(ident, args.clips_dir, scope.clips, hub, ch.request.requester)
        data = A.make_decision(ident, ch, verdict, next_counter(identity_path), ch.roster_version, _now_ms(),
                               scope, keys)
        rid = ch.request.request_id
        inbox = _Inbox()
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
    hub = _hub(args)
    client = _connect(args, "owner")
    try:
        inbox = _Inbox()
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
        data = A.make_mode_set(ident, hub.key_id, args.mode, next_counter(identity_path), chs_rv, _now_ms())
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


# --- audit ---------------------------------------------------------------------------------


def cmd_audit_pin(args: argparse.Namespace) -> int:
    hub = _hub(args)
    if args.checkpoint:
        raw = Path(args.checkpoint).read_bytes()
    else:
        client = _connect(args, "owner")
        try:
            inbox = _Inbox()
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
        hub = _hub(args)
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


# --- hub (standalone service) ------------------------------------------------------------------


def cmd_hub_serve(args: argparse.Namespace) -> int:
    from agent.mqtt.service import serve

    return serve(args.config, run_for_s=args.run_for)


# --- registration ---------------------------------------------------------------------------


def _pwfile_check(path: str | None) -> None:
    if path and os.path.exists(path) and stat.S_IMODE(os.stat(path).st_mode) & 0o077:
        raise ConfigError(f"password file {path} must be mode 0600")


def register_cli(sub: argparse._SubParsersAction) -> None:
    rq = sub.add_parser("requester", help="request access to clips and open what was granted")
    rq.set_defaults(func=lambda a: (rq.print_help(), 2)[1])
    rsub = rq.add_subparsers(dest="requester_command", metavar="REQUESTER_COMMAND")
    p = rsub.add_parser("keygen", help="create a requester identity (FILE, 0600) and FILE.pub")
    p.add_argument("--out", required=True, help="secret identity file to create")
    p.add_argument("--name", default="", help="name the owners will see (for example 'acme-support')")
    p.set_defaults(func=cmd_requester_keygen)
    p = rsub.add_parser("request", help="publish a signed access request and wait for the decision")
    p.add_argument("--identity", required=True, help="requester identity file")
    p.add_argument("--hub", required=True, help="the hub's public key (hub.pub or epa1hub: value)")
    p.add_argument("--role", required=True, choices=A.REQUESTER_ROLES, help="who is asking")
    p.add_argument("--camera", action="append", default=[], help="camera id; repeatable")
    p.add_argument("--clip", action="append", default=[], help="recorded clip id (32 hex); repeatable")
    p.add_argument("--from", dest="start", help="start of the time window (ISO 8601 or epoch ms; default 24 h ago)")
    p.add_argument("--to", dest="end", help="end of the time window (default now)")
    p.add_argument("--purpose", required=True, help="why (shown to the owners and kept in the audit log)")
    p.add_argument("--legal-ref", default="", help="legal reference, warrant or ticket number")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the grant or denial")
    p.add_argument("--out", help="where to save the grant (default grant-<id>.json)")
    _conn_args(p)
    p.set_defaults(func=cmd_requester_request)
    p = rsub.add_parser("open", help="decrypt a granted clip")
    p.add_argument("clip", help="the .epaclip file")
    p.add_argument("--identity", required=True, help="requester identity file")
    p.add_argument("--hub", required=True, help="the hub's public key")
    p.add_argument("--grant", required=True, help="grant file saved by `requester request --wait`")
    p.add_argument("--out", required=True, help="where to write the video")
    p.set_defaults(func=cmd_requester_open)

    osub = owner_commands(sub)
    p = osub.add_parser("pending", help="list open access challenges (verified hub and requester signatures)")
    p.add_argument("--hub", required=True, help="the hub's public key")
    p.add_argument("--identity", help="owner device identity (not needed to list)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _conn_args(p)
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
        _conn_args(p)
        p.set_defaults(func=fn)
    p = osub.add_parser("mode", help="show the household mode, or set it with an owner-signed message")
    p.add_argument("mode", nargs="?", choices=A.MODES, help="new mode (omit to show)")
    p.add_argument("--identity", help="owner device identity file (to set)")
    p.add_argument("--hub", required=True, help="the hub's public key")
    p.add_argument("--roster-version", type=int, help="version of the roster installed on the hub")
    _conn_args(p)
    p.set_defaults(func=cmd_owner_mode)

    au = sub.add_parser("audit", help="tamper-evident audit log: pin checkpoints, verify")
    au.set_defaults(func=lambda a: (au.print_help(), 2)[1])
    asub = au.add_subparsers(dest="audit_command", metavar="AUDIT_COMMAND")
    p = asub.add_parser("pin", help="pin the hub's latest signed checkpoint (owner device; never goes back)")
    p.add_argument("--hub", required=True, help="the hub's public key")
    p.add_argument("--pins", required=True, help="pin file on the owner device (one checkpoint per line)")
    p.add_argument("--checkpoint", help="read the checkpoint from this file instead of the broker")
    _conn_args(p)
    p.set_defaults(func=cmd_audit_pin)
    p = asub.add_parser("verify", help="detect edited, removed, reordered or truncated entries")
    p.add_argument("--data", help="the hub's data directory")
    p.add_argument("--log", help="an audit log file (instead of --data)")
    p.add_argument("--hub", help="the hub's public key (default: from --data)")
    p.add_argument("--pins", help="the owner's pin file (truncation is only detectable against it)")
    p.set_defaults(func=cmd_audit_verify)

    hb = sub.add_parser("hub", help="the hub's MQTT side")
    hb.set_defaults(func=lambda a: (hb.print_help(), 2)[1])
    hsub = hb.add_subparsers(dest="hub_command", metavar="HUB_COMMAND")
    p = hsub.add_parser("serve", help="connect to the broker and answer access requests and mode changes")
    p.add_argument("--config", required=True, help="config file with an `mqtt:` section")
    p.add_argument("--run-for", type=float, help="stop after this many seconds (tests, demos)")
    p.set_defaults(func=cmd_hub_serve)
