"""Query parameters of the API (SparkPost's names and formats) and JSON answers, errors included."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

from engaged.events.model import SPARKPOST_EVENT_TYPES
from engaged.timestamps import parse_moment
from engaged.types import EventQuery

__all__ = ["ERROR_MESSAGES", "BadRequest", "decode_cursor", "encode_cursor", "error", "error_body", "event_query",
           "integer", "json", "listed", "moment"]

_encoder = msgspec.json.Encoder()
_PLUS_LOST = re.compile(r"(T[0-9:.]+) ([0-9]{2}(:?[0-9]{2})?)$")  # "+02:00" unescaped as " 02:00" in a query


class BadRequest(Exception):
    """A parameter the API cannot use; answered 400 with SparkPost's error shape."""

    def __init__(self, param: str, message: str, validation_errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.message = message
        self.validation_errors = validation_errors  # SparkPost's `validationErrors` (query_filters)

    def answer(self) -> Response:
        """The 400 answer that says what was wrong."""
        return error(400, self.message, self.param, validation_errors=self.validation_errors)


def json(content: Any, status: int = 200) -> Response:
    """A JSON answer (never markup: every value from an event travels as a JSON string)."""
    return Response(_encoder.encode(content), status_code=status, media_type="application/json")


ERROR_MESSAGES: dict[str, str] = {
    "1100": "permission denied",
    "1101": "invalid URI",
    "1102": "invalid HTTP method",
    "1200": "invalid params",
    "1300": "invalid data format/type/length",
    "1400": "Required field is missing",
    "1500": "Failed to update database",
    "1501": "Failed to read from database",
    "1600": "resource not found",
    "1602": "Resource in use",
    "1700": "Unsupported Content-Type header",
}
"""SparkPost's extended error codes and their `message` texts (its "Extended Error Codes" table)."""

_CODES = {400: "1200", 401: "1100", 403: "1100", 404: "1600", 405: "1102", 409: "1602", 415: "1700", 422: "1300",
          500: "1500", 503: "1501"}


def error_body(status: int, description: str, param: str | None = None, *, code: str | None = None,
               message: str | None = None, validation_errors: list[dict[str, str]] | None = None) -> bytes:
    """`{"errors": [{"message", "code", "description"}]}` (plus our `param`), SparkPost's error shape.

    `code` defaults to SparkPost's code for the status; `message` is SparkPost's text for the code
    ("Unauthorized." for 401, as SparkPost answers) unless an endpoint documents its own (`message`), and
    `description` says what exactly was wrong.
    """
    code = code or _CODES.get(status, "1200")
    if message is None:
        message = "Unauthorized." if status == 401 else ERROR_MESSAGES.get(code, "invalid params")
    item: dict[str, Any] = {"message": message, "code": code, "description": description}
    if param is not None:
        item["param"] = param
    if validation_errors is not None:
        item["validationErrors"] = validation_errors
    return _encoder.encode({"errors": [item]})


def error(status: int, description: str, param: str | None = None, *, code: str | None = None,
          message: str | None = None, validation_errors: list[dict[str, str]] | None = None) -> Response:
    """An error answer with SparkPost's shape (see error_body)."""
    body = error_body(status, description, param, code=code, message=message, validation_errors=validation_errors)
    return Response(body, status_code=status, media_type="application/json")


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
    unknown = [name for name in types if name not in SPARKPOST_EVENT_TYPES]
    if unknown:
        raise BadRequest("events", f"unknown event types: {', '.join(unknown)} (SparkPost's: "
                                   f"{', '.join(SPARKPOST_EVENT_TYPES)})")
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
