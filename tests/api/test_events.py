"""GET /api/v1/events/message (filters, cursor paging) and the /api/v1/events/stream SSE feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest

from engaged.app import ApiApp
from engaged.events.model import Event, event_type
from engaged.events.wire import api_json, iso_timestamp
from engaged.types import EventQuery, EventStore
from tests.eventstores import Services
from tests.sample_events import T0, make_event

KINDS = ["injection", "delivery", "open", "click", "bounce", "initial_open"]
TOTAL = 3000
NOW = T0 + 3600.0
"""The services' clock: every grid event lies within the default 24-hour window."""


def api_form(event: Event) -> dict[str, Any]:
    """An event as the Events API answers it."""
    decoded: dict[str, Any] = msgspec.json.decode(api_json(event))
    return decoded


def grid(count: int = TOTAL) -> list[Event]:
    return [make_event(KINDS[n % 6], n, message_id=f"m-{n % 7}", campaign=f"c-{n % 3}",
                       rcpt=f"r{n % 11}@example.com", transmission=f"t-{n % 5}") for n in range(count)]


@pytest.fixture
async def filled(store: EventStore, start_service: Services) -> AsyncIterator[tuple[ApiApp, list[Event]]]:
    events = grid()
    for start in range(0, TOTAL, 500):
        await store.append(events[start:start + 500])
    yield await start_service(store, clock=lambda: NOW), events


async def get(service: ApiApp, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        return await client.get(path, params=params)


def next_link(body: dict[str, Any]) -> str | None:
    return next((link["href"] for link in body["links"] if link["rel"] == "next"), None)


async def all_pages(service: ApiApp, **params: Any) -> tuple[list[str], list[int]]:
    """Event ids of every page, following the `next` link; and each page's total_count."""
    ids: list[str] = []
    totals: list[int] = []
    async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
        response = await client.get("/api/v1/events/message", params=params)
        while True:
            assert response.status_code == 200, response.text
            body = response.json()
            ids.extend(event["event_id"] for event in body["results"])
            totals.append(body["total_count"])
            link = next_link(body)
            if link is None:
                return ids, totals
            response = await client.get(link)


async def test_paging_over_thousands_of_events_returns_each_once_newest_first(
        filled: tuple[ApiApp, list[Event]]) -> None:
    service, events = filled
    ids, totals = await all_pages(service, per_page=700, cursor="initial")
    assert ids == [event.event_id for event in reversed(events)]
    assert totals == [TOTAL] * 5


async def test_results_are_the_stored_sparkpost_events_as_json(filled: tuple[ApiApp, list[Event]]) -> None:
    service, events = filled
    response = await get(service, "/api/v1/events/message", per_page=6)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    newest = events[-6:][::-1]
    assert response.json()["results"] == [api_form(event) for event in newest]
    stored = msgspec.to_builtins(newest[0])
    assert {**response.json()["results"][0], "timestamp": stored["timestamp"]} == stored  # only timestamp differs
    assert response.json()["results"][0]["timestamp"] == iso_timestamp(newest[0].timestamp)
    assert response.json()["results"][0]["timestamp"].endswith(".000+00:00")


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
        filled: tuple[ApiApp, list[Event]], params: dict[str, str], predicate: Any) -> None:
    service, events = filled
    expected = [event.event_id for event in reversed(events) if predicate(event)]
    ids, totals = await all_pages(service, per_page=250, **params)
    assert expected and ids == expected
    assert set(totals) == {len(expected)}


async def test_a_time_with_an_offset_is_read_in_that_offset(filled: tuple[ApiApp, list[Event]]) -> None:
    service, events = filled
    start = datetime.fromtimestamp(T0 + 2995, UTC).astimezone().isoformat()  # "+hh:mm" arrives as " hh:mm"
    ids, _ = await all_pages(service, **{"from": start})
    assert ids == [event.event_id for event in reversed(events[2995:])]


async def test_per_page_defaults_to_1000_and_the_next_link_keeps_the_filters(
        filled: tuple[ApiApp, list[Event]]) -> None:
    service, _ = filled
    body = (await get(service, "/api/v1/events/message")).json()
    assert len(body["results"]) == 1000
    body = (await get(service, "/api/v1/events/message", campaigns="c-2", per_page=10)).json()
    assert body["links"][0] == {"href": "/api/v1/events/message?campaigns=c-2&per_page=10&cursor=initial",
                                "rel": "first"}
    assert str(next_link(body)).startswith("/api/v1/events/message?campaigns=c-2&per_page=10&cursor=")
    assert (await get(service, "/api/v1/events/message", per_page=10000)).status_code == 200


@pytest.mark.parametrize(("params", "param"), [
    ({"per_page": "10001"}, "per_page"), ({"per_page": "0"}, "per_page"), ({"per_page": "x"}, "per_page"),
    ({"events": "click,teleport"}, "events"), ({"from": "yesterday"}, "from"), ({"to": "2024-13-01"}, "to"),
    ({"from": "200", "to": "100"}, "from"), ({"cursor": "not-a-cursor"}, "cursor"), ({"cursor": "czE"[:-1]}, "cursor"),
    ({"colour": "red"}, "colour"), ({"page": "2"}, "page"), ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"query_filters": "{}"}, "query_filters"),  # SparkPost documents query_filters on the Metrics API only
])
async def test_bad_parameters_answer_400_in_sparkposts_error_shape(
        filled: tuple[ApiApp, list[Event]], params: dict[str, str], param: str) -> None:
    service, _ = filled
    response = await get(service, "/api/v1/events/message", **params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    (problem,) = response.json()["errors"]
    assert problem["param"] == param and problem["message"] == "invalid params" and problem["code"] == "1200"
    assert problem["description"]


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


async def test_the_stream_delivers_a_newly_stored_event_on_the_open_connection(
        store: EventStore, start_service: Services) -> None:
    service = await start_service(store)
    await store.append([make_event("open", 0)])  # before the connection: not sent without Last-Event-ID
    async with httpx.AsyncClient(base_url=f"http://{service.address}", timeout=5) as client, \
            client.stream("GET", "/api/v1/events/stream") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        assert await anext(lines) == "retry: 1000"
        click = make_event("click", 1)
        await store.append([click])
        # The frame arrives on the open connection (how fast is bench/ material, not a test's: a hang guard only).
        (frame,) = await asyncio.wait_for(read_frames(lines, 1), 15)
    (stored,) = await store.query(EventQuery(types=("click",)))
    assert frame == {"id": str(stored.seq), "event": "click", "data": api_json(click).decode()}


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


async def test_a_bad_last_event_id_answers_400(filled: tuple[ApiApp, list[Event]]) -> None:
    service, _ = filled
    response = await get(service, "/api/v1/events/stream", last_event_id="abc")
    assert response.status_code == 400 and response.json()["errors"][0]["param"] == "last_event_id"


async def test_stopping_the_service_ends_open_streams_promptly(store: EventStore, start_service: Services) -> None:
    service = await start_service(store)
    async with httpx.AsyncClient(base_url=f"http://{service.address}", timeout=10) as client, \
            client.stream("GET", "/api/v1/events/stream") as response:
        lines = response.aiter_lines()
        assert await anext(lines) == "retry: 1000"
        await asyncio.wait_for(service.stop(), 15)  # an open stream does not hold the stop up (a hang guard)
        remaining = [line async for line in lines]
    assert all(not line or line.startswith(":") for line in remaining)


async def test_without_from_the_search_covers_the_last_24_hours(store: EventStore, start_service: Services) -> None:
    old, recent = make_event("open", 1, ts=NOW - 86400 - 5), make_event("open", 2, ts=NOW - 86400 + 5)
    await store.append([old, recent])
    service = await start_service(store, clock=lambda: NOW)
    body = (await get(service, "/api/v1/events/message")).json()
    assert [event["event_id"] for event in body["results"]] == [recent.event_id]
    everything = (await get(service, "/api/v1/events/message", **{"from": str(NOW - 90000)})).json()
    assert [event["event_id"] for event in everything["results"]] == [recent.event_id, old.event_id]


async def test_campaigns_match_by_keyword_and_wildcard_case_insensitively(
        store: EventStore, start_service: Services) -> None:
    names = ["BlackFriday-Specials", "blackfriday-members", "Spring Sale 2024", "summer"]
    events = [make_event("delivery", n, campaign=name, ts=NOW - 60 + n) for n, name in enumerate(names)]
    await store.append(events)
    service = await start_service(store, clock=lambda: NOW)

    async def campaigns(**params: str) -> list[str]:
        body = (await get(service, "/api/v1/events/message", **params)).json()
        return sorted(event["campaign_id"] for event in body["results"])

    assert await campaigns(campaigns="blackfriday") == ["BlackFriday-Specials", "blackfriday-members"]
    assert await campaigns(campaigns="blackfriday*members") == ["blackfriday-members"]
    assert await campaigns(campaigns="sale spring") == ["Spring Sale 2024"]
    assert await campaigns(campaigns="summer,specials") == ["BlackFriday-Specials", "summer"]
    assert await campaigns(campaign_ids="SUMMER") == ["summer"]
    assert await campaigns(campaigns="100%") == []


@pytest.mark.parametrize(("params", "matching"), [
    ({"event_ids": f"{7_000_000_000_000_000 + 3};{7_000_000_000_000_000 + 4}", "delimiter": ";"}, {3, 4}),
    ({"messages": "m-a"}, {0, 1, 2}), ({"message_ids": "m-b"}, {3, 4, 5}),
    ({"transmissions": "t-x"}, {0, 2, 4}), ({"transmission_ids": "t-y"}, {1, 3, 5}),
    ({"subjects": "spring sale"}, {0, 1, 3, 4}), ({"subject": "20 %"}, {0, 1, 3, 4}),
    ({"bounce_classes": "10"}, {3}), ({"reasons": "unknown user"}, {3}), ({"reason": "5.1.1"}, {3}),
    ({"from_addresses": "shop@example.net"}, {0, 1, 3, 4}), ({"sending_domains": "example.net"}, {0, 1, 3, 4}),
    ({"recipient_domains": "other.org"}, {1, 4}), ({"recipients": "bob@other.org"}, {1, 4}),
    ({"recipients": "*@other.org"}, {1, 4}), ({"ip_pools": "default"}, {0, 1, 3, 4}),
    ({"subaccounts": "7"}, {0, 1, 2, 3, 4, 5}), ({"subaccounts": "8"}, set()),
    ({"sending_ips": "192.0.2.1"}, set()), ({"templates": "welcome"}, set()), ({"mailbox_providers": "gmail"}, set()),
    ({"mailbox_provider_regions": "europe"}, set()), ({"ab_tests": "t"}, set()), ({"ab_test_versions": "1"}, set()),
    ({"events": "spam_complaint,out_of_band,list_unsubscribe,amp_click,generation_failure"}, set()),
])
async def test_every_sparkpost_filter_selects_exactly_its_matches(
        store: EventStore, start_service: Services, params: dict[str, str], matching: set[int]) -> None:
    kinds = ["injection", "delivery", "click", "bounce", "delivery", "open"]
    events = [make_event(kind, n, message_id="m-a" if n < 3 else "m-b", transmission="t-x" if n % 2 == 0 else "t-y",
                         rcpt="bob@other.org" if n in (1, 4) else "ann@example.com", ts=NOW - 100 + n)
              for n, kind in enumerate(kinds)]
    await store.append(events)
    service = await start_service(store, clock=lambda: NOW)
    response = await get(service, "/api/v1/events/message", **params)
    assert response.status_code == 200, response.text
    expected = [events[n].event_id for n in sorted(matching, reverse=True)]
    assert [event["event_id"] for event in response.json()["results"]] == expected
    assert response.json()["total_count"] == len(expected)


async def test_from_and_to_are_read_in_the_given_timezone(store: EventStore, start_service: Services) -> None:
    event = make_event("open", 1, ts=datetime(2024, 5, 1, 12, 30, tzinfo=UTC).timestamp())
    await store.append([event])
    service = await start_service(store, clock=lambda: float(event.timestamp) + 60)
    window = {"from": "2024-05-01T14:00", "to": "2024-05-01T15:00"}  # 12:00–13:00 UTC in Berlin's summer time
    berlin = (await get(service, "/api/v1/events/message", timezone="Europe/Berlin", **window)).json()
    assert [item["event_id"] for item in berlin["results"]] == [event.event_id]
    utc = (await get(service, "/api/v1/events/message", **window)).json()
    assert utc["results"] == []
