"""BusConsumer: the `events` role's loader, from the stream's durable consumer into the event store.

Every `events` node binds the same durable pull consumer ([bus] consumer), so JetStream hands each
message to one of them. A fetched batch is appended to the store in one call (idempotent by event_id:
a redelivered or twice-published event is stored once), and only then acknowledged; the next batch is
fetched meanwhile. A store failure
leaves the batch unacknowledged and is retried with backoff; whatever a killed node had fetched is
redelivered to another after [bus] ack_wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Final

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from engaged.bus.connection import BusConnection
from engaged.bus.stream import SUBJECTS
from engaged.events.ids import timestamp_of
from engaged.events.model import Event
from engaged.events.wire import decode_api_json
from engaged.types import EventSink

log = logging.getLogger("engaged")

BATCH: Final = 2000
FETCH_WAIT: Final = 1.0
MAX_ACK_PENDING: Final = 20000
PENDING_EVERY: Final = 2.0
_RETRY_MAX: Final = 5.0


@dataclass
class ConsumerStats:
    """For metrics: events stored, batches, store failures, malformed messages dropped, pending in the stream."""

    stored: int = 0
    batches: int = 0
    store_errors: int = 0
    malformed: int = 0
    pending: int = 0
    lag_seconds: float = 0.0


class BusConsumer:
    """Moves events from the stream into `store` until stopped (see the module docstring)."""

    def __init__(self, bus: BusConnection, store: EventSink, *, batch: int = BATCH) -> None:
        self._bus = bus
        self._store = store
        self._batch = batch
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending_checked = 0.0
        self.stats = ConsumerStats()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    def metrics(self) -> dict[str, float]:
        stats = self.stats
        return {"consumed": stats.stored, "consumer_pending": stats.pending, "consumer_lag_seconds": stats.lag_seconds,
                "consumer_store_errors": stats.store_errors, "consumer_malformed": stats.malformed}

    async def _run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                js = self._bus.jetstream()
                subscription = await self._subscribe(js)
                log.info("bus: consuming %s as %s", self._bus.config.stream, self._bus.config.consumer)
                delay = 0.5
                try:
                    await self._follow(js, subscription)
                finally:  # after a failure too: a forgotten subscription would keep taking redeliveries
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()
            except Exception as error:
                if not isinstance(error, nats.errors.TimeoutError):
                    log.warning("bus: consumer: %s; retrying in %.1f s", str(error) or type(error).__name__, delay)
                await self._pause(delay)
                delay = min(delay * 2, _RETRY_MAX)

    async def _subscribe(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                                ack_wait=self._bus.config.ack_wait, max_ack_pending=MAX_ACK_PENDING, max_deliver=-1,
                                filter_subject=SUBJECTS[0])
        return await js.pull_subscribe(SUBJECTS[0], durable=self._bus.config.consumer, stream=self._bus.config.stream,
                                       config=config)

    async def _follow(self, js: JetStreamContext, subscription: JetStreamContext.PullSubscription) -> None:
        # the next batch is fetched while the last one is stored: at most two batches unacknowledged
        storing: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                try:
                    messages = await subscription.fetch(self._batch, timeout=FETCH_WAIT)
                except nats.errors.TimeoutError:
                    messages = []
                if storing is not None:
                    await storing
                    storing = None
                if messages:
                    storing = asyncio.get_running_loop().create_task(self._store_batch(messages))
                await self._check_pending(subscription, idle=not messages)
        finally:
            if storing is not None:
                await storing

    async def _store_batch(self, messages: list[Msg]) -> None:
        events: list[Event] = []
        good: list[Msg] = []
        for message in messages:
            try:
                events.append(decode_api_json(message.data))
                good.append(message)
            except (msgspec.DecodeError, UnicodeDecodeError, ValueError) as error:  # ValueError: a bad timestamp
                self.stats.malformed += 1
                log.warning("bus: dropping a malformed message on %s: %s", message.subject, error)
                with contextlib.suppress(Exception):
                    await message.term()
        failures = 0
        while events:
            try:
                await self._store.append(events)
                break
            except Exception as error:  # the store is down: keep the batch unacknowledged and retry
                failures += 1
                self.stats.store_errors += 1
                log.warning("bus: consumer: store append failed (attempt %d): %s", failures, error)
                if self._stopping.is_set():
                    return  # unacknowledged: redelivered after ACK_WAIT
                await self._pause(min(0.2 * 2 ** failures, _RETRY_MAX))
        for message in good:
            await message.ack()
        self.stats.stored += len(events)
        self.stats.batches += 1
        if events:
            self.stats.lag_seconds = max(time.time() - timestamp_of(events[0].event_id), 0.0)

    async def _check_pending(self, subscription: JetStreamContext.PullSubscription, *, idle: bool) -> None:
        now = time.monotonic()
        if now - self._pending_checked < PENDING_EVERY:
            return
        self._pending_checked = now
        with contextlib.suppress(Exception):
            info = await subscription.consumer_info()
            self.stats.pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        if idle:
            self.stats.lag_seconds = 0.0

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
