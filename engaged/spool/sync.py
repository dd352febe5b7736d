"""Group commit for durable writes: many writers, one fsync (directory) or one syncfs (filesystem)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

SyncMode = Literal["syncfs", "fsync", "none"]


class GroupSync:
    """Coalesces a sync action: every caller waits for one run that started after its own write.

    While a run is in flight, new callers queue; the next run covers all of them, so N concurrent
    writers cost one sync instead of N.
    """

    def __init__(self, action: Callable[[], None], *, name: str) -> None:
        self._action = action
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._requested = 0
        self._done = 0
        self._running: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def sync(self) -> None:
        """Return once a sync that began after this call has finished; raises OSError if it failed."""
        self._requested += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._requested, future))
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._run())
        await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._done < self._requested:
            target = self._requested
            error: OSError | None = None
            try:
                await loop.run_in_executor(self._executor, self._action)
            except OSError as failure:
                error = failure
            self._done = target
            ready = [f for t, f in self._waiters if t <= target]
            self._waiters = [(t, f) for t, f in self._waiters if t > target]
            for future in ready:
                if future.done():
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(OSError(error.errno, f"sync failed: {error.strerror}"))

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def fsync_dir(path: Path) -> None:
    """fsync a directory, making the renames and creations in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    function = getattr(libc, "syncfs", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_SYNCFS = _load_syncfs()


def has_syncfs() -> bool:
    """Whether this platform offers syncfs(2) (Linux)."""
    return _SYNCFS is not None


def syncfs(path: Path) -> None:
    """Commit every dirty page and metadata change of the filesystem holding `path` (one journal commit)."""
    if _SYNCFS is None:
        raise OSError(38, "syncfs is not available")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
    finally:
        os.close(fd)


class Durability:
    """How writes under data_dir become durable, shared by the spool and capture.

    - `syncfs` (default on Linux): files are written and renamed without their own fsync, then one
      syncfs(2) of the filesystem, group-committed across every concurrent writer, makes them all
      durable. Best throughput; on a filesystem shared with heavy unrelated writers it also waits
      for their data.
    - `fsync`: each file is fsync'd before its rename and its directory afterwards (directory fsyncs
      are group-committed).
    - `none`: nothing is forced to disk; survives a process crash, not a power loss.
    """

    def __init__(self, mode: SyncMode, data_dir: Path) -> None:
        if mode == "syncfs" and not has_syncfs():
            mode = "fsync"
        self.mode: SyncMode = mode
        self._data_dir = data_dir
        self._groups: dict[Path, GroupSync] = {}

    @property
    def fsync_files(self) -> bool:
        """Whether each file must be fsync'd by its writer before it is renamed into place."""
        return self.mode == "fsync"

    async def commit(self, directory: Path) -> None:
        """Make every file written and renamed into `directory` so far durable."""
        if self.mode == "none":
            return
        key = self._data_dir if self.mode == "syncfs" else directory
        group = self._groups.get(key)
        if group is None:
            action: Callable[[], None] = (lambda: syncfs(key)) if self.mode == "syncfs" else (lambda: fsync_dir(key))
            group = self._groups[key] = GroupSync(action, name=f"sync-{key.name}")
        await group.sync()

    def close(self) -> None:
        for group in self._groups.values():
            group.close()
        self._groups.clear()
