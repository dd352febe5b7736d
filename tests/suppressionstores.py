"""Fresh suppression stores, once per backend (SQLite file, PostgreSQL database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from engaged.suppression.model import SuppressionStore
from engaged.suppression.store_postgres import PostgresSuppressionStore
from engaged.suppression.store_sqlite import SqliteSuppressionStore
from tests.conftest import postgres_admin

SuppressionMaker = Callable[[], SuppressionStore]


@pytest.fixture(params=["sqlite", "postgres"])
def make_suppressions(request: pytest.FixtureRequest, tmp_path: Path) -> SuppressionMaker:
    """Unopened stores sharing one empty backing, once per backend."""
    if request.param == "sqlite":
        path = tmp_path / "suppression.sqlite3"
        return lambda: SqliteSuppressionStore(path)
    dsn: str = request.getfixturevalue("postgres_dsn")
    asyncio.run(postgres_admin("DROP TABLE IF EXISTS suppression_list, suppression_followed", dsn=dsn))
    return lambda: PostgresSuppressionStore(dsn)


@pytest.fixture
async def suppressions(make_suppressions: SuppressionMaker) -> AsyncIterator[SuppressionStore]:
    """An open, empty suppression store."""
    store = make_suppressions()
    await store.open()
    yield store
    await store.close()
