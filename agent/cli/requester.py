"""The requester's commands: `requester keygen|request|open`.

    privacy-agent requester keygen  --out FILE
    privacy-agent requester request --identity KEY --hub HUBPUB --role ROLE --camera C [--clip ID]...
    privacy-agent requester open    CLIP --identity KEY --hub HUBPUB --grant GRANT --out clip.mp4

The requester tool decrypts only clips named in a grant that the pinned hub key signed. Nothing
here prints key material.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from agent import access as A
from agent.cli.mqttargs import Inbox, add_broker_args, connect, format_ms, hub_key, now_ms, parse_ms
from agent.cli.parsing import command_group
from agent.crypto.keys import DeviceIdentity, load_device_identity, write_device_identity
from agent.errors import (
    AccessError,
    AgentError,
    EnvelopeError,
    ExitCode,
    OutputExists,
)
from agent.fsutil import create_private, install_file, write_private


def cmd_requester_keygen(args: argparse.Namespace) -> int:
    ident = DeviceIdentity.generate(args.name)
    pub = write_device_identity(ident, Path(args.out))
    print(f"requester identity {ident.key_id} written to {args.out} (mode 0600); public key in {pub}")
    return ExitCode.OK


def cmd_requester_request(args: argparse.Namespace) -> int:
    ident = load_device_identity(args.identity)
    hub = hub_key(args)
    now = now_ms()
    scope = A.Scope.make(args.camera, [c.lower() for c in args.clip],
                         parse_ms(args.start, now - 86_400_000), parse_ms(args.end, now))
    rid = os.urandom(16)
    data = A.make_request(ident, hub.key_id, rid, args.role, scope, args.purpose, args.legal_ref, now)
    client = connect(args, "requester")
    try:
        t = client.topics
        inbox = Inbox()
        client.subscribe(t.access_grant(rid.hex()), inbox)
        client.publish_wait(t.access_request(rid.hex()), data, timeout_s=args.timeout)
        print(f"request {rid.hex()} sent to hub {hub.key_id}")
        if args.wait <= 0:
            return ExitCode.OK
        with inbox.cond:
            inbox.cond.wait_for(lambda: bool(inbox.messages), args.wait)
        if not inbox.messages:
            print(f"no decision within {args.wait:g} s; the owners may still decide", file=sys.stderr)
            return ExitCode.NO_ANSWER
        raw = inbox.messages[0].payload
    finally:
        client.stop()
    grant = A.parse_grant(raw, hub)  # raises AccessError "denied"
    if grant.requester != ident.key_id or grant.request_id != rid.hex():
        raise AccessError("the grant is not for this request")
    out = Path(args.out or f"grant-{rid.hex()[:12]}.json")
    try:
        write_private(out, raw, replace=True)  # a grant carries keys sealed to this requester: 0600
    except OSError as e:
        raise AgentError(f"cannot write the grant to {out}: {e.strerror or e}") from None
    print(f"granted by {', '.join(grant.approvers)}: cameras {list(grant.scope.cameras)}, "
          f"{len(grant.keys)} clip key(s), until {format_ms(grant.expires_ms)}; saved to {out}")
    return ExitCode.OK


def cmd_requester_open(args: argparse.Namespace) -> int:
    from agent.crypto.envelope import Stanza, decrypt_verified, unwrap_key, verify_clip

    out = Path(args.out)
    if not args.force and os.path.lexists(out):
        raise OutputExists(f"{out} already exists; pass --force to replace it, or choose another path")
    ident = load_device_identity(args.identity)
    hub = hub_key(args)
    try:
        grant_raw = Path(args.grant).read_bytes()
    except FileNotFoundError:
        raise AccessError(f"grant file {args.grant} does not exist (saved by `requester request --wait`)") from None
    except OSError as e:
        raise AccessError(f"cannot read grant file {args.grant}: {e.strerror or e}") from None
    grant = A.parse_grant(grant_raw, hub)
    if grant.requester != ident.key_id:
        raise AccessError(f"grant is for requester {grant.requester}, not {ident.key_id}")
    if grant.expires_ms < now_ms():
        # Cooperative: the grant file is removed so this tool never uses it again. A requester
        # who already decrypted a clip has seen it; the hub's audit log is the record of that.
        try:
            Path(args.grant).unlink()
            gone = "; the stored grant was deleted"
        except OSError as e:
            gone = f"; the stored grant could not be deleted ({e.strerror or e})"
        raise AccessError(f"grant expired at {format_ms(grant.expires_ms)}{gone}")
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
    part = out.with_name(out.name + ".part")
    try:
        part.unlink(missing_ok=True)
        with create_private(part) as f:  # decrypted footage: 0600
            meta, n = decrypt_verified(data, info, k, f.write)
            f.flush()
            os.fsync(f.fileno())
        install_file(part, out, replace=args.force)
    except FileExistsError:
        part.unlink(missing_ok=True)
        raise OutputExists(f"{out} already exists; pass --force to replace it, or choose another path") from None
    except OSError as e:
        part.unlink(missing_ok=True)
        raise AgentError(f"cannot write {out}: {e.strerror or e}") from None
    except EnvelopeError:
        part.unlink(missing_ok=True)
        raise
    print(f"clip {info.clip_id_hex} ({meta.get('camera_id', '?')}): {n} bytes written to {out}")
    return ExitCode.OK



def register_cli(sub: argparse._SubParsersAction) -> None:
    rsub = command_group(sub, "requester", "request access to clips and open what was granted")
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
    add_broker_args(p)
    p.set_defaults(func=cmd_requester_request)
    p = rsub.add_parser("open", help="decrypt a granted clip")
    p.add_argument("clip", help="the .epaclip file")
    p.add_argument("--identity", required=True, help="requester identity file")
    p.add_argument("--hub", required=True, help="the hub's public key")
    p.add_argument("--grant", required=True, help="grant file saved by `requester request --wait`")
    p.add_argument("--out", required=True, help="where to write the video (mode 0600)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_requester_open)
