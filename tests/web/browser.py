"""Launching Debian's chromium through Playwright, offline: the flags keep it from reaching the internet."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
        "--disable-default-apps", "--disable-extensions"]


def launch(playwright, profile: Path, **context):  # type: ignore[no-untyped-def]
    """A persistent context on a fresh user-data dir (`profile`), never `playwright install`'s browser."""
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, args=ARGS, headless=True, ignore_https_errors=True, **context)
