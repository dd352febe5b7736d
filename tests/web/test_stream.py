"""The dashboard's live channels: its event stream (the API's filters) and the throttled `tick` stream."""

from __future__ import annotations

import asyncio
import time

import httpx
import msgspec

from engaged.types import EventStore
from tests.sample_events import make_event
from tests.web.conftest import OpenDashboard


async def first_frame(response: httpx.Response, event: str) -> list[str]:
    """The lines of the first SSE message whose `event:` is `event`."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if line:
            lines.append(line)
        elif f"event: {event}" in lines:
            return lines
        else:
            lines = []
    raise AssertionError("the stream ended")


async def test_the_dashboard_stream_sends_new_events_that_match_its_filters(
        store: EventStore, open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard()
    head = await store.head()
    async with client.stream("GET", "/ui/stream", params={"events": "click", "campaigns": "spring",
                                                          "last_event_id": str(head)}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        now = time.time()
        await store.append([make_event("open", 500, ts=now), make_event("click", 501, campaign="fall", ts=now),
                            make_event("click", 502, ts=now)])
        frame = await asyncio.wait_for(first_frame(response, "click"), 10)
    data = msgspec.json.decode(frame[-1].removeprefix("data: "))
    assert (data["type"], data["campaign_id"], data["event_id"]) == ("click", "spring", str(7_000_000_000_000_502))
    assert frame[0] == f"id: {head + 3}"


async def test_ticks_announce_that_events_were_stored(store: EventStore, open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard()
    async with client.stream("GET", "/ui/ticks") as response:
        await store.append([make_event("click", 600, ts=time.time())])
        frame = await asyncio.wait_for(first_frame(response, "tick"), 10)
    assert frame[-1] == f"data: {await store.head()}"
