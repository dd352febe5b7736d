"""Story: an https tracking domain end to end — engaged terminates TLS, Chromium opens a captured copy and clicks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trustme

from engaged.testing.sink import free_port
from tests.conftest import IN_CI, ServerFactory, require_tool
from tests.helpers import RawSmtp, html_part, queued_id, wait_captured, wait_events

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    if IN_CI:
        raise
    pytest.skip("the playwright package is not installed (pip install -e '.[test]')", allow_module_level=True)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
READER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"


def test_a_captured_message_with_https_links_opens_and_clicks_through_the_tls_tracker_in_chromium(
        engaged_server: ServerFactory, landing: tuple[str, list[str]], tmp_path: Path) -> None:
    chromium = require_tool("chromium", "/usr/bin/chromium")
    leaf = trustme.CA().issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "tracker.pem", tmp_path / "tracker.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    port = free_port()
    server = engaged_server(
        f'[engagement_tracker]\nlisten = "127.0.0.1:{port}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        '[smtpapi]\nopen_tracking_enabled = true\nclick_tracking_enabled = true\n'
        f'open_tracking_scheme = "https"\nclick_tracking_scheme = "https"\ntracking_domain = "127.0.0.1:{port}"\n')
    base, hits = landing
    target = f"{base}/offer?id=9"
    body = f'<html><body><h1>Autumn</h1><p><a id="cta" href="{target}">Offer</a></p></body></html>'
    message = ("Subject: autumn\r\nFrom: shop@example.org\r\nTo: ann@example.com\r\nMIME-Version: 1.0\r\n"
               'X-MSYS-API: {"campaign_id": "autumn"}\r\n'
               "Content-Type: text/html; charset=utf-8\r\n\r\n" + body + "\r\n").encode()
    client = RawSmtp(server.smtp)
    client.transaction(["ann@example.com"])
    client.command("DATA")
    client.send(message + b".\r\n")
    message_id = queued_id(client.reply())
    client.close()
    [copy] = wait_captured(server, message_id)
    page_html = html_part(copy)
    tracker = f"https://127.0.0.1:{port}"
    assert len(re.findall(rf"{re.escape(tracker)}/q/", page_html)) == 2
    assert re.search(rf'href="{re.escape(tracker)}/f/', page_html)
    opened = tmp_path / "message.html"
    opened.write_text(page_html)
    statuses: dict[str, int] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            # The tracker's certificate is from a test CA the browser does not know.
            context = browser.new_context(ignore_https_errors=True, user_agent=READER)
            page = context.new_page()
            page.on("response", lambda response: statuses.__setitem__(response.url, response.status))
            page.goto(opened.as_uri(), wait_until="load")
            page.click("#cta")
            page.wait_for_url(f"{base}/offer?id=9")
            assert "landed-here" in page.content()
        finally:
            browser.close()
    tracked = {url: status for url, status in statuses.items() if url.startswith(tracker)}
    assert sorted(tracked.values()) == [200, 200, 302], statuses
    assert "/offer?id=9" in hits
    events = wait_events(server, message_id, {"initial_open", "open", "click"})
    [click] = [event for event in events if event["type"] == "click"]
    assert click["target_link_url"] == target
    assert click["user_agent"] == READER
