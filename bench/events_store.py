"""Event store write rate: events/s appended (and committed) to SQLite and to PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from bench._harness import PG_ADMIN_DSN, pg_database
from engaged.events.ids import EventIdGenerator
from engaged.events.model import ClickEvent, Event
from engaged.events.store_postgres import PostgresEventStore
from engaged.events.store_sqlite import SqliteEventStore
from engaged.types import EventStore

TOTAL = 20_000
CASES = [(1, 1), (1, 100), (50, 1), (50, 100)]  # (concurrent producers, events per append call)


def make_events(count: int) -> list[Event]:
    ids = EventIdGenerator(node=1)
    now = time.time()
    return [
        ClickEvent(
            event_id=ids.next_id(now), timestamp=f"{now + n / 1000:.3f}", message_id=f"m-{n // 4}",
            transmission_id=f"t-{n // 400}", campaign_id=f"campaign-{n % 7}", customer_id="1",
            rcpt_to=f"user{n % 997}@example.com", raw_rcpt_to=f"user{n % 997}@example.com",
            rcpt_meta={"plan": "gold"}, rcpt_tags=["bench"], ip_address="198.51.100.7",
            user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0",
            target_link_url=f"https://shop.example.com/item/{n % 40}?utm_source=mail", target_link_name="item",
        )
        for n in range(count)
    ]


async def run(store: EventStore, events: list[Event], producers: int, per_append: int) -> float:
    """Events per second for `producers` tasks each appending its share in chunks of `per_append`."""
    share = len(events) // producers

    async def produce(mine: list[Event]) -> None:
        for start in range(0, len(mine), per_append):
            await store.append(mine[start:start + per_append])

    await store.open()
    try:
        began = time.perf_counter()
        await asyncio.gather(*(produce(events[p * share:(p + 1) * share]) for p in range(producers)))
        return producers * share / (time.perf_counter() - began)
    finally:
        await store.close()


async def sqlite_rates(events: list[Event]) -> list[float]:
    rates = []
    with tempfile.TemporaryDirectory(prefix="engaged-bench-") as tmp:
        for n, (producers, per_append) in enumerate(CASES):
            path = Path(tmp) / f"events-{n}.sqlite3"
            rates.append(await run(SqliteEventStore(path), events, producers, per_append))
            with sqlite3.connect(path) as conn:
                stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            if stored != TOTAL:
                raise SystemExit(f"SQLite stored {stored} of {TOTAL} events")
    return rates


async def postgres_rates(events: list[Event]) -> list[float] | str:
    """The rates, or why PostgreSQL was skipped."""
    name = f"engaged_bench_{secrets.token_hex(4)}"
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return f"PostgreSQL skipped: unreachable at {PG_ADMIN_DSN} ({error})"
    dsn = pg_database(name)
    rates = []
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        for producers, per_append in CASES:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("DROP TABLE IF EXISTS events")
                rates.append(await run(PostgresEventStore(dsn), events, producers, per_append))
                stored = await conn.fetchval("SELECT count(*) FROM events")
            finally:
                await conn.close()
            if stored != TOTAL:
                raise SystemExit(f"PostgreSQL stored {stored} of {TOTAL} events")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return rates


def main() -> int:
    events = make_events(TOTAL)
    sqlite = asyncio.run(sqlite_rates(events))
    postgres = asyncio.run(postgres_rates(events))
    show: Callable[[int], str] = (
        (lambda n: "skipped") if isinstance(postgres, str) else (lambda n: f"{postgres[n]:,.0f}")
    )
    print(f"{TOTAL:,} events, each append awaited until committed (SQLite synchronous=FULL,"
          " PostgreSQL synchronous_commit=on)")
    print(f"{'producers':>9} {'events/append':>13} {'SQLite ev/s':>12} {'PostgreSQL ev/s':>16}")
    for n, (producers, per_append) in enumerate(CASES):
        print(f"{producers:>9} {per_append:>13} {sqlite[n]:>12,.0f} {show(n):>16}")
    if isinstance(postgres, str):
        print(postgres)
    return 0


if __name__ == "__main__":
    sys.exit(main())
