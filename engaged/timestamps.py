"""User-given times (CLI, API, dashboard): epoch seconds or ISO-8601, a missing zone meaning UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_moment(text: str) -> float | None:
    """Epoch seconds for `text`: a number, or ISO-8601 (`2024-05-01T10:00`, `2024-05-01 10:00`, `…Z`,
    `…+02:00`; no zone means UTC). None for an empty string; ValueError for anything else."""
    value = text.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(value.replace(" ", "T", 1))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
