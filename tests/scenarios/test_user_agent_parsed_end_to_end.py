"""Story: real HTTP requests with known User-Agents through the running tracker, read back from the Events API
as SparkPost's `user_agent_parsed` (agent, device, system, mobile, and proxy/prefetch from the classification)."""

from __future__ import annotations

import email
import re
import time
from typing import Any

import httpx

from engaged.testing.server import ServerProcess, wait_until
from engaged.tracker.classify import QUICK_SECONDS
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, wait_captured

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.1.2 Mobile/15E148 Safari/604.1")
PIXEL = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.6099.144 Mobile Safari/537.36")
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
MPP = "Mozilla/5.0"  # Apple Mail Privacy Protection's prefetcher
MESSAGE = (b"From: shop@example.com\r\nTo: ann@example.net\r\nSubject: UA\r\n"
           b'X-MSYS-API: {"options": {"open_tracking": true, "click_tracking": true}}\r\n'
           b"Content-Type: text/html; charset=utf-8\r\n\r\n"
           b'<html><body><a href="https://shop.example/a">a</a> <a href="https://shop.example/b">b</a>'
           b"</body></html>\r\n")


def events_api(server: ServerProcess, message_id: str, types: str, count: int) -> list[dict[str, Any]]:
    """The message's events of `types` as the Events API answers them, once `count` are there."""
    host, port = server.address("api")

    def answered() -> list[dict[str, Any]] | None:
        response = httpx.get(f"http://{host}:{port}/api/v1/events/message",
                             params={"events": types, "messages": message_id}, timeout=10)
        response.raise_for_status()
        results: list[dict[str, Any]] = response.json()["results"]
        return results if len(results) >= count else None

    found: list[dict[str, Any]] = wait_until(answered, 30)
    return found


def test_user_agent_parsed_of_opens_and_clicks_from_the_tracker_reaches_the_events_api(
        engaged_server: ServerFactory) -> None:
    server = engaged_server()
    client = RawSmtp(server.smtp)
    client.transaction(["ann@example.net"])
    client.command("DATA")
    client.send(MESSAGE + b".\r\n")
    message_id = queued_id(client.reply())
    client.close()
    injected = time.time()
    [copy] = wait_captured(server, message_id)
    html = email.message_from_bytes(copy).get_payload(decode=True)
    assert isinstance(html, bytes)
    clicks = re.findall(rb'href="http://localhost:8080(/f/a/[A-Za-z0-9_-]+)"', html)
    pixels = re.findall(rb'src="http://localhost:8080(/q/[A-Za-z0-9_-]+)"', html)
    assert len(clicks) == 2 and len(pixels) == 2
    host, port = server.tracker
    tracker = f"http://{host}:{port}"
    # A click that soon after injection is a scanner's by rule; the people below click later than that.
    wait_until(lambda: time.time() - injected > QUICK_SECONDS + 1.5, 30)
    for path, agent in ((clicks[0], IPHONE), (clicks[1], PIXEL)):
        response = httpx.get(tracker + path.decode(), headers={"User-Agent": agent}, follow_redirects=False)
        assert response.status_code == 302
    for path, agent in ((pixels[0], GMAIL_PROXY), (pixels[1], MPP)):
        assert httpx.get(tracker + path.decode(), headers={"User-Agent": agent}).status_code == 200

    by_agent = {str(event["user_agent"]): event for event in
                events_api(server, message_id, "click,open,initial_open", 4)}
    assert by_agent[IPHONE]["type"] == "click" and by_agent[IPHONE]["user_agent_parsed"] == {
        "agent_family": "Mobile Safari", "device_brand": "Apple", "device_family": "iPhone", "os_family": "iOS",
        "os_version": "17.1", "is_mobile": True, "is_proxy": False, "is_prefetched": False}
    assert by_agent[PIXEL]["user_agent_parsed"] == {
        "agent_family": "Chrome Mobile", "device_brand": "Google", "device_family": "Pixel 8",
        "os_family": "Android", "os_version": "14", "is_mobile": True, "is_proxy": False, "is_prefetched": False}
    # Gmail's image proxy fetches when the reader opens: a proxy, not a prefetch.
    gmail = by_agent[GMAIL_PROXY]
    assert gmail["type"] == "initial_open" and gmail["machine_engagement"]["kind"] == "google_image_proxy"
    assert gmail["user_agent_parsed"]["is_proxy"] is True and gmail["user_agent_parsed"]["is_prefetched"] is False
    assert gmail["user_agent_parsed"]["is_mobile"] is False
    # Apple's Mail Privacy Protection fetches ahead of any reader: a proxy and a prefetch.
    mpp = by_agent[MPP]
    assert mpp["type"] == "open" and mpp["machine_engagement"]["kind"] == "apple_mpp"
    assert (mpp["user_agent_parsed"]["is_proxy"], mpp["user_agent_parsed"]["is_prefetched"]) == (True, True)
    assert all(str(event["timestamp"]).endswith("+00:00") for event in by_agent.values())
