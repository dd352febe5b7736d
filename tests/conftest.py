"""Shared fixtures: a real `engaged serve` factory, config files, corpus paths, system tool checks."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from engaged.testing.server import ServerProcess, write_config

pytest_plugins = ["tests.eventstores", "tests.suppressionstores"]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IN_CI = os.environ.get("CI") == "true"
POSTGRES_ADMIN_DSN = os.environ.get("ENGAGED_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


async def postgres_admin(*statements: str, dsn: str = POSTGRES_ADMIN_DSN) -> None:
    """Run statements on a PostgreSQL database (the admin database by default)."""
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def cut_statements(name: str) -> tuple[str, str]:
    """Refuse new connections to database `name` and terminate those it has: an outage, as SQL."""
    return (f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")


def restore_statement(name: str) -> str:
    """End the outage of `cut_statements`."""
    return f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'


@pytest.fixture
def outage_database() -> Iterator[tuple[str, str]]:
    """A database of this test's own, whose connections it may cut, as (name, dsn); dropped afterwards."""
    name = f"engaged_outage_{secrets.token_hex(4)}"
    try:
        asyncio.run(postgres_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        if IN_CI:
            pytest.fail(f"PostgreSQL unreachable: {error}")
        pytest.skip(f"PostgreSQL unreachable: {error}")
    yield name, urlunsplit(urlsplit(POSTGRES_ADMIN_DSN)._replace(path="/" + name))
    asyncio.run(postgres_admin(restore_statement(name), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A fresh database for this test session, dropped at the end; skips (fails under CI) if unreachable."""
    name = f"engaged_test_{secrets.token_hex(4)}"
    try:
        asyncio.run(postgres_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        reason = f"PostgreSQL unreachable at {POSTGRES_ADMIN_DSN}: {error}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    yield urlunsplit(urlsplit(POSTGRES_ADMIN_DSN)._replace(path="/" + name))
    asyncio.run(postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def require_tool(name: str, *candidates: str) -> str:
    """Path of a system tool; skip without it, except under CI=true where it must be installed."""
    for candidate in (name, *candidates):
        found = shutil.which(candidate) or (candidate if os.path.isfile(candidate) else None)
        if found:
            return found
    if IN_CI:
        pytest.fail(f"{name} is required under CI=true (make sysdeps installs it)")
    pytest.skip(f"{name} is not installed (run make test as root to install it)")


def corpus_dir(kind: str) -> Path:
    """shared/corpus/<kind>; skips (fails under CI) when the shared folder is not beside the repo."""
    path = SHARED / "corpus" / kind
    if not path.is_dir():
        if IN_CI:
            pytest.fail(f"corpus not found at {path}")
        pytest.skip(f"corpus not found at {path}")
    return path


# One worker process unless a test asks for more: a second worker costs a fork, a shard and a tracker on every
# start, and only tests/server/ and the crash tests have workers as their subject (they set `workers` themselves).
TEST_SERVER_DEFAULTS = "[server]\nworkers = 1\n"


class ServerFactory(Protocol):
    def __call__(self, extra: str = "", *, start: bool = True) -> ServerProcess: ...


@pytest.fixture
def engaged_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start real servers in tmp_path with extra TOML; all are stopped at the end of the test."""
    servers: list[ServerProcess] = []

    def factory(extra: str = "", *, start: bool = True) -> ServerProcess:
        directory = tmp_path / f"server{len(servers)}"
        directory.mkdir()
        server = ServerProcess(write_config(directory, TEST_SERVER_DEFAULTS + extra))
        servers.append(server)
        return server.start() if start else server

    yield factory
    for server in servers:
        try:
            server.stop()
        except Exception:
            server.kill()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with the test defaults for a whole test module: for tests whose subject is not the server's
    settings or its life (each of them must hold only for its own messages: other tests share the spool)."""
    directory = tmp_path_factory.mktemp("shared-server")
    server = ServerProcess(write_config(directory, TEST_SERVER_DEFAULTS)).start()
    yield server
    server.stop()


def captured(server: ServerProcess) -> Path:
    """The server's capture directory."""
    return data_dir(server) / "captured"


def data_dir(server: ServerProcess) -> Path:
    return server.config.parent / "data"


CapturedReader = Callable[[ServerProcess, str], list[bytes]]
