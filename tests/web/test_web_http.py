"""The page's server without a browser: login, sessions, CSRF, origin, bodies, static files, saving."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import PASSWORD, Hub

from agent.cli.main import main
from agent.config import parse_config_text
from agent.errors import ConfigError
from agent.media.preview import Withheld, preview_zones, render_zones
from agent.vocab import Mode
from agent.web.auth import password_file, web_dir
from agent.web.server import CSP
from agent.web.tls import CERT_FILE, KEY_FILE, fingerprint
from agent.web.zonesave import parse_page_zones, zones_text


def test_security_headers_on_every_response(hub: Hub) -> None:
    for path in ("/", "/static/app.js", "/api/state", "/nope"):
        _, h, _ = hub.request("GET", path, headers={"Host": f"127.0.0.1:{hub.server.port}"})
        assert h["content-security-policy"] == CSP
        assert "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
        assert h["cache-control"] == "no-store"


def test_wrong_password_is_refused(hub: Hub) -> None:
    status, h, doc = hub.post_json("/api/login", {"password": "not the password"})
    assert status == 401 and doc["error"] == "wrong password"
    assert "set-cookie" not in h
    hub.server.app.limiter.succeeded("127.0.0.1")


def test_login_rate_limit_per_address_on_the_injected_clock(hub: Hub) -> None:
    cfg = hub.server.app.cfg
    for _ in range(cfg.login_max_failures):
        assert hub.post_json("/api/login", {"password": "guess"})[0] == 401
    status, h, doc = hub.post_json("/api/login", {"password": PASSWORD})
    assert status == 429 and "too many wrong passwords" in doc["error"]  # even the right one: not checked
    assert int(h["retry-after"]) >= 1
    hub.clock.mono_s += cfg.login_window_s + 1
    assert hub.post_json("/api/login", {"password": PASSWORD})[0] == 200


def test_session_cookie_flags_and_replay_after_logout(hub: Hub) -> None:
    status, h, doc = hub.post_json("/api/login", {"password": PASSWORD})
    assert status == 200
    flags = {f.strip().split("=")[0].lower() for f in h["set-cookie"].split(";")}
    assert {"secure", "httponly", "samesite", "path"} <= flags and "SameSite=Strict" in h["set-cookie"]
    cookie = h["set-cookie"].split(";")[0]
    assert hub.request("GET", "/api/state", headers={"Cookie": cookie})[0] == 200
    assert hub.post_json("/api/logout", {}, cookie=cookie, csrf=doc["csrf"])[0] == 200
    assert hub.request("GET", "/api/state", headers={"Cookie": cookie})[0] == 401
    assert hub.post_json(f"/api/cameras/{hub.camera}/zones", {"zones": []}, cookie=cookie,
                         csrf=doc["csrf"])[0] == 401


def test_session_expires_on_the_injected_clock(hub: Hub) -> None:
    cookie, _ = hub.login()
    hub.clock.mono_s += hub.server.app.cfg.session_ttl_s + 1
    assert hub.request("GET", "/api/state", headers={"Cookie": cookie})[0] == 401


def test_a_change_without_the_csrf_token_is_refused(hub: Hub) -> None:
    cookie, csrf = hub.login()
    before = hub.config.read_bytes()
    for token in (None, "wrong" + csrf):
        status, _, doc = hub.post_json(f"/api/cameras/{hub.camera}/zones", {"zones": []}, cookie=cookie, csrf=token)
        assert status == 403 and "CSRF" in doc["error"]
    assert hub.post_json("/api/logout", {}, cookie=cookie)[0] == 403
    assert hub.config.read_bytes() == before


def test_a_cross_site_post_is_refused(hub: Hub) -> None:
    cookie, csrf = hub.login()
    before = hub.config.read_bytes()
    for extra in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                  {"Sec-Fetch-Site": "same-site"}, {"Origin": f"http://127.0.0.1:{hub.server.port}"}):
        status, _, doc = hub.post_json(f"/api/cameras/{hub.camera}/zones", {"zones": []}, cookie=cookie,
                                       csrf=csrf, extra=extra)
        assert status == 403 and doc["error"] == "cross-site request refused", extra
        assert hub.post_json("/api/login", {"password": PASSWORD}, extra=extra)[0] == 403
    assert hub.config.read_bytes() == before


def test_a_foreign_host_is_refused(hub: Hub) -> None:
    # A DNS-rebinding page reaches the hub under its own name: refused before anything else.
    status, _, _ = hub.request("GET", "/api/session", headers={"Host": "evil.example"})
    assert status == 421


@pytest.mark.parametrize("body, ctype, want", [
    (b"{not json", "application/json", 400),
    (b"[" * 40 + b"]" * 40, "application/json", 400),
    (b'{"zones": "no"}', "application/json", 400),
    (b'{"zones": [{"name": "a", "points": [[0, 0], [1, "x"], [1, 1]]}]}', "application/json", 400),
    (b'{"zones": [{"name": "a", "points": [[0, 0], [1, 0], [1, 1]], "extra": 1}]}', "application/json", 400),
    (b'{"zones": []}', "text/plain", 415),
    (b"x" * 70_000, "application/json", 413),
])
def test_malformed_bodies_are_refused_and_nothing_is_written(hub: Hub, body: bytes, ctype: str, want: int) -> None:
    cookie, csrf = hub.login()
    before = hub.config.read_bytes()
    status, _, data = hub.request("POST", f"/api/cameras/{hub.camera}/zones", body,
                                  {"Content-Type": ctype, "Cookie": cookie, "X-CSRF-Token": csrf})
    assert status == want and json.loads(data)["error"]
    assert hub.config.read_bytes() == before


def test_an_invalid_polygon_says_where_and_saves_nothing(hub: Hub, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cookie, csrf = hub.login()
    before = hub.config.read_bytes()
    bowtie = [[0.1, 0.1], [0.4, 0.4], [0.4, 0.1], [0.1, 0.4]]
    zones = [{"name": z["name"], "points": z["points"], "action": z["action"], "style": "solid", "was": z["name"]}
             for z in hub.truth["zones"]] + [{"name": "bad", "points": bowtie, "action": "mask", "style": "solid"}]
    status, _, doc = hub.post_json(f"/api/cameras/{hub.camera}/zones", {"zones": zones}, cookie=cookie, csrf=csrf)
    assert status == 422, doc
    assert doc["error"] == "not saved: the config would not be valid"
    assert len(doc["errors"]) == 1 and doc["errors"][0].startswith("cameras[0].zones[1].points: ")
    assert "(config.yaml:" in doc["errors"][0]
    assert hub.config.read_bytes() == before
    # The very message check-config gives for the same text.
    same = tmp_path / "config.yaml"
    same.write_text(zones_text(hub.config, hub.camera, parse_page_zones({"zones": zones})))
    assert main(["check-config", str(same)]) == 2
    assert doc["errors"][0] in capsys.readouterr().err


@pytest.mark.parametrize("path", [
    "/static/../../../../etc/passwd", "/static/..%2f..%2fconfig.yaml", "/static/%2e%2e/%2e%2e/config.yaml",
    "/static/app.js/../../config.yaml", "/static//etc/passwd", "/static/", "/static/index.html/.",
    "/config.yaml", "/../config.yaml", "/static/APP.JS", "/static/app.js%00.png",
])
def test_path_traversal_on_the_static_files(hub: Hub, path: str) -> None:
    status, _, data = hub.request("GET", path)
    assert status == 404, path
    assert b"cameras" not in data and b"root:" not in data


def test_the_static_files_are_the_packaged_ones(hub: Hub) -> None:
    status, h, data = hub.request("GET", "/static/app.js")
    assert status == 200 and h["content-type"].startswith("text/javascript")
    assert data == (Path(__file__).parents[2] / "agent/web/static/app.js").read_bytes()
    _, _, html = hub.request("GET", "/")
    assert b"<script>" not in html and b"http://" not in html.replace(b'xmlns="http://www.w3.org/2000/svg"', b"")
    assert b"https://" not in html


def test_pictures_need_a_session(hub: Hub) -> None:
    hub.next_frame()
    for which in ("frame.png", "preview.png"):
        assert hub.request("GET", f"/api/cameras/{hub.camera}/{which}")[0] == 401


def test_the_certificate_and_the_password_file_are_private(hub: Hub) -> None:
    d = web_dir(hub.root / "data")
    for f in (d / CERT_FILE, d / KEY_FILE, password_file(hub.root / "data")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert password_file(hub.root / "data").read_bytes().startswith(b"$argon2id$")
    import ssl
    served = ssl.get_server_certificate(("127.0.0.1", hub.server.port))
    assert fingerprint(served.encode()) == fingerprint((d / CERT_FILE).read_bytes())


def test_web_passwd_from_a_file_and_stdin(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("data_dir: ./data\ncameras:\n  - id: cam\n    source: x.mp4\n")
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    run = [sys.executable, "-m", "agent", "web", "passwd", "--config", str(cfg)]
    r = subprocess.run(run + ["--password-file", str(pw)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    f = password_file(tmp_path / "data")
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    from agent.web.auth import PasswordStore
    assert PasswordStore(tmp_path / "data").verify("a long enough password")
    r = subprocess.run(run + ["--password-file", "-"], input="short\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == ("privacy-agent: error: the password needs at least 10 "
                                                      "characters")
    r = subprocess.run(run, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--password-file" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("web, message", [
    ("{enabled: true, listen: 0.0.0.0}", "web.listen: 0.0.0.0 listens on every interface"),
    ("{enabled: true, listen: 8.8.8.8}", "web.listen: 8.8.8.8 is a public address"),
    ("{enabled: true, listen: hub.local}", "web.listen: 'hub.local' is not an IP address"),
    ("{enabled: true, listen: 192.168.1.20, https: false}", "web: https: false is allowed only on a loopback"),
    ("{enabled: true, port: 0}", "web.port: Input should be greater than or equal to 1"),
    ("{enabled: true, password: x}", "web.password: unknown key 'password'"),
])
def test_web_config_rules(web: str, message: str) -> None:
    text = f"cameras:\n  - id: cam\n    source: x.mp4\nweb: {web}\n"
    with pytest.raises(ConfigError) as e:
        parse_config_text(text)
    assert message in str(e.value)


def test_plain_http_is_allowed_on_loopback() -> None:
    cfg = parse_config_text("cameras:\n  - id: cam\n    source: x.mp4\nweb: {enabled: true, listen: 127.0.0.1, "
                            "https: false}\n")
    assert cfg.web.enabled and not cfg.web.https


def test_a_withheld_camera_shows_why_and_no_picture_of_it(hub: Hub) -> None:
    cookie, _ = hub.login()
    hub.next_frame()
    hub.mode[0] = Mode.PRIVACY
    try:
        assert hub.next_withheld() == ("mode:privacy",)
        status, _, data = hub.request("GET", f"/api/cameras/{hub.camera}/frame.png", headers={"Cookie": cookie})
        assert status == 409 and json.loads(data)["error"] == "withheld: mode:privacy"
        state = json.loads(hub.request("GET", "/api/state", headers={"Cookie": cookie})[2])
        [cam] = state["cameras"]
        assert cam["state"] == "withheld" and cam["reasons"] == ["mode:privacy"]
        assert state["mode"] == "privacy"
        status, h, png = hub.request("GET", f"/api/cameras/{hub.camera}/preview.png", headers={"Cookie": cookie})
        assert status == 200 and h["content-type"] == "image/png"
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        # None of the frame: the preview's grey canvas with the notice, as `zones preview` draws it.
        expect, layout = render_zones(Withheld(img.shape[1], img.shape[0], ("mode:privacy",)),
                                      preview_zones(hub.pipeline.policy, Mode.PRIVACY))
        assert layout.withheld and (img == expect).all()
    finally:
        hub.mode[0] = Mode.HOME


def test_the_preview_png_is_zones_preview_of_the_outgoing_frame(hub: Hub) -> None:
    cookie, _ = hub.login()
    _, out = hub.next_frame()
    status, h, png = hub.request("GET", f"/api/cameras/{hub.camera}/preview.png", headers={"Cookie": cookie})
    assert status == 200 and h["content-disposition"] == f'attachment; filename="zones-{hub.camera}.png"'
    latest = hub.server.app.board.latest(hub.camera)
    assert latest is not None and latest.frame is not None and (latest.frame.image == out).all()
    expect, _ = render_zones(latest.frame, preview_zones(hub.pipeline.policy, Mode.HOME))
    assert (cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) == expect).all()


def test_the_allowed_hosts_are_the_listen_address() -> None:
    from agent.config import WebConfig
    from agent.web.server import _allowed_hosts

    assert _allowed_hosts(WebConfig(listen="192.168.1.20")) == {"192.168.1.20:8443"}
    assert _allowed_hosts(WebConfig(listen="192.168.1.20", port=443)) == {"192.168.1.20:443", "192.168.1.20"}
    assert _allowed_hosts(WebConfig(listen="fd00::5", port=8443)) == {"[fd00::5]:8443"}
    assert "localhost:8443" in _allowed_hosts(WebConfig())
