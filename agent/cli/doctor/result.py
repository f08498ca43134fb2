"""What every doctor check returns: a name, ok/warn/fail, what was found and, unless ok, the fix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.config import LoadedConfig


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    hint: str = ""  # one line: what to do; every warn and fail has one
    #: The failure is only that a server (the broker, an S3 endpoint) could not be reached. At boot
    #: the network may not be up yet, and nothing about privacy depends on it (clips wait in the
    #: outbox), so `firmware_hooks boot` reports it without lighting the fault LED. A wrong
    #: password, CA or bucket is a setup error and stays a failure there too.
    unreachable: bool = False


Check = Callable[[LoadedConfig | None], list[CheckResult]]
