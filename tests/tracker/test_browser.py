"""A real browser: headless Chromium opens a tracked message from disk, loads both pixels and follows a link."""

from __future__ import annotations

import asyncio
import html
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engaged.events.model import ClickEvent, InitialOpenEvent, OpenEvent
from tests.conftest import require_tool
from tests.helpers import LANDED, LandingSite
from tests.tracker.conftest import RunningTracker

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture
def target_site() -> Iterator[LandingSite]:
    site = LandingSite()
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield site
    site.shutdown()
    site.server_close()


def message_html(top_pixel: str, link: str, bottom_pixel: str) -> str:
    """A tracked message as the rewriter leaves it (pixel first and last), plus a script that clicks the link."""
    return (
        "<!doctype html><html><body>"
        f'<img src="{html.escape(top_pixel)}" width="1" height="1" alt="">'
        "<h1>Spring sale</h1>"
        f'<p><a id="cta" href="{html.escape(link)}">Shop now</a></p>'
        f'<img src="{html.escape(bottom_pixel)}" width="1" height="1" alt="">'
        # The reader clicks once the message (and its pixels) have loaded.
        "<script>addEventListener('load', () => document.getElementById('cta').click())</script>"
        "</body></html>"
    )


async def test_chromium_records_both_opens_with_its_user_agent_and_a_click_lands_on_the_target(
        tracker: RunningTracker, target_site: LandingSite, tmp_path: Path) -> None:
    chromium = require_tool("chromium", "/usr/bin/chromium")
    links = tracker.links(message_id="browser-0001")
    target = f"{target_site.base}/landing?from=mail&campaign=spring"
    page = tmp_path / "message.html"
    page.write_text(message_html(links.open_url(True), links.click_url(target, "cta", None, False),
                                 links.open_url(False)))
    process = await asyncio.create_subprocess_exec(
        chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
        "--dump-dom", page.as_uri(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    dom, errors = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, errors.decode(errors="replace")[-2000:]
    assert LANDED in dom.decode()  # the browser followed the 302 and rendered the target page
    [agent] = [agent for path, agent in target_site.requests if path == "/landing?from=mail&campaign=spring"]
    assert "HeadlessChrome" in agent
    events = await tracker.events("browser-0001")
    by_type = {type(event): event for event in events}
    assert sorted(type(event).__name__ for event in events) == ["ClickEvent", "InitialOpenEvent", "OpenEvent"]
    for event in events:
        assert event.user_agent == agent
        assert event.ip_address == "127.0.0.1"
        assert event.machine_engagement is not None  # headless Chromium is flagged, and still recorded
        assert event.machine_engagement.kind == "security_scanner"
    click = by_type[ClickEvent]
    assert isinstance(click, ClickEvent)
    assert (click.target_link_url, click.target_link_name) == (target, "cta")
    assert InitialOpenEvent in by_type and OpenEvent in by_type
