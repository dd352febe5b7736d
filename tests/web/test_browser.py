"""A real browser (headless Chromium through Playwright) watches a campaign that `engaged serve` is sending."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engaged.testing.server import ServerProcess, wait_until
from tests.conftest import IN_CI, ServerFactory, require_tool
from tests.helpers import RawSmtp, html_part, queued_id, tracking_server, wait_captured, wait_events

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    if IN_CI:
        raise
    pytest.skip("the playwright package is not installed (pip install -e '.[test]')", allow_module_level=True)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"
CAMPAIGN = "launch"
QUICK = 3.5  # the tracker labels engagements within 2-3 s of injection as machine-made (classify rule 4)
COUNTS = {"injected": "count_injected", "delivered": "count_delivered", "bounced": "count_bounce",
          "delayed": "count_delayed", "opens_human": "count_unique_human_confirmed_opened",
          "clicks_human": "count_unique_human_clicked"}


@pytest.fixture
def browser() -> Iterator[Browser]:
    chromium = require_tool("chromium", "/usr/bin/chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Sent:
    """One injected message and its tracked URLs (top pixel, bottom pixel, and the clicks by link name)."""

    def __init__(self, server: ServerProcess, rcpt: str) -> None:
        body = ('<html><body><p>Launch day</p><a href="https://shop.example/offer?id=7" data-msys-linkname="offer">'
                'Offer</a> <a href="https://shop.example/docs" data-msys-linkname="docs">Docs</a></body></html>')
        message = (f"Subject: launch\r\nFrom: shop@example.org\r\nTo: {rcpt}\r\nMIME-Version: 1.0\r\n"
                   f'X-MSYS-API: {{"campaign_id": "{CAMPAIGN}", "metadata": {{"user": "{rcpt}"}}}}\r\n'
                   "Content-Type: text/html; charset=utf-8\r\n\r\n" + body + "\r\n").encode()
        client = RawSmtp(server.smtp)
        client.transaction([rcpt])
        client.command("DATA")
        client.send(message + b".\r\n")
        self.message_id = queued_id(client.reply())
        client.close()
        self.server = server
        self.injected = time.time()

    def tracked(self) -> None:
        page = html_part(wait_captured(self.server, self.message_id)[0])
        self.pixels = re.findall(r'http://[^"\'\s>]+/q/[^"\'\s>]+', page)
        self.links = dict(zip(("offer", "docs"), re.findall(r'http://[^"\'\s>]+/f/[^"\'\s>]+', page), strict=True))
        assert len(self.pixels) == 2

    def hit(self, url: str, user_agent: str) -> None:
        answer = httpx.get(url, headers={"User-Agent": user_agent}, follow_redirects=False, timeout=10)
        assert answer.status_code in (200, 302, 307), answer.status_code


def metrics(server: ServerProcess) -> dict[str, Any]:
    host, port = server.address("api")
    results = httpx.get(f"http://{host}:{port}/api/v1/metrics/deliverability/campaign",
                        params={"campaigns": CAMPAIGN}, timeout=10).json()["results"]
    assert len(results) == 1
    return dict(results[0])


def row_counts(page: Page) -> dict[str, int]:
    cells = page.locator(f'#campaigns tr[data-campaign="{CAMPAIGN}"] td[data-col]')
    texts: dict[str, str] = dict(cells.evaluate_all("cells => cells.map(c => [c.dataset.col, c.textContent])"))
    return {col: int(texts[col].replace(",", "")) for col in (*COUNTS, "opens_machine", "clicks_machine")}


def assert_matches_api(counts: dict[str, int], api: dict[str, Any]) -> None:
    for col, metric in COUNTS.items():
        assert counts[col] == api[metric], (col, counts, api)
    assert counts["opens_human"] + counts["opens_machine"] == api["count_unique_confirmed_opened"]
    assert counts["clicks_human"] + counts["clicks_machine"] == api["count_unique_clicked"]


def test_a_browser_sees_the_api_counts_live_clicks_within_two_seconds_and_a_timeline_in_order(
        engaged_server: ServerFactory, browser: Browser, tmp_path: Path) -> None:
    server, _ = tracking_server(engaged_server)
    host, port = server.address("api")
    base = f"http://{host}:{port}"
    sent = [Sent(server, rcpt) for rcpt in ("ann@example.com", "bob@example.com", "cy@example.com",
                                              "dee@example.com")]
    for message in sent:
        message.tracked()
        wait_events(server, message.message_id, {"injection", "delivery"})
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    problems: list[str] = []
    home = context.new_page()
    campaign = context.new_page()
    for tab in (home, campaign):
        tab.on("console", lambda note: problems.append(note.text) if note.type == "error" else None)
        tab.on("pageerror", lambda error: problems.append(str(error)))
    home.goto(f"{base}/?range=1h")
    expect(home.locator("body")).to_have_attribute("data-live", "on")

    ann, bob, cy, dee = sent
    wait_until(lambda: time.time() - max(message.injected for message in sent) > QUICK, timeout=QUICK + 1)
    for message in (ann, bob):
        message.hit(message.pixels[0], THUNDERBIRD)
        message.hit(message.pixels[1], THUNDERBIRD)
    ann.hit(ann.links["offer"], THUNDERBIRD)
    dee.hit(dee.pixels[0], "Mozilla/5.0")  # Apple Mail Privacy Protection
    cy.hit(cy.links["offer"], "python-httpx/0.28")  # a link scanner
    wait_events(server, ann.message_id, {"initial_open", "open", "click"})
    wait_events(server, bob.message_id, {"initial_open", "open"})
    wait_events(server, cy.message_id, {"click"})
    wait_events(server, dee.message_id, {"initial_open"})

    home.goto(f"{base}/?range=1h")
    before = row_counts(home)
    assert_matches_api(before, metrics(server))
    assert (before["opens_human"], before["opens_machine"], before["clicks_human"], before["clicks_machine"]) == \
        (2, 2, 1, 1)
    expect(home.locator("body")).to_have_attribute("data-live", "on")
    campaign.goto(f"{base}/campaign?id={CAMPAIGN}&range=1h")
    expect(campaign.locator("body")).to_have_attribute("data-live", "on")
    expect(campaign.locator("#opens-chart canvas")).to_have_count(1)

    bob.hit(bob.links["docs"], THUNDERBIRD)
    # The open pages update live, without a reload; the wait is a hang guard, not a speed check.
    live = 15_000
    expect(campaign.locator("#feed tbody tr").first).to_contain_text("docs → https://shop.example/docs",
                                                                     timeout=live)
    expect(campaign.locator('#summary [data-col="clicks_human"]')).to_have_text(
        str(before["clicks_human"] + 1), timeout=live)
    expect(home.locator(f'#campaigns tr[data-campaign="{CAMPAIGN}"] td[data-col="clicks_human"]')).to_have_text(
        str(before["clicks_human"] + 1), timeout=live)
    assert_matches_api(row_counts(home), metrics(server))

    campaign.screenshot(path=str(tmp_path / "campaign.png"), full_page=True)
    home.screenshot(path=str(tmp_path / "campaigns.png"), full_page=True)
    lookup = context.new_page()
    lookup.goto(f"{base}/message?q={ann.message_id}")
    steps = lookup.locator("li.step").evaluate_all("items => items.map(item => item.dataset.type)")
    assert steps == ["injection", "delivery", "initial_open", "open", "click"]
    lookup.screenshot(path=str(tmp_path / "message.png"), full_page=True)
    assert not [problem for problem in problems if "Content Security Policy" in problem or "Error" in problem], \
        problems
    context.close()
