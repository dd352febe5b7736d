"""A tracker alone in a process, for the kill test: `python tracker_child.py DATA_DIR`; SIGTERM stops it."""

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
from engaged.tracker.service import TrackerService


async def main(data_dir: Path) -> None:
    config = Config(data_dir=str(data_dir), engagement_tracker=EngagementTrackerConfig(listen="127.0.0.1:0"))
    store = SqliteEventStore(data_dir / "events.sqlite3")
    await store.open()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)  # before start logs its address
    service = TrackerService(config, store, load_keyring(data_dir), ids=EventIdGenerator())
    await service.start()
    await stop.wait()
    await service.stop()
    await store.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="engaged: %(message)s", stream=sys.stderr)
    uvloop.run(main(Path(sys.argv[1])))
