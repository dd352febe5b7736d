"""Metrics across processes: the node process exports what the workers count.

- Event counters (`engaged_events_*_total`) come from the store itself: the node follows it by
  `seq` from where it stood when the node started and counts every event, whichever process
  stored it (the workers' own commit hooks count nothing the node can see).
- Counters that live in a worker (the tracker's) are written by it every second to
  `data_dir/run/<name>.json`; the node sums the files at each scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from engaged.prometheus import Metrics
from engaged.types import EventQuery, EventReader

log = logging.getLogger("engaged")

RUN_DIR = "run"
INTERVAL = 1.0
_PAGE = 1000
_decoder = msgspec.json.Decoder(dict[str, int])


class CounterFile:
    """Writes `source()` to `directory/<name>.json` every `interval` seconds and once more at stop()."""

    def __init__(self, directory: Path, name: str, source: Callable[[], Mapping[str, int]], *,
                 interval: float = INTERVAL) -> None:
        self._path = directory / f"{name}.json"
        self._source = source
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.write()
            await asyncio.sleep(self._interval)

    def write(self) -> None:
        tmp = self._path.with_name(f".{self._path.name}.tmp")
        try:
            tmp.write_bytes(msgspec.json.encode(dict(self._source())))
            os.replace(tmp, self._path)
        except OSError as error:
            log.warning("cannot write %s: %s", self._path, error)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self.write()


def summed(directory: Path, prefix: str) -> dict[str, int]:
    """The sum of every `directory/<prefix>*.json` counter file (unreadable files are skipped)."""
    total: dict[str, int] = {}
    for path in directory.glob(f"{prefix}*.json"):
        try:
            counters = _decoder.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError):
            continue
        for name, value in counters.items():
            total[name] = total.get(name, 0) + value
    return total


class EventCounter:
    """Counts every event stored from now on into `metrics` (by following the store by seq)."""

    def __init__(self, store: EventReader, metrics: Metrics, *, poll: float = INTERVAL) -> None:
        self._store = store
        self._metrics = metrics
        self._poll = poll
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cursor = await self._store.head()
        self._task = asyncio.get_running_loop().create_task(self._run(cursor))

    async def _run(self, cursor: int) -> None:
        while True:
            try:
                page = await self._store.query(EventQuery(after_seq=cursor, limit=_PAGE))
            except Exception as error:  # the store is down for a moment: count later
                log.warning("metrics: cannot read new events yet: %s", error)
                page = []
            for stored in page:
                self._metrics.observe_event(stored.event)
            if page:
                cursor = page[-1].seq
            if len(page) < _PAGE:
                await asyncio.sleep(self._poll)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
