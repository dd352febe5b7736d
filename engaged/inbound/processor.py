"""What an inbound message means: out_of_band, spam_complaint or list_unsubscribe events, or unmatched.

A message is matched to the copy it is about through its envelope recipient (a signed return path
or List-Unsubscribe mailto), else through the signed X-MSFBL or return path in the headers it quotes.
The copy's own injection or delivery event gives every field the new event repeats; a report about
a message this store never saw, or with a forged address, matches nothing and is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import msgspec

from engaged import verp
from engaged.errors import StoreError
from engaged.events.ids import EventIdGenerator
from engaged.events.message import format_timestamp
from engaged.events.model import (
    DeliveryEvent,
    Event,
    InjectionEvent,
    ListUnsubscribeEvent,
    OutOfBandEvent,
    SpamComplaintEvent,
)
from engaged.inbound.report import Bounce, Complaint, NotAReport, failure, original_header, parse
from engaged.inbound.spool import InboundItem, InboundSpool
from engaged.tokens import SigningKeys
from engaged.types import EventLog, EventQuery

log = logging.getLogger("engaged.inbound")

_SENT = ("delivery", "injection")
_KEPT = ("message_id", "transmission_id", "campaign_id", "customer_id", "rcpt_to", "raw_rcpt_to", "rcpt_meta",
         "rcpt_tags", "rcpt_type", "subaccount_id", "template_id", "template_version", "friendly_from", "msg_from",
         "subject", "ip_pool", "sending_ip", "routing_domain", "recipient_domain", "injection_time", "transactional")

Outcome = Callable[[str], None]
"""Told `matched` or `unmatched` for every processed message (metrics)."""


class Unmatched(Exception):
    """Why a message could not be turned into events."""


class NotInStore(Unmatched):
    """A genuine return path or header names a copy the event store does not hold: forged from a real
    address, or (with a bus, whose consumer may lag) not stored yet."""


class InboundProcessor:
    """Turns spooled inbound mail into events; one message at a time, in arrival order.

    The queue holds spool paths, not contents, so a backlog costs memory only for the message being
    processed. While the event store cannot be read or written the message being processed is retried
    (`retry` seconds, doubling up to `retry_max`) and the rest wait behind it; nothing is skipped.
    A message naming a copy the store does not hold is looked at again, behind the others, until
    `wait_for_copy` seconds after its receipt, then kept as unmatched: a copy can leave before its
    events are stored (delivery does not wait for a failing store, and a bus's consumer lags).
    """

    def __init__(self, spool: InboundSpool, store: EventLog, keys: SigningKeys, domains: tuple[str, ...], *,
                 ids: EventIdGenerator, outcome: Outcome | None = None, retry: float = 0.5,
                 retry_max: float = 30.0, wait_for_copy: float = 0.0) -> None:
        self._spool = spool
        self._store = store
        self._keys = keys
        self._domains = domains
        self._ids = ids
        self._outcome = outcome
        self._retry = retry
        self._retry_max = retry_max
        self._wait_for_copy = wait_for_copy
        self._later: set[asyncio.Task[None]] = set()
        self._waiting: set[Path] = set()
        self._queue: asyncio.Queue[Path] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.processed = 0
        self.retries = 0

    async def start(self) -> None:
        for path in self._spool.pending():
            self._queue.put_nowait(path)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        for task in list(self._later):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def submit(self, item: InboundItem) -> None:
        self._queue.put_nowait(item.path)

    async def idle(self) -> None:
        """Return once everything submitted so far is processed (tests)."""
        await self._queue.join()
        while self._later:
            await asyncio.gather(*self._later, return_exceptions=True)
            await self._queue.join()

    def _look_again(self, path: Path) -> None:
        async def later() -> None:
            await asyncio.sleep(min(5.0, self._wait_for_copy / 10))
            self._queue.put_nowait(path)

        task = asyncio.get_running_loop().create_task(later())
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def _run(self) -> None:
        while True:
            path = await self._queue.get()
            try:
                await self._settle(path)
            finally:
                self._queue.task_done()

    async def _settle(self, path: Path) -> None:
        """Process one spooled message, retrying while the store is unavailable."""
        delay = self._retry
        while True:
            item = await asyncio.to_thread(self._spool.read, path)
            if item is None:  # gone (processed by an earlier run) or not an inbound spool file
                return
            try:
                await self.process(item)
                self._waiting.discard(path)
                return
            except NotInStore as why:
                if path not in self._waiting:
                    self._waiting.add(path)
                    log.info("inbound %s: %s yet; looking again for up to %.0f s", item.envelope.id, why,
                             self._wait_for_copy)
                self._look_again(path)
                return
            except StoreError as error:
                self.retries += 1
                log.warning("inbound %s: event store unavailable (%s); retrying in %.1f s", item.envelope.id,
                            error, delay)
            except Exception as error:  # a bug: keep the file in new/ for the next start, go on with the rest
                log.error("inbound %s not processed, kept in %s for the next start: %r", item.envelope.id,
                          path.parent, error)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)

    async def process(self, item: InboundItem) -> list[Event]:
        """Store the events an inbound message makes; or keep it in unmatched/ with the reason."""
        try:
            events = await self._events_of(item)
        except Unmatched as why:
            if isinstance(why, NotInStore) and time.time() - item.envelope.received_at < self._wait_for_copy:
                raise  # _settle looks at it again later
            return await self._unmatched(item, str(why))
        await self._store.append(events)
        self._spool.done(item)
        self.processed += 1
        if self._outcome is not None:
            self._outcome("matched")
        return events

    async def _unmatched(self, item: InboundItem, why: str) -> list[Event]:
        path = await asyncio.to_thread(self._spool.keep_unmatched, item, why)
        log.info("inbound %s from <%s> unmatched (%s), kept in %s", item.envelope.id, item.envelope.mail_from,
                 why, path)
        self.processed += 1
        if self._outcome is not None:
            self._outcome("unmatched")
        return []

    async def _events_of(self, item: InboundItem) -> list[Event]:
        envelope = item.envelope
        matches = [found for rcpt in envelope.rcpt_tos
                   if (found := verp.match(self._keys, rcpt, self._domains)) is not None]
        unsubscribe = next((found for found in matches if found.purpose == "u"), None)
        if unsubscribe is not None:
            return [await self._list_unsubscribe(item, unsubscribe)]
        report = await asyncio.to_thread(parse, item.content)
        if isinstance(report, NotAReport):
            raise Unmatched(report.reason)
        bounce_path = next((found for found in matches if found.purpose == "b"), None)
        if isinstance(report, Complaint):
            return [await self._complaint(item, report, bounce_path)]
        return [await self._out_of_band(item, report, bounce_path)]

    async def _sent_event(self, message_id: str, pick: Callable[[str], bool]) -> InjectionEvent | DeliveryEvent:
        found = await self._store.query(EventQuery(message_ids=(message_id,), types=_SENT, limit=10_000))
        for stored in found:
            event = stored.event
            if isinstance(event, InjectionEvent | DeliveryEvent) and pick(event.rcpt_to):
                return event
        raise NotInStore(f"no copy of message {message_id} for that recipient was sent from this store")

    async def _from_headers(self, headers: bytes) -> InjectionEvent | DeliveryEvent:
        """The copy the quoted headers are of: their X-MSFBL, else their Return-Path."""
        value = original_header(headers, "X-MSFBL")
        if value:
            named = verp.read_msfbl(self._keys, value)
            if named is None:
                raise Unmatched("X-MSFBL is not one engaged signed")
            message_id, rcpt_to = named
            return await self._sent_event(message_id, lambda address: address == rcpt_to)
        path = parseaddr(original_header(headers, "Return-Path"))[1]
        found = verp.match(self._keys, path, self._domains) if path else None
        if found is None:
            raise Unmatched("neither the envelope nor the quoted headers name a copy engaged sent")
        return await self._sent_event(found.message_id, found.names)

    async def _out_of_band(self, item: InboundItem, report: Bounce, path: verp.VerpMatch | None) -> Event:
        failed = next((result for recipient in report.recipients if (result := failure(recipient)) is not None),
                      None)
        if failed is None:
            raise Unmatched("the report names no failed recipient (delayed, relayed or delivered)")
        if path is not None:
            sent = await self._sent_event(path.message_id, path.names)
        else:
            sent = await self._from_headers(report.original_headers)
        bounce_class, code, reason = failed
        now = item.envelope.received_at
        return OutOfBandEvent(**_kept(sent), event_id=self._ids.next_id(now), timestamp=format_timestamp(now),
                              bounce_class=bounce_class, error_code=code, reason=reason, raw_reason=reason)

    async def _complaint(self, item: InboundItem, report: Complaint, path: verp.VerpMatch | None) -> Event:
        if report.msfbl or path is None:
            sent = await self._from_headers(report.original_headers)
        else:
            sent = await self._sent_event(path.message_id, path.names)
        now = item.envelope.received_at
        report_by = item.envelope.mail_from or parseaddr(original_header(_head(item.content), "From"))[1]
        return SpamComplaintEvent(**_kept(sent), event_id=self._ids.next_id(now), timestamp=format_timestamp(now),
                                  fbtype=report.feedback_type, report_by=report_by[:254],
                                  report_to=item.envelope.rcpt_tos[0] if item.envelope.rcpt_tos else "",
                                  user_str=report.user_agent)

    async def _list_unsubscribe(self, item: InboundItem, found: verp.VerpMatch) -> Event:
        sent = await self._sent_event(found.message_id, found.names)
        now = item.envelope.received_at
        kept = _kept(sent)
        fields = {key: kept[key] for key in ("message_id", "transmission_id", "campaign_id", "customer_id", "rcpt_to",
                                            "raw_rcpt_to", "rcpt_meta", "rcpt_tags", "friendly_from", "msg_from",
                                            "subject") if key in kept}
        sender = item.envelope.mail_from or parseaddr(original_header(_head(item.content), "From"))[1]
        return ListUnsubscribeEvent(**fields, event_id=self._ids.next_id(now), timestamp=format_timestamp(now),
                                    mailfrom=sender.lower()[:254] or sent.rcpt_to, ip_address=item.envelope.peer)


def _head(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[:end + 2]


def _kept(event: InjectionEvent | DeliveryEvent) -> dict[str, Any]:
    """The fields an inbound event repeats from the copy's own event (unset optional ones left out)."""
    fields = msgspec.structs.asdict(event)
    return {key: fields[key] for key in _KEPT if key in fields and fields[key] is not None}
