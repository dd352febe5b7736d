"""Story: every corpus template looks exactly the same in Chromium after tracking is applied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engaged.rewrite.html import rewrite_html
from tests.conftest import IN_CI, SHARED, require_tool

try:
    from playwright.sync_api import FloatRect, Page, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    if IN_CI:
        raise
    pytest.skip("the playwright package is not installed (pip install -e '.[test]')", allow_module_level=True)

TEMPLATES = sorted((SHARED / "corpus" / "html").glob("*/*.html"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--font-render-hinting=none"]


class _Minter:
    """Tracked URLs on an unreachable host: the pixels never load, as in a client that blocks images."""

    def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
        return "http://track.invalid/f/a/AQEB" + "x" * 200

    def open_url(self, initial: bool) -> str:
        return "http://track.invalid/q/AQEB" + ("i" if initial else "b") * 150


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    chromium = require_tool("chromium", "/usr/bin/chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=ARGS)
        opened = browser.new_page(viewport={"width": 800, "height": 600})
        opened.route("**/*", lambda route: route.abort())  # no network: remote images fail alike in both
        yield opened
        browser.close()


def render(page: Page, html: str, clip: FloatRect | None = None) -> tuple[bytes, Any]:
    page.set_content(html, wait_until="load")
    height = page.evaluate("document.documentElement.scrollHeight")
    shot = page.screenshot(full_page=True, clip=clip) if clip else page.screenshot(full_page=True)
    return shot, height


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tracked_template_renders_pixel_for_pixel_like_the_original(page: Page, path: Path) -> None:
    if not TEMPLATES:
        pytest.fail("no corpus templates found")
    html = path.read_text(encoding="utf-8", errors="replace")
    result = rewrite_html(html, _Minter(), click=True, open_=True, initial_open=True)
    assert result.pixels == 2
    before, height = render(page, html)
    # The bottom pixel is a 1x1 image at the end of the body: the page may grow by its line, nothing else.
    after, new_height = render(page, result.text, clip={"x": 0, "y": 0, "width": 800, "height": max(height, 600)})
    assert height <= new_height <= height + 2
    assert after == before
