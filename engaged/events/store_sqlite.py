"""SQLite event store in data_dir: WAL, one writer thread, group commits; reads on their own connections."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

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
from engaged.groupcommit import GroupCommit
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
WRITER_CACHE_KIB = 16 * 1024
"""The writer connection's page cache. SQLite's default (2 MiB) is too small for the pages one batch of a
few thousand rows touches in the message_id and rcpt_to indexes (inserted at scattered places): 16 MiB
cut a 5,000-row batch insert from 39-45 to 21 us a row, CPU from 21-23 to 16 us (150k rows, bench under flock)."""
WORKER_CACHE_KIB = 2 * 1024
"""The page cache of a worker's writer (SQLite's default). A worker appends a few rows a message, not the
loader's batches of thousands, and a worker's memory is bounded: with 16 MiB its RSS grew from 84 to 105 MB
as the store grew past the cache (about 7,000 messages), which passes issue 12's 100 MB for an idle worker."""
PAGE_SIZE = 16 * 1024
"""The page size of a new store (SQLite's default: 4 KiB; an existing store keeps the size it was made
with). Events are about 1 KiB of body each and four of the indexes take their keys in no order, so a
batch dirties pages all over them, and each dirty page is balanced, checksummed and written to the
WAL: with 16 KiB pages a batch costs half as much. 4,000-row transactions of clicks with real
traffic's cardinalities, CPU a row: 20.3 us with 4 KiB, 20.8 with 2 KiB, 11.8 with 8 KiB, 9.0-10.4
with 16 KiB, 9.6 with 32 KiB (empty store); 28.6 against 36.9 us into a store of a million events."""
WAL_CHECKPOINT_BYTES = 16 * 1024 * 1024
"""What the WAL may hold before a commit checkpoints it (SQLite's default: 1,000 pages). The journal
loader commits batches of about 4 MiB, so 1,000 pages of 4 KiB checkpointed, with its syncs of the
database file, after every batch; those syncs share the disk's flushes with the tracker journal's
fdatasync before every answer. 16 MiB (4,000 pages of 4 KiB): 34.1-34.7k clicks/s against
31.4-32.5k (bench/tracker.py's one-worker -c50 case, SQLite, three alternating rounds); 32 and 64 MiB
gave no more."""
WRITE_LOCK_SUFFIX = ".write-lock"
"""Beside the database: the file whose flock engaged's writers of the store queue on (`_transaction`)."""
_MACHINE_BACKFILL = (
    "UPDATE events SET machine = json_extract(CAST(body AS TEXT), '$.machine_engagement.kind')"
    f" WHERE type IN ({', '.join(repr(name) for name in TRACK_TYPES)})"
)

CommitObserver = Callable[[Sequence[Event], float], None]
"""Called on the event loop after each group commit with its events and its duration in seconds."""

_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError)
"""Refusals of a row (a constraint, a value out of range): GroupCommit isolates the append that holds it."""


class _Append(NamedTuple):
    """One `append` call: its rows, committed together or not at all, and its events."""

    rows: list[Row]
    events: Sequence[Event]


class SqliteEventStore(StoreQueries, ReportQueries):
    """Events in `<data_dir>/events.sqlite3`. `append` returns after the batch holding it commits.

    Appends from many tasks are gathered into one transaction (engaged.groupcommit) on a single writer
    thread; an append whose row the database refuses fails alone, its batch mates are stored. An event
    whose event_id is already stored is ignored, so replays are idempotent. Webhook
    state is written on the same thread, reads run on their own read-only connections.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL", on_commit: CommitObserver | None = None,
                 cache_kib: int = WRITER_CACHE_KIB) -> None:
        self._path = path
        self._cache_kib = cache_kib
        self._synchronous = synchronous
        self._on_commit = on_commit
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sqlite-reader")
        self._write_conn: sqlite3.Connection | None = None
        self._lock_fd = -1
        self._local = threading.local()
        self._group: GroupCommit[_Append] = GroupCommit(
            self._commit, weight=lambda append: len(append.rows), max_weight=_MAX_BATCH,
            is_item_error=lambda error: isinstance(error, _ROW_ERRORS), committed=self._committed)
        self._appends = AppendSignal()

    @property
    def appends(self) -> AppendSignal:
        return self._appends

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._open_writer)

    def _open_writer(self) -> None:
        self._lock_fd = os.open(self._path.with_name(self._path.name + WRITE_LOCK_SUFFIX),
                                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._write_conn = self._connect_writer()
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise

    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only while the file is still empty
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA wal_autocheckpoint={max(1, WAL_CHECKPOINT_BYTES // page_size)}")
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if columns and "machine" not in columns:  # a store written before the machine column existed
            with self._transaction(conn):
                conn.execute("ALTER TABLE events ADD COLUMN machine TEXT")
                conn.execute(_MACHINE_BACKFILL)
        conn.executescript(_SCHEMA + WEBHOOK_SCHEMA_SQLITE)
        return conn

    async def append(self, events: Sequence[Event]) -> None:
        if not events:
            return
        if self._write_conn is None:
            raise StoreError("event store is not open")
        try:
            rows = [row_of(event) for event in events]
        except ValueError as error:  # a timestamp that is not epoch seconds, text that is not Unicode
            raise StoreError(f"event cannot be stored: {error}") from error
        await self._submit(_Append(rows, events))

    async def append_rows(self, rows: Sequence[Row]) -> None:
        """Append events already in row form (their JSON body as it was written); as `append` otherwise."""
        if not rows:
            return
        if self._write_conn is None:
            raise StoreError("event store is not open")
        await self._submit(_Append(list(rows), ()))

    async def _submit(self, append: _Append) -> None:
        try:
            await self._group.submit(append)
        except Exception as error:
            raise StoreError(f"event store write failed: {error}") from error

    async def _commit(self, appends: list[_Append]) -> None:
        rows = [row for append in appends for row in append.rows]
        await asyncio.get_running_loop().run_in_executor(self._writer, self._write, rows)

    def _committed(self, appends: list[_Append], seconds: float) -> None:
        self._appends.notify()
        if self._on_commit is not None:
            self._on_commit([event for append in appends for event in append.events], seconds)

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        """A write transaction in the store's write turn: committed when the block ends (unless the block rolled
        it back itself), rolled back when it raises.

        The turn is an flock that every engaged process writing this store takes around its write transaction
        (on the writer thread; it waits in the kernel and wakes when the turn is free). SQLite's own lock stays,
        and decides: the flock only queues engaged's writers, which otherwise met at BEGIN IMMEDIATE and waited
        in SQLite's busy handler, sleeping 1, 2, 5, 10 ... ms between tries however soon the lock was free."""
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                if conn.in_transaction:
                    conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR): a second ROLLBACK would fail and
                # hide the reason ("cannot rollback - no transaction is active").
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _write(self, rows: list[Row]) -> None:
        conn = self._connection()
        with self._transaction(conn):
            conn.executemany(f"INSERT OR IGNORE INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

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
            conn = sqlite3.connect(self._path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
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
        counts = []
        with self._transaction(conn):
            for sql, params, required in steps:
                changed = conn.execute(sql, params).rowcount
                if required and changed == 0:
                    conn.execute("ROLLBACK")
                    return None
                counts.append(changed)
        return counts

    async def close(self) -> None:
        await self._group.settled()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._close_writer)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    def _close_writer(self) -> None:
        if self._write_conn is not None:
            self._write_conn.close()
            self._write_conn = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
