"""Fixtures: a fresh store per backend (SQLite, PostgreSQL) and in-process API services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engaged.types import EventStore
from tests.eventstores import Services, StoreMaker, services, store_maker


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreMaker:
    return store_maker(request, tmp_path)


@pytest.fixture
async def store(make_store: StoreMaker) -> AsyncIterator[EventStore]:
    opened = make_store()
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def start_service(store: EventStore, tmp_path: Path) -> AsyncIterator[Services]:
    """Services are stopped before `store` closes."""
    async for start in services(tmp_path):
        yield start
