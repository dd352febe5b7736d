"""Event builders: message and engagement events say the same about a recipient, from one RecipientIdentity."""

from __future__ import annotations

import msgspec

from engaged.events.message import (
    engagement_event,
    engagement_fields,
    injection_events,
    policy_rejection_event,
)
from engaged.events.model import ClickEvent, ListUnsubscribeEvent, OpenEvent, encode_event
from engaged.recipient import TrackingPlan
from tests.records import recipient_identity, spool_record

IDENTITY = recipient_identity(campaign_id="spring", tags=("promo",), metadata={"user": "42"}, customer_id="7",
                              subject="Spring sale", friendly_from="Shop <s@example.org>", msg_from="s@example.org",
                              sending_ip="192.0.2.10", rcpt_type="cc", delv_method="capture")
SHARED = ("message_id", "transmission_id", "campaign_id", "customer_id", "rcpt_to", "raw_rcpt_to", "rcpt_meta",
          "rcpt_tags", "rcpt_type", "sending_ip", "injection_time")


def test_message_and_engagement_events_carry_the_same_recipient_fields() -> None:
    [injection] = injection_events(spool_record((IDENTITY, TrackingPlan(open_tracking=True))))
    click = engagement_event("click", IDENTITY, event_id="2", now=1_700_000_100.0, ip_address="198.51.100.7",
                             user_agent="UA", accept_language="", geo_ip=None, machine_engagement=None,
                             target_url="https://example.com/", link_name="")
    assert isinstance(click, ClickEvent)
    as_message, as_click = msgspec.structs.asdict(injection), msgspec.structs.asdict(click)
    assert {name: as_message[name] for name in SHARED} == {name: as_click[name] for name in SHARED}
    assert (as_click["rcpt_to"], as_click["rcpt_type"], as_click["delv_method"]) == ("alice@example.com", "cc",
                                                                                   "capture")
    assert (click.target_link_url, click.target_link_name) == ("https://example.com/", "https://example.com/")


def test_engagement_fields_leave_out_what_the_event_would_omit() -> None:
    bare = recipient_identity(injection_time=0.0)
    fields = engagement_fields("open", bare)
    assert not {"rcpt_type", "template_id", "sending_ip", "injection_time"} & set(fields)
    assert fields["delv_method"] == "esmtp"  # SparkPost's open and click samples always carry it
    assert "target_link_url" not in fields
    line = encode_event(OpenEvent(event_id="1", timestamp="1.000", **fields))
    assert msgspec.json.decode(line)["rcpt_meta"] == {}


def test_unsubscribe_events_name_the_address_that_asked() -> None:
    assert engagement_fields("link_unsubscribe", IDENTITY, target_url="https://u/")["mailfrom"] == "alice@example.com"
    listed = engagement_event("list_unsubscribe", IDENTITY, event_id="3", now=1.0, ip_address="", user_agent="",
                              accept_language="", geo_ip=None, machine_engagement=None)
    assert isinstance(listed, ListUnsubscribeEvent) and listed.mailfrom == "alice@example.com"


def test_a_policy_rejection_is_built_from_the_envelope_identity() -> None:
    event = policy_rejection_event(recipient_identity("Bob@Example.net", transmission_id="", msg_from="a@x"),
                                   event_id="9", now=1_700_000_000.0, remote_addr="203.0.113.9", error_code="550",
                                   reason="blocked")
    assert (event.rcpt_to, event.raw_rcpt_to, event.routing_domain, event.msg_from) == (
        "bob@example.net", "Bob@Example.net", "example.net", "a@x")
    assert (event.error_code, event.raw_reason, event.msg_size) == ("550", "blocked", "0")


def test_engagement_fields_omit_the_empty_message_fields_as_the_event_does() -> None:
    bare = recipient_identity(injection_time=0.0)
    fields = engagement_fields("click", bare, target_url="https://example.com/")
    canonical = msgspec.json.decode(encode_event(ClickEvent(event_id="1", timestamp="1.000", **fields)))
    assert set(canonical) == {"type", "event_id", "timestamp", *fields}
