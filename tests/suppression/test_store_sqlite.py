"""The SQLite suppression list: what only the file backend has to get right."""

from __future__ import annotations

from pathlib import Path

from engaged.suppression.model import SuppressionEntry
from engaged.suppression.store_sqlite import SqliteSuppressionStore


async def test_a_data_dir_with_uri_characters_in_its_name_is_looked_up_where_it_is(tmp_path: Path) -> None:
    directory = tmp_path / "mail #1 ?100% sure"
    store = SqliteSuppressionStore(directory / "suppression.sqlite3")
    await store.open()
    try:
        await store.upsert([SuppressionEntry(recipient="a@example.com", type="transactional", created=1, updated=1)])
        assert await store.suppressed(["a@example.com"], "transactional") == {"a@example.com"}  # the inline lookup
        assert await store.suppressed([f"r{n}@example.com" for n in range(60)], "transactional") == set()
    finally:
        await store.close()
    assert sorted(path.name for path in tmp_path.iterdir()) == [directory.name]  # nothing opened beside it
