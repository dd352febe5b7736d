"""Journal loader rate: clicks/s from a backlog of journals into a store that already holds events.

The tracker's workers only journal; the journal loader (one process per node) must store what they
journal as fast as they journal it (issue 13), and that gets harder as the store grows: the indexes
on recipient and message id take their keys in no order, so once they pass the writer's page cache
every insert dirties a page of each. Each case loads BACKLOG journaled clicks (16 MiB segments, as a
worker writes them) with the real JournalLoader into a store that already holds 0 or more events, with
the cardinalities of real traffic (recipients from a pool of a million, message ids spread over the
day before, 20 campaigns), and checks the count afterwards (0 lost, none twice).

The baseline, measured in the same run, is the click rate issue 13 asks of one tracker worker:
0.3 x nginx `return 302` (one worker, CPU 0; wrk -t1 -c50 on CPU 1). The loader, with its share of
the machine, has to sustain at least that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import msgspec

from bench._harness import PG_ADMIN_DSN, count_sqlite, free_port, pg_database
from bench._tracker_harness import run_wrk, start_nginx, write_lua
from engaged.events.ids import EventIdGenerator
from engaged.events.model import encode_event
from engaged.events.query import EVENT_COLUMNS
from engaged.events.samples import sample
from engaged.events.store_postgres import PostgresEventStore
from engaged.events.store_sqlite import SqliteEventStore
from engaged.tracker.journal import SEGMENT_BYTES, segment_path, worker_directory
from engaged.tracker.loader import JournalLoader, row_of_line

BACKLOG = 150_000
SIZES = (0, 1_000_000)
RECIPIENTS = 1_000_000
CAMPAIGNS = 20
GOAL_RATIO = 0.3


class Clicks:
    """Journal lines of distinct clicks with real traffic's spread of recipients and messages."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._ids = EventIdGenerator(node=seed % 1024)
        marked = msgspec.structs.replace(sample("click"), event_id="@E@", timestamp="@T@", message_id="@M@",
                                         rcpt_to="@R@", raw_rcpt_to="@R@", campaign_id="@C@")
        self._template = encode_event(marked)

    def line(self, now: float) -> bytes:
        pick = self._random
        sent = now - pick.random() * 86_400
        recipient = b"user%d@example%d.com" % (pick.randrange(RECIPIENTS), pick.randrange(50))
        return (self._template.replace(b"@E@", self._ids.next_id(now).encode())
                .replace(b"@T@", b"%.3f" % now)
                .replace(b"@M@", b"%012x%08x" % (int(sent * 1000), pick.getrandbits(32)))
                .replace(b"@R@", recipient)
                .replace(b"@C@", b"campaign-%d" % pick.randrange(CAMPAIGNS))) + b"\n"


def write_backlog(data: Path, clicks: Clicks, count: int) -> None:
    """`count` lines in closed 16 MiB segments of worker 0, as a worker leaves them for the loader."""
    directory = worker_directory(data, 0)
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time() - count / 30_000
    pieces: list[bytes] = []
    number, written = 1, 0
    for n in range(count):
        line = clicks.line(now + n / 30_000)
        if written + len(line) > SEGMENT_BYTES:
            segment_path(directory, number).write_bytes(b"".join(pieces))
            pieces, number, written = [], number + 1, 0
        pieces.append(line)
        written += len(line)
    segment_path(directory, number).write_bytes(b"".join(pieces))


def prefill_sqlite(path: Path, clicks: Clicks, count: int) -> None:
    """The store's schema holding `count` older clicks (written in bulk, indexes built after)."""
    asyncio.run(_open_close(SqliteEventStore(path)))
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        indexes = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            connection.execute(f"DROP INDEX {name}")
        connection.execute("PRAGMA synchronous=OFF")
        now = time.time() - 2 * 86_400
        placeholders = ", ".join("?" for _ in EVENT_COLUMNS.split(","))
        for start in range(0, count, 50_000):
            rows = [row_of_line(clicks.line(now + n / 10)[:-1]) for n in range(start, min(count, start + 50_000))]
            connection.execute("BEGIN")
            connection.executemany(f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({placeholders})", rows)
            connection.execute("COMMIT")
        for _, statement in indexes:
            connection.execute(statement)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


async def _open_close(store: SqliteEventStore | PostgresEventStore) -> None:
    await store.open()
    await store.close()


async def prefill_postgres(dsn: str, clicks: Clicks, count: int) -> None:
    await _open_close(PostgresEventStore(dsn))
    connection = await asyncpg.connect(dsn)
    try:
        now = time.time() - 2 * 86_400
        columns = [name.strip() for name in EVENT_COLUMNS.split(",")]
        for start in range(0, count, 50_000):
            rows = [row_of_line(clicks.line(now + n / 10)[:-1]) for n in range(start, min(count, start + 50_000))]
            await connection.copy_records_to_table("events", records=rows, columns=columns)
        await connection.execute("VACUUM ANALYZE events")
    finally:
        await connection.close()


async def load(data: Path, store: SqliteEventStore | PostgresEventStore) -> tuple[int, float, float]:
    """(events stored, wall seconds, CPU seconds of this process) for loading everything journaled."""
    await store.open()
    try:
        loader = JournalLoader(data, store)
        began, used = time.perf_counter(), _cpu()
        stored = await loader.load_available()
        return stored, time.perf_counter() - began, _cpu() - used
    finally:
        await store.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def nginx_rate(root: Path) -> float | None:
    port = free_port()
    nginx = start_nginx(root / "nginx", port)
    if nginx is None:
        return None
    try:
        script = write_lua(root / "nginx.lua", [f"/f/a/{n}" for n in range(300)])
        run_wrk(f"http://127.0.0.1:{port}", script, 2)
        return run_wrk(f"http://127.0.0.1:{port}", script, 5).requests_per_second
    finally:
        nginx.terminate()
        nginx.wait(10)


def report(label: str, size: int, stored: int, seconds: float, cpu: float, goal: float | None) -> None:
    rate = stored / seconds
    versus = f"   {rate / goal:5.2f} x the goal's click rate" if goal else ""
    print(f"{label:<10} {size:>10,} {rate:>12,.0f} {cpu / stored * 1e6:>10.1f}{versus}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default=",".join(str(size) for size in SIZES),
                        help="events already in the store, comma-separated")
    parser.add_argument("--backlog", type=int, default=BACKLOG, help="journaled clicks to load per case")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the loader's place in bench/tracker.py: CPU 1, beside wrk
    with tempfile.TemporaryDirectory(prefix="engaged-bench-loader-", dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        nginx = nginx_rate(root)
        goal = GOAL_RATIO * nginx if nginx else None
        print(f"journal loader: {args.backlog:,} journaled clicks loaded into a store already holding N events "
              "(the loader on CPU 1)")
        if goal:
            print(f"baseline: nginx return 302, one worker, wrk -c50: {nginx:,.0f} req/s; issue 13's goal for one "
                  f"tracker worker, {GOAL_RATIO} x that: {goal:,.0f} clicks/s")
        else:
            print("nginx is not installed (Debian nginx-light; make sysdeps): no baseline")
        print(f"{'store':<10} {'N':>10} {'events/s':>12} {'CPU us/ev':>10}")
        for case, size in enumerate(sizes):
            data = root / f"sqlite-{case}"
            clicks = Clicks(seed=case)
            prefill_sqlite(data / "events.sqlite3", clicks, size)
            write_backlog(data, clicks, args.backlog)
            stored, seconds, cpu = asyncio.run(load(data, SqliteEventStore(data / "events.sqlite3")))
            total = count_sqlite(data / "events.sqlite3")
            if stored != args.backlog or total != size + args.backlog:
                raise SystemExit(f"SQLite: loaded {stored} of {args.backlog}, {total} stored of {size + args.backlog}")
            report("SQLite", size, stored, seconds, cpu, goal)
            shutil.rmtree(data)
        if not args.no_postgres:
            asyncio.run(_postgres_cases(root, sizes, args.backlog, goal))
    return 0


async def _postgres_cases(root: Path, sizes: list[int], backlog: int, goal: float | None) -> None:
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        print(f"PostgreSQL skipped: unreachable at {PG_ADMIN_DSN} ({error})")
        return
    try:
        for case, size in enumerate(sizes):
            name = f"engaged_bench_{secrets.token_hex(4)}"
            await admin.execute(f'CREATE DATABASE "{name}"')
            try:
                dsn = pg_database(name)
                data = root / f"postgres-{case}"
                clicks = Clicks(seed=100 + case)
                await prefill_postgres(dsn, clicks, size)
                await asyncio.to_thread(write_backlog, data, clicks, backlog)
                stored, seconds, cpu = await load(data, PostgresEventStore(dsn))
                check = await asyncpg.connect(dsn)
                try:
                    total = int(await check.fetchval("SELECT count(*) FROM events"))
                finally:
                    await check.close()
                if stored != backlog or total != size + backlog:
                    raise SystemExit(f"PostgreSQL: loaded {stored} of {backlog}, {total} stored of {size + backlog}")
                report("PostgreSQL", size, stored, seconds, cpu, goal)
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    print("PostgreSQL: CPU us/ev is the loader's own; the server's work runs in its processes")


if __name__ == "__main__":
    sys.exit(main())
