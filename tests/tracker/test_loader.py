"""Tests of the journal loader: every worker's lines stored once, in batches; closed segments removed; retries."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from engaged.events.model import OpenEvent
from engaged.tracker import loader as loader_module
from engaged.tracker.journal import JOURNAL_DIR, Journal, worker_directory
from engaged.tracker.loader import JournalLoader, LoaderStats, follow, read_metrics
from engaged.types import EventQuery
from tests.helpers import event_line, journal_bytes, segments
from tests.tracker.conftest import MemoryStore, eventually


async def open_journal(data: Path, worker: int, segment_bytes: int = 16 << 20) -> Journal:
    journal = Journal(worker_directory(data, worker), segment_bytes=segment_bytes)
    await journal.open()
    return journal


async def test_every_workers_events_are_stored_once_and_closed_journals_are_removed(tmp_path: Path) -> None:
    journals = [await open_journal(tmp_path, worker) for worker in range(3)]
    await asyncio.gather(*(journal.append(event_line(100 * worker + n))
                           for worker, journal in enumerate(journals) for n in range(50)))
    store = MemoryStore()
    loader = JournalLoader(tmp_path, store)
    assert await loader.load_available() == 150
    assert await loader.load_available() == 0  # positions moved on: nothing twice
    for journal in journals:
        assert segments(journal.directory)  # a live writer's segment stays
        await journal.close()
    await loader.stop()  # the writers are gone: their loaded segments go
    assert sorted(store.events) == sorted(str(1_000_000 + 100 * w + n) for w in range(3) for n in range(50))
    assert all(segments(journal.directory) == [] for journal in journals)


async def test_a_restarted_loader_reads_again_and_stores_nothing_twice(tmp_path: Path) -> None:
    journal = await open_journal(tmp_path, 0)
    for n in range(10):
        assert await journal.append(event_line(n))
    store = MemoryStore()
    assert await JournalLoader(tmp_path, store).load_available() == 10
    again = JournalLoader(tmp_path, store)  # the first one was killed: its positions are gone
    await again.load_available()
    assert sorted(store.events) == sorted(str(1_000_000 + n) for n in range(10))
    await journal.close()
    await again.stop()


async def test_a_torn_last_line_of_a_dead_writer_is_skipped_and_counted(tmp_path: Path) -> None:
    directory = worker_directory(tmp_path, 0)
    directory.mkdir(parents=True)
    (directory / "000000000003.jsonl").write_bytes(event_line(1) + event_line(2))
    (directory / "000000000004.jsonl").write_bytes(event_line(3) + event_line(4)[:40])  # torn by the crash
    store = MemoryStore()
    loader = JournalLoader(tmp_path, store)
    await loader.stop()
    assert sorted(store.events) == ["1000001", "1000002", "1000003"]
    assert loader.stats.corrupt_lines == 1
    assert segments(directory) == []


async def test_segments_of_the_single_tracker_layout_are_loaded_too(tmp_path: Path) -> None:
    root = tmp_path / JOURNAL_DIR
    root.mkdir()
    (root / "000000000001.jsonl").write_bytes(event_line(1) + event_line(2))
    store = MemoryStore()
    loader = JournalLoader(tmp_path, store)
    await loader.stop()
    assert sorted(store.events) == ["1000001", "1000002"]
    assert segments(root) == []


async def test_a_malformed_line_is_skipped_and_counted(tmp_path: Path) -> None:
    directory = worker_directory(tmp_path, 0)
    directory.mkdir(parents=True)
    (directory / "000000000001.jsonl").write_bytes(event_line(1) + b"{not json}\n" + event_line(2))
    loader = JournalLoader(tmp_path, MemoryStore())
    assert await loader.load_available() == 2
    assert loader.stats.corrupt_lines == 1


async def test_closed_segments_of_a_live_writer_are_removed_once_loaded(tmp_path: Path) -> None:
    journal = await open_journal(tmp_path, 0, segment_bytes=4 * len(event_line(0)))
    for n in range(20):
        assert await journal.append(event_line(n))
    assert len(segments(journal.directory)) >= 4
    loader = JournalLoader(tmp_path, MemoryStore(), batch_bytes=3 * len(event_line(0)))
    assert await loader.load_available() == 20  # several batches
    assert len(segments(journal.directory)) == 1  # only the open segment is left
    await journal.close()


async def test_the_loader_keeps_retrying_while_the_store_is_down(tmp_path: Path) -> None:
    journal = await open_journal(tmp_path, 0)
    store = MemoryStore(failures=3)
    loader = JournalLoader(tmp_path, store, interval=0)
    loader.start()
    assert await journal.append(event_line(1))
    await eventually(lambda: store.events)
    await loader.stop()
    assert loader.stats.load_errors == 3
    assert list(store.events) == ["1000001"]
    await journal.close()


async def test_events_the_store_refused_until_stop_stay_journaled_for_the_next_loader(tmp_path: Path) -> None:
    journal = await open_journal(tmp_path, 0)
    loader = JournalLoader(tmp_path, MemoryStore(failures=1_000), interval=0)
    loader.start()
    assert await journal.append(event_line(1))
    await journal.close()
    await loader.stop()
    assert journal_bytes(journal.directory) == event_line(1)
    store = MemoryStore()
    await JournalLoader(tmp_path, store).stop()
    assert list(store.events) == ["1000001"]


async def test_the_lag_gauges_say_how_far_behind_the_loader_is(tmp_path: Path) -> None:
    journal = await open_journal(tmp_path, 0)
    assert await journal.append(event_line(1))  # timestamp 1_700_000_001.000
    loader = JournalLoader(tmp_path, MemoryStore(), clock=lambda: 1_700_000_003.5)
    assert await loader.load_available() == 1
    assert loader.lag_seconds == 2.5 and loader.lag_bytes == 0
    assert await loader.load_available() == 0
    assert loader.lag_seconds == 0.0
    await journal.close()


async def test_follow_publishes_its_metrics_and_stores_the_rest_when_stopped(tmp_path: Path) -> None:
    journal = await open_journal(tmp_path, 0)
    store = MemoryStore()
    stop = asyncio.Event()
    metrics = tmp_path / "loader.json"
    running = asyncio.get_running_loop().create_task(follow(JournalLoader(tmp_path, store), stop, metrics))
    assert await journal.append(event_line(1))
    await eventually(lambda: read_metrics(metrics).get("loader_loaded") == 1)
    await journal.close()
    stop.set()
    await running
    assert read_metrics(metrics)["loader_lag_bytes"] == 0
    assert isinstance(next(iter(store.events.values())), OpenEvent)
    assert LoaderStats().loaded == 0


async def test_a_journal_line_is_stored_as_written_with_the_columns_its_event_has(tmp_path: Path) -> None:
    from engaged.events.model import decode_event, encode_event
    from engaged.events.query import row_of
    from engaged.events.store_sqlite import SqliteEventStore
    from engaged.tracker.loader import row_of_line

    line = event_line(7).rstrip(b"\n")
    assert row_of_line(line) == (*row_of(decode_event(line))[:-1], line)
    store = SqliteEventStore(tmp_path / "events.sqlite3")
    await store.open()
    journal = await open_journal(tmp_path, 0)
    assert await journal.append(line + b"\n")
    await journal.close()
    await JournalLoader(tmp_path, store).stop()
    [stored] = await store.query(EventQuery(limit=10))
    assert encode_event(stored.event) == encode_event(decode_event(line))
    await store.close()


def test_a_line_that_is_not_a_tracker_event_is_refused() -> None:
    import pytest

    from engaged.tracker.loader import row_of_line

    with pytest.raises(ValueError):
        row_of_line(event_line(1).replace(b'"type":"open"', b'"type":"delivery"').rstrip(b"\n"))
    with pytest.raises(ValueError):
        row_of_line(b'{"type":"open","event_id":"1"}')


async def test_a_dead_writers_segment_is_read_up_to_the_zeros_written_ahead(tmp_path: Path) -> None:
    directory = worker_directory(tmp_path, 0)
    directory.mkdir(parents=True)
    (directory / "000000000001.jsonl").write_bytes(event_line(1) + event_line(2) + bytes(4096))
    (directory / "000000000002.jsonl").write_bytes(event_line(3) + event_line(4)[:40] + bytes(4096))  # torn
    store = MemoryStore()
    loader = JournalLoader(tmp_path, store)
    await loader.stop()
    assert sorted(store.events) == ["1000001", "1000002", "1000003"]
    assert loader.stats.corrupt_lines == 1
    assert loader.lag_bytes == 0
    assert segments(directory) == []


async def test_a_torn_line_longer_than_one_read_is_skipped_whole_and_counted_once(tmp_path: Path) -> None:
    directory = worker_directory(tmp_path, 0)
    directory.mkdir(parents=True)
    torn = event_line(3)[:-1] + b" " * 20_000  # no line end: 20 KB the dead writer never finished
    (directory / "000000000001.jsonl").write_bytes(event_line(1) + event_line(2) + torn + bytes(4096))
    (directory / "000000000002.jsonl").write_bytes(event_line(4) + torn)  # no zeros: torn up to the end
    store = MemoryStore()
    loader = JournalLoader(tmp_path, store)
    await loader.stop()
    assert sorted(store.events) == ["1000001", "1000002", "1000004"]
    assert loader.stats.corrupt_lines == 2
    assert segments(directory) == []


async def test_a_backlog_of_closed_segments_is_read_once_not_at_every_pass(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = worker_directory(tmp_path, 0)
    directory.mkdir(parents=True)
    lines = [event_line(n) for n in range(1200)]
    for number in range(6):  # closed segments a stopped writer left: six times the loader's batch below
        (directory / f"{number + 1:012d}.jsonl").write_bytes(b"".join(lines[200 * number:200 * (number + 1)]))
    journaled = sum(len(line) for line in lines)
    read = [0]
    real_open = open

    class Counted(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            read[0] += len(data)
            return data

    def counting_open(path: Path, mode: str = "r") -> Any:
        assert mode == "rb"
        return Counted(real_open(path, "rb", buffering=0))

    monkeypatch.setattr(loader_module, "open", counting_open, raising=False)
    store = MemoryStore()
    loader = JournalLoader(tmp_path, store, batch_bytes=journaled // 30)
    assert await loader.load_available() == 1200
    assert loader.stats.batches >= 30
    # Each pass reads its batch and at most a short look at one closed segment's rest; reading every closed
    # segment's rest at every pass read about 15 times what was journaled here.
    assert read[0] < 2 * journaled
    await loader.stop()
    assert len(store.events) == 1200
    assert segments(directory) == []
