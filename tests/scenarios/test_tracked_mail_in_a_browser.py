"""Story: mail injected with tracking is captured, a real browser opens it from disk, and the tracker records it."""

from __future__ import annotations

import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ServerFactory, require_tool
from tests.helpers import RawSmtp, html_part, queued_id, tracking_server, wait_captured, wait_events

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def test_a_captured_message_opened_in_chromium_records_opens_and_its_link_lands(
        engaged_server: ServerFactory, landing: tuple[str, list[str]], tmp_path: Path) -> None:
    chromium = require_tool("chromium", "/usr/bin/chromium")
    server, tracker = tracking_server(engaged_server)
    base, hits = landing
    target = f"{base}/offer?id=7"
    body = (f'<html><body><h1>Spring</h1><p><a href="{target}" data-msys-linkname="offer">Offer</a></p>'
            "</body></html>")
    message = ("Subject: spring\r\nFrom: shop@example.org\r\nTo: ann@example.com\r\nMIME-Version: 1.0\r\n"
               'X-MSYS-API: {"campaign_id": "spring", "metadata": {"user": "42"}}\r\n'
               "Content-Type: text/html; charset=utf-8\r\n\r\n" + body + "\r\n").encode()
    client = RawSmtp(server.smtp)
    client.transaction(["ann@example.com"])
    client.command("DATA")
    client.send(message + b".\r\n")
    message_id = queued_id(client.reply())
    client.close()
    [copy] = wait_captured(server, message_id)
    page = html_part(copy)
    tracked = re.findall(rf"http://{re.escape(tracker)}/f/[^\"'\s>]+", page)
    assert len(tracked) == 1 and len(re.findall(rf"http://{re.escape(tracker)}/q/", page)) == 2
    opened = tmp_path / "message.html"
    opened.write_text(page)
    clicker = tmp_path / "click.html"
    clicker.write_text(f'<meta http-equiv="refresh" content="0; url={tracked[0]}">')
    for document in (opened, clicker):
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / document.stem}",
                        "--virtual-time-budget=10000", "--dump-dom", document.as_uri()],
                       capture_output=True, timeout=120, check=True)
    assert "/offer?id=7" in hits
    events = wait_events(server, message_id, {"initial_open", "open", "click"})
    [click] = [event for event in events if event["type"] == "click"]
    assert (click["target_link_url"], click["target_link_name"]) == (target, "offer")
    assert click["rcpt_meta"] == {"user": "42"}
    assert "HeadlessChrome" in str(click["user_agent"])


def test_a_forged_link_on_the_tracking_domain_is_404(engaged_server: ServerFactory) -> None:
    _, tracker = tracking_server(engaged_server)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{tracker}/f/a/AQEDforgedforgedforgedforgedforged", timeout=10)
    assert refused.value.code == 404
