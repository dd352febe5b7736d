"""SparkPost event format: golden JSON for message events, envelopes, round trips."""

from __future__ import annotations

import json
from pathlib import Path

from engaged.events.ids import EventIdGenerator, timestamp_of
from engaged.events.message import delivery_event, injection_events
from engaged.events.model import decode_event, encode_event, envelope_of, event_type
from engaged.recipient import TrackingPlan
from engaged.spool.record import SpoolRecipient, SpoolRecord
from tests.records import recipient_identity

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

RECORD = SpoolRecord(
    message_id="000443ee14578172be22", transmission_id="65832150921904138", received_at=1700000000.0,
    mail_from="app@example.org", body_length=1234,
    recipients=[SpoolRecipient(
        identity=recipient_identity(msg_from="app@example.org", friendly_from="App <app@example.org>",
                                    subject="Spring sale", campaign_id="spring_sale", metadata={"user_id": "42"},
                                    tags=("promo",), customer_id="1"),
        plan=TrackingPlan(open_tracking=True, click_tracking=True),
        injection_event_id="92356927693813856",
    )],
)


def test_injection_event_matches_the_golden_file() -> None:
    [event] = injection_events(RECORD)
    expected = json.loads((GOLDEN / "injection.json").read_text())
    assert json.loads(encode_event(event)) == expected


def test_delivery_event_matches_the_golden_file() -> None:
    event = delivery_event(RECORD, 0, event_id="92356927693813857", now=1700000001.5, ip_address="127.0.0.1",
                           num_retries=0, outbound_tls="1", delv_method="esmtp")
    expected = json.loads((GOLDEN / "delivery.json").read_text())
    assert json.loads(encode_event(event)) == expected


def test_events_round_trip_through_json() -> None:
    [event] = injection_events(RECORD)
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert event_type(decoded) == "injection"
    assert envelope_of("injection") == "message_event"
    assert envelope_of("click") == "track_event"
    assert envelope_of("link_unsubscribe") == "unsubscribe_event"
    assert [envelope_of(name) for name in ("amp_open", "amp_initial_open", "amp_click")] == ["track_event"] * 3


def test_event_ids_are_unique_increasing_and_carry_their_time() -> None:
    ids = EventIdGenerator(node=5)
    values = [ids.next_id(1700000000.0) for _ in range(10000)]
    assert len(set(values)) == len(values)
    assert [int(v) for v in values] == sorted(int(v) for v in values)
    assert abs(timestamp_of(values[0]) - 1700000000.0) < 0.001
    assert all(int(v) < 2**63 for v in values)
