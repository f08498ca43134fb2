"""A minimal sd_notify client: readiness, status and watchdog pings to systemd.

The protocol is one datagram per notification to the AF_UNIX socket named by `$NOTIFY_SOCKET`
(an abstract socket when the name starts with `@`), lines of `KEY=value`. About twenty lines of
our own instead of a dependency: the `sdnotify` package on PyPI ships no wheel and adds nothing
over this, and the agent's runtime dependencies are kept to what a hub needs.

Invariants:
- Without `$NOTIFY_SOCKET` (not started by systemd, or by a unit without `Type=notify`) every call
  is a no-op.
- Notifying never raises: a failed send is logged once; systemd's watchdog then restarts the
  service, which is the fail-closed outcome.
- The watchdog interval is honoured only when `$WATCHDOG_PID` is unset or names this process
  (systemd sets it for the main process; a child inheriting the environment must not ping).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self._address = ("\0" + path[1:]) if path.startswith("@") else path
        self.watchdog_s = _watchdog_s(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *lines: str) -> bool:
        """Send `KEY=value` lines as one datagram; True when it was sent."""
        if not self._address:
            return False
        # A newline in a value would start another key: STATUS text is one line.
        msg = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg, self._address)
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.error("cannot notify systemd through %s: %s", self._address.lstrip("\0"), e)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_s(env: Mapping[str, str]) -> float | None:
    """systemd's watchdog interval in seconds, when it applies to this process."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None
