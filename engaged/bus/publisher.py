"""BusEventStore: an event log whose appends go to the bus; reads go to the shared store behind it.

On `smtp` and `tracker` nodes with a [bus], every event the node would store is published to
`engaged.events.<type>` once it is durable locally (the spool record or log, the tracker journal), and
`append` returns only when JetStream has acknowledged every event of the batch (stored on a quorum of
its replicas). Any failure raises BusUnavailable (a StoreError): the caller keeps its local copy, as it
does when the store is down, and appends the same events (same event ids) again later. A repeat within
the stream's duplicate window is dropped by JetStream (`Nats-Msg-Id`); after it, the store keeps one row
per event_id anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Final

import nats.js.errors
from nats.js.api import PubAck

from engaged.bus.connection import BusConnection, BusUnavailable
from engaged.bus.stream import headers_of, subject_of
from engaged.events.model import Event
from engaged.events.wire import api_json
from engaged.types import AppendSignal, EventLog, EventQuery, StoredEvent

log = logging.getLogger("engaged")

MAX_HELD_IDS: Final = 1_000_000
"""Event ids remembered as held (published without an ack, waiting locally); past it the gauge saturates."""
SETTLE_WAIT: Final = 30.0
"""Seconds a restarted smtp node waits for the store to catch up with the stream before resuming its spool."""


class BusEventStore:
    """Publishes appends to the bus (see the module docstring); reads go to `store`.

    The caller opens and closes `store` and starts and stops the bus connection.
    """

    def __init__(self, store: EventLog, bus: BusConnection) -> None:
        self._store = store
        self._bus = bus
        self._stream = bus.config.stream
        self._timeout = bus.config.publish_timeout
        self._held: set[str] = set()
        self.published = 0
        self.failures = 0

    @property
    def held(self) -> int:
        """Events whose publish failed and that wait in a local durable copy to be published again."""
        return len(self._held)

    def stats(self) -> dict[str, int]:
        return {"held": self.held, "published": self.published, "failures": self.failures}

    async def append(self, events: Sequence[Event]) -> None:
        if not events:
            return
        try:
            acks = await self._publish(events)
        except BaseException as error:
            self.failures += 1
            self._hold(events)
            if isinstance(error, nats.js.errors.NoStreamResponseError | nats.js.errors.NotFoundError):
                self._bus.recheck()
            if isinstance(error, BusUnavailable):
                raise
            if isinstance(error, Exception):
                raise BusUnavailable(f"bus: publish failed: {type(error).__name__}: {error}") from error
            raise
        self.published += sum(1 for ack in acks if not ack.duplicate)
        if self._held:
            for event in events:
                self._held.discard(event.event_id)

    async def _publish(self, events: Sequence[Event]) -> list[PubAck]:
        js = self._bus.jetstream()
        futures: list[asyncio.Future[PubAck]] = []
        try:
            async with asyncio.timeout(self._timeout):
                for event in events:
                    futures.append(await js.publish_async(subject_of(event), api_json(event),
                                                          stream=self._stream, headers=headers_of(event)))
                return list(await asyncio.gather(*futures))
        except TimeoutError:
            raise BusUnavailable(f"bus: no ack for {len(events)} event(s) within {self._timeout:.1f} s") from None
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
                else:
                    with contextlib.suppress(BaseException):
                        future.exception()

    async def settle(self, timeout: float = SETTLE_WAIT) -> bool:
        """Wait until the store holds every event the stream held when called; False after `timeout`.

        A restarted smtp node calls it before it resumes its spool: delivery adopts the outcomes the store
        holds for a resumed message, and one published just before a crash may still be in the stream.
        Done when the durable consumer's ack floor reaches the stream's last sequence (or nothing is pending).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._bus.ready.wait(), timeout)
        last = -1
        while loop.time() < deadline:
            try:
                js = self._bus.jetstream()
                if last < 0:
                    last = (await js.stream_info(self._stream)).state.last_seq
                info = await js.consumer_info(self._stream, self._bus.config.consumer)
                floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
                if (floor or 0) >= last or (not info.num_pending and not info.num_ack_pending):
                    return True
            except Exception as error:  # bus down, no consumer yet: keep waiting until the deadline
                log.debug("bus: settle: %s", error)
            await asyncio.sleep(0.2)
        return False

    def _hold(self, events: Sequence[Event]) -> None:
        for event in events:
            if len(self._held) >= MAX_HELD_IDS:
                return
            self._held.add(event.event_id)

    # -- reads: the shared store ------------------------------------------------------------------
    @property
    def appends(self) -> AppendSignal:
        return self._store.appends

    async def query(self, query: EventQuery) -> list[StoredEvent]:
        return await self._store.query(query)

    async def head(self) -> int:
        return await self._store.head()

    async def count(self, query: EventQuery, cap: int) -> int:
        return await self._store.count(query, cap)
