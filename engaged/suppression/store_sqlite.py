"""The suppression list in `<data_dir>/suppression.sqlite3`: WAL, one thread owns the connection."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from engaged.errors import StoreError
from engaged.suppression import sql
from engaged.suppression.model import TYPES, SuppressionEntry, SuppressionSearch, SuppressionType

_T = TypeVar("_T")
_CHUNK = 500  # recipients per IN (…) list, under SQLite's default variable limit
_INLINE = 50  # recipients looked up on the event loop; more go to the thread


class SqliteSuppressionStore:
    """Every statement runs on one thread with one connection (writes commit with synchronous=FULL).

    Other processes on the same data_dir open their own store on the same file; WAL lets them read
    while one writes, and busy_timeout serialises their writes.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="suppression-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._lookup: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        await self._run(self._open)

    def _open(self) -> None:
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.executescript(sql.SCHEMA.format(real="REAL"))
        self._conn = conn
        lookup = sqlite3.connect(self._path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
        lookup.execute("PRAGMA busy_timeout=1000")
        self._lookup = lookup

    async def _run(self, work: Callable[[], _T]) -> _T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, work)
        except sqlite3.Error as error:
            raise StoreError(f"suppression list unavailable: {error}") from error

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("suppression list is not open")
        return self._conn

    async def close(self) -> None:
        await self._run(self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        for conn in (self._conn, self._lookup):
            if conn is not None:
                conn.close()
        self._conn = self._lookup = None

    async def upsert(self, entries: Sequence[SuppressionEntry], *, followed: int | None = None) -> None:
        if entries or followed is not None:
            rows = [sql.row_of(entry) for entry in entries]
            await self._run(lambda: self._write(rows, followed))

    def _write(self, rows: list[sql.Row], followed: int | None) -> None:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(sql.UPSERT, rows)
            if followed is not None:
                conn.execute(sql.FOLLOW, [followed])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def followed(self) -> int | None:
        rows = await self._run(lambda: self._db().execute(sql.FOLLOWED).fetchall())
        return int(rows[0][0]) if rows else None

    async def search(self, search: SuppressionSearch) -> list[SuppressionEntry]:
        statement, params = sql.select(search)
        rows = await self._run(lambda: self._db().execute(statement, params).fetchall())
        return [sql.entry_of(row) for row in rows]

    async def count(self, search: SuppressionSearch, cap: int) -> int:
        statement, params = sql.count(search, cap)
        rows = await self._run(lambda: self._db().execute(statement, params).fetchall())
        return int(rows[0][0])

    async def delete(self, recipient: str, types: Sequence[str] = TYPES) -> int:
        if not types:
            return 0
        statement = f"DELETE FROM suppression_list WHERE recipient = ? AND type IN ({', '.join('?' for _ in types)})"
        return await self._run(lambda: self._db().execute(statement, [recipient, *types]).rowcount)

    async def suppressed(self, recipients: Sequence[str], type: SuppressionType) -> set[str]:
        """Read on the event loop for a few recipients: a primary-key lookup in a WAL database is a page-cache
        read of microseconds, and a thread hand-off per injected message cost more (measured in
        bench/suppression.py). Large lists go to the thread."""
        if not recipients:
            return set()
        lookup = self._lookup
        if lookup is not None and len(recipients) <= _INLINE:
            try:
                return self._suppressed(lookup, list(recipients), type)
            except sqlite3.Error as error:
                raise StoreError(f"suppression list unavailable: {error}") from error
        return await self._run(lambda: self._suppressed(self._db(), list(recipients), type))

    def _suppressed(self, conn: sqlite3.Connection, recipients: list[str], type: str) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(recipients), _CHUNK):
            chunk = recipients[start:start + _CHUNK]
            found.update(row[0] for row in conn.execute(sql.suppressed(len(chunk)), [type, *chunk]))
        return found
