"""Events as the dashboard shows them: a one-line summary and every field as text (never markup)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from engaged.events.model import Event, event_type
from engaged.types import StoredEvent
from engaged.web.agents import machine_label

BOUNCE_CLASSES = {
    "1": "Undetermined", "10": "Invalid recipient", "20": "Soft bounce", "21": "DNS failure", "22": "Mailbox full",
    "23": "Too large", "24": "Timeout", "25": "Admin failure", "30": "Generic bounce: no RCPT", "40": "Generic bounce",
    "50": "Mail block", "51": "Spam block", "52": "Spam content", "53": "Prohibited attachment",
    "54": "Relaying denied", "60": "Auto-reply", "70": "Transient failure", "80": "Subscribe", "90": "Unsubscribe",
    "100": "Challenge-response",
}


class EventView(msgspec.Struct, frozen=True, kw_only=True):
    """One stored event for a table row; every value is plain text for the (autoescaping) templates."""

    seq: int
    type: str
    ts: float
    message_id: str
    rcpt_to: str
    campaign_id: str
    machine: str
    summary: str
    fields: list[tuple[str, str]]


def format_time(epoch: float) -> str:
    """`2024-05-01 10:00:00` in UTC (what the JavaScript shows too)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def summarize(event: Event) -> str:
    """What matters about an event in one line (the same rules as dashboard.js `summarize`)."""
    kind = event_type(event)
    data = msgspec.to_builtins(event)
    if kind == "injection":
        return f"subject: {data.get('subject', '')}"
    if kind == "delivery":
        return f"accepted by {data.get('ip_address') or data.get('routing_domain', '')}"
    if kind in ("delay", "bounce", "out_of_band"):
        code = str(data.get("bounce_class", ""))
        return f"class {code} ({BOUNCE_CLASSES.get(code, 'unknown')}): {data.get('reason', '')}"
    if kind == "policy_rejection":
        return str(data.get("reason", ""))
    if kind == "spam_complaint":
        by = data.get("report_by", "")
        return f"{data.get('fbtype', '') or 'abuse'} complaint" + (f" reported by {by}" if by else "")
    if kind == "list_unsubscribe" and not data.get("user_agent"):
        return f"by mail from {data.get('mailfrom', '')}"
    if kind in ("click", "link_unsubscribe"):
        name = data.get("target_link_name", "")
        return f"{name} → {data.get('target_link_url', '')}" if name else str(data.get("target_link_url", ""))
    return str(data.get("user_agent", ""))


def view_of(stored: StoredEvent) -> EventView:
    event = stored.event
    machine = getattr(event, "machine_engagement", None)
    kind = None if machine is None else machine.kind
    return EventView(
        seq=stored.seq, type=event_type(event), ts=float(event.timestamp), message_id=event.message_id,
        rcpt_to=event.rcpt_to, campaign_id=event.campaign_id, machine="" if kind is None else machine_label(kind),
        summary=summarize(event),
        fields=[(name, _text(value)) for name, value in msgspec.to_builtins(event).items()],
    )
