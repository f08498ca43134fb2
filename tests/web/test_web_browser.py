"""The homeowner's page in a real browser (Debian's chromium through Playwright, offline).

The main test draws a zone by clicks and saves it, then checks the next released frame changed
exactly inside the pipeline's own mask of that polygon (`agent.core.redact.regions_mask`, which
rasterises as `apply` does) and nowhere else. Every response body the browser
receives is recorded: no image in it holds a canary pixel, no body holds canary bytes.

Screenshots go to a temporary directory, or to $EPA_SCREENSHOTS_DIR when set (the README's
pictures in docs/screenshots/ are made that way).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from browser import launch
from conftest import PASSWORD, Hub, canary_box, make_hub
from playwright.sync_api import Page, Route, sync_playwright

from agent.config import load_config
from agent.core.datatypes import MaskRegion
from agent.core.redact import regions_mask
from agent.geometry import PointRel
from agent.lab.fixtures import canary_pattern
from agent.vocab import Mode

DRAWN = [(0.12, 0.18), (0.42, 0.12), (0.48, 0.46), (0.2, 0.5)]


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    with sync_playwright() as p:
        yield p


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    d = Path(os.environ.get("EPA_SCREENSHOTS_DIR") or tmp_path / "shots")
    d.mkdir(parents=True, exist_ok=True)
    return d


class Recorder:
    """Every response body the page receives (through a route, so none is missed)."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, str, bytes]] = []

    def __call__(self, route: Route) -> None:
        resp = route.fetch()
        body = resp.body()
        self.bodies.append((route.request.url, resp.headers.get("content-type", ""), body))
        route.fulfill(response=resp, body=body)


def _open(pw: Any, tmp_path: Path, hub: Hub, **context: Any) -> tuple[Any, Page, Recorder]:
    ctx = launch(pw, tmp_path / "profile", **context)
    rec = Recorder()
    ctx.route("**/*", rec)
    page = ctx.pages[0] if ctx.pages else ctx.new_page()
    page.goto(hub.base + "/")
    return ctx, page, rec


def _login(page: Page, password: str = PASSWORD) -> None:
    page.fill("#password", password)
    page.click("#login-form button[type=submit]")


def _frame_shown(page: Page, hub: Hub) -> None:
    hub.next_frame()
    page.wait_for_function("() => { const i = document.querySelector('article.camera img.frame');"
                           " return i && i.complete && i.naturalWidth > 0; }", timeout=15000)


def _click_rel(page: Page, x: float, y: float) -> None:
    box = page.locator("article.camera svg.overlay").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])


def _mask(points: list[list[float]], w: int, h: int) -> np.ndarray:
    pts = tuple(PointRel(x, y) for x, y in points)
    return regions_mask((MaskRegion("drawn", "zone", pts),), w, h) > 0


def _canary_free(rec: Recorder, hub: Hub) -> int:
    box = canary_box(hub.truth)
    pattern = canary_pattern(hub.truth["canary"]["seed"], 0, box)
    pat = pattern.astype(np.int16)
    # 16-byte runs of raw pattern rows, in BGR (memory) and RGB (PNG) order, as tests/test_canary.py does.
    probes = [np.ascontiguousarray(row).tobytes()[:16] for r in (0, len(pattern) // 2, len(pattern) - 1)
              for row in (pattern[r], pattern[r, :, ::-1])]
    x0, y0, x1, y1 = box
    images = 0
    for url, ctype, body in rec.bodies:
        assert not any(p in body or p.hex().encode() in body.lower() for p in probes), url
        if ctype.startswith("image/"):
            img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
            assert img is not None, url
            close = (np.abs(img[y0:y1, x0:x1].astype(np.int16) - pat) <= 8).all(axis=2)
            assert close.mean() < 0.01, f"{url}: {close.sum()} canary pixels"
            images += 1
    return images


def test_draw_a_zone_save_and_the_next_frame_masks_exactly_it(pw: Any, hub: Hub, tmp_path: Path,
                                                              shots: Path) -> None:
    ctx, page, rec = _open(pw, tmp_path, hub, viewport={"width": 1100, "height": 900})
    try:
        _login(page)
        page.wait_for_selector(f"article.camera[data-camera='{hub.camera}']")
        _frame_shown(page, hub)
        before_index, before = hub.next_frame()
        page.click("article.camera button.new-zone")
        for x, y in DRAWN[:3]:
            _click_rel(page, x, y)
        page.screenshot(path=str(shots / "editor-mid-draw.png"), full_page=True)
        _click_rel(page, *DRAWN[3])
        page.fill("article.camera .z-name", "desk")
        page.select_option("article.camera .z-style", "solid")
        page.click("article.camera button.save")
        page.wait_for_function("() => document.querySelector('article.camera .save-note').textContent"
                               ".startsWith('saved and applied')", timeout=15000)

        saved = next(z for z in load_config(hub.config).config.cameras[0].zones if z.name == "desk")
        for (x, y), (sx, sy) in zip(DRAWN, saved.points, strict=True):
            assert abs(x - sx) < 0.01 and abs(y - sy) < 0.01  # the clicks, as relative points
        assert "# Fixture canary" in hub.config.read_text()  # comments kept
        kinds = [e.kind for e in hub.events if e.camera_id == hub.camera]
        assert "zones_saved" in kinds and "policy_changed" in kinds

        after_index, after = hub.next_frame(before_index, want_reason="zone:desk")
        h, w = after.shape[:2]
        mask = _mask(saved.points, w, h)
        changed = (after != before).any(axis=2)
        assert (after[mask] == 0).all()                      # solid: every pixel inside is black
        assert (after[~mask] == before[~mask]).all()         # nothing outside changed
        assert (changed == (mask & (before != 0).any(axis=2))).all()
        assert changed.sum() > 1000

        # What the page is served is that very frame, losslessly.
        # That frame or a later one (the same pixels: the camera repeats its frame, the policy is the same).
        page.wait_for_function(f"() => {{ const i = document.querySelector('article.camera img.frame');"
                               f" const m = /[?]i=([0-9]+)$/.exec(i.src || '');"
                               f" return m && Number(m[1]) >= {after_index} && i.complete; }}", timeout=15000)
        page.evaluate(f"() => fetch('/api/cameras/{hub.camera}/preview.png').then(r => r.arrayBuffer())")
        page.screenshot(path=str(shots / "camera-with-zones.png"), full_page=True)
        served = [b for u, _, b in rec.bodies if "frame.png?i=" in u and int(u.rsplit("=", 1)[1]) >= after_index]
        assert served
        img = cv2.imdecode(np.frombuffer(served[-1], np.uint8), cv2.IMREAD_COLOR)
        assert (img == after).all()
        assert any(u.endswith("preview.png") for u, _, _ in rec.bodies)
        assert _canary_free(rec, hub) >= 3
    finally:
        ctx.close()


def test_a_wrong_password_and_an_invalid_polygon_in_the_page(pw: Any, hub: Hub, tmp_path: Path,
                                                             shots: Path) -> None:
    ctx, page, rec = _open(pw, tmp_path, hub, viewport={"width": 1100, "height": 900})
    try:
        _login(page, "not the password")
        page.wait_for_function("() => document.querySelector('#login-error').textContent === 'wrong password'")
        hub.server.app.limiter.succeeded("127.0.0.1")
        _login(page)
        page.wait_for_selector("article.camera")
        _frame_shown(page, hub)
        before = hub.config.read_bytes()
        page.click("article.camera button.new-zone")
        for x, y in [(0.1, 0.1), (0.4, 0.4), (0.4, 0.1), (0.1, 0.4)]:  # a bow tie: it crosses itself
            _click_rel(page, x, y)
        page.click("article.camera button.save")
        page.wait_for_selector("article.camera .save-errors li")
        errors = page.locator("article.camera .save-errors li").all_inner_texts()
        assert page.inner_text("article.camera .save-note") == "not saved: the config would not be valid"
        assert len(errors) == 1 and errors[0].startswith("cameras[0].zones[") and "(config.yaml:" in errors[0]
        page.screenshot(path=str(shots / "validation-error.png"), full_page=True)
        assert hub.config.read_bytes() == before
        page.click("article.camera button.revert")
        _canary_free(rec, hub)
    finally:
        ctx.close()


def test_the_page_fits_a_phone(pw: Any, hub: Hub, tmp_path: Path) -> None:
    ctx, page, _ = _open(pw, tmp_path, hub, viewport={"width": 390, "height": 844}, is_mobile=True,
                         has_touch=True, device_scale_factor=2)
    try:
        _login(page)
        page.wait_for_selector("article.camera")
        _frame_shown(page, hub)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        box = page.locator("article.camera svg.overlay").bounding_box()
        assert box is not None and box["width"] > 300
    finally:
        ctx.close()


def test_logout_then_the_cookie_is_dead(pw: Any, hub: Hub, tmp_path: Path) -> None:
    ctx, page, _ = _open(pw, tmp_path, hub)
    try:
        _login(page)
        page.wait_for_selector("article.camera")
        cookie = next(c for c in ctx.cookies() if c["name"] == "epa_session")
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        page.click("#logout")
        page.wait_for_selector("#login:not([hidden])")
        status, _, _ = hub.request("GET", "/api/state", headers={"Cookie": f"epa_session={cookie['value']}"})
        assert status == 401
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def http_hub(scenario_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    yield from make_hub(scenario_dir, tmp_path_factory.mktemp("httphub") / "fx", https=False)


def test_secure_cookies_work_over_plain_http_on_loopback(pw: Any, http_hub: Hub, tmp_path: Path) -> None:
    # Chromium treats http://127.0.0.1 as a secure context and keeps a `Secure` cookie it sets.
    ctx, page, _ = _open(pw, tmp_path, http_hub)
    try:
        _login(page)
        page.wait_for_selector("article.camera")
        page.reload()
        page.wait_for_selector("article.camera")  # the session survived: the cookie was kept
        assert next(c for c in ctx.cookies() if c["name"] == "epa_session")["secure"]
    finally:
        ctx.close()


def test_a_withheld_camera_says_withheld_and_why(pw: Any, hub: Hub, tmp_path: Path) -> None:
    ctx, page, rec = _open(pw, tmp_path, hub)
    try:
        _login(page)
        _frame_shown(page, hub)
        hub.mode[0] = Mode.PRIVACY
        assert hub.next_withheld() == ("mode:privacy",)
        page.wait_for_selector("article.camera .withheld:not([hidden])", timeout=15000)
        assert page.inner_text("article.camera .withheld") == \
            "WITHHELD: no frame leaves the hub (mode:privacy)"
        assert page.get_attribute("article.camera img.frame", "src") is None
        assert page.inner_text("#mode") == "privacy"
        _canary_free(rec, hub)
    finally:
        hub.mode[0] = Mode.HOME
        ctx.close()


def test_a_cross_site_page_cannot_change_zones(pw: Any, hub: Hub, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A page of another site, open in the logged-in browser, posts to the hub (fetch and a form)."""
    caplog.set_level(logging.DEBUG, logger="agent.web.server")
    evil = f"http://localhost:{hub.server.port + 1}"
    target = f"{hub.base}/api/cameras/{hub.camera}/zones"
    body = '{"zones": []}'
    html = f"""<!doctype html><form id=f method=post action="{target}" enctype="text/plain">
<input name='{body[:-1]}' value='}}'></form>
<script>fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include",
 headers: {{"Content-Type": "text/plain"}}, body: '{body}'}}).finally(() => document.getElementById("f").submit());
</script>"""
    ctx = launch(pw, tmp_path / "profile")
    try:
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.goto(hub.base + "/")
        _login(page)
        page.wait_for_selector("article.camera")
        before = hub.config.read_bytes()
        seen: list[tuple[str, int, dict[str, str]]] = []
        attacker = ctx.new_page()
        attacker.on("response", lambda r: seen.append((r.request.method, r.status, r.request.headers))
                    if r.url == target else None)
        attacker.route(f"{evil}/**", lambda route: route.fulfill(status=200, content_type="text/html", body=html))
        attacker.goto(f"{evil}/")
        attacker.wait_for_url(target, timeout=15000)  # the form went through: its answer is the hub's
        # Every POST that reached the hub was refused. (Here the fetch fails in the browser before it
        # reaches the hub; the form's navigation reaches it and is answered 403.)
        answered = [r.getMessage() for r in caplog.records if "POST /api/cameras/" in r.getMessage()]
        assert answered and all('" 403 ' in m for m in answered), answered
        assert [s for _, s, _ in seen] == [403], seen
        assert all("cookie" not in {k.lower() for k in h} for _, _, h in seen)  # SameSite=Strict: no cookie
        assert "cross-site request refused" in attacker.content()
        assert hub.config.read_bytes() == before
    finally:
        ctx.close()


def test_drag_a_point_then_delete_the_zone(pw: Any, hub: Hub, tmp_path: Path) -> None:
    ctx, page, _ = _open(pw, tmp_path, hub, viewport={"width": 1100, "height": 900})
    try:
        _login(page)
        _frame_shown(page, hub)
        page.click("article.camera button.new-zone")
        for x, y in [(0.05, 0.6), (0.3, 0.6), (0.2, 0.9)]:
            _click_rel(page, x, y)
        page.fill("article.camera .z-name", "rug")
        # Drag the second point from (0.3, 0.6) to (0.4, 0.7).
        box = page.locator("article.camera svg.overlay").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.6 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.35 * box["width"], box["y"] + 0.65 * box["height"])
        page.mouse.move(box["x"] + 0.4 * box["width"], box["y"] + 0.7 * box["height"])
        page.mouse.up()
        page.click("article.camera button.save")
        page.wait_for_function("() => document.querySelector('article.camera .save-note').textContent"
                               ".startsWith('saved and applied')", timeout=15000)
        rug = next(z for z in load_config(hub.config).config.cameras[0].zones if z.name == "rug")
        assert len(rug.points) == 3 and abs(rug.points[1][0] - 0.4) < 0.01 and abs(rug.points[1][1] - 0.7) < 0.01
        idx, masked = hub.next_frame(want_reason="zone:rug")

        page.click("article.camera .zone-list button:has-text('rug')")
        page.click("article.camera button.z-delete")
        page.click("article.camera button.save")
        page.wait_for_function("() => document.querySelector('article.camera .save-note').textContent"
                               ".startsWith('saved and applied')", timeout=15000)
        assert "rug" not in [z.name for z in load_config(hub.config).config.cameras[0].zones]
        for _ in range(20):  # the next frames are decided without the rug
            idx, after = hub.next_frame(idx)
            latest = hub.server.app.board.latest(hub.camera)
            assert latest is not None and latest.frame is not None
            if "zone:rug" not in latest.frame.decision.reasons:
                break
        else:
            raise AssertionError("the deleted zone is still applied")
        h, w = after.shape[:2]
        cy, cx = int(0.733 * h), int(0.217 * w)  # the rug's centroid
        assert (masked[cy, cx] == 0).all() and (after[cy, cx] == hub.raw[cy, cx]).all()  # its pixels are back
    finally:
        ctx.close()
