"""A tracker worker or the journal loader alone in a process, for the kill tests; SIGTERM stops either.

`python tracker_child.py worker DATA_DIR N [PORT]`: tracker worker N on 127.0.0.1:PORT (0: any) with
SO_REUSEPORT, journal only. `python tracker_child.py loader DATA_DIR`: the loader into DATA_DIR's SQLite.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import uvloop

from engaged.config import Config, EngagementTrackerConfig
from engaged.events.ids import EventIdGenerator
from engaged.events.store_sqlite import SqliteEventStore
from engaged.keys import load_keyring
from engaged.tracker.loader import JournalLoader, follow
from engaged.tracker.service import TrackerService


def stop_on_sigterm() -> asyncio.Event:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)  # before start logs its address
    return stop


async def worker(data_dir: Path, number: int, port: int) -> None:
    config = Config(data_dir=str(data_dir), engagement_tracker=EngagementTrackerConfig(listen=f"127.0.0.1:{port}"))
    service = TrackerService(config, load_keyring(data_dir), ids=EventIdGenerator(), worker=number, reuse_port=True)
    stop = stop_on_sigterm()
    await service.start()
    await stop.wait()
    await service.stop()


async def loader(data_dir: Path) -> None:
    store = SqliteEventStore(data_dir / "events.sqlite3")
    await store.open()
    stop = stop_on_sigterm()
    logging.getLogger("engaged").info("loader following %s", data_dir)
    await follow(JournalLoader(data_dir, store), stop)
    await store.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="engaged: %(message)s", stream=sys.stderr)
    role, data = sys.argv[1], Path(sys.argv[2])
    if role == "worker":
        uvloop.run(worker(data, int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0))
    else:
        uvloop.run(loader(data))
