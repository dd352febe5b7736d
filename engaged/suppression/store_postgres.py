"""The suppression list in the `suppression_list` table of the PostgreSQL database at `dsn` (asyncpg)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from engaged.errors import StoreError
from engaged.events.store_postgres import DB_ERRORS, numbered
from engaged.suppression import sql
from engaged.suppression.model import TYPES, SuppressionEntry, SuppressionSearch, SuppressionType

_DDL_LOCK = 0x656E676167656410  # "engaged" then 0x10: serialises concurrent schema creation


class PostgresSuppressionStore:
    """Any number of processes may share the table; each statement is its own transaction."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool: Any = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=4, timeout=10, command_timeout=60)
        except DB_ERRORS as error:
            raise StoreError(f"cannot connect to the PostgreSQL suppression list: {error}") from error
        try:
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock($1)", _DDL_LOCK)
                await connection.execute(sql.SCHEMA.format(real="DOUBLE PRECISION"))
        except DB_ERRORS as error:
            await pool.close()
            raise StoreError(f"cannot create the PostgreSQL suppression table: {error}") from error
        self._pool = pool

    def _ready(self) -> Any:
        if self._pool is None:
            raise StoreError("suppression list is not open")
        return self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def upsert(self, entries: Sequence[SuppressionEntry], *, followed: int | None = None) -> None:
        if not entries and followed is None:
            return
        pool = self._ready()
        try:
            async with pool.acquire() as connection, connection.transaction():
                if entries:
                    await connection.executemany(numbered(sql.UPSERT), [sql.row_of(entry) for entry in entries])
                if followed is not None:
                    await connection.execute(numbered(sql.FOLLOW), followed)
        except DB_ERRORS as error:
            raise StoreError(f"suppression list write failed: {error}") from error

    async def _fetch(self, statement: str, params: Sequence[object]) -> list[Any]:
        try:
            return list(await self._ready().fetch(numbered(statement), *params))
        except DB_ERRORS as error:
            raise StoreError(f"suppression list read failed: {error}") from error

    async def followed(self) -> int | None:
        rows = await self._fetch(sql.FOLLOWED, [])
        return int(rows[0][0]) if rows else None

    async def search(self, search: SuppressionSearch) -> list[SuppressionEntry]:
        statement, params = sql.select(search)
        return [sql.entry_of(tuple(row)) for row in await self._fetch(statement, params)]

    async def count(self, search: SuppressionSearch, cap: int) -> int:
        statement, params = sql.count(search, cap)
        rows = await self._fetch(statement, params)
        return int(rows[0][0])

    async def delete(self, recipient: str, types: Sequence[str] = TYPES) -> int:
        if not types:
            return 0
        try:
            status = await self._ready().execute(
                "DELETE FROM suppression_list WHERE recipient = $1 AND type = ANY($2::text[])", recipient, list(types))
        except DB_ERRORS as error:
            raise StoreError(f"suppression list write failed: {error}") from error
        return int(status.rsplit(" ", 1)[-1])

    async def suppressed(self, recipients: Sequence[str], type: SuppressionType) -> set[str]:
        if not recipients:
            return set()
        rows = await self._fetch("SELECT recipient FROM suppression_list WHERE type = ? AND recipient = ANY(?::text[])",
                                 [type, list(recipients)])
        return {row[0] for row in rows}
