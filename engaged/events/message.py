"""Builders of message events (injection, delivery, delay, bounce) from spool records and outcomes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engaged.events.model import BounceEvent, DelayEvent, DeliveryEvent, InjectionEvent, PolicyRejectionEvent
from engaged.spool.record import SpoolRecord


def format_timestamp(epoch: float) -> str:
    """SparkPost's `timestamp`: epoch seconds as a string, with milliseconds."""
    return f"{epoch:.3f}"


def format_iso(epoch: float) -> str:
    """ISO-8601 with milliseconds and offset, as SparkPost's injection_time."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _common(record: SpoolRecord, index: int, event_id: str, now: float) -> dict[str, Any]:
    recipient = record.recipients[index]
    plan = recipient.plan
    rcpt_domain = recipient.rcpt_to.rpartition("@")[2].lower()
    return {
        "event_id": event_id,
        "timestamp": format_timestamp(now),
        "message_id": record.message_id,
        "transmission_id": record.transmission_id,
        "campaign_id": plan.campaign_id,
        "customer_id": plan.customer_id,
        "rcpt_to": recipient.rcpt_to.lower(),
        "raw_rcpt_to": recipient.rcpt_to,
        "rcpt_meta": plan.metadata,
        "rcpt_tags": plan.tags,
        "friendly_from": record.friendly_from,
        "msg_from": record.mail_from,
        "msg_size": str(record.body_length),
        "subject": record.subject,
        "ip_pool": plan.ip_pool,
        "routing_domain": rcpt_domain,
        "recipient_domain": rcpt_domain,
        "injection_time": format_iso(record.received_at),
        "transactional": "1" if plan.transactional else "0",
        "sandbox": "1" if plan.sandbox else None,
        "open_tracking": plan.open_tracking,
        "click_tracking": plan.click_tracking,
        "initial_pixel": plan.open_tracking and plan.initial_open,
        "recv_method": "esmtp",
        "dsn_notify": recipient.dsn_notify or None,
        "dsn_orcpt": recipient.dsn_orcpt or None,
        "dsn_ret": record.dsn_ret or None,
        "dsn_envid": record.dsn_envid or None,
    }


def injection_event(record: SpoolRecord, index: int, warnings: list[str] | None = None) -> InjectionEvent:
    """The injection event of recipient `index`; its id was fixed when the message was spooled.

    `warnings` are what building the message's copies reported (a part left untracked, …).
    """
    recipient = record.recipients[index]
    fields = _common(record, index, recipient.injection_event_id, record.received_at)
    return InjectionEvent(**fields, warnings=[*record.warnings, *(warnings or [])] or None)


def delivery_event(
    record: SpoolRecord,
    index: int,
    *,
    event_id: str,
    now: float,
    ip_address: str,
    num_retries: int,
    outbound_tls: str,
    delv_method: str,
    warnings: list[str] | None = None,
) -> DeliveryEvent:
    """The delivery event of recipient `index`, with queue_time in milliseconds."""
    fields = _common(record, index, event_id, now)
    if warnings:
        fields["warnings"] = warnings
    return DeliveryEvent(
        **fields,
        delv_method=delv_method,
        ip_address=ip_address,
        num_retries=str(num_retries),
        queue_time=str(max(0, int((now - record.received_at) * 1000))),
        outbound_tls=outbound_tls,
    )


def delay_event(
    record: SpoolRecord, index: int, *, event_id: str, now: float, ip_address: str, num_retries: int,
    error_code: str, reason: str, raw_reason: str, bounce_class: str,
) -> DelayEvent:
    """A temporary failure of recipient `index`."""
    return DelayEvent(
        **_common(record, index, event_id, now),
        delv_method="esmtp",
        ip_address=ip_address,
        num_retries=str(num_retries),
        queue_time=str(max(0, int((now - record.received_at) * 1000))),
        outbound_tls="0",
        error_code=error_code,
        reason=reason,
        raw_reason=raw_reason,
        bounce_class=bounce_class,
    )


def bounce_event(
    record: SpoolRecord, index: int, *, event_id: str, now: float, ip_address: str, num_retries: int,
    error_code: str, reason: str, raw_reason: str, bounce_class: str,
) -> BounceEvent:
    """A permanent failure of recipient `index`."""
    return BounceEvent(
        **_common(record, index, event_id, now),
        delv_method="esmtp",
        ip_address=ip_address,
        num_retries=str(num_retries),
        error_code=error_code,
        reason=reason,
        raw_reason=raw_reason,
        bounce_class=bounce_class,
    )


def policy_rejection_event(
    *, event_id: str, now: float, message_id: str, transmission_id: str, rcpt_to: str, mail_from: str,
    remote_addr: str, error_code: str, reason: str, customer_id: str = "",
) -> PolicyRejectionEvent:
    """Policy refused a message before it was accepted (nothing was spooled)."""
    domain = rcpt_to.rpartition("@")[2].lower()
    return PolicyRejectionEvent(
        event_id=event_id, timestamp=format_timestamp(now), message_id=message_id, transmission_id=transmission_id,
        campaign_id="", customer_id=customer_id, rcpt_to=rcpt_to.lower(), raw_rcpt_to=rcpt_to, rcpt_meta={},
        rcpt_tags=[], friendly_from="", msg_from=mail_from, msg_size="0", subject="", ip_pool="",
        routing_domain=domain, recipient_domain=domain, injection_time=format_iso(now), transactional="0",
        open_tracking=False, click_tracking=False, initial_pixel=False, recv_method="esmtp",
        remote_addr=remote_addr, error_code=error_code, reason=reason, raw_reason=reason,
    )
