"""The delivery queue without sockets: injection events stored once, warnings on their own recipient's event."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from engaged.delivery.compose import Copy
from engaged.delivery.outcome import Delivered, OutboundMessage, Outcome
from engaged.delivery.queue import DeliveryQueue
from engaged.errors import StoreError
from engaged.events.message import injection_events
from engaged.events.model import BounceEvent, DeliveryEvent, Event, InjectionEvent
from engaged.recipient import TrackingPlan
from engaged.spool.record import SpoolRecord
from engaged.spool.store import FileSpool
from tests.records import recipient_identity, spool_record


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def append(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


class Capture:
    """A transport that takes every copy."""

    def __init__(self) -> None:
        self.copies: list[OutboundMessage] = []

    async def deliver(self, message: OutboundMessage) -> Outcome:
        self.copies.append(message)
        return Delivered(ip_address="127.0.0.1", delv_method="capture")

    async def close(self) -> None:
        return None


def compose(body: bytes, record: SpoolRecord, index: int) -> Copy:
    """Recipient 1's copy has a part the rewriter left alone; recipient 0's does not."""
    return Copy(body, ("part 2 left untracked: unknown charset",) if index == 1 else ())


async def eventually_delivered(sink: Sink, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while sum(isinstance(event, DeliveryEvent) for event in sink.events) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{count} deliveries expected, events: {sink.events}")
        await asyncio.sleep(0.005)


async def queue_with(tmp_path: Path) -> tuple[DeliveryQueue, FileSpool, Sink, Capture]:
    spool = FileSpool(tmp_path / "spool")
    spool.open()
    sink, transport = Sink(), Capture()
    queue = DeliveryQueue(spool, sink, transport, compose, workers=1)
    await queue.start()
    return queue, spool, sink, transport


def two_recipients() -> SpoolRecord:
    return spool_record((recipient_identity("a@example.com"), TrackingPlan()),
                        (recipient_identity("b@example.com"), TrackingPlan()))


async def test_an_announced_message_gets_delivery_events_only(tmp_path: Path) -> None:
    queue, spool, sink, transport = await queue_with(tmp_path)
    record = await spool.store(two_recipients(), b"Subject: x\r\n\r\nbody\r\n")
    await queue.submit(record, announced=True)
    await eventually_delivered(sink, 2)
    assert [type(event) for event in sink.events] == [DeliveryEvent, DeliveryEvent]
    assert [copy.rcpt_to for copy in transport.copies] == ["a@example.com", "b@example.com"]
    await queue.stop()


async def test_an_unannounced_message_gets_its_injection_events_before_any_delivery(tmp_path: Path) -> None:
    queue, spool, sink, _ = await queue_with(tmp_path)
    record = await spool.store(two_recipients(), b"Subject: x\r\n\r\nbody\r\n")
    await queue.submit(record, announced=False)
    await eventually_delivered(sink, 2)
    assert [type(event) for event in sink.events] == [InjectionEvent, InjectionEvent, DeliveryEvent, DeliveryEvent]
    assert all(event.warnings is None for event in sink.events if isinstance(event, InjectionEvent))
    await queue.stop()


async def test_rewrite_warnings_go_on_their_own_recipients_delivery_event(tmp_path: Path) -> None:
    queue, spool, sink, _ = await queue_with(tmp_path)
    record = await spool.store(two_recipients(), b"Subject: x\r\n\r\nbody\r\n")
    await queue.submit(record, announced=True)
    await eventually_delivered(sink, 2)
    warnings = {event.rcpt_to: event.warnings for event in sink.events if isinstance(event, DeliveryEvent)}
    assert warnings == {"a@example.com": None, "b@example.com": ["part 2 left untracked: unknown charset"]}
    await queue.stop()


async def test_a_message_resumed_from_the_spool_is_announced_again_under_the_same_ids(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path / "spool")
    spool.open()
    record = await spool.store(two_recipients(), b"Subject: x\r\n\r\nbody\r\n")
    queue, _, sink, _ = await queue_with(tmp_path)  # start() picks the spooled message up
    await eventually_delivered(sink, 2)
    injections = [event.event_id for event in sink.events if isinstance(event, InjectionEvent)]
    assert injections == [recipient.injection_event_id for recipient in record.recipients]
    await queue.stop()


async def test_a_message_whose_announcement_failed_gets_its_injection_events_from_delivery(tmp_path: Path) -> None:
    queue, spool, sink, _ = await queue_with(tmp_path)
    record = await spool.store(two_recipients(), b"Subject: x\r\n\r\nbody\r\n")

    async def failed() -> bool:
        return False

    await queue.submit(record, asyncio.get_running_loop().create_task(failed()))
    await eventually_delivered(sink, 2)
    assert [type(event) for event in sink.events] == [InjectionEvent, InjectionEvent, DeliveryEvent, DeliveryEvent]
    await queue.stop()


async def test_delivery_waits_for_the_injectors_announcement_before_any_attempt(tmp_path: Path) -> None:
    queue, spool, sink, transport = await queue_with(tmp_path)
    record = await spool.store(two_recipients(), b"Subject: x\r\n\r\nbody\r\n")
    release = asyncio.Event()

    async def announce() -> bool:
        await release.wait()
        await sink.append(injection_events(record))
        return True

    await queue.submit(record, asyncio.get_running_loop().create_task(announce()))
    await asyncio.sleep(0.05)
    assert transport.copies == []  # a condition that must hold while the announcement is pending
    release.set()
    await eventually_delivered(sink, 2)
    assert [type(event) for event in sink.events] == [InjectionEvent, InjectionEvent, DeliveryEvent, DeliveryEvent]
    await queue.stop()


@pytest.mark.parametrize(("failure", "tracebacks"), [(StoreError("store: connection refused"), 0),
                                                     (RuntimeError("a bug"), 1)])
async def test_a_failing_pass_logs_a_line_each_time_and_a_bugs_traceback_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, failure: Exception, tracebacks: int) -> None:
    failures_left = 3

    def flaky(body: bytes, record: SpoolRecord, index: int) -> Copy:
        nonlocal failures_left
        if failures_left:
            failures_left -= 1
            raise failure
        return compose(body, record, index)

    spool = FileSpool(tmp_path / "spool")
    spool.open()
    sink = Sink()
    queue = DeliveryQueue(spool, sink, Capture(), flaky, workers=1, retry_base=0.01)
    await queue.start()
    try:
        fresh = spool_record((recipient_identity("a@example.com"), TrackingPlan()),
                             (recipient_identity("b@example.com"), TrackingPlan()), received_at=time.time())
        record = await spool.store(fresh, b"Subject: x\r\n\r\nbody\r\n")
        with caplog.at_level(logging.ERROR, logger="engaged"):
            await queue.submit(record, announced=True)
            await eventually_delivered(sink, 2)
    finally:
        await queue.stop()
    lines = [entry for entry in caplog.records if entry.getMessage().startswith(f"delivery of {record.message_id}")]
    assert len(lines) == 3, [entry.getMessage() for entry in lines]  # one per failed pass, with its count
    assert sum(entry.exc_info is not None for entry in lines) == tracebacks


async def test_a_message_whose_every_pass_fails_is_bounced_once_past_max_attempt_age(tmp_path: Path) -> None:
    def broken(body: bytes, record: SpoolRecord, index: int) -> Copy:
        raise RuntimeError("cannot build this copy")

    spool = FileSpool(tmp_path / "spool")
    spool.open()
    sink = Sink()
    queue = DeliveryQueue(spool, sink, Capture(), broken, workers=1, retry_base=0.01, max_attempt_age=0.3)
    await queue.start()
    try:
        fresh = spool_record((recipient_identity("a@example.com"), TrackingPlan()),
                             (recipient_identity("b@example.com"), TrackingPlan()), received_at=time.time())
        record = await spool.store(fresh, b"Subject: x\r\n\r\nbody\r\n")
        await queue.submit(record, announced=True)
        deadline = asyncio.get_running_loop().time() + 30
        while queue.depth() or list(spool.scan()):  # the retries end: an event each, the spool file gone
            assert asyncio.get_running_loop().time() < deadline, f"still retrying: {sink.events}"
            await asyncio.sleep(0.02)
    finally:
        await queue.stop()
    bounces = [event for event in sink.events if isinstance(event, BounceEvent)]
    assert sorted(event.rcpt_to for event in bounces) == ["a@example.com", "b@example.com"], sink.events
    assert all(event.error_code == "554" and event.raw_reason.startswith("5.3.0 message could not be processed: "
                                                                         "cannot build this copy")
               for event in bounces)
    assert len(sink.events) == 2  # no delivery, no second bounce
