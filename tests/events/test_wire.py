"""Golden tests of every event type in SparkPost's two outward forms: webhook batches and the Events API.

The golden files (tests/golden/events/<type>.webhook.json and .api.json) pin the exact JSON of each
type's sample; the checks below hold every type to SparkPost's documented field list and JSON types:
webhook `timestamp` an integer of Unix seconds, Events API `timestamp` ISO-8601 with milliseconds and
offset, scalars as strings except SparkPost's booleans.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engaged.events.model import EVENT_TYPES, encode_event, envelope_of
from engaged.events.samples import sample
from engaged.events.wire import api_json, decode_api_json, iso_timestamp, stored_timestamp, unix_seconds, webhook_json
from engaged.sinks.signing import batch_body

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "events"
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d")

_BASE = ("type", "event_id", "timestamp", "message_id", "transmission_id", "campaign_id", "customer_id", "rcpt_to",
         "raw_rcpt_to", "rcpt_meta", "rcpt_tags")
_MESSAGE = (*_BASE, "friendly_from", "msg_from", "msg_size", "subject", "ip_pool", "sending_ip", "routing_domain")
_TRACK = (*_BASE, "delv_method", "sending_ip", "ip_address", "user_agent", "geo_ip", "user_agent_parsed",
          "ip_pool", "transactional", "subject", "friendly_from", "msg_from", "routing_domain", "mailbox_provider")
_FAILURE = ("delv_method", "ip_address", "num_retries", "bounce_class", "error_code", "reason", "raw_reason")
DOCUMENTED: dict[str, tuple[str, ...]] = {
    "injection": _MESSAGE,
    "delivery": (*_MESSAGE, "delv_method", "ip_address", "num_retries", "queue_time"),
    "delay": (*_MESSAGE, *_FAILURE, "queue_time"),
    "bounce": (*_MESSAGE, *_FAILURE),
    "policy_rejection": (*_MESSAGE, "remote_addr"),
    "open": _TRACK,
    "initial_open": _TRACK,
    "click": (*_TRACK, "target_link_url", "target_link_name"),
    "link_unsubscribe": (*_TRACK, "mailfrom", "target_link_url", "target_link_name"),
    "list_unsubscribe": (*_TRACK, "mailfrom"),
    "out_of_band": (*_BASE, "friendly_from", "msg_from", "subject", "routing_domain", "bounce_class", "error_code",
                    "reason", "raw_reason"),
    "amp_initial_open": _TRACK,
    "amp_open": _TRACK,
    "amp_click": (*_TRACK, "target_link_url", "target_link_name"),
    "spam_complaint": (*_BASE, "friendly_from", "msg_from", "subject", "fbtype", "report_by", "report_to",
                       "user_str"),
}
"""SparkPost's field list of each type (momentum-spec §11.3, the "M" set plus item 8 of issue 14), less what
engaged documents as absent: subaccount_id, template_id and template_version (no subaccounts or templates)
and rcpt_type (only on cc, bcc and archive copies)."""

NOT_STRINGS: dict[str, type] = {"rcpt_meta": dict, "rcpt_tags": list, "geo_ip": dict, "open_tracking": bool,
                                "click_tracking": bool, "initial_pixel": bool, "amp_enabled": bool,
                                "machine_engagement": dict, "user_agent_parsed": dict, "warnings": list}


def test_every_event_type_has_documented_fields_golden_files() -> None:
    assert set(DOCUMENTED) == set(EVENT_TYPES)


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_the_webhook_form_matches_its_golden_file_with_integer_unix_seconds(kind: str) -> None:
    event = sample(kind)
    batch = json.loads(batch_body([event]))
    assert batch == json.loads((GOLDEN / f"{kind}.webhook.json").read_text())
    (item,) = batch
    body = item["msys"][envelope_of(kind)]
    assert type(body["timestamp"]) is int and body["timestamp"] == unix_seconds(event.timestamp)
    assert json.loads(webhook_json(event)) == body
    _check_fields(kind, body)


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_the_events_api_form_matches_its_golden_file_with_iso_8601_milliseconds(kind: str) -> None:
    event = sample(kind)
    body = json.loads(api_json(event))
    assert body == json.loads((GOLDEN / f"{kind}.api.json").read_text())
    assert ISO_MS.fullmatch(body["timestamp"]) and body["timestamp"] == iso_timestamp(event.timestamp)
    if "injection_time" in body:
        assert ISO_MS.fullmatch(body["injection_time"])
    _check_fields(kind, {**body, "timestamp": 0})


def _check_fields(kind: str, body: dict[str, Any]) -> None:
    missing = [name for name in DOCUMENTED[kind] if name not in body]
    assert not missing, f"{kind} lacks {missing}"
    assert body["type"] == kind
    for name, value in body.items():
        if name == "timestamp":
            continue
        expected = NOT_STRINGS.get(name, str)
        assert isinstance(value, expected), f"{kind}.{name} is {type(value).__name__}, SparkPost sends {expected}"


def test_whole_seconds_and_milliseconds_survive_the_conversions() -> None:
    assert unix_seconds("1700000000.999") == 1700000000
    assert iso_timestamp("1700000000.250") == "2023-11-14T22:13:20.250+00:00"
    assert iso_timestamp("1700000000") == "2023-11-14T22:13:20.000+00:00"


@given(st.integers(min_value=0, max_value=4_102_444_800_000))  # milliseconds from 1970 to 2100
def test_an_events_api_timestamp_reads_back_as_the_stored_one_exactly(millis: int) -> None:
    stored = f"{millis // 1000}.{millis % 1000:03d}"
    assert stored_timestamp(iso_timestamp(stored)) == stored


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_every_event_in_the_events_api_form_decodes_to_the_event_as_stored(kind: str) -> None:
    event = sample(kind)
    assert decode_api_json(api_json(event)) == event
    assert decode_api_json(encode_event(event)) == event  # the store's own form is read too
