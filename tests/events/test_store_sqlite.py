"""SqliteEventStore beyond the shared contract (tests/events/test_store_contract.py): its writer's settings."""

from __future__ import annotations

from pathlib import Path

from engaged.events.store_sqlite import WRITER_CACHE_KIB, SqliteEventStore


async def test_the_writer_connection_keeps_a_page_cache_large_enough_for_a_loader_batch(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.sqlite3")
    await store.open()
    try:
        connection = store._connection()
        assert connection.execute("PRAGMA cache_size").fetchone()[0] == -WRITER_CACHE_KIB
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await store.close()
