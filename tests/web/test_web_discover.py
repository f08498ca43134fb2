"""Proposals from `zones discover` on the page: found on the camera's own source, accepted or rejected in one click."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest
from browser import launch
from conftest import PASSWORD, Hub, make_hub
from detect_support import BEDROOM_1, model_cache
from playwright.sync_api import sync_playwright

from agent.config import load_config
from agent.lab.shared_data import shared_file


@pytest.fixture(scope="module")
def disc_hub(scenario_dir: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    cache = model_cache(tmp_path_factory)
    root = tmp_path_factory.mktemp("dischub") / "fx"
    for hub in make_hub(scenario_dir, root, detection=f'{{enabled: false, model_cache: "{cache}"}}'):
        # The camera's source (what discovery samples) becomes a bedroom: copies in the test's tmp dir only.
        for f in (root / "frames").glob("*.png"):
            f.unlink()
        photo = cv2.imread(str(shared_file("fixtures", BEDROOM_1)), cv2.IMREAD_COLOR)
        cv2.imwrite(str(root / "frames" / "00000.png"), photo)
        yield hub


def test_discover_needs_the_csrf_token_and_returns_only_proposals(disc_hub: Hub) -> None:
    cookie, csrf = disc_hub.login()
    path = f"/api/cameras/{disc_hub.camera}/discover"
    assert disc_hub.post_json(path, {}, cookie=cookie)[0] == 403
    status, h, doc = disc_hub.post_json(path, {}, cookie=cookie, csrf=csrf)
    assert status == 200, doc
    assert set(doc) == {"proposals", "skipped"}  # no picture: the sampled frames are raw
    assert any(p["label"] == "bed" for p in doc["proposals"]), doc
    for p in doc["proposals"]:
        assert set(p) == {"name", "label", "points", "action", "seen"} and len(p["points"]) == 4


def test_accept_and_reject_in_one_click(disc_hub: Hub, tmp_path: Path) -> None:
    with sync_playwright() as pw:
        ctx = launch(pw, tmp_path / "profile", viewport={"width": 1100, "height": 900})
        try:
            page: Any = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.goto(disc_hub.base + "/")
            page.fill("#password", PASSWORD)
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("article.camera")
            before = disc_hub.config.read_bytes()
            page.click("article.camera button.discover")
            page.wait_for_selector("article.camera .proposals li", timeout=60000)
            page.click("article.camera .proposals li button.reject")
            assert page.locator("article.camera .proposals li").count() == 0
            assert disc_hub.config.read_bytes() == before

            page.click("article.camera button.discover")
            page.wait_for_selector("article.camera .proposals li", timeout=60000)
            name = page.inner_text("article.camera .proposals li").split(":")[0]
            page.click("article.camera .proposals li button.accept")
            page.wait_for_function("() => document.querySelector('article.camera .save-note').textContent"
                                   ".startsWith('saved and applied')", timeout=15000)
            zones = load_config(disc_hub.config).config.cameras[0].zones
            assert name in [z.name for z in zones]
            disc_hub.next_frame(want_reason=f"zone:{name}")
        finally:
            ctx.close()
