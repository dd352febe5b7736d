"""Shared by the bus tests: a sample event, the publishing store opened as a worker opens it, and an async wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from engaged.bus.connection import BusConnection
from engaged.bus.publisher import BusEventStore
from engaged.config import BusConfig
from engaged.events.model import OpenEvent
from engaged.events.store_sqlite import SqliteEventStore


def open_event(n: int) -> OpenEvent:
    return OpenEvent(
        event_id=str(7_100_000_000_000_000 + n), timestamp=f"{1_700_000_000 + n}.000", message_id=f"m{n}",
        transmission_id="t", campaign_id="c", customer_id="1", rcpt_to="ann@example.com",
        raw_rcpt_to="ann@example.com", rcpt_meta={}, rcpt_tags=[],
    )


class Publisher(BusEventStore):
    """The publishing store over a SQLite store, opening and closing both as a worker does."""

    def __init__(self, path: Path, bus: BusConfig) -> None:
        self.sqlite = SqliteEventStore(path)
        self.connection = BusConnection(bus)
        super().__init__(self.sqlite, self.connection)

    async def open(self) -> None:
        await self.sqlite.open()
        self.connection.start()

    async def close(self) -> None:
        await self.connection.stop()
        await self.sqlite.close()


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)
