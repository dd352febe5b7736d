"""The SQLite event store: what only the file backend has to get right."""

from __future__ import annotations

from pathlib import Path

from engaged.app import build_store
from engaged.config import Config
from engaged.events.store_sqlite import WORKER_CACHE_KIB, WRITER_CACHE_KIB, SqliteEventStore
from engaged.types import EventQuery
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
