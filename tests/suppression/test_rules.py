"""Automatic entries from events: which events suppress, with which source and type, and the follower."""

from __future__ import annotations

import asyncio

import msgspec

from engaged.events.model import BounceEvent, ClickEvent, Event, LinkUnsubscribeEvent
from engaged.suppression.model import SuppressionSearch, SuppressionStore
from engaged.suppression.rules import SuppressionRules, entry_for
from engaged.types import EventStore
from tests.sample_events import make_event

BASE = {"message_id": "m1", "transmission_id": "t1", "campaign_id": "c", "customer_id": "", "rcpt_to": "a@x.io",
        "raw_rcpt_to": "A@x.io", "rcpt_meta": {}, "rcpt_tags": []}
MESSAGE = {"friendly_from": "", "msg_from": "s@x.io", "msg_size": "1", "subject": "", "ip_pool": "",
           "routing_domain": "x.io", "recipient_domain": "x.io", "injection_time": "", "transactional": "0",
           "open_tracking": False, "click_tracking": False, "initial_pixel": False, "recv_method": "esmtp"}


def bounce(event_id: str, bounce_class: str, *, transactional: str = "0", at: str = "1700000000.000") -> BounceEvent:
    fields = {**MESSAGE, "transactional": transactional}
    return BounceEvent(event_id=event_id, timestamp=at, **BASE, **fields, delv_method="esmtp",  # type: ignore[arg-type]
                       ip_address="", num_retries="0", bounce_class=bounce_class, error_code="550",
                       reason="5.1.1 user unknown", raw_reason="5.1.1 user unknown")


def test_hard_bounce_classes_suppress_and_soft_ones_do_not() -> None:
    for hard in ("10", "30", "90"):
        entry = entry_for(bounce("1", hard))
        assert entry is not None and entry.source == "Bounce Rule" and entry.type == "non_transactional"
        assert entry.recipient == "a@x.io" and entry.created == entry.updated == 1_700_000_000.0
    for soft in ("1", "20", "21", "22", "24", "25", "50", "51", "70"):
        assert entry_for(bounce("1", soft)) is None
    entry = entry_for(bounce("1", "10", transactional="1"))
    assert entry is not None and entry.type == "transactional"


def test_a_link_unsubscribe_suppresses_non_transactional_mail_and_a_click_does_not() -> None:
    unsubscribe = LinkUnsubscribeEvent(event_id="2", timestamp="1700000001.000", **BASE)  # type: ignore[arg-type]
    entry = entry_for(unsubscribe)
    assert entry is not None and (entry.source, entry.type) == ("Unsubscribe Link", "non_transactional")
    assert entry_for(ClickEvent(event_id="3", timestamp="1700000001.000", **BASE)) is None  # type: ignore[arg-type]


async def test_the_follower_adds_entries_and_keeps_its_place(store: EventStore, suppressions: SuppressionStore) -> None:
    old: list[Event] = [bounce("1", "10")]
    await store.append(old)
    rules = SuppressionRules(store, suppressions, poll=0.05)
    await rules.start()
    assert rules.cursor == await store.head()  # a first start begins at the head: old events are history
    moved = msgspec.structs.replace(bounce("2", "30"), rcpt_to="b@x.io", raw_rcpt_to="b@x.io")
    await store.append([moved])

    async def entries() -> list[str]:
        return [entry.recipient for entry in await suppressions.search(SuppressionSearch())]

    for _ in range(500):
        if await entries():
            break
        await asyncio.sleep(0.02)
    assert await entries() == ["b@x.io"]
    await rules.stop()
    await suppressions.delete("b@x.io")
    restarted = SuppressionRules(store, suppressions, poll=0.05)
    await restarted.start()
    assert restarted.cursor == await store.head()
    await restarted.stop()
    assert await entries() == []  # a deleted entry is not brought back by its old event


def test_out_of_band_list_unsubscribe_and_complaints_make_their_entries() -> None:
    hard = msgspec.structs.replace(make_event("out_of_band", 1), transactional="1")
    entry = entry_for(hard)
    assert entry is not None and (entry.source, entry.type) == ("Bounce Rule", "transactional")
    assert entry.description.startswith("out-of-band bounce class 10: 550 5.1.1")
    assert entry_for(msgspec.structs.replace(hard, bounce_class="22")) is None
    listed = entry_for(make_event("list_unsubscribe", 2))
    assert listed is not None and (listed.source, listed.type) == ("List Unsubscribe", "non_transactional")
    complaint = entry_for(make_event("spam_complaint", 3))
    assert complaint is not None and (complaint.source, complaint.type) == ("Spam Complaint", "non_transactional")
    assert complaint.description == "Spam complaint (abuse) reported by fbl.example.org"
    assert complaint.recipient == "ann@example.com"
