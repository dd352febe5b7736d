"""Group commit: concurrent writers share syncs; failures reach every waiter; the modes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from engaged.spool.sync import Durability, GroupSync, has_syncfs, syncfs


async def test_concurrent_callers_share_a_few_syncs() -> None:
    runs: list[int] = []
    gate = threading.Event()

    def action() -> None:
        gate.wait(5)
        runs.append(1)

    group = GroupSync(action, name="test")
    first = asyncio.ensure_future(group.sync())
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group.sync()) for _ in range(50)]
    gate.set()
    await asyncio.gather(first, *rest)
    assert 1 <= len(runs) <= 2  # the first run, then one run for everyone who queued behind it
    group.close()


async def test_a_caller_waits_for_a_sync_that_starts_after_its_call() -> None:
    # A write made while a sync runs is not covered by that sync: its caller must get a later one.
    gate = threading.Event()
    written = [0]
    covered: list[int] = []  # what each sync run saw written when it started

    def action() -> None:
        covered.append(written[0])
        gate.wait(5)

    group = GroupSync(action, name="test")
    first = asyncio.ensure_future(group.sync())
    deadline = asyncio.get_running_loop().time() + 5
    while not covered:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the first sync never started")
        await asyncio.sleep(0.001)
    written[0] = 1
    second = asyncio.ensure_future(group.sync())
    await asyncio.sleep(0)
    assert not second.done()
    gate.set()
    await asyncio.gather(first, second)
    assert covered == [0, 1]
    group.close()


@pytest.mark.skipif(not has_syncfs(), reason="syncfs(2) is Linux-only")
def test_syncfs_runs_on_a_real_directory_and_refuses_a_missing_one(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    syncfs(tmp_path)
    with pytest.raises(OSError):
        syncfs(tmp_path / "missing")


async def test_a_failed_sync_fails_every_waiter() -> None:
    def action() -> None:
        raise OSError(28, "No space left on device")

    group = GroupSync(action, name="test")
    results = await asyncio.gather(*(group.sync() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, OSError) and r.errno == 28 for r in results)
    group.close()


@pytest.mark.parametrize("mode", ["syncfs", "fsync", "none"])
async def test_every_mode_commits(tmp_path: Path, mode: str) -> None:
    durability = Durability(mode, tmp_path)  # type: ignore[arg-type]
    (tmp_path / "f").write_bytes(b"x")
    await durability.commit(tmp_path)
    assert durability.fsync_files is (durability.mode == "fsync")
    durability.close()
