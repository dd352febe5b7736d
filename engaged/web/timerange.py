"""The dashboard's time range (last hour, day, 7 days, all time, or custom from/to in UTC) and chart buckets."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from engaged.timestamps import parse_moment

RANGES: dict[str, tuple[str, float | None]] = {
    "1h": ("Last hour", 3600.0),
    "1d": ("Last 24 hours", 86400.0),
    "7d": ("Last 7 days", 7 * 86400.0),
    "all": ("All time", None),
}
DEFAULT_RANGE = "7d"
MINUTE, HOUR, DAY = 60, 3600, 86400


class BadRange(Exception):
    """A range parameter the dashboard cannot use (answered 400 with the message)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TimeRange(msgspec.Struct, frozen=True, kw_only=True):
    """Events with since <= ts < until (None: unbounded); `start_text`/`end_text` echo a custom range's form."""

    name: str
    since: float | None
    until: float | None
    start_text: str = ""
    end_text: str = ""

    @property
    def label(self) -> str:
        if self.name == "custom":
            return f"{self.start_text or '…'} – {self.end_text or 'now'} UTC"
        return RANGES[self.name][0]

    def params(self) -> list[tuple[str, str]]:
        """Query parameters that select this range again (for links and the JSON endpoints)."""
        if self.name == "custom":
            return [("range", "custom"), ("from", self.start_text), ("to", self.end_text)]
        return [("range", self.name)]


def user_moment(text: str, name: str) -> float | None:
    """`YYYY-MM-DDTHH:MM[:SS]` (a datetime-local input; no zone means UTC), ISO-8601 with a zone, or epoch seconds."""
    try:
        return parse_moment(text)
    except ValueError:
        raise BadRange(f"{name} must be a date and time like 2024-05-01T10:00 (UTC)") from None


def parse_range(params: Mapping[str, str], now: float) -> TimeRange:
    """The range a request asks for: `range=1h|1d|7d|all` or `range=custom&from=…&to=…` (default: 7 days)."""
    name = params.get("range", "") or DEFAULT_RANGE
    if name == "custom":
        start, end = params.get("from", ""), params.get("to", "")
        since, until = user_moment(start, "from"), user_moment(end, "to")
        if since is not None and until is not None and since >= until:
            raise BadRange("from must be before to")
        return TimeRange(name=name, since=since, until=until, start_text=start.strip(), end_text=end.strip())
    if name not in RANGES:
        raise BadRange(f"range must be one of {', '.join(RANGES)} or custom")
    span = RANGES[name][1]
    return TimeRange(name=name, since=None if span is None else now - span, until=None)


def bucket_width(since: float, until: float) -> int:
    """Seconds per chart bucket: per minute up to an hour, per hour up to 14 days, per day beyond."""
    span = until - since
    if span <= HOUR + MINUTE:  # "the last hour", measured a moment after the range was read
        return MINUTE
    return HOUR if span <= 14 * DAY else DAY
