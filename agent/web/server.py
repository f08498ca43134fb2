"""The page's HTTP server: routes, the login and CSRF checks, security headers, TLS.

Standard library only (`http.server`, threaded, with `ssl`): a few MiB on a hub, no framework
to keep patched. One request per connection; at most MAX_CONNECTIONS at once.

Security invariants:
- Every response carries a CSP without inline script (`default-src 'self'`, `frame-ancestors
  'none'`), nosniff, no-referrer and `Cache-Control: no-store`.
- Every POST is refused unless it comes from this origin (`Origin`, `Sec-Fetch-Site`), is JSON
  with a declared length under MAX_BODY_BYTES (parsed with `loads_bounded`), and, except the
  login itself, carries a live session cookie and that session's CSRF token (`X-CSRF-Token`).
- The `Host` must be the listen address (a DNS-rebinding page cannot talk to the hub).
- Static files come from a fixed allow-list read from the package at start: no part of a URL
  ever reaches the filesystem.
- Pictures are only `RedactedFrame`s from the board, or the `zones preview` drawing over one.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2

from agent.analysis.discover import discover
from agent.clock import Clock
from agent.config import WebConfig
from agent.core.datatypes import Event
from agent.core.events import EventCallback
from agent.core.pipeline import CameraPipeline
from agent.errors import AgentError, ConfigError, JsonLimitError
from agent.jsonlimits import loads_bounded
from agent.media.preview import Withheld, camera_notes, preview_zones, render_zones
from agent.vocab import Mode
from agent.web.auth import LoginLimiter, PasswordStore, Session, Sessions, csrf_ok
from agent.web.board import FrameBoard
from agent.web.status import AccessState, AuditStatus, camera_counters, pending_challenges
from agent.web.zonesave import BadZones, PageZone, ZoneSaver, parse_page_zones

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
_DRAIN_MAX_BYTES = 1024 * 1024
MAX_CONNECTIONS = 16
#: Frames `zones discover` samples for the page (the command's default is 8; the page waits for it).
DISCOVER_FRAMES = 4
COOKIE = "epa_session"
_SOCKET_TIMEOUT_S = 15.0

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

#: URL path -> (file in agent/web/static, content type). Nothing else is served as a file.
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}


def _load_static() -> dict[str, tuple[bytes, str]]:
    root = resources.files("agent.web") / "static"
    return {path: ((root / name).read_bytes(), ctype) for path, (name, ctype) in STATIC.items()}


@dataclass
class WebApp:
    """Everything a request may use. The pipelines are only asked for stats and given policies."""

    cfg: WebConfig
    data_dir: Path
    config_name: str
    board: FrameBoard
    pipelines: dict[str, CameraPipeline]
    saver: ZoneSaver
    mode: Callable[[], Mode]
    clock: Clock
    on_event: EventCallback
    access_state: AccessState | None = None

    def __post_init__(self) -> None:
        self.passwords = PasswordStore(self.data_dir)
        self.sessions = Sessions(self.clock, self.cfg.session_ttl_s)
        self.limiter = LoginLimiter(self.clock, self.cfg.login_max_failures, self.cfg.login_window_s)
        self.audit = AuditStatus(self.data_dir, self.clock)
        self.static = _load_static()
        self.scheme = "https" if self.cfg.https else "http"
        self.hosts = _allowed_hosts(self.cfg)
        self._discovering = threading.Lock()

    # -- what the page reads --------------------------------------------------------

    def state(self) -> dict[str, Any]:
        cfg = self.saver.loaded.config
        mode = self.mode()
        cams = []
        for cam in cfg.cameras:
            pipe = self.pipelines.get(cam.id)
            latest = self.board.latest(cam.id)
            reasons: list[str]
            if pipe is None:
                status, reasons = "not running", []
            elif latest is None:
                status, reasons = "waiting", []
            elif latest.withheld is not None:
                status, reasons = "withheld", list(latest.withheld)
            else:
                status = "released"
                reasons = list(latest.frame.decision.reasons) if latest.frame is not None else []
            size = latest.size_px if latest is not None else None
            cams.append({
                "id": cam.id, "name": cam.name or cam.id, "state": status, "reasons": reasons,
                "frame_index": latest.frame_index if latest is not None else None,
                "width_px": size[0] if size is not None else None,
                "height_px": size[1] if size is not None else None,
                "counters": camera_counters(pipe.stats) if pipe is not None else None,
                "restart_needed": bool(pipe.restart_needed) if pipe is not None else False,
                "zones": [{"name": z.name, "points": z.points, "action": str(z.action), "style": str(z.style)}
                          for z in cam.zones],
            })
        access = self.access_state() if self.access_state is not None else None
        return {
            "mode": str(mode),
            "mode_note": "Read-only here: the household mode changes only with an owner device's signature "
                         "(privacy-agent owner mode) or the privacy switch.",
            "cameras": cams,
            "mqtt": access is not None,
            "pending": pending_challenges(access, self.clock.monotonic()),
            "pending_note": "Approving takes an owner device's key, which this page never holds: use "
                            "privacy-agent owner approve on an owner device.",
            "audit": self.audit.get(),
            "config_file": self.config_name,
        }

    def preview_png(self, camera_id: str) -> bytes | None:
        """The `zones preview` picture over the camera's latest outgoing frame (or a withheld notice)."""
        latest = self.board.latest(camera_id)
        pipe = self.pipelines.get(camera_id)
        if latest is None or pipe is None:
            return None
        if latest.withheld is not None or latest.frame is None:
            w, h = latest.size_px or (640, 360)
            view: Any = Withheld(w, h, latest.withheld or ("withheld",))
        else:
            view = latest.frame
        # The same legend as `zones preview`: the camera's private room and a moved view.
        notes = camera_notes(camera_id, scene=pipe.scene_state, private_room=pipe.private_room)
        out, _ = render_zones(view, preview_zones(pipe.policy, self.mode()), notes)
        ok, buf = cv2.imencode(".png", out)
        return buf.tobytes() if ok else None

    def save_zones(self, camera_id: str, zones: list[PageZone]) -> tuple[int, dict[str, Any]]:
        if camera_id not in self.pipelines:
            return HTTPStatus.NOT_FOUND, {"error": f"no running camera {camera_id!r}"}
        try:
            saved, live = self.saver.save(camera_id, zones)
        except ConfigError as e:
            return HTTPStatus.UNPROCESSABLE_ENTITY, {"error": "not saved: the config would not be valid",
                                                     "errors": list(e.problems)}
        except AgentError as e:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"not saved: {e}"}
        except OSError as e:
            return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"not saved: {e.strerror or e}"}
        note = ("saved and applied: the next frame uses the new zones" if live else
                "saved; withhold zones changed, so this camera withholds every frame until the agent restarts")
        self.on_event(Event("zones_saved", camera_id, f"{len(zones)} zone(s) saved from the homeowner's page"
                            + ("" if live else "; withheld until the agent restarts"), self.clock.monotonic(),
                            {"zones": len(zones), "applied": live}))
        return HTTPStatus.OK, {"ok": True, "applied": live, "note": note, "backup": saved.backup.name}

    def discover(self, camera_id: str) -> tuple[int, dict[str, Any]]:
        """`zones discover` on the camera's own source: proposals only (points, label, how often seen).
        The frames it samples go to the object detector and nowhere else; none is returned."""
        if camera_id not in self.pipelines:
            return HTTPStatus.NOT_FOUND, {"error": f"no running camera {camera_id!r}"}
        if not self._discovering.acquire(blocking=False):
            return HTTPStatus.CONFLICT, {"error": "already looking for private objects; try again in a moment"}
        try:
            proposals, skipped, _first, action, _existing = discover(self.saver.loaded, camera_id, None,
                                                                     DISCOVER_FRAMES, None)
        except AgentError as e:
            return HTTPStatus.UNPROCESSABLE_ENTITY, {"error": f"cannot look for private objects: {e}"}
        finally:
            self._discovering.release()
        return HTTPStatus.OK, {
            "proposals": [{"name": p.name, "label": p.label, "points": p.points(), "action": action,
                           "seen": f"{p.frames_seen}/{p.frames_sampled}"} for p in proposals],
            "skipped": [f"{s.label} ({s.reason})" for s in skipped],
        }


def _allowed_hosts(cfg: WebConfig) -> frozenset[str]:
    ip = ipaddress.ip_address(cfg.listen)
    names = {f"[{ip}]" if ip.version == 6 else str(ip)}
    if ip.is_loopback:
        names |= {"localhost", "127.0.0.1", "[::1]"}
    hosts = {f"{n}:{cfg.port}" for n in names}
    if cfg.port == (443 if cfg.https else 80):
        hosts |= names  # browsers leave the scheme's default port out of Host and Origin
    return frozenset(hosts)


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "privacy-agent"
    sys_version = ""
    protocol_version = "HTTP/1.0"
    app: WebApp  # set on the subclass made per server

    # -- plumbing ---------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in _HEADERS.items():
            self.send_header(k, v)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", headers)

    def _session(self) -> tuple[Session | None, str | None]:
        raw = self.headers.get("Cookie")
        if not raw:
            return None, None
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            return None, None
        morsel = jar.get(COOKIE)
        token = morsel.value if morsel is not None else None
        return self.app.sessions.get(token), token

    def _check_host(self) -> None:
        if self.headers.get("Host", "") not in self.app.hosts:
            raise _Refused(HTTPStatus.MISDIRECTED_REQUEST, "unknown Host: open the page at the hub's address")

    def _path(self) -> str:
        return urlsplit(self.path).path

    # -- GET --------------------------------------------------------------------------

    def do_GET(self) -> None:
        try:
            self._check_host()
            self._get(self._path())
        except _Refused as r:
            self._json(r.status, {"error": str(r)}, r.headers)

    def _get(self, path: str) -> None:
        static = self.app.static.get(path)
        if static is not None:
            self._send(HTTPStatus.OK, static[0], static[1])
            return
        if not path.startswith("/api/"):
            raise _Refused(HTTPStatus.NOT_FOUND, "not found")
        session, _ = self._session()
        if path == "/api/session":
            if session is None:
                self._json(HTTPStatus.UNAUTHORIZED, {"error": "not logged in",
                                                     "password_set": self.app.passwords.is_set()})
            else:
                self._json(HTTPStatus.OK, {"csrf": session.csrf})
            return
        if session is None:
            raise _Refused(HTTPStatus.UNAUTHORIZED, "not logged in")
        if path == "/api/state":
            self._json(HTTPStatus.OK, self.app.state())
            return
        parts = path.split("/")
        if len(parts) == 5 and parts[2] == "cameras" and parts[4] in ("frame.png", "preview.png"):
            self._picture(parts[3], parts[4])
            return
        raise _Refused(HTTPStatus.NOT_FOUND, "not found")

    def _picture(self, camera_id: str, which: str) -> None:
        if camera_id not in self.app.pipelines:
            raise _Refused(HTTPStatus.NOT_FOUND, f"no running camera {camera_id!r}")
        if which == "preview.png":
            png = self.app.preview_png(camera_id)
            if png is None:
                raise _Refused(HTTPStatus.CONFLICT, "no frame from this camera yet")
            self._send(HTTPStatus.OK, png, "image/png",
                       {"Content-Disposition": f'attachment; filename="zones-{camera_id}.png"'})
            return
        got = self.app.board.png(camera_id)
        if got is None:
            latest = self.app.board.latest(camera_id)
            why = ", ".join(latest.withheld) if latest is not None and latest.withheld else "no frame released yet"
            raise _Refused(HTTPStatus.CONFLICT, f"withheld: {why}")
        latest, png = got
        self._send(HTTPStatus.OK, png, "image/png", {"X-Frame-Index": str(latest.frame_index)})

    # -- POST -------------------------------------------------------------------------

    def do_POST(self) -> None:
        try:
            self._check_host()
            self._post(self._path())
        except _Refused as r:
            self._json(r.status, {"error": str(r)}, r.headers)

    def _same_origin(self) -> None:
        # Browsers send both on every POST; a cross-site page cannot forge either. Tools without
        # them (curl) still need the session cookie and its CSRF token.
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site != "same-origin":
            raise _Refused(HTTPStatus.FORBIDDEN, "cross-site request refused")
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"{self.app.scheme}://{self.headers.get('Host', '')}":
            raise _Refused(HTTPStatus.FORBIDDEN, "cross-site request refused")

    def _body(self) -> Any:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise _Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "expected a JSON body (application/json)")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _Refused(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
        n = int(length)
        if n > MAX_BODY_BYTES:
            if n <= _DRAIN_MAX_BYTES:
                self.rfile.read(n)  # read and drop, so the client gets the answer rather than a reset
            raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes")
        data = self.rfile.read(n)
        try:
            return loads_bounded(data, max_bytes=MAX_BODY_BYTES, max_depth=8, what="request body")
        except JsonLimitError as e:
            raise _Refused(HTTPStatus.BAD_REQUEST, str(e)) from None
        except ValueError:
            raise _Refused(HTTPStatus.BAD_REQUEST, "the request body is not valid JSON") from None

    def _post(self, path: str) -> None:
        self._same_origin()
        if path == "/api/login":
            self._login(self._body())
            return
        session, token = self._session()
        if session is None or token is None:
            raise _Refused(HTTPStatus.UNAUTHORIZED, "not logged in")
        if not csrf_ok(session, self.headers.get("X-CSRF-Token")):
            raise _Refused(HTTPStatus.FORBIDDEN, "missing or wrong CSRF token")
        if path == "/api/logout":
            self.app.sessions.drop(token)
            self._json(HTTPStatus.OK, {"ok": True}, {"Set-Cookie": self._cookie("", 0)})
            return
        parts = path.split("/")
        if len(parts) == 5 and parts[2] == "cameras" and parts[4] == "zones":
            body = self._body()
            try:
                zones = parse_page_zones(body)
            except BadZones as e:
                raise _Refused(HTTPStatus.BAD_REQUEST, str(e)) from None
            status, doc = self.app.save_zones(parts[3], zones)
            self._json(status, doc)
            return
        if len(parts) == 5 and parts[2] == "cameras" and parts[4] == "discover":
            self._body()  # `{}`: still a bounded JSON body, like every POST
            status, doc = self.app.discover(parts[3])
            self._json(status, doc)
            return
        raise _Refused(HTTPStatus.NOT_FOUND, "not found")

    def _cookie(self, value: str, max_age: int) -> str:
        return f"{COOKIE}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Strict"

    def _login(self, body: Any) -> None:
        address = self.client_address[0]
        wait = self.app.limiter.retry_after_s(address)
        if wait > 0:
            raise _Refused(HTTPStatus.TOO_MANY_REQUESTS, f"too many wrong passwords: try again in {wait:.0f} s",
                           {"Retry-After": str(int(wait))})
        if not isinstance(body, dict) or set(body) != {"password"} or not isinstance(body["password"], str):
            raise _Refused(HTTPStatus.BAD_REQUEST, 'expected {"password": "..."}')
        if not self.app.passwords.is_set():
            raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE,
                           "no password is set: run `privacy-agent web passwd --config CONFIG` on the hub")
        if not self.app.passwords.verify(body["password"]):
            self.app.limiter.failed(address)
            log.warning("wrong password for the page from %s", address)
            raise _Refused(HTTPStatus.UNAUTHORIZED, "wrong password")
        self.app.limiter.succeeded(address)
        s = self.app.sessions.create()
        self._json(HTTPStatus.OK, {"csrf": s.csrf}, {"Set-Cookie": self._cookie(s.token, self.app.cfg.session_ttl_s)})


class WebServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, app: WebApp, tls: ssl.SSLContext | None) -> None:
        ip = ipaddress.ip_address(app.cfg.listen)
        self.address_family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        handler = type("BoundHandler", (Handler,), {"app": app})
        super().__init__((app.cfg.listen, app.cfg.port), handler)
        self.app = app
        self._tls = tls
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # busy: drop rather than queue without bound
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(_SOCKET_TIMEOUT_S)
            if self._tls is not None:
                # The handshake in the connection's own thread: a slow client never stalls accept().
                try:
                    request = self._tls.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    log.debug("TLS handshake from %s failed: %s", client_address[0], e)
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("the page's request from %s failed", client_address[0], exc_info=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="web", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
