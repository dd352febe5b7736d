"""Delivery queue: spooled messages in, one transport call per recipient, outcomes out as events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from engaged.delivery import bounce
from engaged.delivery.compose import Copy, release_memory
from engaged.delivery.outcome import Bounced, Delivered, OutboundMessage, Transport
from engaged.errors import SpoolError, StoreError
from engaged.events.ids import EventIdGenerator
from engaged.events.message import bounce_event, delay_event, delivery_event, injection_events
from engaged.events.model import (
    BounceEvent,
    DelayEvent,
    DeliveryEvent,
    Event,
    decode_event,
    encode_event,
    event_type,
)
from engaged.spool.record import RecipientAttempt, RecipientDone, SpoolRecord, StateLine
from engaged.spool.store import FileSpool, finished_recipients
from engaged.types import EventQuery, EventReader, EventSink

log = logging.getLogger("engaged.delivery")

ComposeFn = Callable[[bytes, SpoolRecord, int], Copy]
RETRY_BASE_SECONDS = 60.0
INLINE_COMPOSE_BYTES = 256 * 1024
RETRY_MAX_SECONDS = 3600.0
_OUTCOME_TYPES = ("delivery", "bounce", "delay")


def retry_delay(attempts: int, base: float = RETRY_BASE_SECONDS) -> float:
    """Exponential backoff with ±20 % jitter: base, 2×base, 4×base … capped at an hour."""
    delay = min(base * (2 ** max(attempts - 1, 0)), RETRY_MAX_SECONDS)
    return float(delay * random.uniform(0.8, 1.2))


class DeliveryQueue:
    """Delivers spooled messages with a bounded number of workers.

    For each recipient: compose the copy, deliver it, decide the outcome and its event, append the
    event to the store. A message leaves the spool only when every recipient is done and every one
    of its events is stored. An acknowledged copy is on record before the next transaction starts:
    in the store, or, when the store write fails, in the message's state log (the event is kept and
    stored again before the message may finish). After a crash, a resumed message first adopts the
    outcomes the store already holds, so a copy the next hop acknowledged is not sent again and no
    delivery gets a second event id; only the transactions in flight at the crash are repeated
    (docs/architecture.md, "The crash window"). Every retry has a bound: `max_attempt_age`.
    """

    def __init__(
        self,
        spool: FileSpool,
        store: EventSink,
        transport: Transport,
        compose: ComposeFn,
        *,
        sandbox: Transport | None = None,
        workers: int = 8,
        max_attempt_age: float = 259200.0,
        retry_base: float = RETRY_BASE_SECONDS,
        ids: EventIdGenerator | None = None,
    ) -> None:
        self._spool = spool
        self._store = store
        self._transport = transport
        self._sandbox = sandbox or transport
        self._compose = compose
        self._workers = workers
        self._max_age = max_attempt_age
        self._retry_base = retry_base
        self._ids = ids or EventIdGenerator()
        self._queue: asyncio.Queue[SpoolRecord] = asyncio.Queue()
        self._state: dict[str, list[StateLine]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._fresh: set[str] = set()
        self._announcing: dict[str, asyncio.Task[bool]] = {}  # injectors storing a message's injection events
        self._resumed: set[str] = set()  # found in the spool at startup: adopt stored outcomes first
        self._logged: dict[str, int] = {}  # state lines of a message already in its state log
        self._unstored: dict[str, list[Event]] = {}  # decided events whose store append failed
        self._failures: dict[str, int] = {}  # consecutive failed passes of a message
        self._compose_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="compose")

    async def start(self) -> int:
        """Start the workers and pick up everything the spool still holds; returns how many."""
        resumed = 0
        for entry in self._spool.scan():
            self._state[entry.record.message_id] = list(entry.state)
            self._logged[entry.record.message_id] = len(entry.state)
            self._fresh.add(entry.record.message_id)
            self._resumed.add(entry.record.message_id)
            self._queue.put_nowait(entry.record)
            resumed += 1
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]
        return resumed

    async def submit(self, record: SpoolRecord, announced: bool | asyncio.Task[bool]) -> None:
        """A newly accepted (already durable) message: queue it.

        `announced` says whether the injector stored its injection events, or is the task storing them
        (awaited before the first delivery attempt, so they precede every outcome); when they were not
        stored, they are stored here before that attempt.
        """
        self._state[record.message_id] = []
        if isinstance(announced, asyncio.Task):
            self._announcing[record.message_id] = announced
        elif not announced:
            self._fresh.add(record.message_id)
        self._queue.put_nowait(record)

    async def _work(self) -> None:
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                # stop() cancelled a pass that swallowed it (3.11's wait_for does when the awaited
                # connect finishes at that moment): stop here instead of waiting on the queue for ever.
                raise asyncio.CancelledError
            record = await self._queue.get()
            try:
                await self._deliver_message(record)
            except Exception as error:
                await self._failed_pass(record, error)
            finally:
                self._queue.task_done()

    async def _failed_pass(self, record: SpoolRecord, error: Exception) -> None:
        """A pass raised (store down, unreadable body, a bug): back off; past max_attempt_age, bounce."""
        failures = self._failures[record.message_id] = self._failures.get(record.message_id, 0) + 1
        if time.time() - record.received_at >= self._max_age:
            try:
                await self._give_up(record, error)
                return
            except Exception as again:
                error = again
        delay = retry_delay(failures, self._retry_base)
        # A store or spool outage is a line per pass; anything else (a bug) shows its traceback once per message.
        trace = failures == 1 and not isinstance(error, StoreError | SpoolError)
        log.error("delivery of %s failed (%d in a row, next try in %.0f s): %s",
                  record.message_id, failures, delay, error, exc_info=error if trace else None)
        self._schedule(record, delay)

    async def _give_up(self, record: SpoolRecord, error: Exception) -> None:
        """Bounce every unfinished recipient (an event each), store every kept event, leave the spool.

        Raises if the store still refuses the events: they are never dropped, the message stays.
        """
        state = self._state.setdefault(record.message_id, [])
        done = finished_recipients(state)
        now = time.time()
        reason = f"5.3.0 message could not be processed: {error}"[:300]
        for index in range(len(record.recipients)):
            if index in done:
                continue
            retries = sum(1 for line in state if isinstance(line, RecipientAttempt) and line.rcpt == index)
            event = bounce_event(record, index, event_id=self._ids.next_id(now), now=now, ip_address="",
                                 num_retries=retries, error_code="554", reason=_canonical(reason),
                                 raw_reason=reason, bounce_class=bounce.classify_bounce("554", reason))
            state.append(RecipientDone(rcpt=index, event=encode_event(event)))
            self._unstored.setdefault(record.message_id, []).append(event)
        try:
            await self._store_kept(record.message_id)
        except Exception:
            await self._write_log(record.message_id, state)
            raise
        log.error("gave up on %s after max_attempt_age: %s", record.message_id, error)
        await self._finish(record.message_id)

    async def _deliver_message(self, record: SpoolRecord) -> None:
        state = self._state.setdefault(record.message_id, [])
        if record.message_id in self._resumed:
            await self._adopt_stored(record, state)
            self._resumed.discard(record.message_id)
        done = finished_recipients(state)
        now = time.time()
        pending = [i for i in range(len(record.recipients)) if i not in done and self._due(state, i, now)]
        announcing = self._announcing.pop(record.message_id, None)
        if announcing is not None and not await announcing:
            self._fresh.add(record.message_id)
        if record.message_id in self._fresh:
            await self._announce(record, state)
            self._fresh.discard(record.message_id)
        finished = False
        try:
            if pending:
                body = await self._spool.load_body(record.message_id)
                for index in pending:
                    await self._deliver_recipient(record, body, index, state)
            done = finished_recipients(state)
            if len(done) == len(record.recipients):
                await self._store_kept(record.message_id)
                await self._finish(record.message_id)
                finished = True
                return
        finally:
            # Outcomes reach the message's state log only when it stays in the spool: most messages
            # finish in one pass, and a log file created and removed per message costs ext4 more
            # (inode allocation after many deletes) than everything else on this path. Until then
            # each outcome is on record in the store (a resumed message adopts it from there).
            if not finished:
                await self._write_log(record.message_id, state)
        self._failures.pop(record.message_id, None)
        self._schedule(record, self._next_due(state, done) - time.time())

    async def _finish(self, message_id: str) -> None:
        await self._spool.finish(message_id)
        for table in (self._state, self._logged, self._unstored, self._failures):
            table.pop(message_id, None)

    async def _write_log(self, message_id: str, state: list[StateLine]) -> None:
        """Append the state lines not yet in the message's log."""
        logged = self._logged.get(message_id, 0)
        for line in state[logged:]:
            await self._spool.append_state(message_id, line)
            logged += 1
            self._logged[message_id] = logged

    async def _store_kept(self, message_id: str) -> None:
        """Store the events whose first append failed; raises (and keeps them) while the store fails."""
        kept = self._unstored.get(message_id)
        if kept:
            await self._store.append(kept)
            self._unstored.pop(message_id, None)

    async def _adopt_stored(self, record: SpoolRecord, state: list[StateLine]) -> None:
        """Take into `state` the outcomes the store holds for a resumed message that its log lacks.

        A message stays in the spool until its last recipient is done, but outcomes reach its log only
        when it stays after a pass: a crash inside a pass leaves outcomes that were stored (so the next
        hop acknowledged those copies) but not logged. Adopting them keeps their event ids and keeps
        those copies from being sent again. Raises StoreError when the store cannot be read (retried).
        """
        if not hasattr(self._store, "query"):  # a sink that cannot be read back (tests): nothing to adopt
            return
        reader = cast(EventReader, self._store)
        stored = await reader.query(EventQuery(message_ids=(record.message_id,), types=_OUTCOME_TYPES, limit=-1))
        known = {decode_event(line.event).event_id for line in state}
        done = finished_recipients(state)
        now = time.time()
        for item in stored:
            event = item.event
            if event.event_id in known or not isinstance(event, DeliveryEvent | BounceEvent | DelayEvent):
                continue
            index = next((i for i, recipient in enumerate(record.recipients)
                          if recipient.rcpt_to == event.raw_rcpt_to and i not in done), None)
            if index is None:
                continue
            if isinstance(event, DelayEvent):
                attempts = sum(1 for line in state if isinstance(line, RecipientAttempt) and line.rcpt == index)
                state.append(RecipientAttempt(rcpt=index, attempts=attempts + 1, next_attempt=now,
                                              event=encode_event(event)))
            else:
                state.append(RecipientDone(rcpt=index, event=encode_event(event)))
                done.add(index)
            log.info("%s: recipient %d has a stored %s event; adopted", record.message_id, index, event_type(event))

    async def _composed(self, body: bytes, record: SpoolRecord, index: int) -> Copy:
        """Build a copy; large bodies are rewritten on a worker thread so the event loop stays responsive."""
        plan = record.recipients[index].plan
        if not plan.inline_css and (len(body) < INLINE_COMPOSE_BYTES or not plan.tracks):  # inlining CSS: ~20 ms
            return self._compose(body, record, index)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._compose_executor, self._compose_released, body, record, index)

    def _compose_released(self, body: bytes, record: SpoolRecord, index: int) -> Copy:
        """On a compose thread: the copy, then what building it took handed back to the system."""
        copy = self._compose(body, record, index)
        release_memory()
        return copy

    async def _announce(self, record: SpoolRecord, state: list[StateLine]) -> None:
        """Store the injection events, then any outcome events a previous run decided on (a message resumed
        from the spool, or one whose injector could not store them); idempotent by event id. While the
        store fails they are kept with the message's other unstored events."""
        events: list[Event] = list(injection_events(record))
        events.extend(decode_event(line.event) for line in state if isinstance(line, RecipientDone))
        try:
            await self._store.append(events)
        except Exception as error:
            # Delivery does not wait for the store: the events are kept and stored before the message may
            # finish (a crash before that resumes the message, which announces them again).
            self._unstored.setdefault(record.message_id, [])[:0] = events
            log.warning("%s: storing its injection events failed, kept for a later pass: %s", record.message_id, error)

    def _due(self, state: list[StateLine], index: int, now: float) -> bool:
        attempts = [line for line in state if isinstance(line, RecipientAttempt) and line.rcpt == index]
        return not attempts or attempts[-1].next_attempt <= now

    def _next_due(self, state: list[StateLine], done: set[int]) -> float:
        times = [line.next_attempt for line in state if isinstance(line, RecipientAttempt) and line.rcpt not in done]
        return max(min(times, default=time.time()), time.time())

    async def _deliver_recipient(self, record: SpoolRecord, body: bytes, index: int, state: list[StateLine]) -> None:
        copy = await self._composed(body, record, index)
        recipient = record.recipients[index]
        message = OutboundMessage(
            message_id=record.message_id,
            rcpt_index=index,
            mail_from=record.mail_from if copy.mail_from is None else copy.mail_from,
            rcpt_to=recipient.rcpt_to,
            data=copy.data,
            smtputf8=record.smtputf8,
            received_at=record.received_at,
            dsn_notify=recipient.dsn_notify,
            dsn_orcpt=recipient.dsn_orcpt,
            dsn_ret=record.dsn_ret,
            dsn_envid=record.dsn_envid,
        )
        transport = self._sandbox if recipient.identity.sandbox else self._transport
        outcome = await transport.deliver(message)
        warnings = copy.warnings
        if len(copy.data) >= INLINE_COMPOSE_BYTES:  # the copy is sent: give its memory back, off the loop
            del copy, message
            with contextlib.suppress(RuntimeError):  # the queue is stopping: the process gives it all back
                self._compose_executor.submit(release_memory)
        now = time.time()
        retries = sum(1 for line in state if isinstance(line, RecipientAttempt) and line.rcpt == index)
        event_id = self._ids.next_id(now)
        line: StateLine
        event: Event
        if isinstance(outcome, Delivered):
            event = delivery_event(record, index, event_id=event_id, now=now, ip_address=outcome.ip_address,
                                   num_retries=retries, outbound_tls=outcome.outbound_tls,
                                   delv_method=outcome.delv_method, warnings=list(warnings) or None,
                                   sending_ip=outcome.sending_ip)
            line = RecipientDone(rcpt=index, event=encode_event(event))
        elif isinstance(outcome, Bounced) or now - record.received_at >= self._max_age:
            expired = not isinstance(outcome, Bounced)
            reason = f"4.4.7 message expired after {retries + 1} attempts: {outcome.reason}" if expired \
                else outcome.reason
            bounce_class = bounce.TIMEOUT if expired else bounce.classify_bounce(outcome.error_code, outcome.reason)
            event = bounce_event(record, index, event_id=event_id, now=now, ip_address=outcome.ip_address,
                                 num_retries=retries, error_code=outcome.error_code, reason=_canonical(reason),
                                 raw_reason=reason, bounce_class=bounce_class, sending_ip=outcome.sending_ip)
            line = RecipientDone(rcpt=index, event=encode_event(event))
        else:
            event = delay_event(record, index, event_id=event_id, now=now, ip_address=outcome.ip_address,
                                num_retries=retries, error_code=outcome.error_code, reason=_canonical(outcome.reason),
                                raw_reason=outcome.reason, sending_ip=outcome.sending_ip,
                                bounce_class=bounce.classify_bounce(outcome.error_code, outcome.reason))
            line = RecipientAttempt(rcpt=index, attempts=retries + 1,
                                    next_attempt=now + retry_delay(retries + 1, self._retry_base),
                                    event=encode_event(event))
        state.append(line)
        try:
            await self._store.append([event])
        except Exception as error:
            # The outcome is decided (the copy may be delivered): it must be neither sent again nor lost.
            # Keep the event for the end of the message and put the line in the log before the next
            # transaction, so a crash from here on re-sends nothing.
            self._unstored.setdefault(record.message_id, []).append(event)
            log.warning("%s: storing the %s event of recipient %d failed, kept for a later pass: %s",
                        record.message_id, event_type(event), index, error)
            await self._write_log(record.message_id, state)

    def _schedule(self, record: SpoolRecord, delay: float) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def requeue() -> None:
            if handle is not None:
                self._timers.discard(handle)
            self._queue.put_nowait(record)

        handle = loop.call_later(max(delay, 0.0), requeue)
        self._timers.add(handle)

    async def stop(self) -> None:
        for handle in self._timers:
            handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._announcing.values(), return_exceptions=True)  # the store closes after us
        await self._transport.close()
        self._compose_executor.shutdown(wait=False, cancel_futures=True)
        if self._sandbox is not self._transport:
            await self._sandbox.close()

    def depth(self) -> int:
        """Messages still held for delivery."""
        return len(self._state)


def _canonical(reason: str) -> str:
    """SparkPost's `reason`: the remote text with addresses and ids blanked so reasons group."""
    text = re.sub(r"<[^<>@\s]+@[^<>\s]+>|[\w.+-]+@[\w-]+(\.[\w-]+)+", "...@...", reason)
    return " ".join(text.split())[:300]
