"""The command line of the firmware hooks: `python -m firmware_hooks HOOK ...`.

Every hook, its trigger, inputs, outputs, exit codes and timeout are in firmware_hooks/CONTRACT.md;
`EXIT_CODES` below is what each hook can exit with, and a test keeps the two equal. The rule for
the firmware side: a hook that is missing, fails or times out means deny (no upload, privacy on,
no reset claimed).

Hooks: `boot` (and its older name `boot-check`), `shutdown`, `factory-reset`, `upload-gate`,
`privacy-switch`, `watch-switch`, `led-test`. Each prints at most one line of error on stderr
(`firmware hook: error: ...`), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.clock import SystemClock
from agent.config import LoadedConfig, load_config
from agent.crypto.keys import hub_public, load_hub_public
from agent.errors import AgentError, ConfigError, ExitCode
from agent.fsutil import private_umask
from firmware_hooks import gate, indicator, lifecycle, switch

# Kept importable from here, where they used to live.
from firmware_hooks.switch import GpioLine, SysfsGpioLine, apply_switch, watch

__all__ = ["EXIT_CODES", "GpioLine", "SysfsGpioLine", "apply_switch", "main", "watch"]

log = logging.getLogger(__name__)

_E = ExitCode
#: Every hook the command line registers, and every code it can exit with (CONTRACT.md lists the same).
EXIT_CODES: dict[str, tuple[ExitCode, ...]] = {
    "boot": (_E.OK, _E.FAILED, _E.ERROR, _E.INTERRUPTED),
    "boot-check": (_E.OK, _E.FAILED, _E.ERROR, _E.INTERRUPTED),
    "shutdown": (_E.OK, _E.ERROR, _E.BUSY, _E.AUDIT_FAILED, _E.INTERRUPTED),
    "factory-reset": (_E.OK, _E.FAILED, _E.ERROR, _E.NO_ANSWER, _E.BUSY, _E.AUDIT_FAILED, _E.INTERRUPTED),
    "upload-gate": (*gate.GATE_CODES, _E.INTERRUPTED),
    "privacy-switch": (_E.OK, _E.ERROR, _E.INTERRUPTED),
    "watch-switch": (_E.ERROR, _E.INTERRUPTED),
    "led-test": (_E.OK, _E.FAILED, _E.ERROR, _E.INTERRUPTED),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m firmware_hooks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="hook", required=True)
    for name in ("boot", "boot-check"):
        b = sub.add_parser(name, help="the doctor checks, and whether the last power-off was clean")
        b.add_argument("--config", required=True)
    sd = sub.add_parser("shutdown", help="record a clean shutdown in the audit log (service stopped first)")
    sd.add_argument("--config", required=True)
    fr = sub.add_parser("factory-reset", help="record and publish the end of the audit log, then wipe the data dir")
    fr.add_argument("--config", required=True)
    fr.add_argument("--yes", action="store_true", help="really wipe: keys, clips, state and the audit log")
    fr.add_argument("--offline", action="store_true",
                    help="reset even though the final checkpoint cannot be published to the broker")
    ug = sub.add_parser("upload-gate", help="exit 0 only for a complete clip signed by this hub")
    ug.add_argument("file", type=Path)
    key = ug.add_mutually_exclusive_group(required=True)
    key.add_argument("--config", help="the hub's config (its key: DATA/keys/hub.pub)")
    key.add_argument("--hub-pub", help="the hub's public key: hub.pub, its epa1hub: value or the data dir")
    s = sub.add_parser("privacy-switch", help="the privacy switch's position: on forces privacy mode")
    s.add_argument("state", choices=["on", "off"])
    s.add_argument("--config", required=True)
    w = sub.add_parser("watch-switch", help="follow a GPIO line as the privacy switch (runs until stopped)")
    switch.add_watch_arguments(w)
    lt = sub.add_parser("led-test", help="light the privacy LED for a few seconds (service stopped)")
    indicator.add_led_test_arguments(lt)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The gate's stderr is its one line of verdict: the config's own warnings (read only for the
    # data dir) would be noise there.
    logging.basicConfig(level=logging.ERROR if args.hook == "upload-gate" else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # umask 077, as in `privacy-agent`: hooks write into the data dir (and may create it), which
    # is for the agent's user alone.
    with private_umask():
        try:
            return _run_hook(args)
        except AgentError as e:
            print(f"firmware hook: error: {e}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt:
            print("firmware hook: interrupted", file=sys.stderr)
            return ExitCode.INTERRUPTED


def _run_hook(args: argparse.Namespace) -> int:
    clock = SystemClock()
    if args.hook in ("boot", "boot-check"):
        from agent.cli.main import main as cli_main

        code = cli_main(["doctor", "--at-boot", "--config", args.config])
        try:
            print(lifecycle.previous_shutdown(load_config(args.config).data_dir))
        except AgentError as e:
            log.debug("no shutdown report: %s", e)  # the doctor above has said what is wrong
        return code
    if args.hook == "upload-gate":
        return _upload_gate(args)
    loaded = load_config(args.config)
    if args.hook == "privacy-switch":
        apply_switch(loaded.data_dir, args.state == "on", clock)
        print(f"privacy switch {args.state}")
        return ExitCode.OK
    if args.hook == "watch-switch":
        watch(switch.line_from_args(args, loaded), loaded.data_dir, clock)
        return ExitCode.ERROR  # not reached: the watcher runs until it is stopped
    if args.hook == "shutdown":
        closing = lifecycle.shutdown(loaded, clock)
        print(closing.checkpoint.encode().decode().rstrip("\n") if closing is not None
              else "shutdown: this hub has no identity yet; nothing to record")
        return ExitCode.OK
    if args.hook == "factory-reset":
        return _factory_reset(args, loaded, clock)
    code, line = indicator.led_test(indicator.led_line(loaded), clock, args.seconds)
    print(line, file=sys.stdout if code == ExitCode.OK else sys.stderr)
    return code


def _upload_gate(args: argparse.Namespace) -> int:
    try:
        hub = load_hub_public(args.hub_pub) if args.hub_pub else hub_public(load_config(args.config).data_dir)
    except AgentError as e:
        # Deny: without this hub's key nothing can be shown to be its clip.
        print(f"upload-gate: deny: {args.file}: cannot load the hub's public key: {e}", file=sys.stderr)
        return ExitCode.ERROR
    v = gate.check_file(args.file, hub)
    if v.passed:
        print(gate.accepted_line(args.file, v))
    else:
        print(f"upload-gate: deny: {args.file}: {v.reason}", file=sys.stderr)
    return v.code


def _factory_reset(args: argparse.Namespace, loaded: LoadedConfig, clock: SystemClock) -> int:
    if not args.yes:
        raise ConfigError(f"factory-reset wipes this hub's keys, clips, state and audit log in {loaded.data_dir}; "
                          "pass --yes to do it")
    r = lifecycle.factory_reset(loaded, clock, offline=args.offline)
    where = ("published to the broker" if r.published else
             "NOT published (--offline or no `mqtt:` section)" if r.closing is not None else "none (no hub identity)")
    print(f"factory reset: {r.wiped.removed} files removed ({r.wiped.overwritten} overwritten first); "
          f"final checkpoint {where}" + (f", kept in {r.kept}" if r.closing is not None else ""))
    if r.wiped.failed:
        shown = "; ".join(r.wiped.failed[:3]) + (f" and {len(r.wiped.failed) - 3} more" if len(r.wiped.failed) > 3 else "")
        print(f"factory reset: error: {len(r.wiped.failed)} entries could not be wiped: {shown}", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK
