"""The homeowner's `camera relearn ID`: after moving a camera on purpose, learn its view again.

A camera the tamper check saw moved stays withheld, across restarts, until its owner says the new
view is right: here on the hub, or with an owner-signed `relearn` over MQTT (`owner relearn`).
This command writes a durable relearn request into the data dir
(`agent.analysis.scenestore.write_request`) and returns; it works whether `run` is running or
not. `run` records the request in the hub's audit log (`camera_relearned`, by `local`) before the
camera's pipeline relearns between two frames, or at its next start. The audit log has one
writer, `run`, so this command never appends to it itself.
"""

from __future__ import annotations

import argparse

from agent.analysis.scenestore import write_request
from agent.cli.parsing import command_group
from agent.clock import SystemClock
from agent.config import load_config
from agent.errors import ExitCode, SinkError


def cmd_camera_relearn(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    cam = loaded.config.camera(args.camera)  # an unknown id is an error naming the known ones
    data_dir = loaded.data_dir
    try:
        write_request(data_dir, cam.id, "local", int(SystemClock().wall() * 1000), recorded=False)
    except OSError as e:
        raise SinkError(f"cannot write the relearn request into {data_dir}: {e.strerror or e}") from None
    # Not probed by taking the data-dir lock: that would walk the data dir, and a `run` starting at
    # that moment would find it busy. Both cases are said instead.
    print(f"camera {cam.id}: relearn requested; a running agent relearns it within a second, or if none runs, "
          f"the next start relearns it, after recording it in the audit log. Check the "
          f"zones first with `privacy-agent zones preview --camera {cam.id}`: they must sit on the new view.")
    return ExitCode.OK


def register(sub: argparse._SubParsersAction) -> None:
    csub = command_group(sub, "camera", "camera tools: relearn a camera's view after moving it on purpose")
    r = csub.add_parser(
        "relearn",
        help="learn a camera's view again after moving it on purpose (clears 'moved')",
        description="A camera whose view no longer matches the scene it learned (turned, re-mounted) is "
        "withheld, also across restarts, until its owner says the new view is right. This records a "
        "relearn request in the data dir: a running `privacy-agent run` records it in the audit log and "
        "relearns between two frames; otherwise the next start does. Over MQTT an owner device does the "
        "same with `privacy-agent owner relearn`.",
    )
    r.add_argument("camera", help="camera id")
    r.add_argument("--config", required=True, help="path to config.yaml")
    r.set_defaults(func=cmd_camera_relearn)
