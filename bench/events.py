"""Event data out: webhook events/s and append-to-delivery delay; events API latency on 1M stored events."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import httpx
import msgspec

from bench._harness import PG_ADMIN_DSN, pg_database
from engaged.app import ApiApp
from engaged.config import ApiConfig, Config
from engaged.events.model import ClickEvent, DeliveryEvent, Event
from engaged.events.query import EVENT_COLUMNS, Row, row_of
from engaged.events.store_postgres import PostgresEventStore
from engaged.events.store_sqlite import SqliteEventStore
from engaged.prometheus import Metrics
from engaged.types import EventStore, WebhookRecord
from tests.sinks.receiver import Receiver

ROWS = int(os.environ.get("ENGAGED_BENCH_ROWS", "1000000"))
DRAIN = 50_000
T0 = 1_700_000_000.0
TYPES = ["injection"] * 25 + ["delivery"] * 24 + ["delay"] * 3 + ["bounce"] * 2 + ["open"] * 20 + \
    ["initial_open"] * 14 + ["click"] * 11 + ["policy_rejection"]
_BASE = {"transmission_id": "t", "campaign_id": "c", "customer_id": "1", "rcpt_to": "r@example.com",
         "raw_rcpt_to": "r@example.com", "rcpt_meta": {"plan": "gold"}, "rcpt_tags": ["bench"]}
_MESSAGE = {"friendly_from": "Shop <shop@example.net>", "msg_from": "b@example.net", "msg_size": "20480",
            "subject": "Spring sale", "ip_pool": "default", "routing_domain": "example.com",
            "recipient_domain": "example.com", "injection_time": "2023-11-14T22:13:20.000+00:00",
            "transactional": "0", "open_tracking": True, "click_tracking": True, "initial_pixel": True,
            "recv_method": "esmtp"}


def event(n: int, kind: str | None = None) -> Event:
    """Event n: ~4 per message, 100 campaigns, 100k recipients, one every 2.6 s over about a month."""
    kind = kind or TYPES[n % len(TYPES)]
    common = {**_BASE, "event_id": str(9_000_000_000_000_000 + n), "timestamp": f"{T0 + n * 2.6:.3f}",
              "message_id": f"{n // 4:020x}", "transmission_id": str(n // 4000), "campaign_id": f"c-{n // 4 % 100}",
              "rcpt_to": f"user{n // 4 % 100_000}@example.com", "raw_rcpt_to": f"user{n // 4 % 100_000}@example.com"}
    if kind in ("open", "initial_open", "click"):
        extra = {"ip_address": "198.51.100.7", "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120"}
        if kind == "click":
            return ClickEvent(**common, **extra, target_link_url="https://shop.example.com/item?utm_source=mail",
                              target_link_name="item")
        return msgspec.convert({**common, **extra, "type": kind}, Event)
    if kind == "delivery":
        return DeliveryEvent(**common, **_MESSAGE, delv_method="esmtp", ip_address="192.0.2.25", num_retries="0",
                             queue_time="120", outbound_tls="1")
    fields = {**common, **_MESSAGE, "type": kind, "delv_method": "esmtp", "ip_address": "192.0.2.25",
              "num_retries": "1", "queue_time": "900", "outbound_tls": "1", "bounce_class": "10", "error_code": "550",
              "reason": "550 5.1.1 unknown user", "raw_reason": "550 5.1.1 unknown user"}
    if kind == "injection":
        fields = {**common, **_MESSAGE, "type": kind}
    return msgspec.convert(fields, Event)


def rows(count: int, chunk: int = 20_000) -> Iterator[list[Row]]:
    for start in range(0, count, chunk):
        yield [row_of(event(n)) for n in range(start, min(start + chunk, count))]


async def fill_sqlite(path: Path) -> float:
    store = SqliteEventStore(path)
    await store.open()  # the schema
    await store.close()
    began = time.perf_counter()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        for batch in rows(ROWS):
            conn.executemany(f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
    return time.perf_counter() - began


async def fill_postgres(dsn: str) -> float:
    store = PostgresEventStore(dsn)
    await store.open()
    await store.close()
    began = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        for batch in rows(ROWS):
            await conn.copy_records_to_table("events", records=batch, columns=EVENT_COLUMNS.split(", "))
        await conn.execute("ANALYZE events")
    finally:
        await conn.close()
    return time.perf_counter() - began


@asynccontextmanager
async def serving(store: EventStore, tmp: Path) -> AsyncIterator[ApiApp]:
    config = Config(data_dir=str(tmp), api=ApiConfig(listen="127.0.0.1:0"))
    service = ApiApp(config, store, metrics=Metrics(), owner=f"bench-{secrets.token_hex(4)}")
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def queries(rng: random.Random) -> dict[str, Callable[[], dict[str, str]]]:
    def n() -> int:
        return rng.randrange(ROWS)

    return {
        "first page (1000)": lambda: {},
        "cursor deep in the store": lambda: {"cursor": _cursor(n())},
        "one campaign": lambda: {"campaigns": f"c-{rng.randrange(100)}", "per_page": "100"},
        "bounces of one campaign": lambda: {"events": "bounce", "campaigns": f"c-{rng.randrange(100)}"},
        "one recipient": lambda: {"recipients": f"user{rng.randrange(100_000)}@example.com"},
        "one message": lambda: {"message_ids": f"{n() // 4:020x}"},
        "clicks in one day": lambda: (lambda s: {"events": "click", "from": str(s), "to": str(s + 86400),
                                                 "per_page": "100"})(T0 + n() * 2.6),
    }


def _cursor(seq: int) -> str:
    from engaged.api.params import encode_cursor

    return encode_cursor(seq)


async def api_latency(store: EventStore, tmp: Path, per_kind: int = 60) -> list[tuple[str, float, float]]:
    rng = random.Random(7)
    out: list[tuple[str, float, float]] = []
    async with serving(store, tmp) as service, httpx.AsyncClient(base_url=f"http://{service.address}",
                                                                 timeout=60) as client:
        for name, params in queries(rng).items():
            timings = []
            for _ in range(per_kind):
                began = time.perf_counter()
                response = await client.get("/api/v1/events/message", params=params())
                response.raise_for_status()
                timings.append(time.perf_counter() - began)
            out.append((name, statistics.median(timings), _p99(timings)))
    return out


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def webhook_drain(make: Callable[[], EventStore], tmp: Path) -> float:
    """Events/s from a store holding DRAIN events to a receiver (batches of 1000)."""
    store = make()
    await store.open()
    receiver = await Receiver().start()
    try:
        await store.put_webhook(WebhookRecord(id="drain", name="drain", target=receiver.url,
                                              allow_private_targets=True), "whsec_" + "A" * 44)
        for start in range(0, DRAIN, 1000):
            await store.append([event(n, "click") for n in range(start, start + 1000)])
        counted = [0, 0]  # requests seen, events in them

        async def drained() -> bool:
            fresh = receiver.requests[counted[0]:]
            counted[0] += len(fresh)
            counted[1] += sum(request.body.count(b'{"msys":') for request in fresh if request.status == 200)
            return counted[1] >= DRAIN

        began = time.perf_counter()
        async with serving(store, tmp):
            await _until(drained)
            elapsed = time.perf_counter() - began
        return DRAIN / elapsed
    finally:
        await receiver.stop()
        await store.close()


async def webhook_delay(make: Callable[[], EventStore], tmp: Path, rate: float, count: int) -> tuple[float, float]:
    """p50 and p99 seconds from append (committed) to arrival, at `rate` single-event appends per second."""
    store = make()
    await store.open()
    receiver = await Receiver().start()
    appended: dict[str, float] = {}
    try:
        await store.put_webhook(WebhookRecord(id="delay", name="delay", target=receiver.url,
                                              allow_private_targets=True), "whsec_" + "A" * 44)
        async with serving(store, tmp):
            base = DRAIN + int(rate * 1000)
            await store.append([event(base - 1, "click")])  # warm-up: the worker holds its lease and is idle
            await _until(lambda: _async(len(_arrivals(receiver)) == 1))
            receiver.requests.clear()
            began = time.perf_counter()
            for k in range(count):
                await asyncio.sleep(max(0.0, began + k / rate - time.perf_counter()))
                one = event(base + k, "click")
                await store.append([one])
                appended[one.event_id] = time.time()
            await _until(lambda: _async(len(_arrivals(receiver)) >= count))
    finally:
        await receiver.stop()
        await store.close()
    delays = [at - appended[event_id] for event_id, at in _arrivals(receiver).items()]
    return statistics.median(delays), _p99(delays)


def _arrivals(receiver: Receiver) -> dict[str, float]:
    out: dict[str, float] = {}
    for request in receiver.accepted():
        for item in msgspec.json.decode(request.body):
            (body,) = item["msys"].values()
            out.setdefault(body["event_id"], request.at)
    return out


async def _async(value: bool) -> bool:
    return value


async def _until(probe: Callable[[], Awaitable[bool]], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met")
        await asyncio.sleep(0.005)


async def postgres_database() -> tuple[str, Callable[[], Awaitable[None]]] | str:
    """A fresh database and its dropper, or why PostgreSQL is skipped."""
    name = f"engaged_bench_{secrets.token_hex(4)}"
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return f"PostgreSQL skipped: unreachable at {PG_ADMIN_DSN} ({error})"
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()

    async def drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    return pg_database(name), drop


async def run_backend(label: str, make_big: Callable[[], EventStore], fill: Callable[[], Awaitable[float]],
                      make_small: Callable[[int], EventStore], tmp: Path) -> None:
    drained = await webhook_drain(lambda: make_small(0), tmp)
    sparse = await webhook_delay(lambda: make_small(1), tmp, rate=5, count=30)
    steady = await webhook_delay(lambda: make_small(2), tmp, rate=300, count=900)
    print(f"{label}: webhook drain {drained:,.0f} events/s (batches of 1000, one receiver on loopback)")
    print(f"{label}: append -> webhook delay, batch_age 1 s: sparse (5 ev/s) p50 {sparse[0] * 1000:.0f} ms,"
          f" p99 {sparse[1] * 1000:.0f} ms; steady (300 ev/s) p50 {steady[0] * 1000:.0f} ms,"
          f" p99 {steady[1] * 1000:.0f} ms")
    seconds = await fill()
    print(f"{label}: {ROWS:,} events loaded in {seconds:.1f} s")
    store = make_big()
    await store.open()
    try:
        for name, p50, p99 in await api_latency(store, tmp):
            print(f"{label}: GET /api/v1/events/message {name:<26} p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms")
    finally:
        await store.close()


async def main() -> int:
    with tempfile.TemporaryDirectory(prefix="engaged-bench-") as name:
        tmp = Path(name)
        big = tmp / "big.sqlite3"
        await run_backend("SQLite", lambda: SqliteEventStore(big), lambda: fill_sqlite(big),
                          lambda k: SqliteEventStore(tmp / f"small-{k}.sqlite3"), tmp)
        databases: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        try:
            for _ in range(4):
                made = await postgres_database()
                if isinstance(made, str):
                    print(made)
                    return 0
                databases.append(made)
            dsns = [dsn for dsn, _ in databases]
            await run_backend("PostgreSQL", lambda: PostgresEventStore(dsns[3]), lambda: fill_postgres(dsns[3]),
                              lambda k: PostgresEventStore(dsns[k]), tmp)
        finally:
            for _, drop in databases:
                await drop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
