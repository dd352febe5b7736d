"""The tracker's journal: each event is appended and fsync'd before its response, then loaded into the store.

Layout: `<data_dir>/tracker-journal/<n>.jsonl`, numbered segments of one SparkPost JSON event per line,
and a `.lock` (one tracker per journal). Only the flusher task writes: it takes every line queued
since its last write, writes them with one `write` + `fdatasync` on a dedicated thread (group commit)
and then wakes all their requests at once; a request is answered only after that. The loader reads
the durable bytes back in order, appends them to the EventStore in batches (at most one store
transaction per LOAD_INTERVAL while events keep coming; stores ignore an event_id they already
hold, so reading a line twice is harmless) and then forgets them: a loaded
segment that is sealed is unlinked, and the active one is rotated away once fully loaded and at
least `rotate_loaded_bytes` long, or whenever it reaches `segment_bytes`. What the journal holds at
start — a crash's leftovers — is loaded first. A failed write is truncated back so no torn line is
left for later lines to run into, and the next batch opens a fresh segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from engaged.errors import EngagedError
from engaged.events.model import Event, decode_event
from engaged.types import EventSink

log = logging.getLogger("engaged")

JOURNAL_DIR = "tracker-journal"
SEGMENT_BYTES = 16 * 1024 * 1024
ROTATE_LOADED_BYTES = 256 * 1024
READ_BYTES = 1024 * 1024
LOAD_INTERVAL = 0.05  # seconds between store transactions while events keep coming
_SUFFIX = ".jsonl"
_LOCK = ".lock"
_RETRY_MAX = 5.0


class JournalError(EngagedError):
    """The journal cannot be opened (another tracker holds it, or the directory is unusable)."""


@dataclass
class JournalStats:
    """Counters for metrics: events journaled, answered without a durable event, loaded, skipped."""

    appended: int = 0
    failed: int = 0
    batches: int = 0
    loaded: int = 0
    load_errors: int = 0
    corrupt_lines: int = 0


@dataclass
class _Segment:
    number: int
    path: Path
    durable: int  # bytes written and synced: the loader never reads past this
    sealed: bool
    fd: int = -1


@dataclass(order=True, frozen=True)
class Cursor:
    """A position in the journal: segment number and byte offset."""

    segment: int
    offset: int


@dataclass
class _Pending:
    lines: list[bytes] = field(default_factory=list)
    waiters: list[asyncio.Future[bool]] = field(default_factory=list)


class Journal:
    """Append-only, group-committed event journal in `directory` (see the module docstring)."""

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES,
                 rotate_loaded_bytes: int = ROTATE_LOADED_BYTES) -> None:
        self.directory = directory
        self.stats = JournalStats()
        self.written = asyncio.Event()  # set after every batch; the loader clears it
        self._segment_bytes = segment_bytes
        self._rotate_loaded_bytes = rotate_loaded_bytes
        self._segments: list[_Segment] = []
        self._pending = _Pending()
        self._flusher: asyncio.Task[None] | None = None
        self._broken = False
        self._rotate_due = False
        self._loaded = Cursor(0, 0)
        self._lock_fd = -1
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-writer")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-reader")

    async def open(self) -> int:
        """Lock the journal and start a fresh segment; returns the bytes left by an earlier run."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._lock)
        found = sorted((int(path.stem), path) for path in self.directory.glob(f"*{_SUFFIX}") if path.stem.isdigit())
        for number, path in found:
            self._segments.append(_Segment(number, path, path.stat().st_size, sealed=True))
        self._loaded = Cursor(found[0][0] if found else 1, 0)
        await self._rotate(found[-1][0] + 1 if found else 1)
        return sum(segment.durable for segment in self._segments)

    def _lock(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalError(f"{self.directory} is in use by another tracker") from None
        self._lock_fd = fd

    async def append(self, line: bytes) -> bool:
        """Journal one newline-terminated line; True once it is durable, False if the write failed."""
        if not self._segments:
            raise JournalError("the journal is not open")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._pending.lines.append(line)
        self._pending.waiters.append(waiter)
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return await waiter

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending.lines or self._rotate_due:
                active = self._segments[-1]
                if self._broken or self._rotate_due or active.durable >= self._segment_bytes:
                    self._rotate_due = False
                    try:
                        await self._rotate(active.number + 1)
                    except OSError as error:
                        log.error("tracker journal: cannot start a new segment: %s", error)
                    active = self._segments[-1]
                if not self._pending.lines:
                    continue
                batch, self._pending = self._pending, _Pending()
                data = b"".join(batch.lines)
                try:
                    await loop.run_in_executor(self._writer, _write, active.fd, active.durable, data)
                    active.durable += len(data)
                    self.stats.appended += len(batch.lines)
                    ok = True
                except OSError as error:
                    self._broken = True
                    self.stats.failed += len(batch.lines)
                    log.error("tracker journal write failed; %d answered event(s) not recorded: %s",
                              len(batch.lines), error)
                    ok = False
                self.stats.batches += 1
                for waiter in batch.waiters:
                    if not waiter.done():
                        waiter.set_result(ok)
                self.written.set()
        finally:
            self._flusher = None

    async def _rotate(self, number: int) -> None:
        loop = asyncio.get_running_loop()
        path = self.directory / f"{number:012d}{_SUFFIX}"
        fd = await loop.run_in_executor(self._writer, _create, path, self.directory)
        if self._segments and not self._segments[-1].sealed:
            previous = self._segments[-1]
            previous.sealed = True
            await loop.run_in_executor(self._writer, os.close, previous.fd)
            previous.fd = -1
        self._segments.append(_Segment(number, path, 0, sealed=False, fd=fd))
        self._broken = False
        await self._forget_loaded()

    async def read(self, max_bytes: int = READ_BYTES) -> tuple[list[bytes], Cursor]:
        """Durable whole lines after the loaded position (at most about `max_bytes`) and where they end."""
        loop = asyncio.get_running_loop()
        cursor = self._loaded
        for segment in self._segments:
            if segment.number < cursor.segment:
                continue
            offset = cursor.offset if segment.number == cursor.segment else 0
            end = segment.durable
            if offset >= end:
                if segment.sealed:
                    cursor = Cursor(segment.number + 1, 0)
                    continue
                return [], Cursor(segment.number, offset)
            size = min(end - offset, max_bytes)
            while True:
                chunk = await loop.run_in_executor(self._reader, _read, segment.path, offset, size)
                cut = chunk.rfind(b"\n") + 1
                if cut or offset + len(chunk) >= end:
                    break
                size *= 2  # a line longer than max_bytes
            if not cut:  # a torn last line from a crash: never answered, nothing to load
                self.stats.corrupt_lines += 1
                log.warning("tracker journal: skipping %d torn byte(s) at the end of %s", len(chunk), segment.path)
                return [], Cursor(segment.number, offset + len(chunk))
            return chunk[:cut - 1].split(b"\n"), Cursor(segment.number, offset + cut)
        return [], cursor

    @property
    def position(self) -> Cursor:
        """Where loading has got to: everything before it is in the store."""
        return self._loaded

    async def loaded(self, cursor: Cursor) -> None:
        """Everything before `cursor` is in the store: drop loaded segments, rotate a long loaded one."""
        self._loaded = self._past_sealed(max(self._loaded, cursor))
        active = self._segments[-1]
        if (cursor == Cursor(active.number, active.durable) and active.durable >= max(1, self._rotate_loaded_bytes)
                and not self._rotate_due):
            self._rotate_due = True
            if self._flusher is None:
                self._flusher = asyncio.get_running_loop().create_task(self._flush())
        await self._forget_loaded()

    async def _forget_loaded(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self._segments) > 1 and self._segments[0].sealed and self._is_loaded(self._segments[0]):
            segment = self._segments.pop(0)
            await loop.run_in_executor(self._writer, _unlink, segment.path)

    def _past_sealed(self, cursor: Cursor) -> Cursor:
        """`cursor` moved over the ends of sealed segments to the start of the next one."""
        for segment, following in zip(self._segments, self._segments[1:], strict=False):
            if segment.number == cursor.segment and segment.sealed and cursor.offset >= segment.durable:
                cursor = Cursor(following.number, 0)
        return cursor

    def _is_loaded(self, segment: _Segment) -> bool:
        return self._loaded >= Cursor(segment.number, segment.durable) or self._loaded.segment > segment.number

    @property
    def pending(self) -> bool:
        """Whether durable lines are waiting to be loaded."""
        if not self._segments:
            return False
        active = self._segments[-1]
        return self._past_sealed(self._loaded) < Cursor(active.number, active.durable)

    async def settled(self) -> None:
        """Return once every queued write and rotation is done."""
        while self._flusher is not None:
            await asyncio.wait({self._flusher})

    async def close(self) -> None:
        """Finish queued writes; remove the journal's files when everything is loaded; unlock."""
        await self.settled()
        loop = asyncio.get_running_loop()
        everything_loaded = not self.pending
        for segment in self._segments:
            if segment.fd >= 0:
                await loop.run_in_executor(self._writer, os.close, segment.fd)
                segment.fd = -1
            if everything_loaded:
                await loop.run_in_executor(self._writer, _unlink, segment.path)
        self._segments.clear()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)


def _create(path: Path, directory: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)  # the new name is durable before any answered event depends on it
    finally:
        os.close(directory_fd)
    return fd


def _write(fd: int, start: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fdatasync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


def _read(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class JournalLoader:
    """Moves journaled events into the EventStore in batches, retrying with backoff while it fails."""

    def __init__(self, journal: Journal, store: EventSink, *, interval: float = LOAD_INTERVAL) -> None:
        self._journal = journal
        self._store = store
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()

    async def load_available(self) -> int:
        """Load every durable line not yet loaded; returns the events appended. Store errors propagate."""
        async with self._lock:
            return await self._load_available()

    async def _load_available(self) -> int:
        journal = self._journal
        count = 0
        while True:
            lines, cursor = await journal.read()
            if not lines and cursor == journal.position:
                return count
            events: list[Event] = []
            for line in lines:
                try:
                    events.append(decode_event(line))
                except msgspec.DecodeError as error:
                    journal.stats.corrupt_lines += 1
                    log.warning("tracker journal: skipping a malformed line: %s", error)
            if events:
                await self._store.append(events)
            journal.stats.loaded += len(events)
            count += len(events)
            await journal.loaded(cursor)

    def start(self) -> None:
        """Run in the background until stop()."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            self._journal.written.clear()
            try:
                await self.load_available()
            except Exception as error:  # the store is down: keep everything in the journal and retry
                failures += 1
                self._journal.stats.load_errors += 1
                log.warning("tracker journal: event store append failed (attempt %d): %s", failures, error)
                await self._pause(min(_RETRY_MAX, 0.05 * 2 ** failures))
                continue
            failures = 0
            await self._journal.written.wait()
            await self._pause(self._interval)  # gather more group commits into one store transaction

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def stop(self) -> None:
        """Stop the background task, then make one last attempt to load what is left."""
        self._stopping = True
        self._stop.set()
        self._journal.written.set()
        if self._task is not None:
            await self._task
            self._task = None
        try:
            await self.load_available()
        except Exception as error:
            self._journal.stats.load_errors += 1
            log.warning("tracker journal: %s; the remaining events will be loaded at the next start", error)
