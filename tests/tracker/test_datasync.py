"""Tests of the journal's syncers: Linux AIO fdatasync completed on the loop, and the thread fallback."""

from __future__ import annotations

import asyncio
import errno
import os
import platform
from pathlib import Path

import pytest

from engaged.tracker.datasync import AioDataSync, DataSync, ThreadDataSync, open_datasync

AIO_MACHINE = platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64")


async def sync(syncer: DataSync, fd: int) -> int:
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    syncer.submit(fd, done.set_result)
    return await asyncio.wait_for(done, 30)


@pytest.fixture(params=["aio", "thread"])
async def syncer(request: pytest.FixtureRequest) -> DataSync:
    loop = asyncio.get_running_loop()
    if request.param == "aio":
        if not AIO_MACHINE:
            pytest.skip("Linux AIO syscalls are only wired for x86_64 and aarch64 Linux")
        return AioDataSync(loop)
    return ThreadDataSync(loop)


async def test_a_sync_of_written_data_reports_success_on_the_loop(syncer: DataSync, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "data", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for n in range(50):  # the same context and eventfd serve one sync after another
            os.write(fd, b"line %d\n" % n)
            assert await sync(syncer, fd) == 0
    finally:
        os.close(fd)
        syncer.close()
    assert (tmp_path / "data").read_bytes() == b"".join(b"line %d\n" % n for n in range(50))


async def test_a_sync_of_a_closed_descriptor_fails_with_ebadf(syncer: DataSync, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "data", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    try:
        try:
            code = await sync(syncer, fd)
        except OSError as error:  # AIO refuses it at io_submit
            code = error.errno or 0
        assert code == errno.EBADF
    finally:
        syncer.close()


@pytest.mark.skipif(not AIO_MACHINE, reason="Linux AIO syscalls are only wired for x86_64 and aarch64 Linux")
async def test_aio_takes_one_sync_at_a_time(tmp_path: Path) -> None:
    syncer = AioDataSync(asyncio.get_running_loop())
    fd = os.open(tmp_path / "data", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        syncer.submit(fd, done.set_result)
        with pytest.raises(RuntimeError, match="already in flight"):
            syncer.submit(fd, done.set_result)
        assert await done == 0
    finally:
        os.close(fd)
        syncer.close()


@pytest.mark.skipif(not AIO_MACHINE, reason="Linux AIO syscalls are only wired for x86_64 and aarch64 Linux")
async def test_open_datasync_prefers_aio_and_falls_back_to_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    chosen = open_datasync(loop)
    assert isinstance(chosen, AioDataSync)
    chosen.close()
    unchosen = open_datasync(loop, prefer_aio=False)
    assert isinstance(unchosen, ThreadDataSync)
    unchosen.close()
    monkeypatch.setattr(platform, "machine", lambda: "sparc64")  # no syscall numbers for it
    fallback = open_datasync(loop)
    assert isinstance(fallback, ThreadDataSync)
    fallback.close()
