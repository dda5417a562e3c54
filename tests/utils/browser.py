"""Chromium under Playwright for the dashboard tests: Debian's browser, never a download.

`launch()` starts `/usr/bin/chromium` headless with the flags this closed network needs (no
background connections, no QUIC). `browser_or_skip()` is what a test calls: without the
browser it skips, or fails with a clear message when `POLLEN_REQUIRE_BROWSER=1` (as
`make test` sets it, after installing Chromium).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path(os.environ.get("POLLEN_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "dashboard"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}


def require_browser() -> None:
    """Skip without Chromium, unless the run demands it (then fail, saying how to fix it)."""
    if CHROMIUM.exists():
        return
    message = (
        f"Chromium not found at {CHROMIUM}: install it with "
        "`apt-get install -y chromium` (make test does this as root)"
    )
    if os.environ.get("POLLEN_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def launch() -> Iterator[Browser]:
    require_browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG under tests/artifacts/dashboard/ (kept after the run)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def overflows(page: Page) -> int:
    """How many CSS pixels the page is wider than its viewport (0 when nothing spills)."""
    width: int = page.evaluate(
        "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - window.innerWidth"
    )
    return width
