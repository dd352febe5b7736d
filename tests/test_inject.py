"""The injection pipeline without sockets: refusals as values, the spooled record, injection events after the commit."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Sequence
from pathlib import Path

import pytest

from engaged.config import Config
from engaged.errors import StoreError
from engaged.events.model import Event, InjectionEvent, PolicyRejectionEvent
from engaged.inject import Accepted, Injector, Refusal, Rejected, Transaction
from engaged.smtp.replies import injection_reply
from engaged.spool.record import SpoolRecord
from engaged.spool.store import FileSpool
from engaged.suppression.check import SuppressionCheck
from engaged.suppression.model import SuppressionEntry, SuppressionStore

MESSAGE = (b"From: =?utf-8?q?Caf=C3=A9?= <app@example.org>\r\nSubject: Spring\r\n  sale\r\n"
           b'X-MSYS-API: {"campaign_id": "spring", "tags": ["promo"], "options": {"open_tracking": true}}\r\n'
           b"\r\nbody\r\n")


class Sink:
    """An event sink that keeps what it was given, or fails every append."""

    def __init__(self, failing: bool = False) -> None:
        self.events: list[Event] = []
        self.failing = failing

    async def append(self, events: Sequence[Event]) -> None:
        if self.failing:
            raise StoreError("the store is down")
        self.events.extend(events)


class Handoff:
    """on_accepted: records what delivery was handed, what its announcement task says, and what the store held then."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.calls: list[tuple[SpoolRecord, bool, int]] = []

    async def __call__(self, record: SpoolRecord, announced: asyncio.Task[bool]) -> None:
        self.calls.append((record, await announced, len(self.sink.events)))


def transaction(content: bytes = MESSAGE, rcpt_tos: list[str] | None = None) -> Transaction:
    return Transaction(listener="127.0.0.1:0", peer="192.0.2.1", helo="client.example", auth_user="",
                       customer_id="7", mail_from="app@example.org", rcpt_tos=rcpt_tos or ["Alice@Example.COM"],
                       smtputf8=False, content=content)


@pytest.fixture
def spool(tmp_path: Path) -> FileSpool:
    spool = FileSpool(tmp_path / "spool")
    spool.open()
    return spool


def injector(tmp_path: Path, spool: FileSpool, sink: Sink) -> tuple[Injector, Handoff]:
    handoff = Handoff(sink)
    return Injector(Config(data_dir=str(tmp_path)), spool, handoff, events=sink), handoff


async def test_an_empty_message_is_refused_and_nothing_is_spooled(tmp_path: Path, spool: FileSpool) -> None:
    sink = Sink()
    inject, handoff = injector(tmp_path, spool, sink)
    assert await inject.inject(transaction(b"\r\n \r\n")) == Rejected(Refusal.EMPTY_MESSAGE)
    assert (handoff.calls, sink.events, list(spool.scan())) == ([], [], [])


async def test_a_broken_x_msys_api_is_refused_with_momentums_reason(tmp_path: Path, spool: FileSpool) -> None:
    inject, handoff = injector(tmp_path, spool, Sink())
    outcome = await inject.inject(transaction(b"X-MSYS-API: {nope\r\n\r\nbody\r\n"))
    assert isinstance(outcome, Rejected) and outcome.refusal is Refusal.SMTPAPI
    assert outcome.detail.startswith("JSON parsing error in X-MSYS-API")
    assert handoff.calls == []


async def test_an_accepted_message_carries_one_identity_per_recipient(tmp_path: Path, spool: FileSpool) -> None:
    inject, _ = injector(tmp_path, spool, Sink())
    outcome = await inject.inject(transaction(rcpt_tos=["Alice@Example.COM", "bob@example.net"]))
    assert isinstance(outcome, Accepted)
    first, second = (recipient.identity for recipient in outcome.record.recipients)
    assert (first.rcpt_to, first.raw_rcpt_to, first.routing_domain) == ("alice@example.com", "Alice@Example.COM",
                                                                         "example.com")
    assert (first.campaign_id, first.tags, first.customer_id) == ("spring", ("promo",), "7")
    assert (first.subject, first.friendly_from, first.msg_from) == ("Spring sale", "Café <app@example.org>",
                                                                    "app@example.org")
    assert (first.message_id, first.transmission_id) == (outcome.record.message_id, outcome.record.transmission_id)
    assert first.delv_method == "capture"  # the default delivery mode
    assert second.rcpt_to == "bob@example.net" and outcome.record.recipients[1].plan.open_tracking


async def test_injection_events_are_stored_right_after_the_spool_commit(tmp_path: Path, spool: FileSpool) -> None:
    sink = Sink()
    inject, handoff = injector(tmp_path, spool, sink)
    outcome = await inject.inject(transaction(rcpt_tos=["a@example.com", "b@example.com"]))
    assert isinstance(outcome, Accepted)
    [entry] = list(spool.scan())
    assert entry.record == outcome.record
    assert [type(event) for event in sink.events] == [InjectionEvent, InjectionEvent]
    assert [event.event_id for event in sink.events] == [r.injection_event_id for r in outcome.record.recipients]
    assert handoff.calls == [(outcome.record, True, 2)]  # delivery learns the events were stored


async def test_a_failing_event_store_does_not_undo_the_accept(tmp_path: Path, spool: FileSpool) -> None:
    inject, handoff = injector(tmp_path, spool, Sink(failing=True))
    outcome = await inject.inject(transaction())
    assert isinstance(outcome, Accepted)
    assert handoff.calls == [(outcome.record, False, 0)]  # delivery stores the injection events itself


async def test_a_spool_that_cannot_store_refuses_temporarily(tmp_path: Path) -> None:
    spool = FileSpool(tmp_path / "spool")  # never opened: its directories do not exist
    inject, handoff = injector(tmp_path, spool, Sink())
    assert await inject.inject(transaction()) == Rejected(Refusal.SPOOL_UNAVAILABLE)
    assert handoff.calls == []


async def test_a_full_spool_filesystem_refuses_with_its_own_refusal(tmp_path: Path, spool: FileSpool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool, "_write", full)
    inject, handoff = injector(tmp_path, spool, Sink())
    outcome = await inject.inject(transaction())
    assert outcome == Rejected(Refusal.SPOOL_FULL)
    assert injection_reply(outcome) == "452 4.3.1 Insufficient system storage, try again later"
    assert handoff.calls == [] and list(spool.scan()) == []


LISTED = (b"From: app@example.org\r\nCc: Old <old@example.com>\r\nSubject: s\r\n"
          b'X-MSYS-API: {"campaign_id": "c", "options": {"click_tracking": true},'
          b' "cc": [{"email": "Cc1@Example.com", "name": "CC 1"}, "to@example.com"],'
          b' "bcc": ["bcc@example.com", "cc1@example.com"], "archive": ["vault@example.com"]}\r\n\r\nbody\r\n')


async def test_cc_bcc_and_archive_add_one_recipient_each_after_the_envelope(tmp_path: Path, spool: FileSpool) -> None:
    sink = Sink()
    inject, _ = injector(tmp_path, spool, sink)
    outcome = await inject.inject(transaction(LISTED, rcpt_tos=["To@Example.com"]))
    assert isinstance(outcome, Accepted)
    record = outcome.record
    rows = [(r.identity.rcpt_to, r.identity.rcpt_type) for r in record.recipients]
    assert rows == [("to@example.com", ""), ("cc1@example.com", "cc"), ("bcc@example.com", "bcc"),
                    ("vault@example.com", "archive")]
    to, cc, bcc, archive = record.recipients
    assert {r.identity.transmission_id for r in record.recipients} == {record.transmission_id}
    assert all(r.identity.campaign_id == "c" and r.plan.click_tracking for r in record.recipients)
    assert record.cc_field == b"Cc: Old <old@example.com>,\r\n CC 1 <Cc1@Example.com>,\r\n to@example.com\r\n"
    assert (to.bcc_field, cc.bcc_field, archive.bcc_field, record.drop_bcc) == (b"", b"", b"", True)
    assert bcc.bcc_field == b"Bcc: bcc@example.com\r\n"
    assert archive.replica_of == to.identity and archive.plan == to.plan
    assert cc.replica_of is None and bcc.replica_of is None
    assert [event.rcpt_type for event in sink.events] == [None, "cc", "bcc", "archive"]
    assert len({event.event_id for event in sink.events}) == 4


async def test_a_non_ascii_listed_address_needs_smtputf8(tmp_path: Path, spool: FileSpool) -> None:
    inject, handoff = injector(tmp_path, spool, Sink())
    message = 'X-MSYS-API: {"cc": ["jörg@example.com"]}\r\n\r\nbody\r\n'.encode()
    outcome = await inject.inject(transaction(message))
    assert isinstance(outcome, Rejected) and outcome.refusal is Refusal.SMTPAPI
    assert outcome.detail == "X-MSYS-API 'cc' address jörg@example.com needs MAIL FROM with SMTPUTF8"
    assert handoff.calls == []


async def test_listed_copies_are_screened_like_envelope_recipients(
        tmp_path: Path, spool: FileSpool, suppressions: SuppressionStore) -> None:
    await suppressions.upsert([SuppressionEntry(recipient=address, type="non_transactional", created=1, updated=1)
                               for address in ("cc1@example.com", "to@example.com")])
    sink = Sink()
    handoff = Handoff(sink)
    inject = Injector(Config(data_dir=str(tmp_path)), spool, handoff, events=sink,
                      suppression=SuppressionCheck(suppressions))
    outcome = await inject.inject(transaction(LISTED, rcpt_tos=["To@Example.com"]))
    assert isinstance(outcome, Accepted)
    kept = outcome.record.recipients
    assert [(r.identity.rcpt_to, r.identity.rcpt_type) for r in kept] == [
        ("bcc@example.com", "bcc"), ("vault@example.com", "archive")]
    # The archive still replicates the envelope recipient's copy, though that one is not sent.
    assert kept[1].replica_of is not None and kept[1].replica_of.rcpt_to == "to@example.com"
    rejected = [(e.rcpt_to, e.rcpt_type) for e in sink.events if isinstance(e, PolicyRejectionEvent)]
    assert sorted(rejected, key=str) == [("cc1@example.com", "cc"), ("to@example.com", None)]
