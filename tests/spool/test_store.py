"""The file spool: durable store, scan at startup, quarantine of damaged files, state lines."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from engaged.errors import SpoolError
from engaged.recipient import TrackingPlan
from engaged.spool.record import RecipientAttempt, RecipientDone, SpoolRecord
from engaged.spool.store import FileSpool, finished_recipients
from tests.records import recipient_identity, spool_record


def record(message_id: str = "0123456789abcdef0123") -> SpoolRecord:
    identity = recipient_identity("b@y.com", message_id=message_id, transmission_id="1", injection_time=1.0,
                                  campaign_id="c")
    return spool_record((identity, TrackingPlan()), message_id=message_id, transmission_id="1", received_at=1.0)


async def test_stored_message_is_found_by_scan_with_its_body(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path)
    spool.open()
    stored = await spool.store(record(), b"Subject: x\r\n\r\nbody\r\n")
    assert stored.body_length == 20
    [entry] = list(spool.scan())
    assert entry.record == stored
    assert await spool.load_body(stored.message_id) == b"Subject: x\r\n\r\nbody\r\n"
    spool.close()


async def test_state_lines_survive_and_finish_removes_everything(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path)
    spool.open()
    stored = await spool.store(record(), b"x\r\n")
    await spool.append_state(stored.message_id, RecipientAttempt(rcpt=0, attempts=1, next_attempt=5.0, event=b"{}"))
    await spool.append_state(stored.message_id, RecipientDone(rcpt=0, event=b"{}"))
    with open(tmp_path / f"{stored.message_id}.log", "ab") as handle:
        handle.write(b'{"type":"done","rc')  # a torn last line from a crash
    [entry] = list(spool.scan())
    assert finished_recipients(entry.state) == {0}
    assert len(entry.state) == 2
    await spool.finish(stored.message_id)
    assert list(spool.scan()) == []
    assert spool.depth() == 0
    spool.close()


async def test_damaged_files_are_quarantined_never_delivered(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path)
    spool.open()
    good = await spool.store(record("aaaaaaaaaaaaaaaaaaaa"), b"good\r\n")
    bad = await spool.store(record("bbbbbbbbbbbbbbbbbbbb"), b"this body will be cut short\r\n")
    path = tmp_path / f"{bad.message_id}.msg"
    path.write_bytes(path.read_bytes()[:-5])
    (tmp_path / "cccccccccccccccccccc.msg").write_bytes(b"")
    (tmp_path / "dddddddddddddddddddd.msg").write_bytes(b"ENGAGED-SPOOL 1\n12\n{not json}\n")
    assert [entry.record.message_id for entry in spool.scan()] == [good.message_id]
    quarantined = sorted(p.name for p in (tmp_path / "quarantine").iterdir())
    assert quarantined == ["bbbbbbbbbbbbbbbbbbbb.msg", "cccccccccccccccccccc.msg", "dddddddddddddddddddd.msg"]
    spool.close()


async def test_leftover_temporary_files_are_removed_at_open(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir(parents=True)
    (tmp_path / "tmp" / "half.msg").write_bytes(b"partial")
    spool = FileSpool(tmp_path)
    spool.open()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list(spool.scan()) == []
    spool.close()


async def test_store_fails_loudly_when_the_disk_refuses(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path / "spool")
    spool.open()
    os.rmdir(tmp_path / "spool" / "tmp")
    (tmp_path / "spool" / "tmp").write_bytes(b"not a directory")
    with pytest.raises(SpoolError):
        await spool.store(record(), b"x\r\n")
    assert list(spool.scan()) == []
    spool.close()


async def test_finished_files_are_reused_for_new_messages_and_never_scanned(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path)
    spool.open()
    first = await spool.store(record("aaaaaaaaaaaaaaaaaaaa"), b"a much longer first body\r\n" * 10)
    inode = (tmp_path / f"{first.message_id}.msg").stat().st_ino
    await spool.finish(first.message_id)
    assert list(spool.scan()) == []
    second = await spool.store(record("bbbbbbbbbbbbbbbbbbbb"), b"short\r\n")
    assert (tmp_path / f"{second.message_id}.msg").stat().st_ino == inode
    assert await spool.load_body(second.message_id) == b"short\r\n"
    assert [entry.record.message_id for entry in spool.scan()] == [second.message_id]
    spool.close()
    reopened = FileSpool(tmp_path)
    reopened.open()
    await reopened.finish(second.message_id)
    third = await reopened.store(record("cccccccccccccccccccc"), b"third\r\n")
    assert await reopened.load_body(third.message_id) == b"third\r\n"
    reopened.close()


async def test_a_recycled_file_still_holding_its_old_message_is_never_delivered(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path)
    spool.open()
    old = await spool.store(record("aaaaaaaaaaaaaaaaaaaa"), b"the finished message\r\n")
    # What a power loss can leave: the new name committed, the overwrite of the recycled file not.
    os.rename(tmp_path / f"{old.message_id}.msg", tmp_path / "bbbbbbbbbbbbbbbbbbbb.msg")
    assert list(spool.scan()) == []
    assert [p.name for p in (tmp_path / "quarantine").iterdir()] == ["bbbbbbbbbbbbbbbbbbbb.msg"]
    spool.close()


async def test_a_large_body_written_a_few_octets_at_a_time_reads_back_exactly(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    body = b"Subject: big\r\n\r\n" + bytes(range(256)) * 8192  # 2 MiB: stored off the event loop
    real_writev = os.writev
    calls = 0

    def stingy(fd: int, buffers: Sequence[bytes | memoryview]) -> int:
        nonlocal calls
        calls += 1
        first = memoryview(buffers[0])
        return real_writev(fd, [first[: 7 + calls % 5000]])  # a short write every time, across part boundaries

    monkeypatch.setattr(os, "writev", stingy)
    spool = FileSpool(tmp_path)
    spool.open()
    stored = await spool.store(record(), body)
    monkeypatch.undo()
    assert stored.body_length == len(body) and calls > 2
    [entry] = list(spool.scan())
    assert entry.record == stored
    assert await spool.load_body(stored.message_id) == body
    spool.close()


async def test_the_first_pass_takes_the_accepted_body_from_memory_and_later_ones_read_the_file(
        tmp_path: Path) -> None:
    spool = FileSpool(tmp_path)
    spool.open()
    stored = await spool.store(record("aaaaaaaaaaaaaaaaaaaa"), b"held\r\n")
    path = tmp_path / f"{stored.message_id}.msg"
    on_disk = path.read_bytes()
    path.write_bytes(on_disk.replace(b"held", b"disk"))  # same length, other CRC: shows which one is read
    assert await spool.load_body(stored.message_id) == b"held\r\n"
    with pytest.raises(SpoolError):
        await spool.load_body(stored.message_id)  # a retry reads the file (here: one that no longer matches)
    path.write_bytes(on_disk)
    assert await spool.load_body(stored.message_id) == b"held\r\n"
    reopened = FileSpool(tmp_path)
    reopened.open()
    assert await reopened.load_body(stored.message_id) == b"held\r\n"
    reopened.close()
    spool.close()


async def test_accepted_bodies_held_are_bounded_and_dropped_when_their_message_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engaged.spool.store.ACCEPTED_BODY_BYTES", 10)
    spool = FileSpool(tmp_path)
    spool.open()
    first = await spool.store(record("aaaaaaaaaaaaaaaaaaaa"), b"12345678\r\n")  # 10 octets: held
    second = await spool.store(record("bbbbbbbbbbbbbbbbbbbb"), b"x\r\n")  # over the bound: not held
    assert spool.accepted_bytes == 10
    await spool.finish(first.message_id)
    assert spool.accepted_bytes == 0
    assert await spool.load_body(second.message_id) == b"x\r\n"  # read from its file
    third = await spool.store(record("cccccccccccccccccccc"), b"y\r\n")
    assert spool.accepted_bytes == 3
    assert await spool.load_body(third.message_id) == b"y\r\n"
    assert spool.accepted_bytes == 0
    spool.close()
