"""Tests of the tracker journal: group commit, fsync before answering, failures, replay, rotation, the loader."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from engaged.events.model import OpenEvent, encode_event
from engaged.tracker.journal import Cursor, Journal, JournalError, JournalLoader
from tests.tracker.conftest import MemoryStore, eventually


def event_line(n: int) -> bytes:
    event = OpenEvent(event_id=str(1_000_000 + n), timestamp=f"{1_700_000_000 + n}.000", message_id=f"m{n}",
                      transmission_id="t", campaign_id="c", customer_id="1", rcpt_to="ann@example.com",
                      raw_rcpt_to="ann@example.com", rcpt_meta={"n": n}, rcpt_tags=[])
    return encode_event(event) + b"\n"


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl"))


def journal_bytes(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in segments(directory))


@pytest.fixture
async def journal(tmp_path: Path) -> Journal:
    opened = Journal(tmp_path / "journal")
    await opened.open()
    return opened


async def test_concurrent_appends_are_group_committed_into_few_writes(journal: Journal) -> None:
    results = await asyncio.gather(*(journal.append(event_line(n)) for n in range(500)))
    assert all(results)
    assert journal.stats.appended == 500
    assert journal.stats.batches < 50  # the first write goes alone, the rest queue behind it
    assert sorted(journal_bytes(journal.directory).splitlines(keepends=True)) == sorted(
        event_line(n) for n in range(500))
    await journal.close()


async def test_an_append_returns_only_after_its_line_was_written_and_fsynced(
        journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[bytes] = []
    real_fdatasync = os.fdatasync

    def spy(fd: int) -> None:
        real_fdatasync(fd)
        synced.append(journal_bytes(journal.directory))

    monkeypatch.setattr(os, "fdatasync", spy)
    for n in range(3):
        assert await journal.append(event_line(n))
        assert synced[-1].endswith(event_line(n))
    assert len(synced) == 3
    await journal.close()


async def test_a_failed_write_answers_false_leaves_no_torn_line_and_the_next_batch_starts_a_new_segment(
        journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await journal.append(event_line(1))
    real_write = os.write

    def half_then_fail(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data)[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_fail)
    assert not await journal.append(event_line(2))
    assert journal.stats.failed == 1
    monkeypatch.setattr(os, "write", real_write)
    assert await journal.append(event_line(3))
    assert [path.read_bytes() for path in segments(journal.directory)] == [event_line(1), event_line(3)]
    await journal.close()


async def test_a_failed_fsync_answers_false_and_is_counted(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    assert not await journal.append(event_line(1))
    assert (journal.stats.failed, journal.stats.appended) == (1, 0)
    await journal.close()


async def test_the_loader_stores_every_journaled_event_once_and_the_journal_empties_on_close(
        journal: Journal) -> None:
    store = MemoryStore()
    loader = JournalLoader(journal, store, interval=0)
    loader.start()
    await asyncio.gather(*(journal.append(event_line(n)) for n in range(100)))
    await loader.stop()
    assert sorted(store.events) == sorted(str(1_000_000 + n) for n in range(100))
    assert journal.stats.loaded == 100
    assert not journal.pending
    await journal.close()
    assert segments(journal.directory) == []


async def test_events_left_by_a_crash_are_replayed_once_and_their_segments_removed(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    (directory / "000000000003.jsonl").write_bytes(event_line(1) + event_line(2))
    (directory / "000000000004.jsonl").write_bytes(event_line(3) + event_line(4)[:40])  # torn by the crash
    store = MemoryStore()
    await store.append([OpenEvent(event_id="1000001", timestamp="1.000", message_id="m1", transmission_id="t",
                                  campaign_id="c", customer_id="1", rcpt_to="a", raw_rcpt_to="a", rcpt_meta={},
                                  rcpt_tags=[])])  # loaded before the crash, not yet forgotten
    journal = Journal(directory, rotate_loaded_bytes=0)
    assert await journal.open() > 0
    assert await JournalLoader(journal, store).load_available() == 3
    assert sorted(store.events) == ["1000001", "1000002", "1000003"]
    assert journal.stats.corrupt_lines == 1
    assert [path.name for path in segments(directory)] == ["000000000005.jsonl"]
    assert await journal.append(event_line(5))
    await journal.close()


async def test_a_malformed_line_is_skipped_and_counted(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    (directory / "000000000001.jsonl").write_bytes(event_line(1) + b"{not json}\n" + event_line(2))
    journal = Journal(directory)
    await journal.open()
    store = MemoryStore()
    assert await JournalLoader(journal, store).load_available() == 2
    assert journal.stats.corrupt_lines == 1
    await journal.close()


async def test_full_segments_rotate_and_loaded_ones_are_deleted(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal", segment_bytes=4 * len(event_line(0)), rotate_loaded_bytes=1 << 30)
    await journal.open()
    for n in range(20):
        assert await journal.append(event_line(n))
    assert len(segments(journal.directory)) >= 4
    store = MemoryStore()
    assert await JournalLoader(journal, store).load_available() == 20
    assert len(segments(journal.directory)) == 1  # only the active segment is left
    await journal.close()


async def test_a_loaded_active_segment_is_rotated_away_once_long_enough(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal", rotate_loaded_bytes=2 * len(event_line(0)))
    await journal.open()
    loader = JournalLoader(journal, MemoryStore())
    assert await journal.append(event_line(1))
    await loader.load_available()
    assert journal_bytes(journal.directory) == event_line(1)  # shorter than rotate_loaded_bytes: kept
    assert await journal.append(event_line(2))
    await loader.load_available()
    await journal.settled()  # the rotation runs on the flusher task
    assert [path.read_bytes() for path in segments(journal.directory)] == [b""]
    await journal.close()


async def test_the_loader_keeps_retrying_while_the_store_is_down(journal: Journal) -> None:
    store = MemoryStore(failures=3)
    loader = JournalLoader(journal, store, interval=0)
    loader.start()
    assert await journal.append(event_line(1))
    await eventually(lambda: store.events)
    await loader.stop()
    assert journal.stats.load_errors == 3
    assert list(store.events) == ["1000001"]
    await journal.close()


async def test_events_the_store_refused_until_stop_stay_journaled_for_the_next_start(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    journal = Journal(directory)
    await journal.open()
    down = MemoryStore(failures=1_000)
    loader = JournalLoader(journal, down, interval=0)
    loader.start()
    assert await journal.append(event_line(1))
    await loader.stop()
    await journal.close()
    assert journal_bytes(directory) == event_line(1)
    reopened = Journal(directory)
    await reopened.open()
    store = MemoryStore()
    assert await JournalLoader(reopened, store).load_available() == 1
    await reopened.close()
    assert segments(directory) == []


async def test_a_second_journal_on_the_same_directory_is_refused(journal: Journal) -> None:
    with pytest.raises(JournalError, match="in use by another tracker"):
        await Journal(journal.directory).open()
    await journal.close()


async def test_a_long_line_is_read_whole(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    await journal.open()
    line = event_line(1)
    assert await journal.append(line)
    lines, cursor = await journal.read(max_bytes=16)
    assert lines == [line.rstrip(b"\n")]
    assert cursor == Cursor(1, len(line))
    await journal.close()
