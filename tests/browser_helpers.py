"""What the browser tests share: Debian's Chromium launched headless by Playwright, a page opened on
a served app once its data has loaded, and JSON from the served API to compare the page with."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"  # screenshots, git-ignored


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright's own download does not work here)."""
    from playwright import sync_api

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, url: str) -> Any:
    """A new page on `url`, returned once the app has drawn its first data."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']", timeout=30_000)
    return page


def api(server: str, path: str, **options) -> dict:
    """GET `path`, or POST it when `options` (json=, files=, data=) are given."""
    response = httpx.request("POST" if options else "GET", server + path, timeout=30, **options)
    response.raise_for_status()
    return response.json()
