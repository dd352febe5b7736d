"""The outward forms of a stored event: webhook batches (integer Unix seconds) and the Events API (ISO-8601).

The store keeps `timestamp` as epoch seconds with milliseconds ("1700000000.123"). SparkPost sends
webhook events with Unix seconds as an integer (`"timestamp": 1454442600` in its samples; its Go
client parses an integer, bare or quoted) and answers its Events API with ISO-8601 carrying
milliseconds and an offset (`"2017-04-26T21:37:32.000+00:00"`). Each outward encoder rewrites only
that one value; every other byte is the stored event's JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from engaged.events.model import Event, decode_event, encode_event

__all__ = ["api_json", "decode_api_json", "iso_timestamp", "stored_timestamp", "unix_seconds", "webhook_json"]


def unix_seconds(timestamp: str) -> int:
    """A stored timestamp as SparkPost's webhook value: whole Unix seconds (the fraction dropped)."""
    return int(float(timestamp))


def iso_timestamp(timestamp: str) -> str:
    """A stored timestamp as SparkPost's Events API value: `2017-04-26T21:37:32.000+00:00`."""
    return datetime.fromtimestamp(float(timestamp), UTC).isoformat(timespec="milliseconds")


def stored_timestamp(iso: str) -> str:
    """An Events API timestamp back in the store's form, exactly: `…32.000+00:00` → "1493242652.000"."""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    millis = (moment - _EPOCH) // timedelta(milliseconds=1)
    return f"{millis // 1000}.{millis % 1000:03d}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def decode_api_json(data: bytes) -> Event:
    """An event in the Events API's form (or the store's: both are read), as the store keeps it."""
    event = decode_event(data)
    if "T" in event.timestamp:
        return msgspec.structs.replace(event, timestamp=stored_timestamp(event.timestamp))
    return event


def _with_timestamp(event: Event, value: bytes) -> bytes:
    stored = encode_event(event)
    field = b'"timestamp":"' + event.timestamp.encode() + b'"'
    at = stored.find(field)
    if at < 0:  # every event carries its timestamp; the encoder writes it exactly like this
        raise ValueError(f"event {event.event_id} has no encoded timestamp")
    return stored[:at] + b'"timestamp":' + value + stored[at + len(field):]


def webhook_json(event: Event) -> bytes:
    """The event as a webhook batch carries it: `timestamp` an integer of Unix seconds."""
    return _with_timestamp(event, str(unix_seconds(event.timestamp)).encode())


def api_json(event: Event) -> bytes:
    """The event as the Events API (and the live stream) answers it: `timestamp` ISO-8601 with milliseconds."""
    return _with_timestamp(event, b'"' + iso_timestamp(event.timestamp).encode() + b'"')
