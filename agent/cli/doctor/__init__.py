"""`privacy-agent doctor`: the installer's checks of a hub, each with what to fix.

Python and libraries, the H.264 encoder `run` will use and why, ONNX Runtime telemetry (off, no
device id left behind), the clock, each camera's source, the storage (the data dir; each
directory sink there, writable, marked, mounted when it is a NAS; each S3 sink's credentials and
bucket; plaintext sinks), the broker (reachable, TLS verified, the hub's login accepted), the
models, the hub's keys, the access state, each household device's epoch keys and the data dir's
modes. Every warning and failure prints a one-line fix. Exit code `FAILED` when any check fails,
which `firmware_hooks boot-check` turns into a fault LED.

One module per group of checks: `system` (Python, encoder, telemetry, clock), `storage` (data
dir, directory and S3 sinks), `broker` (MQTT), `hub` (sources, models, keys, access, epochs, data
dir modes); `result` holds what they return.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from agent.cli.doctor.broker import check_broker
from agent.cli.doctor.hub import (
    check_access,
    check_data_dir_modes,
    check_epochs,
    check_keys,
    check_models,
    check_scenes,
    check_sources,
)
from agent.cli.doctor.result import Check, CheckResult
from agent.cli.doctor.storage import check_storage
from agent.cli.doctor.system import (
    check_clock,
    check_encoder,
    check_python,
    check_telemetry,
    ort_telemetry_dirs,
)
from agent.config import LoadedConfig, load_config
from agent.errors import AgentError, ExitCode

__all__ = [
    "CHECKS", "Check", "CheckResult", "check_access", "check_broker", "check_clock", "check_data_dir_modes",
    "check_encoder", "check_epochs", "check_keys", "check_models", "check_python", "check_scenes", "check_sources",
    "check_storage", "check_telemetry", "cmd_doctor", "ort_telemetry_dirs", "run_checks",
]

# Every check is listed here, none appended from elsewhere: a command loads only its own module
# (`agent.cli.main.COMMAND_MODULES`), so a check another command's module added at import would be
# missing from `doctor` whenever that module was not loaded.
CHECKS: list[Check] = [check_python, check_encoder, check_telemetry, check_clock, check_sources, check_storage,
                       check_broker, check_models, check_keys, check_access, check_epochs, check_data_dir_modes,
                       check_scenes]


_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def run_checks(loaded: LoadedConfig | None) -> list[CheckResult]:
    results: list[CheckResult] = []
    for check in CHECKS:
        try:
            results.extend(check(loaded))
        except Exception as e:  # noqa: BLE001 - a broken check is reported, not fatal
            results.append(CheckResult(getattr(check, "__name__", "check"), "fail", f"check crashed: {e!r}",
                                       "run doctor again; if it repeats, report it with this line"))
    return results


def cmd_doctor(args: argparse.Namespace) -> int:
    loaded: LoadedConfig | None = None
    results: list[CheckResult] = []
    if args.config:
        try:
            loaded = load_config(args.config)
            results.append(CheckResult("config", "ok", f"{args.config} (sha256 {loaded.sha256[:16]})"))
        except AgentError as e:
            results.append(CheckResult("config", "fail", str(e), "run `privacy-agent check-config FILE`"))
    results += run_checks(loaded)
    if args.at_boot:
        results = [replace(r, status="warn", detail=f"{r.detail} (at boot: the network may not be up yet)")
                   if r.status == "fail" and r.unreachable else r for r in results]
    width = max(len(r.name) for r in results)
    for r in results:
        line = f"[{_MARK[r.status]}] {r.name:<{width}}  {r.detail}"
        if r.hint and r.status != "ok":
            line += f"\n       {'':<{width}}  fix: {r.hint}"
        print(line)
    fails = sum(r.status == "fail" for r in results)
    warns = sum(r.status == "warn" for r in results)
    print(f"\n{len(results)} checks: {fails} failed, {warns} warnings")
    return ExitCode.FAILED if fails else ExitCode.OK


def register_cli(sub: argparse._SubParsersAction) -> None:
    """`doctor`, registered on its own: `run` does not load the checks (nor `ssl`, which the
    broker's check needs) that it never runs."""
    p = sub.add_parser("doctor", help="check this hub's installation and config, and say what to fix")
    p.add_argument("--config", help="config file to check as well")
    p.add_argument("--at-boot", action="store_true",
                   help="as the firmware's boot hook: a broker or S3 endpoint that cannot be reached yet is a "
                        "warning, not a failure (a wrong password, CA or bucket still fails)")
    p.set_defaults(func=cmd_doctor)
