"""The SQLite event store: what only the file backend has to get right."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from pathlib import Path

import pytest

from engaged.app import build_store
from engaged.config import Config
from engaged.events.store_sqlite import (
    PAGE_SIZE,
    WAL_CHECKPOINT_BYTES,
    WORKER_CACHE_KIB,
    WRITE_LOCK_SUFFIX,
    WRITER_CACHE_KIB,
    SqliteEventStore,
)
from engaged.types import EventQuery
from tests.eventstores import eventually
from tests.sample_events import make_event


async def test_a_data_dir_with_uri_characters_in_its_name_is_read_where_it_is(tmp_path: Path) -> None:
    directory = tmp_path / "mail #1 ?100% sure"
    directory.mkdir()
    store = SqliteEventStore(directory / "events.sqlite3")
    await store.open()
    try:
        await store.append([make_event("delivery", 1)])
        [stored] = await store.query(EventQuery(limit=10))
        assert stored.event.event_id == make_event("delivery", 1).event_id
    finally:
        await store.close()
    assert sorted(path.name for path in tmp_path.iterdir()) == [directory.name]


async def test_the_writer_connection_keeps_a_page_cache_large_enough_for_a_loader_batch(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.sqlite3")
    await store.open()
    try:
        connection = store._connection()
        assert connection.execute("PRAGMA cache_size").fetchone()[0] == -WRITER_CACHE_KIB
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await store.close()


async def test_a_new_store_has_large_pages_and_an_existing_one_keeps_its_own(tmp_path: Path) -> None:
    older = sqlite3.connect(tmp_path / "older.sqlite3")
    older.execute("PRAGMA page_size=4096")
    older.execute("CREATE TABLE kept (x)")
    older.close()
    for name, page_size in (("events.sqlite3", PAGE_SIZE), ("older.sqlite3", 4096)):
        store = SqliteEventStore(tmp_path / name)
        await store.open()
        try:
            await store.append([make_event("delivery", 1)])
            connection = store._connection()
            assert connection.execute("PRAGMA page_size").fetchone()[0] == page_size
            assert connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_CHECKPOINT_BYTES // page_size
            assert len(await store.query(EventQuery(limit=10))) == 1
        finally:
            await store.close()


async def test_a_worker_writer_keeps_sqlite_default_cache_and_the_node_one_sized_for_batches(tmp_path: Path) -> None:
    for worker, expected in ((True, WORKER_CACHE_KIB), (False, WRITER_CACHE_KIB)):
        store = build_store(Config(data_dir=str(tmp_path / "data")), worker=worker)
        assert isinstance(store, SqliteEventStore)
        await store.open()
        try:
            assert store._connection().execute("PRAGMA cache_size").fetchone()[0] == -expected
        finally:
            await store.close()
    assert WORKER_CACHE_KIB < WRITER_CACHE_KIB


def _blocked_on(lock: Path) -> bool:
    """Whether some process waits for an flock of `lock` (`/proc/locks` shows a waiter as `->`)."""
    inode = os.stat(lock).st_ino
    with open("/proc/locks") as locks:
        return any("->" in line and line.split()[-3].endswith(f":{inode}") for line in locks)


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux /proc/locks to see a waiting flock")
async def test_a_write_waits_its_turn_on_the_stores_write_lock_then_commits(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    store = SqliteEventStore(path)
    await store.open()
    lock = path.with_name(path.name + WRITE_LOCK_SUFFIX)
    holder = os.open(lock, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another engaged process is writing
    try:
        append = asyncio.create_task(store.append([make_event("delivery", 1)]))

        async def waiting() -> bool | None:
            return _blocked_on(lock) or None

        assert await eventually(waiting)  # queued in the kernel, not sleeping in SQLite's busy handler
        assert not append.done()
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
    try:
        await append
        assert [stored.event.event_id for stored in await store.query(EventQuery(limit=10))] == [
            make_event("delivery", 1).event_id]
    finally:
        await store.close()
