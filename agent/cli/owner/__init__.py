"""The owner's commands: the hub's keys and the roster, clips (`open`, `verify`, `outbox`),
access decisions, the audit log, and a device's epoch keys (`owner epochs`, `owner shred`).

One module per concern (`keys`, `clips`, `access`, `deletion`, `epochs`, `relearn`); this module builds the `owner` group and
registers them in help order.
"""

from __future__ import annotations

import argparse

from agent.cli.owner import access, clips, deletion, epochs, keys, relearn
from agent.cli.parsing import command_group


def register_cli(sub: argparse._SubParsersAction) -> None:
    keys.register_keys(sub)
    osub = command_group(sub, "owner", "owner device tools: keys, roster, approvals")
    keys.register_owner(osub)
    access.register_owner(osub)
    epochs.register_owner(osub)
    deletion.register(osub)
    relearn.register(osub)
    clips.register(sub)
    access.register_audit(sub)
