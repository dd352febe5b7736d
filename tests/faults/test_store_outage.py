"""Event stores under outages: terminated PostgreSQL backends, a full disk under SQLite.

Each test counts appends made, appends refused and events stored, and states them when it fails.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import asyncpg
import pytest

from engaged.errors import StoreError
from engaged.events.model import OpenEvent
from engaged.events.store_postgres import PostgresEventStore
from engaged.events.store_sqlite import SqliteEventStore
from engaged.types import EventQuery
from tests.conftest import postgres_admin
from tests.faults.conftest import SmallDisk, fill

WRITERS = 8
APPENDS = 150
KILL_EVERY = 30  # completed appends between two rounds of pg_terminate_backend


def open_event(n: int) -> OpenEvent:
    return OpenEvent(
        event_id=str(7_000_000_000_000_000 + n), timestamp=f"{1_700_000_000 + n}.000", message_id=f"m{n}",
        transmission_id="t", campaign_id="c", customer_id="1", rcpt_to="ann@example.com",
        raw_rcpt_to="ann@example.com", rcpt_meta={}, rcpt_tags=[],
    )


@pytest.fixture
def dsn(postgres_dsn: str) -> str:
    asyncio.run(postgres_admin("DROP TABLE IF EXISTS webhook_dead_letters, webhooks, events", dsn=postgres_dsn))
    return postgres_dsn


async def test_postgresql_appends_survive_backends_terminated_under_load(dsn: str) -> None:
    application = f"engaged-fault-victim-{os.getpid()}"  # its own: another suite may run this test at once
    store = PostgresEventStore(f"{dsn}?application_name={application}")
    await store.open()
    admin = await asyncpg.connect(dsn)
    completed = 0
    refused: Counter[str] = Counter()
    appended: list[int] = []

    async def writer(w: int) -> None:
        nonlocal completed
        for i in range(APPENDS):
            n = w * APPENDS + i
            try:
                await store.append([open_event(n)])
                appended.append(n)
            except StoreError as error:
                refused[str(error)[:120]] += 1
            completed += 1

    async def killer() -> int:
        rounds, mark = 0, 0
        while completed < WRITERS * APPENDS:
            if completed - mark >= KILL_EVERY:
                mark = completed
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                    application)
                rounds += 1 if killed else 0
            await asyncio.sleep(0.002)
        return rounds

    try:
        kills = asyncio.create_task(killer())
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        rounds = await kills
        await store.append([open_event(10**6)])  # and it still works afterwards
        stored = Counter(int(item.event.event_id) - 7_000_000_000_000_000
                         for item in await store.query(EventQuery(limit=-1)))
    finally:
        await admin.close()
        await store.close()
    counts = (f"{rounds} kill rounds, {len(appended)} appends returned, {sum(refused.values())} refused "
              f"{dict(refused)}, {len(stored)} distinct stored, {max(stored.values())} max copies")
    assert rounds >= 10, counts
    assert not refused, counts
    assert sorted(stored) == sorted([*appended, 10**6]), counts
    assert max(stored.values()) == 1, counts


async def test_sqlite_on_a_full_disk_refuses_appends_with_the_reason_and_recovers(small_disk: SmallDisk) -> None:
    disk = small_disk(16)
    store = SqliteEventStore(disk / "events.sqlite3")
    await store.open()
    try:
        await store.append([open_event(0)])
        filler = fill(disk)
        refused: Counter[str] = Counter()
        for n in range(1, 51):
            try:
                await store.append([open_event(n)])
            except StoreError as error:
                refused[str(error)] += 1
        filler.unlink()
        after = 0
        for n in range(51, 101):
            await store.append([open_event(n)])
            after += 1
        stored = {int(item.event.event_id) - 7_000_000_000_000_000 for item in await store.query(EventQuery(limit=-1))}
    finally:
        await store.close()
    counts = f"disk full: {sum(refused.values())} of 50 refused {dict(refused)}; after: {after} of 50 stored"
    assert refused == Counter({"event store write failed: database or disk is full": 50}), counts
    assert stored == {0, *range(51, 101)}, counts
