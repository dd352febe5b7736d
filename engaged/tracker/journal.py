"""A tracker worker's journal: each event is appended and fdatasync'd before its response is sent.

Layout: `<data_dir>/tracker-journal/<worker>/<n>.jsonl`, numbered segments of one SparkPost JSON event
per line, and a `.lock` that the worker holds while it writes (one writer per directory). Only the
flusher writes: it takes every line queued since its last batch, writes them with one `write` (into
the page cache, on the loop) and has them synced by an engaged.tracker.datasync syncer (Linux AIO, or
a thread), one batch at a time (group commit); when the sync completes it wakes all their requests at
once (the lines of one batch share one future: one result to set, whatever the batch's size); a
request is answered only after that. A segment that reaches `segment_bytes` is closed and the next
batch opens a new one. A failed write or sync is truncated back, so no torn line is left for later
lines to run into, and the next batch opens a fresh segment.

Events overwrite zeros written ahead: between batches the journal keeps `ZEROED_AHEAD` bytes of zeros
written and synced past the last event (opening a new segment, which fsyncs the directory, runs on a
thread meanwhile), so an event's fdatasync changes no metadata (no size, no
block allocation) and needs no commit of the filesystem's journal, which waits for every other
writer's data on the filesystem (measured here: append p99 6.7 ms, over zeros 0.2 ms). A segment's
events end at its first NUL byte (JSON lines never hold one); closing a segment cuts the zeros off.

This process never reads the journal back: the journal loader (engaged.tracker.loader), in another
process, follows every worker's directory, stores what it reads and removes what it has stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engaged.errors import EngagedError
from engaged.tracker.datasync import UNSUPPORTED, DataSync, ThreadDataSync, open_datasync

JOURNAL_DIR: Final = "tracker-journal"
SEGMENT_BYTES: Final = 16 * 1024 * 1024
SUFFIX: Final = ".jsonl"
LOCK: Final = ".lock"
LOCK_WAIT_SECONDS: Final = 2.0  # the loader holds a dead writer's lock for a few file operations at most
ZEROED_AHEAD: Final = 1 << 20
_ZEROS: Final = bytes(ZEROED_AHEAD)

log = logging.getLogger("engaged")


class JournalError(EngagedError):
    """The journal cannot be opened (another tracker holds it, or the directory is unusable)."""


@dataclass
class JournalStats:
    """Counters for metrics: events journaled, answered without a durable event, write+fdatasync batches."""

    appended: int = 0
    failed: int = 0
    batches: int = 0


def worker_directory(data_dir: Path, worker: int) -> Path:
    """The journal directory of tracker worker `worker`."""
    return data_dir / JOURNAL_DIR / str(worker)


def segments(directory: Path) -> list[tuple[int, Path]]:
    """The segments in `directory` as (number, path), oldest first (names `<n>.jsonl`, padded or not)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(int(name[:-len(SUFFIX)]), name) for name in names
             if name.endswith(SUFFIX) and name[:-len(SUFFIX)].isdigit()]
    return [(number, directory / name) for number, name in sorted(found)]


def segment_path(directory: Path, number: int) -> Path:
    """Where this journal writes segment `number`."""
    return directory / f"{number:012d}{SUFFIX}"


class Journal:
    """Append-only, group-committed event journal in `directory` (see the module docstring)."""

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES, sync: bool = True,
                 aio: bool = True) -> None:
        """`sync=False` skips fdatasync: for measuring what the disk costs (bench/tracker.py), never for serving.
        `aio=False` syncs on a thread even where Linux AIO is available."""
        self.directory = directory
        self._sync = sync
        self.stats = JournalStats()
        self._segment_bytes = segment_bytes
        self._lines: list[bytes] = []
        self._waiter: asyncio.Future[bool] | None = None  # the future of the lines queued since the last write
        self._flushing = False
        self._broken = False
        self._number = 0
        self._fd = -1
        self._size = 0
        self._zeroed = 0  # the segment holds zeros from _size up to here
        self._lock_fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._aio = aio
        self._syncer: DataSync | None = None

    @property
    def syncer(self) -> DataSync | None:
        """What syncs the batches (AioDataSync or ThreadDataSync) while the journal is open."""
        return self._syncer

    async def open(self) -> None:
        """Lock the directory and start a fresh segment after whatever an earlier run left."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open)
        self._syncer = open_datasync(self._loop, self._aio)

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise JournalError(f"{self.directory} is in use by another tracker") from None
                time.sleep(0.01)
        self._lock_fd = fd
        found = segments(self.directory)
        self._start_segment((found[-1][0] if found else 0) + 1)

    def _start_segment(self, number: int) -> None:
        path = segment_path(self.directory, number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)  # writes go at _size: no O_APPEND
        _fsync_directory(self.directory)  # the name is durable before any answered event depends on it
        old = self._fd
        self._cut_zeros()
        # This runs on a thread (_rotate) while `append` reads _fd on the loop: it never sees -1 here.
        self._fd, self._number, self._size, self._zeroed, self._broken = fd, number, 0, 0, False
        if old >= 0:
            os.close(old)

    def _cut_zeros(self) -> None:
        """Cut the zeros written ahead off the open segment (the loader stops at the first zero all the same)."""
        if self._fd >= 0 and self._zeroed > self._size and not self._broken:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)

    def _close_segment(self) -> None:
        if self._fd < 0:
            return
        self._cut_zeros()
        os.close(self._fd)
        self._fd = -1

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    def append(self, line: bytes) -> asyncio.Future[bool]:
        """Queue one newline-terminated line; the future is True once it is durable, False if the write failed.

        Every line of one batch gets the same future (callers must not cancel it)."""
        loop = self._loop
        if loop is None or self._fd < 0:
            raise JournalError("the journal is not open")
        self._lines.append(line)
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = loop.create_future()
        if not self._flushing:
            self._flushing = True
            self._idle.clear()
            loop.call_soon(self._flush)  # lines queued in this loop iteration share the write
        return waiter

    def _flush(self) -> None:
        """Write the lines queued since the last batch and start their sync (the previous one has completed)."""
        lines, waiter = self._lines, self._waiter
        self._lines, self._waiter = [], None
        if waiter is None:
            self._next()
            return
        count = len(lines)
        try:
            if self._broken or self._size >= self._segment_bytes:  # only if _rotate could not open one
                self._start_segment(self._number + 1)
            start, data = self._size, b"".join(lines)
            _write(self._fd, start, data)
        except OSError as error:
            self._broken = True
            self._written(count, waiter, error)
            return
        self._size += len(data)
        if not self._sync:
            self._written(count, waiter, None)
            return
        self._sync_then(lambda code: self._synced(start, count, waiter, code))

    def _sync_then(self, done: Callable[[int], None]) -> None:
        """fdatasync the segment through the syncer, then `done(errno or 0)` on the loop.

        AIO that cannot start the sync (a seccomp filter, no resources: whatever io_submit refuses) or
        reports UNSUPPORTED for this file hands the journal to a thread, which does the sync itself."""
        syncer = self._syncer
        if syncer is None:
            done(errno.EBADF)
            return
        try:
            syncer.submit(self._fd, lambda code: self._fall_back_or(code, done))
        except OSError as error:
            if isinstance(syncer, ThreadDataSync):
                done(error.errno or errno.EIO)
                return
            self._fall_back(error.errno or errno.EIO, done)

    def _fall_back_or(self, code: int, done: Callable[[int], None]) -> None:
        """`done(code)`, unless AIO cannot sync this file: then the same sync again on a thread, from now on."""
        if code in UNSUPPORTED and not isinstance(self._syncer, ThreadDataSync):
            self._fall_back(code, done)
        else:
            done(code)

    def _fall_back(self, code: int, done: Callable[[int], None]) -> None:
        log.warning("tracker journal: AIO cannot sync %s (%s); syncing on a thread", self.directory,
                    os.strerror(code))
        if self._syncer is not None:
            self._syncer.close()
        self._syncer = ThreadDataSync(self._loop or asyncio.get_running_loop())
        self._sync_then(done)

    def _synced(self, start: int, count: int, waiter: asyncio.Future[bool], code: int) -> None:
        if not code:
            self._written(count, waiter, None)
            return
        with contextlib.suppress(OSError):  # no torn or unsynced line left for later lines to run into
            os.ftruncate(self._fd, start)
            os.lseek(self._fd, start, os.SEEK_SET)
        self._size = self._zeroed = start
        self._broken = True
        self._written(count, waiter, OSError(code, os.strerror(code)))

    def _written(self, count: int, waiter: asyncio.Future[bool], error: OSError | None) -> None:
        self.stats.batches += 1
        if error is None:
            self.stats.appended += count
        else:
            self.stats.failed += count
            log.error("tracker journal write failed; %d answered event(s) not recorded: %s", count, error)
        if not waiter.done():
            waiter.set_result(error is None)
        self._between_batches()

    def _between_batches(self) -> None:
        """Before the next batch: open a new segment if this one is full or broken, keep zeros ahead."""
        if self._broken or self._size >= self._segment_bytes:
            loop = self._loop or asyncio.get_running_loop()
            loop.run_in_executor(None, self._rotate).add_done_callback(self._rotated)
        elif self._sync and self._zeroed - self._size < ZEROED_AHEAD // 2:
            self._zero_ahead()
        else:
            self._next()

    def _rotate(self) -> None:
        """On a thread, as opening a segment fsyncs the directory (the loop writes nothing meanwhile)."""
        try:
            self._start_segment(self._number + 1)
        except OSError as error:  # the next batch tries again
            log.error("tracker journal: cannot open a new segment: %s", error)

    def _rotated(self, _: asyncio.Future[None]) -> None:
        if self._broken or self._size >= self._segment_bytes or not self._sync:
            self._next()
        else:
            self._zero_ahead()

    def _zero_ahead(self) -> None:
        """Write ZEROED_AHEAD zeros past the events (into the page cache: ~0.2 ms) and sync them."""
        start = max(self._zeroed, self._size)
        try:
            os.pwrite(self._fd, _ZEROS, start)
        except OSError as error:
            self._zeroed_or_not(start, error.errno or errno.EIO)
            return
        self._sync_then(lambda code: self._zeroed_or_not(start, code))

    def _zeroed_or_not(self, start: int, code: int) -> None:
        if code:  # events are appended as before; only their fdatasync costs more
            log.warning("tracker journal: could not write zeros ahead: %s", os.strerror(code))
        else:
            self._zeroed = start + len(_ZEROS)
        self._next()

    def _next(self) -> None:
        """The batch (and its zeros) are done: write what queued meanwhile, or become idle."""
        if self._lines:
            self._flush()
        else:
            self._flushing = False
            self._idle.set()

    async def settled(self) -> None:
        """Return once every queued line is written (or has failed)."""
        await self._idle.wait()

    async def close(self) -> None:
        """Finish queued writes, close the segment and unlock (the loader removes the files once stored)."""
        await self.settled()
        if self._syncer is not None:
            syncer, self._syncer = self._syncer, None
            await asyncio.to_thread(syncer.close)
        self._close_segment()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _fsync_directory(directory: Path) -> None:
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def _write(fd: int, start: int, data: bytes) -> None:
    """All of `data` at the file position (which is `start`); on failure cut back to `start` and raise."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
            os.lseek(fd, start, os.SEEK_SET)
        raise
