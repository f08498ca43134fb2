"""`owner relearn CAMERA`: from an owner device, tell the hub that a camera's new view is right.

A camera the hub saw moved stays withheld until an owner says so. This signs a `relearn`
(docs/access-protocol.md, "Relearn") with the owner device's key and a fresh counter, publishes
it, and waits for the hub's signed `relearn_result` (applied, or refused and why). The hub
records it in its audit log before the camera relearns.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agent import access as A
from agent.cli.mqttargs import Inbox, add_broker_args, connect, hub_key, next_counter, now_ms
from agent.cli.owner.access import hub_roster_version
from agent.crypto.keys import load_device_identity
from agent.errors import ExitCode


def cmd_owner_relearn(args: argparse.Namespace) -> int:
    hub = hub_key(args)
    identity_path = Path(args.identity)
    ident = load_device_identity(identity_path)
    client = connect(args, "owner")
    res: A.RelearnResult | None = None
    try:
        rv = hub_roster_version(args, client, hub)
        counter = next_counter(identity_path)
        request_id = os.urandom(16)
        data = A.make_relearn(ident, hub.key_id, args.camera, request_id, counter, rv, now_ms())
        results = Inbox()
        client.subscribe(client.topics.relearn_result(ident.key_id), results, wait_s=args.timeout)
        client.publish_wait(client.topics.relearn_request, data, timeout_s=args.timeout)

        res = results.first(lambda p: A.parse_relearn_result(p, hub),
                            lambda r: r.request_id == request_id.hex() and r.device == ident.key_id, args.timeout)
    finally:
        client.stop()
    if res is None:
        print(f"relearn of camera {args.camera} not confirmed: no answer from the hub within {args.timeout:g} s "
              "(the hub is offline, or does not know this device: check the roster)", file=sys.stderr)
        return ExitCode.NO_ANSWER
    if res.status == "refused":
        print(f"relearn of camera {args.camera} refused by the hub: {res.reason}", file=sys.stderr)
        return ExitCode.REFUSED
    print(f"camera {args.camera}: the hub recorded the relearn and is learning the camera's view again "
          "(confirmed by its signed answer)")
    return ExitCode.OK


def register(osub: argparse._SubParsersAction) -> None:
    p = osub.add_parser(
        "relearn",
        help="tell the hub a camera's new view is right (after moving it on purpose); owner-signed",
        description="A camera whose view no longer matches the scene it learned stays withheld until its "
        "owner says the new view is right. This signs a relearn with the owner device's key, sends it to the "
        "hub, and waits for the hub's signed answer. Check the zones first (`zones preview` on the hub).",
    )
    p.add_argument("camera", help="camera id")
    p.add_argument("--identity", required=True, help="owner device identity file")
    p.add_argument("--hub", required=True, help="the hub's public key")
    p.add_argument("--roster-version", type=int, help="version of the roster installed on the hub (default: "
                   "from the hub's signed mode state)")
    add_broker_args(p)
    p.set_defaults(func=cmd_owner_relearn)
