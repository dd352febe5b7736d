"""GET /api/v1/events/message (filters, cursor paging) and the /api/v1/events/stream SSE feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest

from engaged.api.service import ApiService
from engaged.events.model import Event, event_type
from engaged.types import EventQuery, EventStore
from tests.eventstores import Services
from tests.sample_events import T0, make_event

KINDS = ["injection", "delivery", "open", "click", "bounce", "initial_open"]
TOTAL = 3000


def grid(count: int = TOTAL) -> list[Event]:
    return [make_event(KINDS[n % 6], n, message_id=f"m-{n % 7}", campaign=f"c-{n % 3}",
                       rcpt=f"r{n % 11}@example.com", transmission=f"t-{n % 5}") for n in range(count)]


@pytest.fixture
async def filled(store: EventStore, start_service: Services) -> AsyncIterator[tuple[ApiService, list[Event]]]:
    events = grid()
    for start in range(0, TOTAL, 500):
        await store.append(events[start:start + 500])
    yield await start_service(store), events


async def get(service: ApiService, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        return await client.get(path, params=params)


async def all_pages(service: ApiService, **params: Any) -> tuple[list[str], list[int]]:
    """Event ids of every page, following links.next; and each page's total_count."""
    ids: list[str] = []
    totals: list[int] = []
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        response = await client.get("/api/v1/events/message", params=params)
        while True:
            assert response.status_code == 200, response.text
            body = response.json()
            ids.extend(event["event_id"] for event in body["results"])
            totals.append(body["total_count"])
            if "next" not in body["links"]:
                return ids, totals
            response = await client.get(body["links"]["next"])


async def test_paging_over_thousands_of_events_returns_each_once_oldest_first(
        filled: tuple[ApiService, list[Event]]) -> None:
    service, events = filled
    ids, totals = await all_pages(service, per_page=700)
    assert ids == [event.event_id for event in events]
    assert totals == [TOTAL] * 5


async def test_results_are_the_stored_sparkpost_events_as_json(filled: tuple[ApiService, list[Event]]) -> None:
    service, events = filled
    response = await get(service, "/api/v1/events/message", per_page=6)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json()["results"] == [msgspec.to_builtins(event) for event in events[:6]]
    assert response.json()["results"][0]["timestamp"] == events[0].timestamp  # the stored epoch string


@pytest.mark.parametrize(("params", "predicate"), [
    ({"events": "click,bounce"}, lambda e: event_type(e) in ("click", "bounce")),
    ({"campaigns": "c-1"}, lambda e: e.campaign_id == "c-1"),
    ({"recipients": "R3@Example.com,r4@example.com"}, lambda e: e.rcpt_to in ("r3@example.com", "r4@example.com")),
    ({"message_ids": "m-2,m-5"}, lambda e: e.message_id in ("m-2", "m-5")),
    ({"transmissions": "t-0"}, lambda e: e.transmission_id == "t-0"),
    ({"from": str(T0 + 100), "to": str(T0 + 250)}, lambda e: T0 + 100 <= float(e.timestamp) < T0 + 250),
    ({"from": datetime.fromtimestamp(T0 + 2990, UTC).strftime("%Y-%m-%dT%H:%M:%S")},
     lambda e: float(e.timestamp) >= T0 + 2990),
    ({"to": datetime.fromtimestamp(T0 + 60, UTC).isoformat()}, lambda e: float(e.timestamp) < T0 + 60),
    ({"to": datetime.fromtimestamp(T0 + 40, UTC).strftime("%Y-%m-%dT%H:%M")}, lambda e: float(e.timestamp) < T0 + 40),
    ({"events": "open", "campaigns": "c-0,c-2", "transmissions": "t-1,t-3"},
     lambda e: event_type(e) == "open" and e.campaign_id in ("c-0", "c-2") and e.transmission_id in ("t-1", "t-3")),
])
async def test_each_filter_selects_exactly_the_matching_events(
        filled: tuple[ApiService, list[Event]], params: dict[str, str], predicate: Any) -> None:
    service, events = filled
    expected = [event.event_id for event in events if predicate(event)]
    ids, totals = await all_pages(service, per_page=250, **params)
    assert expected and ids == expected
    assert set(totals) == {len(expected)}


async def test_a_time_with_an_offset_is_read_in_that_offset(filled: tuple[ApiService, list[Event]]) -> None:
    service, events = filled
    start = datetime.fromtimestamp(T0 + 2995, UTC).astimezone().isoformat()  # "+hh:mm" arrives as " hh:mm"
    ids, _ = await all_pages(service, **{"from": start})
    assert ids == [event.event_id for event in events[2995:]]


async def test_per_page_defaults_to_1000_and_the_next_link_keeps_the_filters(
        filled: tuple[ApiService, list[Event]]) -> None:
    service, _ = filled
    body = (await get(service, "/api/v1/events/message")).json()
    assert len(body["results"]) == 1000
    body = (await get(service, "/api/v1/events/message", campaigns="c-2", per_page=10)).json()
    assert body["links"]["next"].startswith("/api/v1/events/message?campaigns=c-2&per_page=10&cursor=")
    assert (await get(service, "/api/v1/events/message", per_page=10000)).status_code == 200


@pytest.mark.parametrize(("params", "param"), [
    ({"per_page": "10001"}, "per_page"), ({"per_page": "0"}, "per_page"), ({"per_page": "x"}, "per_page"),
    ({"events": "click,teleport"}, "events"), ({"from": "yesterday"}, "from"), ({"to": "2024-13-01"}, "to"),
    ({"from": "200", "to": "100"}, "from"), ({"cursor": "not-a-cursor"}, "cursor"), ({"cursor": "czE"[:-1]}, "cursor"),
])
async def test_bad_parameters_answer_400_in_sparkposts_error_shape(
        filled: tuple[ApiService, list[Event]], params: dict[str, str], param: str) -> None:
    service, _ = filled
    response = await get(service, "/api/v1/events/message", **params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    (problem,) = response.json()["errors"]
    assert problem["param"] == param and problem["message"]


async def read_frames(lines: AsyncIterator[str], count: int) -> list[dict[str, str]]:
    """The next `count` SSE messages carrying data (comments and retry lines skipped)."""
    frames: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async for line in lines:
        if not line:
            if "data" in current:
                frames.append(current)
                if len(frames) == count:
                    return frames
            current = {}
            continue
        if not line.startswith(":"):
            key, _, value = line.partition(": ")
            current[key] = value
    raise AssertionError("stream ended")


async def test_the_stream_delivers_a_newly_stored_event_within_one_second(
        store: EventStore, start_service: Services) -> None:
    service = await start_service(store)
    await store.append([make_event("open", 0)])  # before the connection: not sent without Last-Event-ID
    async with httpx.AsyncClient(base_url=f"http://{service.address}", timeout=5) as client, \
            client.stream("GET", "/api/v1/events/stream") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        assert await anext(lines) == "retry: 1000"
        click = make_event("click", 1)
        started = asyncio.get_running_loop().time()
        await store.append([click])
        (frame,) = await asyncio.wait_for(read_frames(lines, 1), 1.0)
        assert asyncio.get_running_loop().time() - started < 1.0
    (stored,) = await store.query(EventQuery(types=("click",)))
    assert frame == {"id": str(stored.seq), "event": "click", "data": msgspec.json.encode(click).decode()}


async def test_the_stream_resumes_after_last_event_id_and_applies_filters(
        store: EventStore, start_service: Services) -> None:
    service = await start_service(store)
    await store.append([make_event("click" if n % 2 else "open", n) for n in range(10)])
    seqs = [item.seq for item in await store.query(EventQuery())]
    headers = {"Last-Event-ID": str(seqs[4])}
    async with httpx.AsyncClient(base_url=f"http://{service.address}", timeout=5) as client, \
            client.stream("GET", "/api/v1/events/stream", params={"events": "click"}, headers=headers) as response:
        frames = await asyncio.wait_for(read_frames(response.aiter_lines(), 3), 5)
    assert [frame["id"] for frame in frames] == [str(seqs[5]), str(seqs[7]), str(seqs[9])]
    assert {frame["event"] for frame in frames} == {"click"}


async def test_the_stream_sends_keepalive_comments_while_idle(store: EventStore, start_service: Services) -> None:
    service = await start_service(store)  # the test services use a 0.5 s keepalive
    async with httpx.AsyncClient(base_url=f"http://{service.address}", timeout=5) as client, \
            client.stream("GET", "/api/v1/events/stream", params={"last_event_id": "0"}) as response:
        lines = []
        async for line in response.aiter_lines():
            lines.append(line)
            if line == ": keepalive":
                break
    assert lines[-1:] == [": keepalive"]
    assert not any(line.startswith("data:") for line in lines)  # nothing was stored: only keepalives


async def test_a_bad_last_event_id_answers_400(filled: tuple[ApiService, list[Event]]) -> None:
    service, _ = filled
    response = await get(service, "/api/v1/events/stream", last_event_id="abc")
    assert response.status_code == 400 and response.json()["errors"][0]["param"] == "last_event_id"


async def test_stopping_the_service_ends_open_streams_promptly(store: EventStore, start_service: Services) -> None:
    service = await start_service(store)
    async with httpx.AsyncClient(base_url=f"http://{service.address}", timeout=10) as client, \
            client.stream("GET", "/api/v1/events/stream") as response:
        lines = response.aiter_lines()
        assert await anext(lines) == "retry: 1000"
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(service.stop(), 5)
        assert loop.time() - started < 2
        remaining = [line async for line in lines]
    assert all(not line or line.startswith(":") for line in remaining)
