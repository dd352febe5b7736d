"""The journal loader: follows every tracker worker's journal and stores its events in large batches.

It runs once per node, in a process of its own (the node process of `engaged serve`), never beside
a listener. Each pass reads, for every `tracker-journal/<worker>/` directory (and segments left at
the top of `tracker-journal/` by older versions), the whole lines written after its position, appends
them to the EventStore in one transaction per batch, and only then moves its positions on. Stores
ignore an event_id they already hold, so reading a line twice (after the loader itself was killed)
stores nothing twice. A segment is removed once it is loaded and closed: a newer one exists in its
directory, or no writer holds the directory's lock (the worker stopped or died; a torn last line,
which was never answered, is skipped). Positions live in memory only: a restarted loader re-reads
what is still on disk, which is at most a segment or two per worker.

`lag_seconds` is how long the oldest event of the last batch waited between its answer and its
commit (0 when a pass finds nothing new); `lag_bytes` is what is journaled and not yet stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

import msgspec

from engaged.config import Config
from engaged.events.model import decode_event
from engaged.events.query import TRACK_TYPES, Row
from engaged.tracker.journal import JOURNAL_DIR, LOCK, segments
from engaged.types import EventSink

log = logging.getLogger("engaged")

LOAD_INTERVAL: Final = 0.05  # seconds between passes while idle (a pass that found work repeats at once)
BATCH_BYTES: Final = 4 * 1024 * 1024  # read per pass and store transaction, across every worker
CLOSED_CHECK_SECONDS: Final = 1.0  # how often a caught-up directory is checked for a stopped writer
_RETRY_MAX: Final = 5.0
_BUSY_BYTES: Final = 64 * 1024  # journaled and not yet loaded past this, a writer's open segment is not checked
_PEEK_BYTES: Final = 4096  # first read when checking what is left of a closed segment (lines are shorter)
_PEEK_MAX_BYTES: Final = 1 << 20  # later reads of that check, doubling up to this


@runtime_checkable
class RowSink(Protocol):
    """A store that takes events in row form, durable when `append_rows` returns (both event stores)."""

    async def append_rows(self, rows: Sequence[Row]) -> None: ...


class _Machine(msgspec.Struct):
    kind: str | None = None


class _Columns(msgspec.Struct, kw_only=True):
    """The indexed columns of a journal line; the line itself is stored as the event's body, as written."""

    type: str
    event_id: str
    timestamp: str
    message_id: str
    transmission_id: str
    campaign_id: str
    rcpt_to: str
    machine_engagement: _Machine | None = None


_columns_decoder = msgspec.json.Decoder(_Columns)
_JOURNALED_TYPES: Final = frozenset({*TRACK_TYPES, "list_unsubscribe", "amp_open", "amp_initial_open", "amp_click"})


def row_of_line(line: bytes) -> Row:
    """The store row of one journal line: its columns read, its bytes kept as the body (no decode of the
    whole event and no re-encoding). Raises ValueError (msgspec.DecodeError is one) on a malformed line."""
    columns = _columns_decoder.decode(line)
    if columns.type not in _JOURNALED_TYPES:
        raise ValueError(f"not a tracker event type: {columns.type!r}")
    machine = columns.machine_engagement
    return (columns.event_id, columns.type, float(columns.timestamp), columns.message_id, columns.transmission_id,
            columns.campaign_id, columns.rcpt_to, None if machine is None else machine.kind, line)


@dataclass
class LoaderStats:
    """Counters for metrics: events and batches stored, store failures, malformed and torn lines skipped."""

    loaded: int = 0
    batches: int = 0
    load_errors: int = 0
    corrupt_lines: int = 0


@dataclass
class _Follower:
    """The loader's position in one writer's directory."""

    directory: Path
    offsets: dict[int, int] = field(default_factory=dict)  # segment number -> bytes loaded
    checked: float = 0.0


@dataclass
class _Batch:
    lines: list[bytes] = field(default_factory=list)
    moves: list[tuple[_Follower, int, int]] = field(default_factory=list)  # (follower, segment, new offset)
    size: int = 0


class JournalLoader:
    """Moves every worker's journaled events under `data_dir/tracker-journal` into `store`."""

    def __init__(self, data_dir: Path, store: EventSink | RowSink, *, interval: float = LOAD_INTERVAL,
                 batch_bytes: int = BATCH_BYTES, clock: Callable[[], float] = time.time) -> None:
        self.root = data_dir / JOURNAL_DIR
        self.stats = LoaderStats()
        self.lag_seconds = 0.0
        self.lag_max_seconds = 0.0
        self.lag_bytes = 0
        # A store takes the lines as written; another sink (the bus publisher) gets them decoded.
        self._rows: RowSink | None = None
        self._events: EventSink | None = None
        if isinstance(store, RowSink):
            self._rows = store
        else:
            self._events = store
        self._interval = interval
        self._batch_bytes = batch_bytes
        self._clock = clock
        self._followers: dict[Path, _Follower] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()

    async def load_available(self) -> int:
        """Store every whole line journaled so far; returns the events appended. Store errors propagate."""
        async with self._lock:
            count = 0
            while True:
                loaded, more = await self._pass()
                count += loaded
                if not more:
                    return count

    async def _pass(self) -> tuple[int, bool]:
        """One batch: read, store, move on. Returns (events stored, whether more is waiting)."""
        batch = await asyncio.to_thread(self._collect)
        rows: list[Row] = []
        for line in batch.lines:
            try:
                rows.append(row_of_line(line))
            except ValueError as error:
                self.stats.corrupt_lines += 1
                log.warning("tracker journal: skipping a malformed line: %s", error)
        if rows:
            await self._store(rows)
            self.stats.batches += 1
            self.stats.loaded += len(rows)
            self.lag_seconds = max(0.0, self._clock() - rows[0][2])
            self.lag_max_seconds = max(self.lag_max_seconds, self.lag_seconds)
        elif not batch.moves:
            self.lag_seconds = 0.0
        for follower, number, offset in batch.moves:
            follower.offsets[number] = offset
        await asyncio.to_thread(self._forget_loaded)
        return len(rows), bool(batch.moves) and self.lag_bytes > 0

    async def _store(self, rows: list[Row]) -> None:
        if self._rows is not None:
            await self._rows.append_rows(rows)
        elif self._events is not None:
            await self._events.append([decode_event(row[-1]) for row in rows])

    def _collect(self) -> _Batch:
        """On a thread: whole lines after each position, up to the batch size, over every directory."""
        batch = _Batch()
        lag = 0
        for follower in self._scan():
            for number, path in segments(follower.directory):
                offset = follower.offsets.get(number, 0)
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    continue
                lag += max(0, size - offset)
                budget = self._batch_bytes - batch.size
                if size <= offset or budget <= 0:
                    continue
                read = _read(path, offset, min(size - offset, budget))
                chunk = _events(read)
                if len(chunk) < len(read):
                    lag -= size - offset - len(chunk)  # the zeros written ahead are no lag
                cut = chunk.rfind(b"\n") + 1
                if not cut:
                    continue  # a line still being written, a line longer than the budget, or a torn end
                batch.lines.extend(chunk[:cut - 1].split(b"\n"))
                batch.moves.append((follower, number, offset + cut))
                batch.size += cut
        self.lag_bytes = max(0, lag - batch.size)
        return batch

    def _scan(self) -> list[_Follower]:
        directories = [self.root]
        with contextlib.suppress(FileNotFoundError):
            directories += sorted(entry for entry in self.root.iterdir() if entry.is_dir() and entry.name.isdigit())
        for directory in directories:
            if directory not in self._followers:
                self._followers[directory] = _Follower(directory)
        return [self._followers[directory] for directory in directories]

    def _forget_loaded(self) -> None:
        """On a thread: remove loaded segments that no writer will append to again."""
        now = time.monotonic()
        for follower in list(self._followers.values()):
            found = segments(follower.directory)
            for number, path in found[:-1]:  # a newer segment exists: this one is closed
                if not _is_loaded(path, follower.offsets.get(number, 0), self.stats):
                    break  # lines wait here, so none of the newer segments is loaded either (read in order)
                _unlink(path)
                follower.offsets.pop(number, None)
            if not found or (now - follower.checked < CLOSED_CHECK_SECONDS and not self._stop.is_set()):
                continue
            last, path = found[-1]
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            offset = follower.offsets.get(last, 0)
            if size - offset > _BUSY_BYTES and len(_events(_read(path, offset, _BUSY_BYTES + 1))) > _BUSY_BYTES:
                continue  # still loading; check once caught up
            follower.checked = now
            self._remove_if_writer_gone(follower, last, path)

    def _remove_if_writer_gone(self, follower: _Follower, number: int, path: Path) -> None:
        lock = follower.directory / LOCK
        if follower.directory == self.root:
            fd = -1  # the old single-tracker layout: no writer appends there any more
        else:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = -1
            else:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    return  # a writer is alive: its segment stays open
        try:
            if _is_loaded(path, follower.offsets.get(number, 0), self.stats):
                _unlink(path)
                follower.offsets.pop(number, None)
        finally:
            if fd >= 0:
                os.close(fd)

    @property
    def pending(self) -> bool:
        """Whether journaled lines were waiting at the last pass."""
        return self.lag_bytes > 0

    def start(self) -> None:
        """Follow the journals in the background until stop()."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                async with self._lock:
                    _, more = await self._pass()
            except Exception as error:  # the store is down: everything stays journaled; retry
                failures += 1
                self.stats.load_errors += 1
                log.warning("tracker journal: event store append failed (attempt %d): %s", failures, error)
                await self._pause(min(_RETRY_MAX, 0.05 * 2 ** failures))
                continue
            failures = 0
            if not more:
                await self._pause(self._interval)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def stop(self) -> None:
        """Stop following, then make one last attempt to store what is journaled."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        try:
            await self.load_available()
        except Exception as error:
            self.stats.load_errors += 1
            log.warning("tracker journal: %s; the remaining events will be loaded at the next start", error)

    def metrics(self) -> dict[str, float]:
        """The loader's counters and gauges for the metrics endpoint."""
        return {"loader_loaded": self.stats.loaded, "loader_batches": self.stats.batches,
                "loader_load_errors": self.stats.load_errors, "loader_corrupt_lines": self.stats.corrupt_lines,
                "loader_lag_seconds": self.lag_seconds, "loader_lag_bytes": self.lag_bytes,
                "loader_lag_max_seconds": self.lag_max_seconds}


def _is_loaded(path: Path, offset: int, stats: LoaderStats) -> bool:
    """Whether a closed segment holds nothing after `offset` but, at most, a torn last line.

    Reads from `offset` only as far as it must: to the first line end (lines are waiting: the usual
    answer while a backlog loads), to the first zero, or to the end of the file. Reading every closed
    segment's rest at every pass made loading a backlog quadratic (150k events in 12 segments: 36.7 us
    an event; 600k in 48: 67.3 us)."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return False
    if size <= offset:
        return True
    torn, peek = 0, _PEEK_BYTES
    while offset + torn < size:
        try:
            piece = _read(path, offset + torn, min(peek, size - offset - torn))
        except FileNotFoundError:  # removed since the stat (by another loader after a restart)
            return False
        events = _events(piece)
        if b"\n" in events:
            return False
        torn += len(events)
        if len(events) < len(piece) or not piece:
            break  # the zeros its writer wrote ahead (or the end, cut meanwhile): nothing follows
        peek = min(2 * peek, _PEEK_MAX_BYTES)
    if torn:
        stats.corrupt_lines += 1
        log.warning("tracker journal: skipping %d torn byte(s) at the end of %s", torn, path)
    return True


def _read(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def _events(data: bytes) -> bytes:
    """What a read of a segment holds before the zeros its writer wrote ahead (engaged.tracker.journal)."""
    end = data.find(b"\0")
    return data if end < 0 else data[:end]


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


METRICS_FILE: Final = "tracker-loader.json"
METRICS_EVERY: Final = 0.5


async def follow(loader: JournalLoader, stop: asyncio.Event, metrics_path: Path | None = None) -> None:
    """Run `loader` until `stop` is set, then store what is left; its metrics go to `metrics_path` meanwhile.

    The node process's entry point: the store must be open, and stays open until this returns.
    """
    loader.start()
    failing = False
    try:
        while not stop.is_set():
            if metrics_path is not None:
                failing = await asyncio.to_thread(_publish, metrics_path, loader.metrics(), failing)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), METRICS_EVERY)
    finally:
        await loader.stop()
        if metrics_path is not None:
            _publish(metrics_path, loader.metrics(), failing)


def _publish(path: Path, values: dict[str, float], failing: bool) -> bool:
    """write_metrics, logged instead of raised: a full disk must not stop the loading (issue 15); True if it
    failed. Only the first failure of a run of them is logged."""
    try:
        write_metrics(path, values)
    except OSError as error:
        if not failing:
            log.warning("tracker loader: cannot write its metrics to %s (%s); loading goes on", path, error)
        return True
    return False


def write_metrics(path: Path, values: dict[str, float]) -> None:
    """Replace the metrics file (no fsync: it is a gauge, not a record)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(msgspec.json.encode(values))
    os.replace(temporary, path)


def read_metrics(path: Path) -> dict[str, float]:
    """The loader's last published metrics ({} before it has published any)."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=dict[str, float])
    except (OSError, msgspec.DecodeError):
        return {}


class LoaderProcess:
    """The journal loader in a child process (`python -m engaged tracker-loader`, the config on stdin).

    Used by `engaged serve` until the supervisor's node process hosts `follow` itself.
    """

    def __init__(self, config_json: bytes, data_dir: Path) -> None:
        self._config_json = config_json
        self.metrics_path = data_dir / METRICS_FILE
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        process = self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engaged", "tracker-loader", stdin=asyncio.subprocess.PIPE)
        if process.stdin is None:
            raise RuntimeError("no pipe to the loader process")
        process.stdin.write(self._config_json)
        await process.stdin.drain()
        process.stdin.close()
        log.info("tracker journal loader running (pid %d)", process.pid)

    async def stop(self) -> int:
        """SIGTERM, then wait for its last load; returns its exit status."""
        process, self._process = self._process, None
        if process is None:
            return 0
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        return await process.wait()

    def metrics(self) -> dict[str, float]:
        return read_metrics(self.metrics_path)


async def run_process(config: Config) -> None:
    """The loader's own process (`engaged tracker-loader`): follow the journals into the store until SIGTERM.

    It also stops, after a last load, when its parent goes away (a SIGKILLed `engaged serve`). It opens
    the configured store itself, importing only the stores, so it starts in a fraction of serve's time.
    """
    from engaged.events.store_postgres import PostgresEventStore
    from engaged.events.store_sqlite import SqliteEventStore

    data = config.data_path
    store: EventSink
    if config.events.store == "sqlite":
        sqlite = SqliteEventStore(data / "events.sqlite3")
        await sqlite.open()
        store, close = sqlite, sqlite.close
    else:
        postgres = PostgresEventStore(config.events.store)
        await postgres.open()
        store, close = postgres, postgres.close
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()

    async def orphaned() -> None:
        while not stop.is_set():
            if os.getppid() != parent:
                stop.set()
            await asyncio.sleep(1.0)

    watcher = loop.create_task(orphaned())
    try:
        await follow(JournalLoader(data, store), stop, data / METRICS_FILE)
    finally:
        watcher.cancel()
        await close()
