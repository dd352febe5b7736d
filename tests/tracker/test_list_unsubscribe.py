"""List-Unsubscribe one-click against a running tracker: POST records list_unsubscribe, GET shows a page."""

from __future__ import annotations

import pytest

from engaged.delivery.unsubscribe import list_unsubscribe_url
from engaged.events.model import LinkUnsubscribeEvent, ListUnsubscribeEvent
from engaged.tracker.handler import CONFIRM_PAGE
from engaged.types import EventQuery
from tests.tracker.conftest import BROWSER_UA, RunningTracker


async def stored(tracker: RunningTracker) -> list[object]:
    await tracker.flush()
    return [item.event for item in await tracker.store.query(EventQuery(limit=1000))]


async def test_a_one_click_post_answers_200_without_redirect_and_records_list_unsubscribe(
        tracker: RunningTracker) -> None:
    url = list_unsubscribe_url(tracker.links())
    assert "/lu/" in url
    response = await tracker.client.post(url, content=b"List-Unsubscribe=One-Click",
                                         headers={"content-type": "application/x-www-form-urlencoded",
                                                  "user-agent": "Gmail one-click"})
    assert response.status_code == 200 and "location" not in response.headers
    [event] = await stored(tracker)
    assert isinstance(event, ListUnsubscribeEvent)
    assert event.rcpt_to == event.mailfrom and event.rcpt_to
    assert event.user_agent == "Gmail one-click" and event.ip_address == "127.0.0.1"


async def test_a_get_shows_a_page_with_a_post_button_and_records_nothing(tracker: RunningTracker) -> None:
    url = list_unsubscribe_url(tracker.links())
    response = await tracker.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == CONFIRM_PAGE
    assert b'method="post"' in response.content and b"<script" not in response.content
    assert "default-src 'none'" in response.headers["content-security-policy"]
    token = url.rpartition("/")[2]
    assert token.encode() not in response.content
    assert await stored(tracker) == []


@pytest.mark.parametrize("mangle", [lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"), lambda t: "x" * 40,
                                    lambda t: ""])
async def test_a_forged_token_is_404_and_records_nothing(tracker: RunningTracker, mangle: object) -> None:
    url = list_unsubscribe_url(tracker.links())
    head, _, token = url.rpartition("/")
    forged = f"{head}/{mangle(token)}"  # type: ignore[operator]
    assert (await tracker.client.post(forged, content=b"List-Unsubscribe=One-Click")).status_code == 404
    assert (await tracker.get(forged)).status_code == 404
    assert await stored(tracker) == []


async def test_a_click_token_is_not_an_unsubscribe_and_other_methods_are_405(tracker: RunningTracker) -> None:
    click = tracker.links().click_url("https://shop.example.com/", "shop", None, False)
    token = click.rpartition("/")[2]
    assert (await tracker.client.post(f"{tracker.base}/lu/{token}")).status_code == 404
    url = list_unsubscribe_url(tracker.links())
    assert (await tracker.client.put(url)).status_code == 405
    assert await stored(tracker) == []


async def test_a_link_unsubscribe_carries_mailfrom(tracker: RunningTracker) -> None:
    url = tracker.links().click_url("https://shop.example.com/bye", "bye", None, True)
    assert (await tracker.get(url, **{"user-agent": BROWSER_UA})).status_code == 302
    [event] = await stored(tracker)
    assert isinstance(event, LinkUnsubscribeEvent) and event.mailfrom == event.rcpt_to != ""
