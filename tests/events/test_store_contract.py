"""The EventStore contract, run against every implementation (SQLite file, PostgreSQL database)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from engaged.errors import StoreError
from engaged.events.model import (
    EVENT_TYPES,
    Event,
    event_type,
)
from engaged.events.store_postgres import PostgresEventStore
from engaged.events.store_sqlite import SqliteEventStore
from engaged.types import EventQuery, EventStore, StoredEvent
from tests.conftest import postgres_admin
from tests.sample_events import T0, eid, make_event

DEADLINE = 30.0


# --- fixtures -------------------------------------------------------------------------------------


class Backend:
    """Makes store instances on one backing (a file or a database) and closes them after the test."""

    def __init__(self, make: Callable[[], EventStore]) -> None:
        self._make = make
        self._open: list[EventStore] = []

    async def open(self) -> EventStore:
        store = self._make()
        await store.open()
        self._open.append(store)
        return store

    async def close(self, store: EventStore) -> None:
        self._open.remove(store)
        await store.close()

    async def close_all(self) -> None:
        while self._open:
            await self.close(self._open[-1])


@pytest.fixture(params=["sqlite", "postgres"])
def store_maker(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], EventStore]:
    """A factory of unopened stores sharing one empty backing."""
    if request.param == "sqlite":
        path = tmp_path / "events.sqlite3"
        return lambda: SqliteEventStore(path)
    dsn: str = request.getfixturevalue("postgres_dsn")
    asyncio.run(postgres_admin("DROP TABLE IF EXISTS events", dsn=dsn))
    return lambda: PostgresEventStore(dsn)


Refuse = Callable[[str], Awaitable[None]]
"""Makes the backing refuse every row of one campaign (a trigger in SQLite, a CHECK in PostgreSQL)."""


@pytest.fixture
def refuse(request: pytest.FixtureRequest, tmp_path: Path, store_maker: Callable[[], EventStore]) -> Refuse:
    async def install(campaign: str) -> None:
        if request.node.callspec.params["store_maker"] == "sqlite":
            with contextlib.closing(sqlite3.connect(tmp_path / "events.sqlite3")) as connection:
                connection.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.campaign_id = '{campaign}'"
                                   " BEGIN SELECT RAISE(ABORT, 'refused'); END")
        else:
            await postgres_admin(f"ALTER TABLE events ADD CONSTRAINT refuse CHECK (campaign_id <> '{campaign}')",
                                 dsn=request.getfixturevalue("postgres_dsn"))

    return install


@pytest.fixture
async def backend(store_maker: Callable[[], EventStore]) -> AsyncIterator[Backend]:
    stores = Backend(store_maker)
    yield stores
    await stores.close_all()


# --- events ---------------------------------------------------------------------------------------


def ids(stored: list[StoredEvent]) -> list[str]:
    return [item.event.event_id for item in stored]


async def everything(store: EventStore, page: int = 1000) -> list[StoredEvent]:
    """All stored events, paged by seq."""
    out: list[StoredEvent] = []
    while batch := await store.query(EventQuery(after_seq=out[-1].seq if out else 0, limit=page)):
        out.extend(batch)
    return out


# --- the contract ---------------------------------------------------------------------------------


async def test_appended_events_of_every_type_come_back_equal_and_in_order(backend: Backend) -> None:
    store = await backend.open()
    events = [make_event(kind, n) for n, kind in enumerate(EVENT_TYPES)]
    await store.append(events[:4])
    await store.append(events[4:])
    stored = await store.query(EventQuery())
    assert [item.event for item in stored] == events
    assert [event_type(item.event) for item in stored] == list(EVENT_TYPES)
    seqs = [item.seq for item in stored]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] > 0


async def test_appending_nothing_stores_nothing(backend: Backend) -> None:
    store = await backend.open()
    await store.append([])
    assert await store.query(EventQuery()) == []


async def test_an_event_id_appended_twice_is_stored_once(backend: Backend) -> None:
    store = await backend.open()
    first = make_event("delivery", 1)
    await store.append([first])
    await store.append([first])
    await store.append([make_event("click", 1), make_event("open", 2), make_event("open", 2)])
    stored = await store.query(EventQuery())
    assert ids(stored) == [eid(1), eid(2)]
    assert stored[0].event == first  # the first write wins; a replay never rewrites an event


async def test_queries_filter_by_type_message_campaign_recipient_and_transmission(backend: Backend) -> None:
    store = await backend.open()
    grid = [
        make_event(kind, n, message_id=f"m-{n % 3}", campaign=f"c-{n % 2}", rcpt=f"r{n % 4}@example.com",
                   transmission=f"t-{n % 5}")
        for n, kind in enumerate(["injection", "delivery", "open", "click", "bounce"] * 6)
    ]
    await store.append(grid)

    async def matching(query: EventQuery) -> set[str]:
        return set(ids(await store.query(query)))

    def where(predicate: Callable[[Event], bool]) -> set[str]:
        return {event.event_id for event in grid if predicate(event)}

    assert await matching(EventQuery(types=("open", "click"))) == where(
        lambda e: event_type(e) in ("open", "click"))
    assert await matching(EventQuery(message_ids=("m-1",))) == where(lambda e: e.message_id == "m-1")
    assert await matching(EventQuery(campaigns=("c-0",))) == where(lambda e: e.campaign_id == "c-0")
    assert await matching(EventQuery(recipients=("r1@example.com", "r3@example.com"))) == where(
        lambda e: e.rcpt_to in ("r1@example.com", "r3@example.com"))
    assert await matching(EventQuery(transmissions=("t-4",))) == where(lambda e: e.transmission_id == "t-4")
    combined = EventQuery(types=("delivery", "bounce"), campaigns=("c-1",), message_ids=("m-0", "m-2"))
    expected = where(lambda e: event_type(e) in ("delivery", "bounce") and e.campaign_id == "c-1"
                     and e.message_id in ("m-0", "m-2"))
    assert expected and await matching(combined) == expected
    assert await matching(EventQuery(campaigns=("nope",))) == set()


async def test_since_is_inclusive_and_until_is_exclusive(backend: Backend) -> None:
    store = await backend.open()
    await store.append([make_event("open", n, ts=T0 + n) for n in range(10)])
    assert ids(await store.query(EventQuery(since=T0 + 3))) == [eid(n) for n in range(3, 10)]
    assert ids(await store.query(EventQuery(until=T0 + 3))) == [eid(n) for n in range(3)]
    assert ids(await store.query(EventQuery(since=T0 + 2, until=T0 + 5))) == [eid(2), eid(3), eid(4)]
    assert ids(await store.query(EventQuery(since=T0 + 2.5, until=T0 + 2.75))) == []


async def test_after_seq_with_limit_pages_through_every_match_exactly_once(backend: Backend) -> None:
    store = await backend.open()
    for n in range(0, 40, 4):
        await store.append([make_event("click" if k % 2 else "open", n + k) for k in range(4)])
    pages: list[list[StoredEvent]] = []
    cursor = 0
    while page := await store.query(EventQuery(types=("click",), after_seq=cursor, limit=3)):
        assert len(page) <= 3
        pages.append(page)
        cursor = page[-1].seq
    assert [len(page) for page in pages] == [3, 3, 3, 3, 3, 3, 2]
    assert [item for page in pages for item in page] == await store.query(EventQuery(types=("click",)))
    assert ids([item for page in pages for item in page]) == [eid(n) for n in range(1, 40, 2)]
    assert await store.query(EventQuery(limit=0)) == []


async def test_two_hundred_concurrent_appends_are_all_durable_and_stored_exactly_once(backend: Backend) -> None:
    store = await backend.open()
    batches = [[make_event("open", 3 * task + k) for k in range(1 + task % 3)] for task in range(200)]
    await asyncio.gather(*(store.append(batch) for batch in batches))
    await backend.close(store)
    stored = await everything(await backend.open(), page=97)
    expected = Counter(event.event_id for batch in batches for event in batch)
    assert Counter(ids(stored)) == expected and max(expected.values()) == 1
    assert len({item.seq for item in stored}) == len(stored)


async def test_a_reopened_store_keeps_its_events(backend: Backend) -> None:
    store = await backend.open()
    events = [make_event("injection", 1), make_event("delivery", 2)]
    await store.append(events)
    before = await store.query(EventQuery())
    await backend.close(store)
    reopened = await backend.open()
    assert await reopened.query(EventQuery()) == before
    await reopened.append([make_event("open", 3)])
    after = await reopened.query(EventQuery())
    assert ids(after) == [eid(1), eid(2), eid(3)] and after[2].seq > before[1].seq


async def test_an_append_the_database_refuses_fails_alone_and_its_batch_mates_are_stored(
        backend: Backend, refuse: Refuse) -> None:
    store = await backend.open()
    await refuse("poison")
    appends = [[make_event("open", 1)], [make_event("open", 2)],
               [make_event("open", 3), make_event("open", 4, campaign="poison")],
               [make_event("open", 5)], [make_event("open", 6)]]
    results = await asyncio.gather(*(store.append(events) for events in appends), return_exceptions=True)
    assert [type(result).__name__ for result in results] == ["NoneType", "NoneType", "StoreError", "NoneType",
                                                           "NoneType"]
    assert ids(await store.query(EventQuery())) == [eid(1), eid(2), eid(5), eid(6)]  # an append is all or nothing


async def test_an_event_that_cannot_be_encoded_fails_only_its_own_append(backend: Backend) -> None:
    store = await backend.open()
    surrogate = msgspec.structs.replace(make_event("open", 2), campaign_id="half \udc80 a character")
    endless = msgspec.structs.replace(make_event("open", 3), timestamp="nan")
    appends = [[make_event("open", 1)], [surrogate], [endless], [make_event("open", 4)]]
    results = await asyncio.gather(*(store.append(events) for events in appends), return_exceptions=True)
    assert results[0] is None and results[3] is None
    assert all(isinstance(result, StoreError) for result in results[1:3])
    assert ids(await store.query(EventQuery())) == [eid(1), eid(4)]


async def test_appending_to_a_closed_store_raises_store_error(backend: Backend) -> None:
    store = await backend.open()
    await backend.close(store)
    with pytest.raises(StoreError):
        await store.append([make_event("open", 1)])


async def test_two_stores_on_one_backing_both_append_and_both_see_everything(backend: Backend) -> None:
    """Several `engaged serve` processes sharing one store (one SQLite file, one PostgreSQL database)."""
    left, right = await backend.open(), await backend.open()
    await asyncio.gather(
        *(left.append([make_event("click", n)]) for n in range(0, 100, 2)),
        *(right.append([make_event("open", n)]) for n in range(1, 100, 2)),
        right.append([make_event("click", 0)]),  # the same event reaching both processes
    )
    seen_left, seen_right = await everything(left, page=33), await everything(right, page=33)
    assert seen_left == seen_right
    assert sorted(ids(seen_left)) == [eid(n) for n in range(100)]


async def test_a_follower_paging_by_seq_misses_nothing_while_three_stores_append(backend: Backend) -> None:
    """Live follow: once a seq is seen, every smaller seq is already visible (or never will be)."""
    writers = [await backend.open() for _ in range(3)]
    reader = await backend.open()
    total = 1200
    written = asyncio.Event()

    async def write() -> None:
        await asyncio.gather(*(
            writers[n // 2 % 3].append([make_event("open", n), make_event("click", n + 1)])
            for n in range(0, total, 2)
        ))
        written.set()

    async def follow() -> list[str]:
        seen: list[str] = []
        cursor = 0
        while True:
            done = written.is_set()  # read before the query: an empty page after it means caught up
            page = await reader.query(EventQuery(after_seq=cursor, limit=50))
            if page:
                seen.extend(ids(page))
                cursor = page[-1].seq
            elif done:
                return seen
            else:
                await asyncio.sleep(0.001)  # polling the store, as a live follower does

    followed, _ = await asyncio.wait_for(asyncio.gather(follow(), write()), DEADLINE)
    assert sorted(followed) == [eid(n) for n in range(total)]
