"""Tests of a tracker worker's journal: group commit, fdatasync before answering, failures, rotation, the lock."""

from __future__ import annotations

import asyncio
import errno
import os
import platform
from collections.abc import Callable
from pathlib import Path

import pytest

from engaged.tracker.datasync import AioDataSync, Done, ThreadDataSync
from engaged.tracker.journal import ZEROED_AHEAD, Journal, JournalError
from tests.helpers import event_line, journal_bytes, segment_bytes, segments

AIO_MACHINE = platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64")


@pytest.fixture(params=["aio", "thread"])
async def journal(tmp_path: Path, request: pytest.FixtureRequest) -> Journal:
    """A journal syncing through Linux AIO (where this machine has it) and one syncing on a thread."""
    opened = Journal(tmp_path / "journal", aio=request.param == "aio")
    await opened.open()
    expected = AioDataSync if request.param == "aio" and AIO_MACHINE else ThreadDataSync
    assert isinstance(opened.syncer, expected)
    return opened


def wrap_submit(journal: Journal, monkeypatch: pytest.MonkeyPatch, outcome: Callable[[int], int]) -> list[bytes]:
    """Make the journal's syncer report `outcome(code)` instead of its code; returns what was on disk at each."""
    syncer = journal.syncer
    assert syncer is not None
    real = syncer.submit
    seen: list[bytes] = []

    def submit(fd: int, done: Done) -> None:
        def finished(code: int) -> None:
            seen.append(journal_bytes(journal.directory))
            done(outcome(code))

        real(fd, finished)

    monkeypatch.setattr(syncer, "submit", submit)
    return seen


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
    synced = wrap_submit(journal, monkeypatch, lambda code: code)
    for n in range(3):
        assert await journal.append(event_line(n))
        assert synced[-1].endswith(event_line(n))
    assert len(synced) >= 3  # one per append, and one for the zeros written ahead
    await journal.close()


async def test_the_thread_syncer_answers_only_after_os_fdatasync_returned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path / "journal", aio=False)
    await journal.open()
    synced: list[bytes] = []
    real_fdatasync = os.fdatasync

    def spy(fd: int) -> None:
        real_fdatasync(fd)
        synced.append(journal_bytes(journal.directory))

    monkeypatch.setattr(os, "fdatasync", spy)
    for n in range(3):
        assert await journal.append(event_line(n))
        assert synced[-1].endswith(event_line(n))
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
    assert [segment_bytes(path) for path in segments(journal.directory)] == [event_line(1), event_line(3)]
    await journal.close()


async def test_a_failed_fsync_answers_false_is_counted_and_leaves_no_line(
        journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await journal.append(event_line(1))
    await journal.settled()
    wrap_submit(journal, monkeypatch, lambda code: errno.EIO)
    assert not await journal.append(event_line(2))
    assert (journal.stats.failed, journal.stats.appended) == (1, 1)
    monkeypatch.undo()
    assert await journal.append(event_line(3))  # in a fresh segment
    assert [segment_bytes(path) for path in segments(journal.directory)] == [event_line(1), event_line(3)]
    await journal.close()


@pytest.mark.skipif(not AIO_MACHINE, reason="Linux AIO syscalls are only wired for x86_64 and aarch64 Linux")
@pytest.mark.parametrize("where", ["completion", "submit"])
async def test_a_file_system_that_refuses_aio_sync_moves_the_journal_to_a_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    journal = Journal(tmp_path / "journal")
    await journal.open()
    syncer = journal.syncer
    assert isinstance(syncer, AioDataSync)

    def refuse(fd: int, done: Done) -> None:
        if where == "submit":  # as a seccomp filter refuses io_submit
            raise OSError(errno.EPERM, "Operation not permitted")
        asyncio.get_running_loop().call_soon(done, errno.EINVAL)

    monkeypatch.setattr(syncer, "submit", refuse)
    assert await journal.append(event_line(1))  # synced again, on the thread
    assert isinstance(journal.syncer, ThreadDataSync)
    assert await journal.append(event_line(2))
    assert journal.stats.failed == 0
    await journal.close()
    assert journal_bytes(journal.directory) == event_line(1) + event_line(2)


async def test_a_second_journal_on_the_same_directory_is_refused(journal: Journal) -> None:
    with pytest.raises(JournalError, match="in use by another tracker"):
        await Journal(journal.directory).open()
    await journal.close()


async def test_a_full_segment_is_closed_and_the_next_batch_opens_a_new_one(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal", segment_bytes=4 * len(event_line(0)))
    await journal.open()
    for n in range(20):
        assert await journal.append(event_line(n))
    assert len(segments(journal.directory)) >= 4
    assert journal_bytes(journal.directory) == b"".join(event_line(n) for n in range(20))
    await journal.close()


async def test_a_reopened_journal_writes_after_what_an_earlier_run_left(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    (directory / "000000000007.jsonl").write_bytes(event_line(1))
    journal = Journal(directory)
    await journal.open()
    assert await journal.append(event_line(2))
    await journal.close()
    assert [path.name for path in segments(directory)] == ["000000000007.jsonl", "000000000008.jsonl"]


async def test_events_overwrite_zeros_written_ahead_and_closing_cuts_them_off(journal: Journal) -> None:
    assert await journal.append(event_line(1))
    await journal.settled()
    [segment] = segments(journal.directory)
    await asyncio.sleep(0)  # zeros are written and synced right after the answers
    deadline = asyncio.get_running_loop().time() + 10
    while segment.stat().st_size < ZEROED_AHEAD and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert segment.stat().st_size >= ZEROED_AHEAD
    assert await journal.append(event_line(2))
    assert segment_bytes(segment) == event_line(1) + event_line(2)
    await journal.close()
    assert segment.read_bytes() == event_line(1) + event_line(2)
