"""SparkPost's Events API search parameters (GET /api/v1/events/message and the live stream) as one EventQuery."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engaged.api.params import BadRequest
from engaged.events.model import SPARKPOST_EVENT_TYPES
from engaged.types import EventQuery, FieldFilter

__all__ = ["DEFAULT_WINDOW", "LIST_FILTERS", "SEARCH_PARAMETERS", "parse_moment_in", "search_query", "zone_of"]

DEFAULT_WINDOW = 24 * 3600.0
"""Without `from`, the search covers the last 24 hours (SparkPost's default)."""

LIST_FILTERS: dict[str, tuple[str, bool]] = {
    "event_ids": ("event_id", False),
    "messages": ("message_id", False),
    "message_ids": ("message_id", False),
    "transmissions": ("transmission_id", False),
    "transmission_ids": ("transmission_id", False),
    "campaigns": ("campaign_id", True),
    "campaign_ids": ("campaign_id", True),
    "templates": ("template_id", True),
    "template_ids": ("template_id", True),
    "recipient_domains": ("recipient_domain", True),
    "from_addresses": ("friendly_from", True),
    "friendly_froms": ("friendly_from", True),
    "sending_domains": ("sending_domain", True),
    "subjects": ("subject", True),
    "reasons": ("reason", True),
    "bounce_classes": ("bounce_class", False),
    "sending_ips": ("sending_ip", False),
    "ip_pools": ("ip_pool", True),
    "subaccounts": ("subaccount_id", False),
    "mailbox_providers": ("mailbox_provider", True),
    "mailbox_provider_regions": ("mailbox_provider_region", True),
    "ab_tests": ("ab_test_id", True),
    "ab_test_ids": ("ab_test_id", True),
    "ab_test_versions": ("ab_test_version", False),
    "ab_test_version": ("ab_test_version", False),
}
"""List parameters (split on `delimiter`): the event field each one filters, and whether by keyword.

Names of both SparkPost generations are accepted (`messages` and `message_ids`, `campaigns` and
`campaign_ids`, …). Keyword filters are case-insensitive, match every word of a value and take `*`.
"""

_SINGLE_FILTERS = {"subject": "subject", "reason": "reason"}
"""SparkPost's older single-value keyword parameters (a subject may hold the delimiter)."""

SEARCH_PARAMETERS = frozenset({"events", "recipients", "from", "to", "timezone", "cursor", "per_page", "delimiter",
                               *LIST_FILTERS, *_SINGLE_FILTERS})
"""Every parameter the search answers to; any other is refused with 400 rather than silently ignored."""


def zone_of(params: Mapping[str, str]) -> tzinfo:
    """The `timezone` parameter (an IANA name; default UTC)."""
    name = params.get("timezone", "").strip()
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest("timezone", f"timezone {name!r} is not a standard timezone name (e.g. America/New_York)"
                         ) from None


def parse_moment_in(params: Mapping[str, str], name: str, zone: tzinfo) -> float | None:
    """A time parameter: epoch seconds or ISO-8601; a time without offset is read in `zone`."""
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    if len(text) > 10 and text[-6] == " ":  # "+02:00" whose "+" a query string turned into a space
        text = text[:-6] + "+" + text[-5:]
    try:
        parsed = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise BadRequest(name, f"{name} must be YYYY-MM-DDTHH:MM (in timezone), ISO-8601 or epoch seconds") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).timestamp()


def _split(params: Mapping[str, str], name: str, delimiter: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in params.get(name, "").split(delimiter) if item.strip())


def search_query(params: Mapping[str, str], *, now: float | None, extra: frozenset[str] = frozenset()) -> EventQuery:
    """The EventQuery for SparkPost's search parameters; BadRequest names the first unusable one.

    `now` given (the search): `from` defaults to 24 hours before it. None (the live stream): no window.
    `extra` names further parameters the caller reads itself (the stream's `last_event_id`).
    """
    unknown = sorted(set(params) - SEARCH_PARAMETERS - extra)
    if unknown:
        raise BadRequest(unknown[0], f"Unsupported parameter '{unknown[0]}' (supported: "
                                     f"{', '.join(sorted(SEARCH_PARAMETERS))})")
    delimiter = params.get("delimiter", ",") or ","
    types = _split(params, "events", delimiter)
    unsupported = [name for name in types if name not in SPARKPOST_EVENT_TYPES]
    if unsupported:
        raise BadRequest("events", f"unknown event types: {', '.join(unsupported)} (SparkPost's: "
                                   f"{', '.join(SPARKPOST_EVENT_TYPES)})")
    zone = zone_of(params)
    since, until = parse_moment_in(params, "from", zone), parse_moment_in(params, "to", zone)
    if since is None and now is not None:
        since = now - DEFAULT_WINDOW
    if since is not None and until is not None and since >= until:
        raise BadRequest("from", "from must be before to")
    recipients = tuple(rcpt.lower() for rcpt in _split(params, "recipients", delimiter))
    exact_recipients = tuple(rcpt for rcpt in recipients if "*" not in rcpt)
    fields: list[FieldFilter] = []
    if len(exact_recipients) < len(recipients):  # a wildcard: every recipient by keyword
        fields.append(FieldFilter("rcpt_to", recipients, keyword=True))
        exact_recipients = ()
    for name, (field, keyword) in LIST_FILTERS.items():
        values = _split(params, name, delimiter)
        if values:
            fields.append(FieldFilter(field, values, keyword=keyword))
    for name, field in _SINGLE_FILTERS.items():
        value = params.get(name, "").strip()
        if value:
            fields.append(FieldFilter(field, (value,), keyword=True))
    return EventQuery(types=types, recipients=exact_recipients, fields=tuple(fields), since=since, until=until)
