"""The EventStore contract beyond append/query: head, count, aggregates, the append signal, webhook tables."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import msgspec

from engaged.events.model import Event, MachineEngagement
from engaged.events.store_postgres import PostgresEventStore
from engaged.events.store_sqlite import SqliteEventStore
from engaged.types import DeadLetter, EventQuery, EventStore, WebhookRecord, WebhookState
from tests.conftest import postgres_admin
from tests.sample_events import T0, make_event


def hook(webhook_id: str = "w-1", **fields: object) -> WebhookRecord:
    return msgspec.convert({"id": webhook_id, "name": "crm", "target": "https://crm.example/hook", **fields},
                           WebhookRecord)


async def test_head_is_the_highest_seq_and_zero_when_empty(store: EventStore) -> None:
    assert await store.head() == 0
    await store.append([make_event("open", n) for n in range(5)])
    assert await store.head() == (await store.query(EventQuery()))[-1].seq


async def test_count_applies_the_filters_and_stops_at_the_cap(store: EventStore) -> None:
    await store.append([make_event("click" if n % 3 else "open", n, campaign=f"c{n % 2}") for n in range(30)])
    assert await store.count(EventQuery(), 1000) == 30
    assert await store.count(EventQuery(types=("open",)), 1000) == 10
    assert await store.count(EventQuery(types=("click",), campaigns=("c1",)), 1000) == 10
    assert await store.count(EventQuery(since=T0 + 10, until=T0 + 20), 1000) == 10
    assert await store.count(EventQuery(), 7) == 7


async def test_aggregates_group_by_campaign_and_leave_machine_engagements_out_of_human_counts(
        store: EventStore) -> None:
    scanner = MachineEngagement(kind="scanner", reason="ua")
    events: Sequence[Event] = [
        make_event("click", 1, campaign="a", rcpt="x@e.org"),
        make_event("click", 2, campaign="a", rcpt="x@e.org"),
        msgspec.structs.replace(make_event("click", 3, campaign="a", rcpt="y@e.org"), machine_engagement=scanner),
        make_event("delivery", 4, campaign="b"),
    ]
    await store.append(events)
    (total,) = await store.aggregate(EventQuery(), by_campaign=False)
    assert total.campaign_id == ""
    assert (total.counts["count_clicked"], total.counts["count_unique_clicked"]) == (3, 2)
    assert (total.counts["count_human_clicked"], total.counts["count_unique_human_clicked"]) == (2, 1)
    assert total.counts["count_delivered"] == 1
    grouped = await store.aggregate(EventQuery(), by_campaign=True)
    assert [(row.campaign_id, row.counts["count_clicked"], row.counts["count_delivered"]) for row in grouped] == [
        ("a", 3, 0), ("b", 0, 1)]
    assert await store.aggregate(EventQuery(campaigns=("zzz",)), by_campaign=True) == []


async def test_the_append_signal_wakes_a_waiter_at_once_and_times_out_otherwise(store: EventStore) -> None:
    version = store.appends.version
    waiter = asyncio.create_task(store.appends.wait(version, 30))
    await store.append([make_event("open", 1)])
    await asyncio.wait_for(waiter, 5)
    assert store.appends.version > version
    await asyncio.wait_for(store.appends.wait(version, 30), 1)  # a stale version returns immediately
    loop = asyncio.get_running_loop()
    started = loop.time()
    await store.appends.wait(store.appends.version, 0.05)
    assert loop.time() - started >= 0.04


async def test_a_new_webhook_starts_at_the_head_and_a_redefinition_keeps_state_and_secret(store: EventStore) -> None:
    await store.append([make_event("open", n) for n in range(3)])
    await store.put_webhook(hook(), "s-1")
    (row,) = await store.webhooks()
    assert row.record == hook() and row.secret == "s-1" and row.state == WebhookState(cursor=await store.head())
    assert await store.claim_webhook("w-1", "me", 100.0, 130.0) is not None
    assert await store.save_webhook_state("w-1", "me", WebhookState(cursor=1, pending_last=3, attempts=2))
    await store.put_webhook(hook(events=("click",)), "s-2")
    again = await store.webhook("w-1")
    assert again is not None and again.record.events == ("click",) and again.secret == "s-1"
    assert again.state == WebhookState(cursor=1, pending_last=3, attempts=2)
    assert await store.webhook("nope") is None


async def test_a_lease_is_exclusive_until_released_or_expired(store: EventStore) -> None:
    await store.put_webhook(hook(), "s")
    assert await store.claim_webhook("w-1", "a", 100.0, 130.0) is not None
    assert await store.claim_webhook("w-1", "b", 110.0, 140.0) is None
    assert not await store.save_webhook_state("w-1", "b", WebhookState(cursor=9))
    assert await store.claim_webhook("w-1", "a", 120.0, 150.0) is not None  # renewal
    assert await store.claim_webhook("w-1", "b", 151.0, 181.0) is not None  # expired
    assert not await store.save_webhook_state("w-1", "a", WebhookState(cursor=9))
    await store.release_webhook("w-1", "b")
    assert await store.claim_webhook("w-1", "a", 152.0, 182.0) is not None
    assert await store.claim_webhook("gone", "a", 152.0, 182.0) is None


async def test_dead_letters_are_kept_with_the_cursor_move_and_can_be_queued_and_finished(store: EventStore) -> None:
    await store.put_webhook(hook(), "s")
    await store.claim_webhook("w-1", "a", 100.0, 130.0)
    letter = DeadLetter(webhook_id="w-1", batch_id="b-1", after_seq=0, last_seq=5, types=("click",), events=4,
                        attempts=9, first_attempt=1.0, failed_at=2.0, last_error="HTTP 500")
    assert not await store.add_dead_letter(letter, "intruder", WebhookState(cursor=5))
    assert await store.dead_letters("w-1") == []
    assert await store.add_dead_letter(letter, "a", WebhookState(cursor=5))
    (kept,) = await store.dead_letters("w-1")
    assert kept == msgspec.structs.replace(letter, id=kept.id) and kept.id > 0
    row = await store.webhook("w-1")
    assert row is not None and row.state.cursor == 5
    assert await store.queue_dead_letters("w-1", [kept.id + 1]) == 0
    assert await store.queue_dead_letters("w-1", []) == 0
    assert await store.queue_dead_letters("w-1", None) == 1
    assert await store.queue_dead_letters("w-1", None) == 0
    await store.finish_dead_letter(msgspec.structs.replace(kept, state="replayed", attempts=10))
    assert [(item.state, item.attempts) for item in await store.dead_letters("w-1")] == [("replayed", 10)]
    assert await store.delete_webhook("w-1")
    assert not await store.delete_webhook("w-1")
    assert await store.dead_letters("w-1") == [] and await store.webhooks() == []


async def test_a_sqlite_store_from_before_the_machine_column_gains_it_filled_from_the_bodies(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    flagged = msgspec.structs.replace(make_event("click", 1), machine_engagement=MachineEngagement(kind="scanner",
                                                                                                    reason="ua"))
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,"
                     " type TEXT NOT NULL, ts REAL NOT NULL, message_id TEXT NOT NULL, transmission_id TEXT NOT NULL,"
                     " campaign_id TEXT NOT NULL, rcpt_to TEXT NOT NULL, body BLOB NOT NULL)")
        for event in (flagged, make_event("click", 2)):
            conn.execute("INSERT INTO events (event_id, type, ts, message_id, transmission_id, campaign_id, rcpt_to,"
                         " body) VALUES (?, 'click', ?, 'm', 't', 'c', 'r', ?)",
                         (event.event_id, float(event.timestamp), msgspec.json.encode(event)))
    store = SqliteEventStore(path)
    await store.open()
    try:
        (total,) = await store.aggregate(EventQuery(), by_campaign=False)
        assert (total.counts["count_clicked"], total.counts["count_human_clicked"]) == (2, 1)
    finally:
        await store.close()


async def test_a_postgres_store_from_before_the_machine_column_gains_it_filled_from_the_bodies(
        postgres_dsn: str) -> None:
    flagged = msgspec.structs.replace(make_event("open", 1), machine_engagement=MachineEngagement(kind="proxy",
                                                                                                   reason="ua"))
    await postgres_admin(
        "DROP TABLE IF EXISTS webhook_batches, webhook_dead_letters, webhooks, events",
        "CREATE TABLE events (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,"
        " type TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, message_id TEXT NOT NULL, transmission_id TEXT NOT NULL,"
        " campaign_id TEXT NOT NULL, rcpt_to TEXT NOT NULL, body BYTEA NOT NULL)",
        dsn=postgres_dsn)
    connection = await asyncpg.connect(postgres_dsn)
    try:
        for event in (flagged, msgspec.structs.replace(make_event("open", 2), machine_engagement=None)):
            await connection.execute(
                "INSERT INTO events (event_id, type, ts, message_id, transmission_id, campaign_id, rcpt_to, body)"
                " VALUES ($1, 'open', $2, 'm', 't', 'c', 'r', $3)",
                event.event_id, float(event.timestamp), msgspec.json.encode(event))
    finally:
        await connection.close()
    store = PostgresEventStore(postgres_dsn)
    await store.open()
    try:
        (total,) = await store.aggregate(EventQuery(), by_campaign=False)
        assert (total.counts["count_rendered"], total.counts["count_human_rendered"]) == (2, 1)
    finally:
        await store.close()
