"""Fixtures for the bus tests: nats-server processes and a PostgreSQL database of each test's own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.bus.cluster import NATS_SERVER, NatsCluster, create_database, drop_database
from tests.conftest import IN_CI, POSTGRES_ADMIN_DSN, require_tool


@pytest.fixture
def nats_factory(tmp_path: Path) -> Iterator[Callable[[int], NatsCluster]]:
    """Start a nats-server (size 1) or a JetStream cluster of `size`; every one is killed at the end."""
    require_tool("nats-server", NATS_SERVER)
    started: list[NatsCluster] = []

    def factory(size: int = 1) -> NatsCluster:
        cluster = NatsCluster.create(tmp_path / f"nats{len(started)}", size)
        started.append(cluster)
        return cluster.start()

    yield factory
    for cluster in started:
        cluster.stop()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A PostgreSQL database for this test only (several engaged nodes share it)."""
    try:
        dsn = create_database()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        reason = f"PostgreSQL unreachable at {POSTGRES_ADMIN_DSN}: {error}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    yield dsn
    drop_database(dsn)
