"""SQLite event store in data_dir: WAL, one writer thread, group commits; reads on their own connections."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from engaged.errors import StoreError
from engaged.events.model import Event, decode_event, encode_event, event_type
from engaged.types import EventQuery, StoredEvent

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
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_message ON events (message_id);
CREATE INDEX IF NOT EXISTS events_campaign ON events (campaign_id, ts);
CREATE INDEX IF NOT EXISTS events_rcpt ON events (rcpt_to);
CREATE INDEX IF NOT EXISTS events_type ON events (type, ts);
"""

_MAX_BATCH = 1000


def row_of(event: Event) -> tuple[str, str, float, str, str, str, str, bytes]:
    """The indexed columns and the JSON body of one event, as both stores write them."""
    return (
        event.event_id,
        event_type(event),
        float(event.timestamp),
        event.message_id,
        event.transmission_id,
        event.campaign_id,
        event.rcpt_to,
        encode_event(event),
    )


def where_clause(query: EventQuery, placeholder: str = "?") -> tuple[str, list[object]]:
    """SQL WHERE text and parameters for a query (shared by the SQLite and PostgreSQL stores)."""
    clauses = ["seq > " + placeholder]
    params: list[object] = [query.after_seq]
    for column, values in (("type", query.types), ("message_id", query.message_ids),
                           ("campaign_id", query.campaigns), ("rcpt_to", query.recipients),
                           ("transmission_id", query.transmissions)):
        if values:
            clauses.append(f"{column} IN ({', '.join(placeholder for _ in values)})")
            params.extend(values)
    if query.since is not None:
        clauses.append("ts >= " + placeholder)
        params.append(query.since)
    if query.until is not None:
        clauses.append("ts < " + placeholder)
        params.append(query.until)
    return " AND ".join(clauses), params


class SqliteEventStore:
    """Events in `<data_dir>/events.sqlite3`. `append` returns after the batch holding it commits.

    Appends from many tasks are gathered into one transaction (group commit) on a single writer
    thread; an event whose event_id is already stored is ignored, so replays are idempotent.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self._path = path
        self._synchronous = synchronous
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sqlite-reader")
        self._write_conn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._pending: list[tuple[Sequence[Event], asyncio.Future[None]]] = []
        self._flushing = False
        self._flush_task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._open_writer)

    def _open_writer(self) -> None:
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.executescript(_SCHEMA)
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
        finally:
            self._flushing = False

    def _write(self, rows: list[tuple[str, str, float, str, str, str, str, bytes]]) -> None:
        conn = self._write_conn
        if conn is None:
            raise StoreError("event store is not open")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO events (event_id, type, ts, message_id, transmission_id,"
                " campaign_id, rcpt_to, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

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
        sql = f"SELECT seq, body FROM events WHERE {where} ORDER BY seq LIMIT ?"
        rows = self._read_conn().execute(sql, [*params, query.limit]).fetchall()
        return [StoredEvent(seq, decode_event(body)) for seq, body in rows]

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
