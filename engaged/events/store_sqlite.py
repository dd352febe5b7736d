"""SQLite event store in data_dir: WAL, one writer thread, group commits; reads on their own connections."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engaged.errors import StoreError
from engaged.events.model import Event, decode_event
from engaged.events.query import (
    EVENT_COLUMNS,
    TRACK_TYPES,
    WEBHOOK_SCHEMA_SQLITE,
    Row,
    Step,
    StoreQueries,
    row_of,
    where_clause,
)
from engaged.events.reports import ReportQueries
from engaged.types import AppendSignal, EventQuery, StoredEvent

__all__ = ["SqliteEventStore", "row_of", "where_clause"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    ts REAL NOT NULL,
    message_id TEXT NOT NULL,
    transmission_id TEXT NOT NULL,
    campaign_id TEXT NOT NULL,
    rcpt_to TEXT NOT NULL,
    machine TEXT,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_message ON events (message_id);
CREATE INDEX IF NOT EXISTS events_campaign ON events (campaign_id, ts);
CREATE INDEX IF NOT EXISTS events_rcpt ON events (rcpt_to);
CREATE INDEX IF NOT EXISTS events_type ON events (type, ts);
"""

_MAX_BATCH = 1000
_MACHINE_BACKFILL = (
    "UPDATE events SET machine = json_extract(CAST(body AS TEXT), '$.machine_engagement.kind')"
    f" WHERE type IN ({', '.join(repr(name) for name in TRACK_TYPES)})"
)

CommitObserver = Callable[[Sequence[Event], float], None]
"""Called on the event loop after each group commit with its events and its duration in seconds."""


class SqliteEventStore(StoreQueries, ReportQueries):
    """Events in `<data_dir>/events.sqlite3`. `append` returns after the batch holding it commits.

    Appends from many tasks are gathered into one transaction (group commit) on a single writer
    thread; an event whose event_id is already stored is ignored, so replays are idempotent. Webhook
    state is written on the same thread, reads run on their own read-only connections.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL", on_commit: CommitObserver | None = None) -> None:
        self._path = path
        self._synchronous = synchronous
        self._on_commit = on_commit
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sqlite-reader")
        self._write_conn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._pending: list[tuple[Sequence[Event], asyncio.Future[None]]] = []
        self._flushing = False
        self._flush_task: asyncio.Task[None] | None = None
        self._appends = AppendSignal()

    @property
    def appends(self) -> AppendSignal:
        return self._appends

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._open_writer)

    def _open_writer(self) -> None:
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if columns and "machine" not in columns:  # a store written before the machine column existed
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ALTER TABLE events ADD COLUMN machine TEXT")
            conn.execute(_MACHINE_BACKFILL)
            conn.execute("COMMIT")
        conn.executescript(_SCHEMA + WEBHOOK_SCHEMA_SQLITE)
        self._write_conn = conn

    async def append(self, events: Sequence[Event]) -> None:
        if not events:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((events, future))
        if not self._flushing:
            self._flushing = True
            self._flush_task = loop.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch: list[tuple[Sequence[Event], asyncio.Future[None]]] = []
                count = 0
                while self._pending and count < _MAX_BATCH:
                    item = self._pending.pop(0)
                    batch.append(item)
                    count += len(item[0])
                began = time.perf_counter()
                try:
                    rows = [row_of(event) for events, _ in batch for event in events]
                    await loop.run_in_executor(self._writer, self._write, rows)
                except Exception as error:  # every waiter must learn the batch failed
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(StoreError(f"event store write failed: {error}"))
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
                self._appends.notify()
                if self._on_commit is not None:
                    self._on_commit([event for events, _ in batch for event in events], time.perf_counter() - began)
        finally:
            self._flushing = False

    def _write(self, rows: list[Row]) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(f"INSERT OR IGNORE INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR): a second ROLLBACK would fail and
            # hide the reason ("cannot rollback - no transaction is active").
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _connection(self) -> sqlite3.Connection:
        if self._write_conn is None:
            raise StoreError("event store is not open")
        return self._write_conn

    async def query(self, query: EventQuery) -> list[StoredEvent]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self._query, query)

    def _read_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            self._local.conn = conn
        return conn

    def _query(self, query: EventQuery) -> list[StoredEvent]:
        where, params = where_clause(query)
        sql = f"SELECT seq, body FROM events WHERE {where} ORDER BY seq{' DESC' if query.newest_first else ''} LIMIT ?"
        rows = self._read_conn().execute(sql, [*params, query.limit]).fetchall()
        return [StoredEvent(seq, decode_event(body)) for seq, body in rows]

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader, self._read, sql, params)
        except sqlite3.Error as error:
            raise StoreError(f"event store read failed: {error}") from error

    def _read(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        return self._read_conn().execute(sql, params).fetchall()

    async def _transact(self, steps: Sequence[Step]) -> list[int] | None:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._writer, self._run_steps, steps)
        except sqlite3.Error as error:
            raise StoreError(f"event store write failed: {error}") from error

    def _run_steps(self, steps: Sequence[Step]) -> list[int] | None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            counts = []
            for sql, params, required in steps:
                changed = conn.execute(sql, params).rowcount
                if required and changed == 0:
                    conn.execute("ROLLBACK")
                    return None
                counts.append(changed)
            conn.execute("COMMIT")
            return counts
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        while self._flush_task is not None and not self._flush_task.done():
            await self._flush_task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._close_writer)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    def _close_writer(self) -> None:
        if self._write_conn is not None:
            self._write_conn.close()
            self._write_conn = None
