"""The inbound processor on real stores: how each kind of returned mail is matched, and a store outage."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engaged import verp
from engaged.events.ids import EventIdGenerator
from engaged.events.model import OutOfBandEvent, SpamComplaintEvent
from engaged.events.store_postgres import PostgresEventStore
from engaged.inbound.processor import InboundProcessor
from engaged.inbound.spool import InboundSpool
from engaged.keys import Keyring
from engaged.types import EventQuery, EventStore
from tests.conftest import cut_statements, postgres_admin, restore_statement
from tests.sample_events import make_event

SAMPLES = Path(__file__).parent / "samples"
KEYS = Keyring(current_id=1, keys={1: b"k" * 32})
DOMAIN = "bounces.example.com"
MID = "0123456789abcdef0123"
RCPT = "unknown@dest.example"


def processor_of(spool: InboundSpool, store: EventStore, *, retry: float = 0.5,
                 wait_for_copy: float = 0.0) -> InboundProcessor:
    return InboundProcessor(spool, store, KEYS, (DOMAIN,), ids=EventIdGenerator(), retry=retry, retry_max=retry * 4,
                            wait_for_copy=wait_for_copy)


def spooled(tmp_path: Path) -> InboundSpool:
    spool = InboundSpool(tmp_path / "inbound")
    spool.open()
    return spool


def dsn() -> bytes:
    return (SAMPLES / "postfix-5.1.1-user-unknown.eml").read_bytes()


async def events_of(store: EventStore, kind: str) -> list[object]:
    return [stored.event for stored in await store.query(EventQuery(types=(kind,), limit=100))]


async def test_a_dsn_to_a_return_path_waits_for_the_store_left_on_disk_by_an_earlier_run(
        store: EventStore, tmp_path: Path) -> None:
    await store.append([make_event("delivery", 1, message_id=MID, rcpt=RCPT)])
    spool = spooled(tmp_path)
    spool.store(peer="192.0.2.1", helo="mx", mail_from="", content=dsn(),
                rcpt_tos=[verp.address(KEYS, "b", MID, RCPT, DOMAIN)])
    processor = processor_of(spool, store)
    await processor.start()  # what a crash left in new/ is processed at the next start
    try:
        await asyncio.wait_for(processor.idle(), 30)
    finally:
        await processor.stop()
    [event] = await events_of(store, "out_of_band")
    assert isinstance(event, OutOfBandEvent) and event.message_id == MID and event.rcpt_to == RCPT
    assert (event.bounce_class, event.error_code, event.campaign_id) == ("10", "550", "spring")
    assert not list(spool.new.glob("*")) and not list(spool.unmatched.glob("*"))


async def test_an_arf_report_without_x_msfbl_is_matched_by_the_quoted_return_path(
        store: EventStore, tmp_path: Path) -> None:
    await store.append([make_event("delivery", 1, message_id=MID, rcpt="user@example.com")])
    path = verp.address(KEYS, "b", MID, "user@example.com", DOMAIN)
    report = (SAMPLES / "rfc5965-abuse.eml").read_bytes().replace(
        b"From: <somespammer@example.net>\r\nReceived:", f"Return-Path: <{path}>\r\nFrom: <x@y.example>\r\nReceived:"
        .encode())
    spool = spooled(tmp_path)
    processor = processor_of(spool, store)
    item = spool.store(peer="192.0.2.1", helo="fbl", mail_from="fbl@isp.example", rcpt_tos=[f"fbl@{DOMAIN}"],
                       content=report)
    [event] = await processor.process(item)
    assert isinstance(event, SpamComplaintEvent) and event.rcpt_to == "user@example.com"
    assert (event.fbtype, event.report_by, event.report_to) == ("abuse", "fbl@isp.example", f"fbl@{DOMAIN}")


async def test_a_plain_bounce_reply_to_a_return_path_is_out_of_band(store: EventStore, tmp_path: Path) -> None:
    await store.append([make_event("delivery", 1, message_id=MID, rcpt="ann@example.net")])
    raw = (b"From: MAILER-DAEMON@mx.example.net\r\nSubject: failure notice\r\n\r\n"
           b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\r\n"
           b"<ann@example.net>:\r\nRemote host said: 550 5.1.1 <ann@example.net>... User unknown\r\n")
    spool = spooled(tmp_path)
    item = spool.store(peer="192.0.2.1", helo="mx", mail_from="", content=raw,
                       rcpt_tos=[verp.address(KEYS, "b", MID, "ann@example.net", DOMAIN)])
    [event] = await processor_of(spool, store).process(item)
    assert isinstance(event, OutOfBandEvent) and event.rcpt_to == "ann@example.net"
    assert (event.bounce_class, event.error_code) == ("10", "550")


async def test_a_bounce_that_arrives_before_its_copys_events_waits_for_them(
        store: EventStore, tmp_path: Path) -> None:
    spool = spooled(tmp_path)
    processor = processor_of(spool, store, wait_for_copy=3.0)  # as with a bus whose consumer lags
    await processor.start()
    try:
        item = spool.store(peer="192.0.2.1", helo="mx", mail_from="", content=dsn(),
                           rcpt_tos=[verp.address(KEYS, "b", MID, RCPT, DOMAIN)])
        processor.submit(item)
        await asyncio.sleep(0.5)
        assert item.path.exists() and not list(spool.unmatched.glob("*"))
        await store.append([make_event("delivery", 1, message_id=MID, rcpt=RCPT)])  # the consumer caught up
        await asyncio.wait_for(processor.idle(), 30)
        [event] = await events_of(store, "out_of_band")
        assert isinstance(event, OutOfBandEvent) and event.rcpt_to == RCPT
        late = spool.store(peer="192.0.2.1", helo="mx", mail_from="", content=dsn(),
                           rcpt_tos=[verp.address(KEYS, "b", "f" * 20, RCPT, DOMAIN)])  # a copy never sent
        processor.submit(late)
        await asyncio.wait_for(processor.idle(), 30)
    finally:
        await processor.stop()
    [reason] = spool.unmatched.glob("*.reason")  # kept once the wait is over, never dropped
    assert "no copy of message ffffffffffffffffffff" in reason.read_text()


async def test_mail_received_while_the_store_is_down_becomes_events_once_it_is_back(
        outage_database: tuple[str, str], tmp_path: Path) -> None:
    name, dsn_url = outage_database
    store = PostgresEventStore(dsn_url)
    await store.open()
    try:
        await store.append([make_event("delivery", 1, message_id=MID, rcpt=RCPT)])
        spool = spooled(tmp_path)
        processor = processor_of(spool, store, retry=0.05)
        await processor.start()
        await postgres_admin(*cut_statements(name))
        item = spool.store(peer="192.0.2.1", helo="mx", mail_from="", content=dsn(),
                           rcpt_tos=[verp.address(KEYS, "b", MID, RCPT, DOMAIN)])
        processor.submit(item)
        for _ in range(600):
            if processor.retries >= 2:
                break
            await asyncio.sleep(0.05)
        assert processor.retries >= 2 and item.path.exists()  # still on disk, still being retried
        await postgres_admin(restore_statement(name))
        await asyncio.wait_for(processor.idle(), 60)
        await processor.stop()
        [event] = await events_of(store, "out_of_band")
        assert isinstance(event, OutOfBandEvent) and event.rcpt_to == RCPT
        assert not item.path.exists() and not list(spool.unmatched.glob("*"))
    finally:
        await store.close()
