"""The owner device's side of access and audit: `owner pending|approve|deny|mode`, `audit pin|verify`.

The owner tool verifies the hub's signature on the challenge and the requester's signature on
the request before showing or approving anything; it never signs a scope wider than the request;
it re-wraps clip keys only to the requester key named in the signed request. Nothing here prints
key material.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent import access as A
from agent.access.audit import (
    CHECKPOINT_FILE,
    STALE_AFTER_S,
    Checkpoint,
    audit_dir,
    pin_checkpoint,
    read_pins,
    verify_with_checkpoint,
)
from agent.cli.mqttargs import (
    Inbox,
    add_broker_args,
    broker_topics,
    connect,
    format_ms,
    hub_key,
    next_counter,
    now_ms,
    parse_ms,
    retained,
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
    AgentError,
    AuditError,
    ExitCode,
)
from agent.mqtt.client import MqttClient
from agent.storage.index import CLIP_SUFFIX, clip_id_of


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


def _who(c: A.Challenge) -> str:
    r = c.request
    if c.verified:
        return f"{r.requester.name!r} ({c.role}, enrolled by the owners), key {r.requester.key_id}"
    return (f"UNVERIFIED requester: not enrolled by the owners; calls itself {r.requester.name!r} and claims "
            f"the role {r.role!r}; key {r.requester.key_id}")


def _clip_line(m: A.ClipMeta) -> str:
    return f"{m.camera} {format_ms(m.start_ms)} .. {format_ms(m.end_ms)}  (clip {m.clip[:12]}…)"


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
            "requester_status": c.requester_status, "role": c.role, "claimed_role": c.request.role,
            "scope": c.request.scope.to_json(), "clips": [m.to_json() for m in c.clips],
            "purpose": c.request.purpose, "legal_ref": c.request.legal_ref,
            "approvals_needed": c.approvals_needed, "issued_ms": c.issued_ms, "ttl_s": c.ttl_s,
        } for c in chs], indent=2))
        return ExitCode.OK
    if not chs:
        print("no pending access requests")
        return ExitCode.OK
    for c in chs:
        r = c.request
        print(f"challenge {c.challenge_id[:16]}  ({c.approvals_needed} owner approval(s) needed, "
              f"open {c.ttl_s // 60} min from {format_ms(c.issued_ms)})")
        print(f"  requester: {_who(c)}")
        print(f"  purpose:   {r.purpose}")
        print(f"  legal ref: {r.legal_ref}")
        print(f"  cameras:   {', '.join(r.scope.cameras) or '-'}")
        print(f"  window:    {format_ms(r.scope.from_ms)} .. {format_ms(r.scope.to_ms)}")
        if c.clips:
            print("  clips (from the hub's own index):")
            for m in c.clips:
                print(f"    {_clip_line(m)}")
        else:
            print("  clips:     -")
    return ExitCode.OK


def _find_challenge(chs: list[A.Challenge], wanted: str) -> A.Challenge:
    wanted = wanted.lower()
    if len(wanted) < 8:
        raise AccessError("give at least the first 8 characters of the challenge id")
    hits = [c for c in chs if c.challenge_id.startswith(wanted)]
    if len(hits) != 1:
        raise AccessError(f"no single pending challenge starts with {wanted!r} ({len(hits)} match)")
    return hits[0]


def _clip_files(clip_dirs: list[str]) -> dict[str, Path]:
    """Clip files under the given directories, by the clip id their name carries (the one naming
    rule, `agent.storage.index.clip_id_of`: destination and outbox names alike)."""
    found: dict[str, Path] = {}
    for d in clip_dirs:
        root = Path(d)
        if not root.is_dir():
            raise AccessError(f"--clips-dir {d}: not a directory")
        for p in sorted(root.rglob("*" + CLIP_SUFFIX)):
            cid = clip_id_of(p.name)
            if cid is not None:
                found.setdefault(cid, p)
    return found


def _rewrap(identity: DeviceIdentity, clip_dirs: list[str], ch: A.Challenge, scope: A.Scope,
            hub: HubPublic, identity_path: Path | None = None) -> tuple[A.WrappedKey, ...]:
    """Re-wrap each approved clip's key to the requester, then seal it to the hub for release.

    Each clip is decrypted here anyway (to unwrap and re-wrap its key), so its own metadata is
    checked too: a clip whose camera or time is not what the hub's index said, or not inside the
    approved scope, is refused, whatever the index claims."""
    from agent.crypto.envelope import decrypt_verified, unwrap_key, wrap_key

    found = _clip_files(clip_dirs)
    epochs = None
    if identity_path is not None:
        import time

        from agent.cli.owner.epochs import device_store

        # Clips wrapped to an epoch key open only with this device's epoch store (retention applied:
        # a clip past retention cannot be released to anyone).
        epochs = device_store(identity_path, identity, time.time())
    inner = []
    for cid in scope.clips:
        path = found.get(cid)
        if path is None:
            raise AccessError(f"clip {cid} not found under {clip_dirs or ['(no --clips-dir)']}; "
                              "give --clips-dir, or narrow the approval with --clip")
        data = path.read_bytes()
        info = verify_clip(data, hub)
        if info.clip_id_hex != cid:
            raise AccessError(f"{path} holds clip {info.clip_id_hex}, not {cid}")
        k = unwrap_key(identity, info.header, epochs)  # this device must be a recipient of the clip
        meta, _ = decrypt_verified(data, info, k, lambda _b: None)
        _check_clip_meta(cid, meta, ch.clip(cid), scope, path)
        inner.append(A.WrappedKey(cid, wrap_key(ch.request.requester, info.header.clip_id, k).sealed))
        del k
    return A.release_keys(ch, inner)


def _check_clip_meta(cid: str, meta: Mapping[str, Any], indexed: A.ClipMeta, scope: A.Scope, path: Path) -> None:
    cam = meta.get("camera_id")
    start, end = meta.get("start_wall_s"), meta.get("end_wall_s")
    if not isinstance(cam, str) or not isinstance(start, int | float) or not isinstance(end, int | float):
        raise AccessError(f"clip {cid} ({path}) carries no camera and time: refusing to release it")
    real = A.ClipMeta(cid, cam, int(start * 1000), int(end * 1000))
    if real.camera != indexed.camera or abs(real.start_ms - indexed.start_ms) > 2000 \
            or abs(real.end_ms - indexed.end_ms) > 2000:
        raise AccessError(f"clip {cid} is really {_clip_line(real)}, but the hub said {_clip_line(indexed)}: "
                          "refusing to release it")
    why = real.outside(scope)
    if why is not None:
        raise AccessError(f"refusing to release {_clip_line(real)}: {why}")


def _approved_scope(args: argparse.Namespace, ch: A.Challenge) -> A.Scope:
    """The scope this owner approves: the request, narrowed by --camera/--from/--to/--clip. Narrowing
    by camera or time drops the requested clips outside the narrowed scope; a --clip outside it
    is an error."""
    req = ch.request.scope
    cams = args.camera if args.camera else req.cameras
    lo, hi = parse_ms(args.start, req.from_ms), parse_ms(args.end, req.to_ms)
    frame = A.Scope.make(cams, (), lo, hi)
    if args.clip:
        clips = [c.lower() for c in args.clip]
        for c in clips:
            why = ch.clip(c).outside(frame)
            if why is not None:
                raise AccessError(f"--clip {c}: {why}")
    else:
        clips = [m.clip for m in ch.clips if m.outside(frame) is None]
    scope = A.Scope.make(cams, clips, lo, hi)
    why = scope.escalation(req)
    if why is not None:
        raise AccessError(why)
    return scope


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
            if not ch.verified:
                print(f"warning: {_who(ch)}", file=sys.stderr)
            scope = _approved_scope(args, ch)
            keys = _rewrap(ident, args.clips_dir, ch, scope, hub, identity_path)
            for c in scope.clips:
                print(f"approving {_clip_line(ch.clip(c))}")
        data = A.make_decision(ident, ch, verdict, next_counter(identity_path), ch.roster_version, now_ms(),
                               scope, keys)
        rid = ch.request.request_id
        inbox = Inbox()
        client.subscribe(client.topics.access_status(rid), inbox)
        client.subscribe(client.topics.access_grant(rid), inbox)
        client.publish_wait(client.topics.access_decision(ch.challenge_id), data, timeout_s=args.timeout)
        print(f"{verdict} sent for challenge {ch.challenge_id[:16]} (request {rid})")

        def answered() -> bool:
            return any(_answer(m.payload, hub) is not None for m in inbox.messages)

        with inbox.cond:
            inbox.cond.wait_for(answered, args.timeout)
            msgs = list(inbox.messages)
    finally:
        client.stop()
    for m in msgs:
        ans = _answer(m.payload, hub)
        if ans is not None:
            print(f"hub: {ans[1]}")
            return ans[0]
    print("no answer from the hub yet", file=sys.stderr)
    return ExitCode.NO_ANSWER


def _answer(payload: bytes, hub: HubPublic) -> tuple[int, str] | None:
    """The hub's verified answer to a decision, or None (unsigned, unrelated or not yet final)."""
    if not payload:
        return None
    for kind in ("grant", "denial", "status"):
        try:
            m = A.parse_hub_message(payload, kind, hub)
        except AccessError:
            continue
        if kind == "grant":
            return ExitCode.OK, "granted"
        if kind == "denial":
            return ExitCode.OK, "denied"
        st = m.body.get("status")
        if st == "approved":
            return ExitCode.OK, f"approved: {m.body.get('reason', '')}"
        if st == "refused":
            return ExitCode.REFUSED, f"refused: {m.body.get('reason', '')}"
    return None


def cmd_owner_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


def cmd_owner_deny(args: argparse.Namespace) -> int:
    return _decide(args, "deny")


def _mode_states(inbox: Inbox, hub: HubPublic) -> list[A.ModeState]:
    out = []
    with inbox.cond:
        msgs = list(inbox.messages)
    for m in msgs:
        try:
            out.append(A.parse_mode_state(m.payload, hub))
        except AccessError:
            continue  # unsigned or not from this hub: never shown as the mode
    return out


def roster_version_of(states: list[A.ModeState], given: int | None) -> int:
    """The roster version an owner message names: `--roster-version` when given, else the one in the
    newest mode state this hub signed (what the hub holds)."""
    if given is not None:
        return int(given)
    if not states:
        raise AccessError("the hub's roster version is unknown (no signed mode state on the broker); "
                          "give --roster-version")
    return states[-1].roster_version


def hub_roster_version(args: argparse.Namespace, client: Any, hub: HubPublic) -> int:
    """`roster_version_of`, reading the hub's signed mode state from the broker only when needed."""
    if args.roster_version is not None:
        return int(args.roster_version)
    inbox = Inbox()
    client.subscribe(client.topics.mode_state, inbox, wait_s=args.timeout)
    client.sync(args.timeout)
    return roster_version_of(_mode_states(inbox, hub), None)


def cmd_owner_mode(args: argparse.Namespace) -> int:
    hub = hub_key(args)
    client = connect(args, "owner")
    res: A.ModeResult | None = None
    fresh: list[A.ModeState] = []
    try:
        inbox = Inbox()
        client.subscribe(client.topics.mode_state, inbox, wait_s=args.timeout)
        client.sync(args.timeout)
        states = _mode_states(inbox, hub)
        if args.mode is None:
            if not states:
                print("mode: unconfirmed (no mode signed by this hub on the broker)")
                return ExitCode.NO_ANSWER
            st = states[-1]
            switch = "; the privacy switch on the hub is ON" if st.switch else ""
            print(f"mode: {st.mode} (signed by hub {hub.key_id} at {format_ms(st.issued_ms)}{switch})")
            return ExitCode.OK
        identity_path = Path(args.identity) if args.identity else None
        if identity_path is None:
            raise AccessError("changing the mode needs --identity (an owner device signs it)")
        ident = load_device_identity(identity_path)
        rv = roster_version_of(states, args.roster_version)
        counter = next_counter(identity_path)
        data = A.make_mode_set(ident, hub.key_id, args.mode, counter, rv, now_ms())
        results = Inbox()
        client.subscribe(client.topics.mode_result(ident.key_id), results, wait_s=args.timeout)
        client.publish_wait(client.topics.mode_set, data, timeout_s=args.timeout)

        res = results.first(lambda p: A.parse_mode_result(p, hub),
                            lambda r: r.device == ident.key_id and r.counter == counter, args.timeout)
        if res is not None and res.status == "applied":
            # Confirmed only by the signed mode state itself, not by the answer alone.
            with inbox.cond:
                inbox.cond.wait_for(lambda: any(s.mode == args.mode and s.seq > 0 for s in _mode_states(inbox, hub)
                                                if s not in states), args.timeout)
            fresh = [s for s in _mode_states(inbox, hub) if s not in states]
    finally:
        client.stop()
    if res is None:
        print(f"mode change to {args.mode} not confirmed: no answer from the hub within {args.timeout:g} s "
              "(the hub is offline, or does not know this device: check the roster)", file=sys.stderr)
        return ExitCode.NO_ANSWER
    if res.status == "refused":
        print(f"mode change to {args.mode} refused by the hub: {res.reason}", file=sys.stderr)
        return ExitCode.REFUSED
    if fresh and fresh[-1].mode == args.mode:
        print(f"mode is now {args.mode} (confirmed by the hub's signed state)")
        return ExitCode.OK
    print(f"mode change to {args.mode} accepted by the hub, but its signed mode state shows "
          f"{fresh[-1].mode if fresh else 'nothing new'}: unconfirmed", file=sys.stderr)
    return ExitCode.NO_ANSWER


def _proof_over_mqtt(args: argparse.Namespace) -> Any:
    """Ask the hub for a consistency proof (old size -> new size) over the broker."""

    def proof_for(old: int, new: int) -> list[bytes]:
        nonce = os.urandom(16).hex()
        client = connect(args, "owner")
        try:
            inbox = Inbox()
            client.subscribe(client.topics.audit_proof(nonce), inbox, wait_s=args.timeout)
            client.publish_wait(client.topics.audit_proof_request,
                                json.dumps({"from": old, "to": new, "nonce": nonce}), timeout_s=args.timeout)
            with inbox.cond:
                inbox.cond.wait_for(lambda: bool(inbox.messages), args.timeout)
                msgs = list(inbox.messages)
        finally:
            client.stop()
        if not msgs:
            raise AuditError("the hub sent no consistency proof; is it running? (or give --log FILE)")
        return _parse_proof(msgs[0].payload, old, new)

    return proof_for


def _parse_proof(payload: bytes, old: int, new: int) -> list[bytes]:
    from agent.crypto.keys import b64url_decode
    from agent.jsonlimits import loads_bounded

    try:
        doc = loads_bounded(payload, max_bytes=16384, max_depth=3, what="consistency proof")
        if not isinstance(doc, dict) or doc.get("from") != old or doc.get("to") != new:
            raise ValueError("the proof is for other sizes")
        proof = doc["proof"]
        if not isinstance(proof, list) or len(proof) > 128 or not all(isinstance(h, str) for h in proof):
            raise ValueError("proof must be a list of hashes")
        return [b64url_decode(h, "proof hash") for h in proof]
    except (ValueError, KeyError, AgentError) as e:
        raise AuditError(f"malformed consistency proof from the broker: {e}") from None


def _proof_from_log(path: Path, hub: HubPublic) -> Any:
    from agent.access import merkle
    from agent.access.audit import leaves_of, read_entries

    def proof_for(old: int, new: int) -> list[bytes]:
        entries, problems = read_entries(path)
        if problems:
            raise AuditError(f"the log {path} is damaged: {problems[0]}")
        if new > len(entries):
            raise AuditError(f"the log {path} has {len(entries)} entries, fewer than the checkpoint's {new}")
        return merkle.consistency_proof(leaves_of(entries)[:new], old)

    return proof_for


def cmd_audit_pin(args: argparse.Namespace) -> int:
    hub = hub_key(args)
    if args.checkpoint:
        raw = Path(args.checkpoint).read_bytes()
    else:
        msgs = retained(args, broker_topics(args).audit_checkpoint)
        if not msgs:
            raise AuditError("the broker holds no audit checkpoint for this hub")
        raw = msgs[-1].payload
    cp = Checkpoint.decode(raw, hub)
    proof_for = _proof_from_log(Path(args.log), hub) if args.log else _proof_over_mqtt(args)
    added = pin_checkpoint(Path(args.pins), cp, hub, proof_for)
    age_s = (now_ms() - cp.wall_ms) / 1000
    print(f"{'pinned' if added else 'already pinned'}: {cp.size} entries, root {cp.root[:16]}…, "
          f"signed {format_ms(cp.wall_ms)}" + (" (consistent with the previous pin)" if added else ""))
    if age_s > args.max_age_s:
        print(f"warning: this checkpoint was signed {age_s / 3600:.1f} h ago: the hub may be offline, or the "
              "broker keeps showing an old one", file=sys.stderr)
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
    own = Path(args.checkpoint) if args.checkpoint else (audit_dir(args.data) / CHECKPOINT_FILE if args.data else None)
    pins = read_pins(Path(args.pins), hub) if args.pins else []
    report = verify_with_checkpoint(log_path, hub, own, pins)
    print(f"audit log {log_path}: {report.entries} entries, root {report.root[:16]}…, "
          f"{report.checked - len(pins)} hub checkpoint(s) and {len(pins)} pinned checkpoint(s) checked")
    for w in report.warnings:
        print(f"warning: {w}")
    if report.ok:
        print("OK: chain intact and matching every signed checkpoint")
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
            p.add_argument("--camera", action="append", default=[],
                           help="approve only these cameras (requested clips of other cameras are dropped)")
            p.add_argument("--clip", action="append", default=[], help="approve only these clips")
            p.add_argument("--from", dest="start", help="approve only from this time (earlier clips are dropped)")
            p.add_argument("--to", dest="end", help="approve only up to this time (later clips are dropped)")
            p.add_argument("--clips-dir", action="append", default=[],
                           help="where the approved clips are (their keys are re-wrapped to the requester)")
        add_broker_args(p)
        p.set_defaults(func=fn)
    p = osub.add_parser("mode", help="show the household mode (verified hub signature), or set it with an "
                        "owner-signed message")
    p.add_argument("mode", nargs="?", choices=A.MODES, help="new mode (omit to show)")
    p.add_argument("--identity", help="owner device identity file (to set)")
    p.add_argument("--hub", required=True, help="the hub's public key")
    p.add_argument("--roster-version", type=int, help="version of the roster installed on the hub (default: "
                   "from the hub's signed mode state)")
    add_broker_args(p)
    p.set_defaults(func=cmd_owner_mode)


def register_audit(sub: argparse._SubParsersAction) -> None:
    """`audit pin` (owner device) and `audit verify` (anyone holding the log)."""
    asub = command_group(sub, "audit", "tamper-evident audit log: pin checkpoints, verify")
    p = asub.add_parser("pin", help="pin the hub's latest signed checkpoint (owner device; never goes back)")
    p.add_argument("--hub", required=True, help="the hub's public key")
    p.add_argument("--pins", required=True, help="pin file on the owner device (one checkpoint per line)")
    p.add_argument("--checkpoint", help="read the checkpoint from this file instead of the broker")
    p.add_argument("--log", help="prove consistency from this copy of the hub's audit log instead of asking "
                   "the hub over the broker")
    p.add_argument("--max-age-s", type=float, default=STALE_AFTER_S,
                   help=f"warn when the checkpoint is older than this (default {STALE_AFTER_S} s)")
    add_broker_args(p)
    p.set_defaults(func=cmd_audit_pin)
    p = asub.add_parser("verify", help="detect edited, removed, reordered or truncated entries")
    p.add_argument("--data", help="the hub's data directory")
    p.add_argument("--log", help="an audit log file (instead of --data)")
    p.add_argument("--hub", help="the hub's public key (default: from --data)")
    p.add_argument("--checkpoint", help="a hub-signed checkpoint to check the log against (default with "
                   "--data: the hub's own)")
    p.add_argument("--pins", help="the owner's pin file (truncation is only detectable against it)")
    p.set_defaults(func=cmd_audit_verify)
