"""The owner device's right to delete: `owner delete` and `owner deletions sync`.

    privacy-agent owner delete --identity KEY --hub HUB --camera porch --from T1 --to T2 [broker]
    privacy-agent owner delete --identity KEY --hub HUB --clip ID ... [broker]
    privacy-agent owner deletions sync --identity KEY --hub HUB --roster ROSTER [broker]

`owner delete` signs a delete request, publishes it (retained, so household devices that are
offline see it later), waits for the hub's signed receipt and prints what was deleted where. Then,
like `deletions sync` on every other household device, it destroys this device's epoch keys for
the epochs WHOLLY inside the window: every copy of those clips, anywhere, becomes unopenable. A
partial epoch also protects clips outside the window, so there the deletion is from storage only
(the receipt says so).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from agent import access as A
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
from agent.cli.owner.access import hub_roster_version
from agent.crypto.keys import Roster, load_device_identity
from agent.errors import AccessError, AgentError, ExitCode
from agent.fsutil import write_private


def _shred_locally(identity_path: Path, scope: A.Scope) -> str:
    """Destroy this device's epoch secrets wholly inside the scope's window (if it keeps any)."""
    from agent.cli.owner.epochs import device_store

    store = None
    if scope.to_ms > scope.from_ms and scope.cameras:
        store = device_store(identity_path, load_device_identity(identity_path), time.time())
    if store is None:
        return "no epoch keys shredded on this device (none kept, or the deletion names clips only)"
    result = store.shred_range(scope.from_ms / 1000, scope.to_ms / 1000, time.time())
    destroyed = list(result.destroyed)
    kept = f"; {len(result.kept_partial)} partial epoch(s) kept (storage-only deletion)" if result.kept_partial else ""
    return (f"destroyed {len(destroyed)} epoch key(s) on this device"
            + (f" ({format_ms(min(destroyed) * store.epoch_s * 1000)} .. "
               f"{format_ms((max(destroyed) + 1) * store.epoch_s * 1000)})" if destroyed else "") + kept)


def _scope(args: argparse.Namespace) -> A.Scope:
    if not args.camera and not args.clip:
        raise AccessError("name what to delete: --camera (with --from/--to) or --clip")
    lo = parse_ms(args.start, 0)
    hi = parse_ms(args.end, now_ms())
    return A.Scope.make(args.camera, [c.lower() for c in args.clip], lo, hi)


def cmd_owner_delete(args: argparse.Namespace) -> int:
    identity_path = Path(args.identity)
    ident = load_device_identity(identity_path)
    hub = hub_key(args)
    scope = _scope(args)
    client = connect(args, "owner")
    try:
        rv = hub_roster_version(args, client, hub)
        rid = os.urandom(16)
        data = A.make_delete_request(ident, hub.key_id, rid, scope, next_counter(identity_path), rv, now_ms())
        inbox = Inbox()
        client.subscribe(client.topics.delete_receipt(rid.hex()), inbox, wait_s=args.timeout)
        client.publish_wait(client.topics.delete_request(rid.hex()), data, retain=True, timeout_s=args.timeout)
        print(f"delete request {rid.hex()} sent: cameras {', '.join(scope.cameras) or '-'}, clips "
              f"{len(scope.clips)}, {format_ms(scope.from_ms)} .. {format_ms(scope.to_ms)}")

        got = inbox.first(lambda p: (A.parse_delete_receipt(p, hub), p), lambda _r: True, args.wait)
    finally:
        client.stop()
    if got is None:
        print(f"no receipt from the hub within {args.wait:g} s; the request stays on the broker and the hub "
              "carries it out when it sees it", file=sys.stderr)
        return ExitCode.NO_ANSWER
    rc, raw = got
    out = Path(args.receipt_out or f"delete-receipt-{rc.request_id[:12]}.json")
    try:
        write_private(out, raw, replace=True)  # `verify --receipt` explains the gaps it leaves
    except OSError as e:
        print(f"warning: cannot save the receipt to {out}: {e.strerror or e}", file=sys.stderr)
    if rc.status == "refused":
        print(f"deletion refused by the hub: {rc.reason}", file=sys.stderr)
        return ExitCode.REFUSED
    print(f"hub deleted {len(rc.deleted)} clip(s)" + (f"; {len(rc.pending)} still pending at an unreachable "
                                                       "destination (retried)" if rc.pending else ""))
    for d in rc.deleted:
        print(f"  {d.get('camera', '?')} {format_ms(int(d.get('start_ms', 0)))}  clip {str(d.get('clip'))[:12]}…  "
              f"from {', '.join(map(str, d.get('places', []))) or '-'}")
    for lo, hi in rc.storage_only:
        print(f"  storage only (partial epoch): {format_ms(lo)} .. {format_ms(hi)}")
    print(_shred_locally(identity_path, scope))
    return ExitCode.OK if not rc.pending else ExitCode.FAILED


def cmd_deletions_sync(args: argparse.Namespace) -> int:
    """Every other household device: shred epochs for every deletion an owner signed (checked against
    the roster), whether or not the hub has carried it out yet: the owner's signature is the
    request, and the keys are the last copy that can open the clips, so the device acts on it
    alone (a hub that refused a stale-roster request still gets the owner's intent done here)."""
    identity_path = Path(args.identity)
    load_device_identity(identity_path)  # a clear error for a wrong file, before the broker
    hub = hub_key(args)
    roster = Roster.decode(Path(args.roster).read_bytes(), args.roster)
    msgs = retained(args, broker_topics(args).delete_request_filter)
    done = 0
    for m in msgs:
        try:
            rid, device, scope = A.parse_delete_request(m.payload, hub.key_id, roster)
        except AccessError as e:
            print(f"ignoring {m.topic}: {e}", file=sys.stderr)
            continue
        try:
            print(f"deletion {rid[:12]}… by {device}: {_shred_locally(identity_path, scope)}")
        except AgentError as e:
            print(f"deletion {rid[:12]}…: cannot shred: {e}", file=sys.stderr)
            return e.exit_code
        done += 1
    print(f"{done} signed deletion(s) applied on this device")
    return ExitCode.OK


def register(osub: argparse._SubParsersAction) -> None:
    p = osub.add_parser("delete", help="delete clips everywhere with an owner-signed request (and shred this "
                        "device's epoch keys for the window)")
    p.add_argument("--identity", required=True, help="owner device identity file")
    p.add_argument("--hub", required=True, help="the hub's public key")
    p.add_argument("--camera", action="append", default=[], help="camera id; repeatable")
    p.add_argument("--clip", action="append", default=[], help="clip id (32 hex); repeatable")
    p.add_argument("--from", dest="start", help="start of the window (ISO 8601 or epoch ms; default: the beginning)")
    p.add_argument("--to", dest="end", help="end of the window (default now)")
    p.add_argument("--roster-version", type=int, help="the hub's roster version (default: from its signed state)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the hub's receipt")
    p.add_argument("--receipt-out", help="where to save the hub's signed receipt (default delete-receipt-<id>.json)")
    add_broker_args(p)
    p.set_defaults(func=cmd_owner_delete)
    g = osub.add_parser("deletions", help="apply the household's signed deletions on this device")
    gsub = g.add_subparsers(dest="action", required=True)
    p = gsub.add_parser("sync", help="shred this device's epoch keys for every signed deletion on the broker")
    p.add_argument("--identity", required=True, help="this device's identity file")
    p.add_argument("--hub", required=True, help="the hub's public key")
    p.add_argument("--roster", required=True, help="the household's roster file (who may sign a deletion)")
    add_broker_args(p)
    p.set_defaults(func=cmd_deletions_sync)
