"""PostgreSQL-only behaviour of the event store: shared schema creation, commit-ordered seqs, errors."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from engaged.errors import StoreError
from engaged.events.model import OpenEvent
from engaged.events.store_postgres import PostgresEventStore, insert_batch
from engaged.events.store_sqlite import row_of
from engaged.types import EventQuery
from tests.conftest import postgres_admin

DEADLINE = 10.0


@pytest.fixture(scope="module")
def database(postgres_dsn: str) -> str:
    """The session's throwaway database."""
    return postgres_dsn


@pytest.fixture
def dsn(database: str) -> str:
    """The module's database with no events table yet."""
    asyncio.run(postgres_admin("DROP TABLE IF EXISTS events", dsn=database))
    return database


def open_event(n: int) -> OpenEvent:
    return OpenEvent(
        event_id=str(8_000_000_000_000_000 + n), timestamp=f"{1_700_000_000 + n}.000", message_id="m",
        transmission_id="t", campaign_id="c", customer_id="1", rcpt_to="ann@example.com",
        raw_rcpt_to="ann@example.com", rcpt_meta={}, rcpt_tags=[],
    )


async def wait_until(probe: str, dsn: str) -> None:
    """Poll `probe` (a SQL boolean) until it is true or DEADLINE passes."""
    connection = await asyncpg.connect(dsn)
    try:
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while not await connection.fetchval(probe):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(probe)
            await asyncio.sleep(0.01)
    finally:
        await connection.close()


async def test_eight_stores_creating_the_schema_at_once_all_open(dsn: str) -> None:
    stores = [PostgresEventStore(dsn) for _ in range(8)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        await stores[0].append([open_event(1)])
        for store in stores:
            assert [item.event for item in await store.query(EventQuery())] == [open_event(1)]
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_an_append_commits_only_after_an_earlier_open_append_transaction_ends(dsn: str) -> None:
    """Seqs are drawn under the append lock, so a follower can never see seq n+1 before seq n."""
    store = PostgresEventStore(dsn)
    await store.open()
    earlier = await asyncpg.connect(dsn)
    try:
        await insert_batch(earlier, [row_of(open_event(1))])  # seq drawn, not yet committed
        later = asyncio.create_task(store.append([open_event(2)]))
        await wait_until("SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'advisory' "
                         "AND datname = current_database()", dsn)
        assert not later.done()
        assert await store.query(EventQuery()) == []
        await earlier.execute("COMMIT")
        await asyncio.wait_for(later, DEADLINE)
        stored = await store.query(EventQuery())
        assert [item.event for item in stored] == [open_event(1), open_event(2)]
        assert stored[0].seq < stored[1].seq
    finally:
        await earlier.close()
        await store.close()


async def test_a_replayed_batch_that_overlaps_stored_events_adds_only_the_new_ones(dsn: str) -> None:
    store = PostgresEventStore(dsn)
    await store.open()
    try:
        await store.append([open_event(1), open_event(2)])
        await store.append([open_event(2), open_event(3), open_event(1)])
        stored = await store.query(EventQuery())
        assert [item.event for item in stored] == [open_event(1), open_event(2), open_event(3)]
    finally:
        await store.close()


async def test_an_event_with_nul_in_a_text_column_is_stored_with_its_batch_mates_and_read_back_exactly(
        dsn: str) -> None:
    # TEXT cannot hold NUL (SQLite can): its columns get U+FFFD, the body keeps the event exactly. Refusing
    # it instead left the message it belonged to retried for ever (issue 15 item 2).
    store = PostgresEventStore(dsn)
    await store.open()
    try:
        poisoned = open_event(2)
        poisoned.rcpt_to = "ann\x00@example.com"
        poisoned.campaign_id = "a\x00b"
        results = await asyncio.gather(
            store.append([open_event(1)]), store.append([poisoned]), store.append([open_event(3)]),
            return_exceptions=True,
        )
        assert list(results) == [None, None, None]
        assert [item.event for item in await store.query(EventQuery())] == [open_event(1), poisoned, open_event(3)]
        assert [item.event for item in await store.query(EventQuery(campaigns=("a\ufffdb",)))] == [poisoned]
    finally:
        await store.close()


async def test_a_session_with_synchronous_commit_off_still_commits_appends_synchronously(dsn: str) -> None:
    store = PostgresEventStore(dsn)
    await store.open()  # creates the table
    await store.close()
    connection = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
    try:
        await insert_batch(connection, [row_of(open_event(1))], force_sync=True)
        assert await connection.fetchval("SHOW synchronous_commit") == "on"
        await connection.execute("COMMIT")
        assert await connection.fetchval("SHOW synchronous_commit") == "off"
    finally:
        await connection.close()


async def test_opening_a_store_whose_server_is_unreachable_raises_store_error() -> None:
    store = PostgresEventStore("postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(StoreError, match="cannot connect"):
        await store.open()


async def test_appending_before_open_raises_store_error() -> None:
    store = PostgresEventStore("postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(StoreError, match="not open"):
        await store.append([open_event(1)])
    with pytest.raises(StoreError, match="not open"):
        await store.query(EventQuery())


async def test_a_read_on_a_connection_whose_backend_died_mid_reply_raises_store_error(dsn: str) -> None:
    """asyncpg reports such a connection with InternalClientError ("cannot switch to state 11; another operation
    (2) is in progress"), not InterfaceError. Reads must say the store is unavailable, as for any lost connection:
    the inbound processor retries on StoreError and parked a bounce until the next start on anything else."""

    class DiedMidReply:
        async def fetch(self, *args: object, **kwargs: object) -> None:
            raise asyncpg.exceptions.InternalClientError("cannot switch to state 11; another operation (2) is in "
                                                         "progress")

    store = PostgresEventStore(dsn)
    await store.open()
    pool = store._pool
    try:
        store._pool = DiedMidReply()
        with pytest.raises(StoreError, match="read failed"):
            await store.query(EventQuery())
        with pytest.raises(StoreError, match="read failed"):
            await store._fetch("SELECT 1", [])  # what the metrics, report and webhook reads go through
    finally:
        store._pool = pool
        await store.close()
