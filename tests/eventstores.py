"""Test support: fresh event stores (SQLite file or PostgreSQL database) and in-process ApiApp instances."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from engaged.app import ApiApp
from engaged.config import ApiConfig, Config, WebhookConfig
from engaged.events.store_postgres import PostgresEventStore
from engaged.events.store_sqlite import SqliteEventStore
from engaged.prometheus import Metrics
from engaged.types import EventStore
from tests.conftest import postgres_admin

StoreMaker = Callable[[], EventStore]
_T = TypeVar("_T")


def store_maker(request: pytest.FixtureRequest, tmp_path: Path) -> StoreMaker:
    """Unopened stores sharing one empty backing: `request.param` is "sqlite" or "postgres"."""
    if request.param == "sqlite":
        path = tmp_path / "events.sqlite3"
        return lambda: SqliteEventStore(path)
    dsn: str = request.getfixturevalue("postgres_dsn")
    asyncio.run(postgres_admin("DROP TABLE IF EXISTS webhook_batches, webhook_dead_letters, webhooks, events", dsn=dsn))
    return lambda: PostgresEventStore(dsn)


class Services(Protocol):
    async def __call__(self, store: EventStore, *, keys: Sequence[str] = (),
                       webhooks: Sequence[WebhookConfig] = (), owner: str = "node-1",
                       clock: Callable[[], float] = time.time) -> ApiApp: ...


async def services(tmp_path: Path) -> AsyncIterator[Services]:
    """Start ApiApps (API, dashboard, webhook delivery) on 127.0.0.1:0; each still running is stopped at the end."""
    running: list[ApiApp] = []

    async def start(store: EventStore, *, keys: Sequence[str] = (), webhooks: Sequence[WebhookConfig] = (),
                    owner: str = "node-1", clock: Callable[[], float] = time.time) -> ApiApp:
        config = Config(data_dir=str(tmp_path / "data"), api=ApiConfig(listen="127.0.0.1:0", keys=list(keys)),
                        webhooks=list(webhooks))
        service = ApiApp(config, store, metrics=Metrics(), owner=owner, keepalive=0.5, clock=clock)
        await service.start()
        running.append(service)
        return service

    yield start
    for service in running:
        await service.stop()


async def eventually(probe: Callable[[], Awaitable[_T | None]], timeout: float = 15.0) -> _T:
    """Poll the async `probe` until it returns something truthy; return that, or raise TimeoutError."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreMaker:
    """Unopened stores on one fresh backing, once per backend."""
    return store_maker(request, tmp_path)


@pytest.fixture
async def store(make_store: StoreMaker) -> AsyncIterator[EventStore]:
    """An open store on a fresh backing, once per backend."""
    opened = make_store()
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def start_service(store: EventStore, tmp_path: Path) -> AsyncIterator[Services]:
    """In-process ApiApp instances on `store`; they stop before the store closes."""
    async for start in services(tmp_path):
        yield start
