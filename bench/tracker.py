"""Tracker benchmark: clicks/s and p50/p99 with every event durable, against nginx `return 302`, driven by wrk.

Each answered click was appended and fsync'd to the journal before its 302; the tracker is then stopped,
which loads the rest of its journal, so "events/s into the store" covers the load plus that drain.
Server on CPU 0, wrk on CPU 1 (taskset), 50 connections, a few hundred rotating valid click links.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from bench._harness import PG_ADMIN_DSN, free_port, pg_database, pg_fetchval
from bench._tracker_harness import TrackerProcess, WrkResult, click_paths, run_wrk, start_nginx, write_lua
from engaged.keys import load_keyring

SECONDS = 10
WARMUP = 2
CONNECTIONS = 50
LINKS = 300
GOAL_RATIO = 0.2
GOAL_P99_MS = 10.0


def line(label: str, result: WrkResult) -> str:
    return (f"{label:<22} {result.requests_per_second:>9,.0f} req/s   p50 {result.p50_ms:6.2f} ms   "
            f"p99 {result.p99_ms:6.2f} ms" + (f"   ({result.errors})" if result.errors else ""))




def count_sqlite(path: Path) -> int:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        count: int = connection.execute("SELECT count(*) FROM events").fetchone()[0]
        return count
    finally:
        connection.close()


def bench_tracker(directory: Path, label: str, dsn: str | None) -> WrkResult:
    """One tracker run: warm-up, measured load, stop (drains the journal), then the store's view."""
    keyring = load_keyring(directory)
    tracker = TrackerProcess(directory, dsn)
    try:
        script = write_lua(directory / "clicks.lua", click_paths(keyring, tracker.address, LINKS))
        url = f"http://{tracker.address}"
        run_wrk(url, script, WARMUP, CONNECTIONS)
        began = time.monotonic()
        result = run_wrk(url, script, SECONDS, CONNECTIONS)
    except BaseException:
        tracker.process.kill()
        raise
    metrics = tracker.stop()
    elapsed = time.monotonic() - began
    if dsn:
        stored = int(asyncio.run(pg_fetchval("SELECT count(*) FROM events", dsn)))
    else:
        stored = count_sqlite(directory / "events.sqlite3")
    print(line(f"engaged ({label})", result))
    batches = max(1, metrics["journal_batches"])
    print(f"{'':22} {stored:,} events in {label}, {stored / elapsed:,.0f} events/s over load + drain; "
          f"{metrics['journal_appended'] / batches:.1f} events per journal write+fsync "
          f"({metrics['journal_batches']:,} fsyncs); lost {metrics['journal_failed']}")
    if stored != metrics["journal_appended"] or metrics["journal_failed"]:
        print(f"{'':22} WARNING: {metrics['journal_appended']} journaled but {stored} stored")
    return result


def main() -> int:
    if shutil.which("wrk") is None:
        print("tracker bench skipped: wrk is not installed (make sysdeps installs it)")
        return 0
    print(f"tracker bench: wrk -t1 -c{CONNECTIONS} -d{SECONDS}s, {LINKS} rotating click links, journal fsync on")
    with tempfile.TemporaryDirectory(prefix="engaged-bench-tracker-") as tmp:
        root = Path(tmp)
        baseline: WrkResult | None = None
        port = free_port()
        nginx = start_nginx(root / "nginx", port)
        if nginx is None:
            print("nginx is not installed (Debian nginx-light; make sysdeps): no baseline")
        else:
            try:
                script = write_lua(root / "nginx.lua", [f"/f/a/{n}" for n in range(LINKS)])
                run_wrk(f"http://127.0.0.1:{port}", script, WARMUP, CONNECTIONS)
                baseline = run_wrk(f"http://127.0.0.1:{port}", script, SECONDS, CONNECTIONS)
            finally:
                nginx.terminate()
                nginx.wait(10)
            print(line("nginx return 302", baseline))
        sqlite_dir = root / "sqlite"
        ours = bench_tracker(sqlite_dir, "SQLite", None)
        name = f"engaged_bench_{secrets.token_hex(4)}"
        try:
            asyncio.run(pg_fetchval(f'CREATE DATABASE "{name}"'))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            print(f"PostgreSQL skipped: unreachable at {PG_ADMIN_DSN}: {error}")
        else:
            try:
                bench_tracker(root / "postgres", "PostgreSQL",
                              pg_database(name))
            finally:
                asyncio.run(pg_fetchval(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if baseline is not None:
            ratio = ours.requests_per_second / baseline.requests_per_second
            met = ratio >= GOAL_RATIO and ours.p99_ms < GOAL_P99_MS
            print(f"ratio (SQLite run): {ratio:.2f}x nginx; goal >= {GOAL_RATIO}x with p99 < {GOAL_P99_MS:g} ms: "
                  f"{'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
