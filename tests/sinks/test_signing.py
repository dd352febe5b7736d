"""The webhook wire format: body shape, stable batch ids, signatures, auth headers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import msgspec

from engaged.events.model import EVENT_TYPES, decode_event, envelope_of
from engaged.sinks.signing import batch_body, batch_id, new_secret, request_headers, sign, verify
from engaged.types import WebhookRecord
from tests.sample_events import make_event


def test_the_body_wraps_each_event_in_msys_and_its_envelope() -> None:
    events = [make_event(kind, n) for n, kind in enumerate(EVENT_TYPES)]
    body = msgspec.json.decode(batch_body(events))
    assert body == [{"msys": {envelope_of(kind): {**msgspec.to_builtins(event),
                                                  "timestamp": int(float(event.timestamp))}}}
                    for kind, event in zip(EVENT_TYPES, events, strict=True)]
    assert all(type(next(iter(item["msys"].values()))["timestamp"]) is int for item in body)
    assert batch_body([]) == b"[]"


def test_a_batch_id_depends_only_on_the_webhook_and_the_seq_range() -> None:
    assert batch_id("w", 10, 20) == batch_id("w", 10, 20)
    assert len({batch_id("w", 10, 20), batch_id("w", 10, 21), batch_id("w", 11, 20), batch_id("v", 10, 20)}) == 4


def test_a_signature_verifies_only_with_its_secret_body_and_a_fresh_timestamp() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    header = sign(secret, 1_700_000_000, b"[1]")
    assert header.startswith("t=1700000000,v1=")
    assert verify(secret, header, b"[1]", now=1_700_000_100)
    assert not verify(secret, header, b"[2]", now=1_700_000_100)
    assert not verify(new_secret(), header, b"[1]", now=1_700_000_100)
    assert not verify(secret, header, b"[1]", now=1_700_001_000)
    assert not verify(secret, "v1=abc", b"[1]", now=1_700_000_000)
    assert not verify(secret, "t=x,v1=abc", b"[1]", now=1_700_000_000)


def test_headers_carry_the_batch_id_token_and_authorization() -> None:
    record = WebhookRecord(id="w", name="n", target="https://x.example/", auth_token="tok", auth_type="basic",
                           auth_credentials={"username": "u", "password": "p:w"})
    headers = request_headers(record, new_secret(), "b-1", b"[]", 1_700_000_000)
    assert headers["X-MessageSystems-Batch-ID"] == "b-1" == headers["webhook-id"]
    assert headers["X-MessageSystems-Webhook-Token"] == "tok"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"u:p:w").decode()
    plain = request_headers(WebhookRecord(id="w", name="n", target="https://x.example/"), new_secret(), "b", b"[]", 1)
    assert "Authorization" not in plain and "X-MessageSystems-Webhook-Token" not in plain


def test_a_batch_matches_the_golden_file_key_for_key_in_order() -> None:
    golden = (Path(__file__).resolve().parents[1] / "golden" / "webhook_batch.json").read_bytes()
    expected = json.loads(golden)  # SparkPost's webhook form: integer Unix seconds
    delivery = decode_event(json.dumps({**expected[0]["msys"]["message_event"], "timestamp": "1700000001.500"}))
    click = decode_event(json.dumps({**expected[1]["msys"]["track_event"], "timestamp": "1700000000.250"}))
    assert batch_body([delivery, click]) == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()
