"""Query parameters of the API (SparkPost's names and formats) and JSON answers, errors included."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

from engaged.events.model import EVENT_TYPES
from engaged.timestamps import parse_moment
from engaged.types import EventQuery

__all__ = ["BadRequest", "decode_cursor", "encode_cursor", "error", "event_query", "integer", "json", "listed",
           "moment"]

_encoder = msgspec.json.Encoder()
_PLUS_LOST = re.compile(r"(T[0-9:.]+) ([0-9]{2}(:?[0-9]{2})?)$")  # "+02:00" unescaped as " 02:00" in a query


class BadRequest(Exception):
    """A parameter the API cannot use; answered 400 with SparkPost's error shape."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def json(content: Any, status: int = 200) -> Response:
    """A JSON answer (never markup: every value from an event travels as a JSON string)."""
    return Response(_encoder.encode(content), status_code=status, media_type="application/json")


def error(status: int, message: str, param: str | None = None) -> Response:
    """`{"errors": [{"message": …, "param": …}]}`, SparkPost's error shape."""
    item = {"message": message} if param is None else {"message": message, "param": param}
    return json({"errors": [item]}, status)


def listed(params: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list parameter (empty: no filter)."""
    return tuple(item.strip() for item in params.get(name, "").split(",") if item.strip())


def moment(params: Mapping[str, str], name: str) -> float | None:
    """A time given as epoch seconds or ISO-8601 (`2024-05-01T10:00`, `…Z`, `…+02:00`; naive means UTC)."""
    try:
        return parse_moment(_PLUS_LOST.sub(r"\1+\2", params.get(name, "").strip()))
    except ValueError:
        raise BadRequest(name, f"{name} must be ISO-8601 (YYYY-MM-DDTHH:MM) or epoch seconds") from None


def integer(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(name, f"{name} must be an integer") from None
    if not low <= number <= high:
        raise BadRequest(name, f"{name} must be between {low} and {high}")
    return number


def event_query(params: Mapping[str, str]) -> EventQuery:
    """The SparkPost event filters: events, campaigns, recipients, message_ids, transmissions, from, to."""
    types = listed(params, "events")
    unknown = [name for name in types if name not in EVENT_TYPES]
    if unknown:
        raise BadRequest("events", f"unknown event types: {', '.join(unknown)} (known: {', '.join(EVENT_TYPES)})")
    since, until = moment(params, "from"), moment(params, "to")
    if since is not None and until is not None and since >= until:
        raise BadRequest("from", "from must be before to")
    return EventQuery(types=types, campaigns=listed(params, "campaigns"),
                      recipients=tuple(rcpt.lower() for rcpt in listed(params, "recipients")),
                      message_ids=listed(params, "message_ids"), transmissions=listed(params, "transmissions"),
                      since=since, until=until)


def encode_cursor(seq: int) -> str:
    """An opaque paging cursor for "after this seq"."""
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(value: str, param: str = "cursor") -> int:
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        if not text.startswith("s"):
            raise ValueError(text)
        seq = int(text[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(param, "cursor is not one this API issued") from None
    if seq < 0:
        raise BadRequest(param, "cursor is not one this API issued")
    return seq
