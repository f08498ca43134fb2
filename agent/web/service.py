"""Starting the homeowner's page inside `run`: taps on the pipelines, the certificate, the listener.

`start_web` returns None when `web.enabled` is false (the default), so `run` calls it
unconditionally. The certificate's fingerprint is printed at every start, for the homeowner to
compare with what the browser shows before typing the password.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from agent.clock import Clock
from agent.config import LoadedConfig
from agent.core.events import EventCallback
from agent.core.pipeline import CameraPipeline
from agent.errors import WebError
from agent.vocab import Mode

if TYPE_CHECKING:
    from agent.web.server import WebServer


def start_web(loaded: LoadedConfig, pipelines: Sequence[CameraPipeline], mode: Callable[[], Mode],
              on_event: EventCallback, clock: Clock, access_state: Callable[[], Any] | None = None, *,
              audit: Callable[[str, dict[str, Any]], object] | None = None, quiet: bool = False) -> WebServer | None:
    """Serve the page when `web.enabled`; None otherwise. `audit` (the hub's `AuditLog.append`)
    records each saved config change before it is written and applied."""
    cfg = loaded.config.web
    if not cfg.enabled:
        return None
    # Imported only for a page that is served: the server, its HTTP stack (http.server, email,
    # html, socketserver) and the zone tools it offers are about 2 MiB of a process that runs for
    # months, and most hubs never enable the page (bench/bench_live.py).
    from agent.web.auth import web_dir
    from agent.web.board import FrameBoard
    from agent.web.server import WebApp, WebServer
    from agent.web.tls import ensure_certificate, fingerprint, server_context
    from agent.web.zonesave import ZoneSaver

    board = FrameBoard(clock)
    pipes = {p.camera_id: p for p in pipelines}
    saver = ZoneSaver(loaded, lambda cam, policy: pipes[cam].swap_policy(policy), audit)
    app = WebApp(cfg, loaded.data_dir, loaded.path.name, board, pipes, saver, mode, clock, on_event, access_state)
    tls = None
    fp = None
    if cfg.https:
        cert, key, _made = ensure_certificate(web_dir(loaded.data_dir), cfg.listen)
        tls = server_context(cert, key)
        fp = fingerprint(cert.read_bytes())
    try:
        server = WebServer(app, tls)
    except OSError as e:
        raise WebError(f"the homeowner's page cannot listen on {cfg.listen}:{cfg.port}: {e.strerror or e} "
                       "(web.listen must be an address of this hub; another program may hold the port)") from None
    for p in pipelines:
        p.set_frame_tap(board.tap(p.camera_id))
    server.start()
    if not quiet:
        ip = ipaddress.ip_address(cfg.listen)
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        print(f"homeowner's page: {app.scheme}://{host}:{server.port}/", file=sys.stderr)
        if fp is not None:
            print(f"  certificate SHA-256 fingerprint: {fp}\n  (check that your browser shows the same "
                  "before you type the password)", file=sys.stderr)
        if not app.passwords.is_set():
            print("  no password set yet: run `privacy-agent web passwd --config ...` to log in",
                  file=sys.stderr)
    return server
