"""PostgreSQL event store (asyncpg): group commits, idempotent inserts, seq order equal to commit order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import asyncpg
import msgspec

from engaged.errors import StoreError
from engaged.events.dialect import POSTGRES
from engaged.events.model import Event, decode_event
from engaged.events.query import (
    EVENT_COLUMNS,
    TRACK_TYPES,
    WEBHOOK_SCHEMA_POSTGRES,
    Row,
    Step,
    StoreQueries,
    row_of,
    where_clause,
)
from engaged.events.reports import ReportQueries
from engaged.events.store_sqlite import CommitObserver
from engaged.groupcommit import GroupCommit
from engaged.types import AppendSignal, EventQuery, StoredEvent

# body is BYTEA: the exact bytes encode_event produced (SparkPost key order, `type` first), decoded by
# msgspec without PostgreSQL parsing or re-serialising them; every filtered field has its own column.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    message_id TEXT NOT NULL,
    transmission_id TEXT NOT NULL,
    campaign_id TEXT NOT NULL,
    rcpt_to TEXT NOT NULL,
    machine TEXT,
    body BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_message ON events (message_id);
CREATE INDEX IF NOT EXISTS events_campaign ON events (campaign_id, ts);
CREATE INDEX IF NOT EXISTS events_rcpt ON events (rcpt_to);
CREATE INDEX IF NOT EXISTS events_type ON events (type, ts);
"""

# Transaction-scoped advisory lock keys ("engaged" in ASCII, then 1 or 2), per database.
DDL_LOCK = 0x656E676167656401
APPEND_LOCK = 0x656E676167656402

# One statement per batch; unnest of column arrays measured 5-15 % faster than executemany here.
_INSERT = f"""
INSERT INTO events ({EVENT_COLUMNS})
SELECT {EVENT_COLUMNS}
FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::bytea[])
     WITH ORDINALITY AS batch ({EVENT_COLUMNS}, n)
ORDER BY n
ON CONFLICT (event_id) DO NOTHING
"""

# Stores created before the machine column existed gain it, filled from the stored bodies.
_MIGRATE = f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'events' AND column_name = 'machine')
       AND EXISTS (SELECT 1 FROM information_schema.tables
                   WHERE table_schema = current_schema() AND table_name = 'events') THEN
        ALTER TABLE events ADD COLUMN machine TEXT;
        UPDATE events SET machine = convert_from(body, 'UTF8')::jsonb -> 'machine_engagement' ->> 'kind'
        WHERE type IN ({", ".join(repr(name) for name in TRACK_TYPES)});
    END IF;
END $$;
"""

_MAX_BATCH = 1000
_POOL_MAX = 8
_CONNECT_TIMEOUT = 10.0
_COMMAND_TIMEOUT = 60.0
_MARK = "\x00"
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError, OSError)
"""What a store operation reports as StoreError (the store is unavailable). InternalClientError is how asyncpg
reports a connection whose backend died while it waited for a reply (see _CONNECTION_LOST); OSError includes
TimeoutError, so the command timeout too."""
# A write that failed on these lost its connection (a terminated backend, a restart, a network cut), not its
# data; it is repeated on a fresh connection. Inserts skip stored event_ids, so an ambiguous COMMIT is safe
# to repeat.
# asyncpg raises InternalClientError ("cannot switch to state 15; another operation (2) is in progress") on a
# connection whose backend died while it waited for a reply; such a connection must never serve another write.
_CONNECTION_LOST = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.OperatorInterventionError,
                    asyncpg.exceptions.InternalClientError, OSError, asyncio.TimeoutError)
_WRITE_ATTEMPTS = 4
_RETRY_PAUSE = 0.05


def numbered_where(query: EventQuery) -> tuple[str, list[object]]:
    """The shared where_clause with PostgreSQL's numbered placeholders ($1, $2, …)."""
    text, params = where_clause(query, _MARK, POSTGRES)
    return numbered(text, _MARK), params


def numbered(sql: str, mark: str = "?") -> str:
    """SQL written with `mark` placeholders, rewritten with PostgreSQL's $1, $2, …"""
    head, *tails = sql.split(mark)
    return head + "".join(f"${n}{tail}" for n, tail in enumerate(tails, start=1))


class _RolledBack(Exception):
    """A required step changed no row; the transaction is abandoned."""


async def insert_batch(connection: Any, rows: Sequence[Row], *, force_sync: bool = False) -> None:
    """BEGIN, take APPEND_LOCK, insert rows (skipping stored event_ids); the caller COMMITs.

    The lock is taken before any seq is drawn, so this transaction's seqs come after those of every
    earlier append transaction on the database, which has committed or rolled back by then.
    """
    sync = "SET LOCAL synchronous_commit TO on; " if force_sync else ""
    await connection.execute(f"BEGIN; {sync}SELECT pg_advisory_xact_lock({APPEND_LOCK})")
    await connection.execute(_INSERT, *(list(column) for column in zip(*rows, strict=True)))


def _text_safe(row: Row) -> Row:
    """The row with U+0000 in its TEXT columns replaced by U+FFFD: PostgreSQL TEXT cannot hold NUL.

    The body (BYTEA) keeps the event exactly. Every column value is a field of the body, and JSON spells NUL
    as \\u0000, so a body without that escape needs no look at the columns.
    """
    body = row[-1]
    if not isinstance(body, bytes) or b"\\u0000" not in body:
        return row
    event_id, kind, ts, message_id, transmission_id, campaign_id, rcpt_to, machine, _ = row
    return (_no_nul(event_id), _no_nul(kind), ts, _no_nul(message_id), _no_nul(transmission_id),
            _no_nul(campaign_id), _no_nul(rcpt_to), None if machine is None else _no_nul(machine), body)


def _no_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd")


async def _keep_session(connection: Any) -> None:
    """Pool reset: skipped (a round trip per release); sessions hold no state outside transactions."""


class _Append(NamedTuple):
    """One `append` call: its rows, committed together or not at all, and its events."""

    rows: list[Row]
    events: Sequence[Event]


def _is_row_error(error: Exception) -> bool:
    """A refusal of a row (bad data, a constraint): GroupCommit isolates the append that holds it."""
    return isinstance(error, (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError))


class PostgresEventStore(StoreQueries, ReportQueries):
    """Events in the `events` table of the database at `dsn`; any number of processes may share it.

    `append` returns after the transaction holding its events commits. Appends from many tasks are
    gathered into one transaction (engaged.groupcommit); an append whose rows the server refuses
    (DataError, a constraint) fails alone, its batch mates are stored. An event whose event_id is
    already stored is ignored, so replays (and retries after an ambiguous commit) are idempotent.

    Live follow by seq: seq is drawn when a row is inserted but becomes visible when its transaction
    commits, so two writers could commit seq 11 before seq 10, and a follower that already read
    `seq > 10` would skip 10 forever. Every append transaction therefore takes a transaction-level
    advisory lock (APPEND_LOCK) before inserting: across all processes, seqs are drawn and committed
    in one order, and the lock is released only after the commit is visible. A reader that sees seq n
    thus sees every seq below n that will ever exist (gaps from rollbacks and ON CONFLICT are never
    filled), and `after_seq` paging is exact. The cost is one append transaction at a time per
    database, amortised by group commit. The identity sequence must keep CACHE 1 (the default).
    """

    _dialect = POSTGRES

    def __init__(self, dsn: str, *, on_commit: CommitObserver | None = None) -> None:
        self._dsn = dsn
        self._on_commit = on_commit
        self._pool: Any = None
        self._force_sync = False
        self._group: GroupCommit[_Append] = GroupCommit(
            self._commit, weight=lambda append: len(append.rows), max_weight=_MAX_BATCH,
            is_item_error=_is_row_error, committed=self._committed)
        self._appends = AppendSignal()

    @property
    def appends(self) -> AppendSignal:
        return self._appends

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=_POOL_MAX, reset=_keep_session,
                timeout=_CONNECT_TIMEOUT, command_timeout=_COMMAND_TIMEOUT,
            )
        except DB_ERRORS as error:
            raise StoreError(f"cannot connect to the PostgreSQL event store: {error}") from error
        try:
            async with pool.acquire() as connection, connection.transaction():
                # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalogs; serialise it.
                await connection.execute("SELECT pg_advisory_xact_lock($1)", DDL_LOCK)
                await connection.execute(_MIGRATE)
                await connection.execute(_SCHEMA + WEBHOOK_SCHEMA_POSTGRES)
                # `append` promises durability: never commit with synchronous_commit=off (reliability §2.1).
                self._force_sync = await connection.fetchval("SHOW synchronous_commit") == "off"
        except DB_ERRORS as error:
            await pool.close()
            raise StoreError(f"cannot create the PostgreSQL event schema: {error}") from error
        self._pool = pool

    async def append(self, events: Sequence[Event]) -> None:
        if not events:
            return
        if self._pool is None:
            raise StoreError("event store is not open")
        try:
            rows = [_text_safe(row_of(event)) for event in events]
        except ValueError as error:  # a timestamp that is not epoch seconds
            raise StoreError(f"event cannot be stored: {error}") from error
        await self._submit(_Append(rows, events))

    async def append_rows(self, rows: Sequence[Row]) -> None:
        """Append events already in row form (their JSON body as it was written); as `append` otherwise."""
        if not rows:
            return
        if self._pool is None:
            raise StoreError("event store is not open")
        await self._submit(_Append([_text_safe(row) for row in rows], ()))

    async def _submit(self, append: _Append) -> None:
        try:
            await self._group.submit(append)
        except Exception as error:
            raise StoreError(f"event store write failed: {error}") from error

    async def _commit(self, appends: list[_Append]) -> None:
        await self._write([row for append in appends for row in append.rows])

    def _committed(self, appends: list[_Append], seconds: float) -> None:
        self._appends.notify()
        if self._on_commit is not None:
            self._on_commit([event for append in appends for event in append.events], seconds)

    async def _write(self, rows: list[Row]) -> None:
        """Insert and commit `rows`, on a fresh connection again (up to _WRITE_ATTEMPTS) when one is lost."""
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                await self._write_once(rows)
                return
            except _CONNECTION_LOST:
                if attempt == _WRITE_ATTEMPTS:
                    raise
            await asyncio.sleep(_RETRY_PAUSE * attempt)

    async def _write_once(self, rows: list[Row]) -> None:
        async with self._pool.acquire() as connection:
            try:
                await insert_batch(connection, rows, force_sync=self._force_sync)
                await connection.execute("COMMIT")
            except Exception as error:
                if isinstance(error, asyncpg.PostgresError) and not isinstance(error, _CONNECTION_LOST):
                    # The server refused a statement and the session is still there: end the transaction.
                    with contextlib.suppress(*DB_ERRORS):
                        await connection.execute("ROLLBACK")
                else:
                    # Broken, or already handed back to the pool (asyncpg detaches a connection whose backend
                    # went away, and the proxy then raises InterfaceError): make sure the pool drops it.
                    with contextlib.suppress(asyncpg.InterfaceError):
                        connection.terminate()
                raise

    async def query(self, query: EventQuery) -> list[StoredEvent]:
        if self._pool is None:
            raise StoreError("event store is not open")
        where, params = numbered_where(query)
        limit = query.limit if query.limit >= 0 else None  # as SQLite: a negative limit means none
        order = "seq DESC" if query.newest_first else "seq"
        sql = f"SELECT seq, body FROM events WHERE {where} ORDER BY {order} LIMIT ${len(params) + 1}"
        try:
            records = await self._pool.fetch(sql, *params, limit)
            return [StoredEvent(record[0], decode_event(record[1])) for record in records]
        except DB_ERRORS as error:
            raise StoreError(f"event store read failed: {error}") from error
        except msgspec.DecodeError as error:
            raise StoreError(f"stored event is malformed: {error}") from error

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        if self._pool is None:
            raise StoreError("event store is not open")
        try:
            return [tuple(record) for record in await self._pool.fetch(numbered(sql), *params)]
        except DB_ERRORS as error:
            raise StoreError(f"event store read failed: {error}") from error

    async def _transact(self, steps: Sequence[Step]) -> list[int] | None:
        if self._pool is None:
            raise StoreError("event store is not open")
        counts: list[int] = []
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                for sql, params, required in steps:
                    status = await connection.execute(numbered(sql), *params)
                    changed = int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0
                    if required and changed == 0:
                        raise _RolledBack
                    counts.append(changed)
        except _RolledBack:
            return None
        except DB_ERRORS as error:
            raise StoreError(f"event store write failed: {error}") from error
        return counts

    async def close(self) -> None:
        await self._group.settled()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
