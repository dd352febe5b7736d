"""Builders of every event we emit, message events (injection, delivery, delay, bounce, policy_rejection) and
engagement events (open, initial_open, click, link_unsubscribe) alike, from one RecipientIdentity."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from engaged.events.enrich import mailbox_provider
from engaged.events.model import (
    AmpClickEvent,
    AmpInitialOpenEvent,
    AmpOpenEvent,
    BounceEvent,
    ClickEvent,
    DelayEvent,
    DeliveryEvent,
    InitialOpenEvent,
    InjectionEvent,
    LinkUnsubscribeEvent,
    ListUnsubscribeEvent,
    MachineEngagement,
    OpenEvent,
    PolicyRejectionEvent,
)
from engaged.recipient import RecipientIdentity, TrackingPlan
from engaged.spool.record import SpoolRecord

EngagementEvent = (OpenEvent | InitialOpenEvent | ClickEvent | LinkUnsubscribeEvent | ListUnsubscribeEvent
                   | AmpOpenEvent | AmpInitialOpenEvent | AmpClickEvent)
_ENGAGEMENT_CLASSES: dict[str, type[EngagementEvent]] = {
    "open": OpenEvent,
    "initial_open": InitialOpenEvent,
    "click": ClickEvent,
    "link_unsubscribe": LinkUnsubscribeEvent,
    "list_unsubscribe": ListUnsubscribeEvent,
    "amp_open": AmpOpenEvent,
    "amp_initial_open": AmpInitialOpenEvent,
    "amp_click": AmpClickEvent,
}


def format_timestamp(epoch: float) -> str:
    """SparkPost's `timestamp`: epoch seconds as a string, with milliseconds."""
    return f"{epoch:.3f}"


def format_iso(epoch: float) -> str:
    """ISO-8601 with milliseconds and offset, as SparkPost's injection_time."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


@functools.lru_cache(maxsize=4096)
def _injection_iso(epoch: float) -> str:
    """A message's injection time as text ("" when unknown); every event of one message shares it."""
    return format_iso(epoch) if epoch else ""


def _recipient_fields(identity: RecipientIdentity, event_id: str, now: float) -> dict[str, Any]:
    """What every event says about its recipient."""
    return {"event_id": event_id, "timestamp": format_timestamp(now), **_identity_fields(identity)}


def _identity_fields(identity: RecipientIdentity) -> dict[str, Any]:
    return {
        "message_id": identity.message_id,
        "transmission_id": identity.transmission_id,
        "campaign_id": identity.campaign_id,
        "customer_id": identity.customer_id,
        "rcpt_to": identity.rcpt_to,
        "raw_rcpt_to": identity.raw_rcpt_to,
        "rcpt_meta": identity.metadata,
        "rcpt_tags": list(identity.tags),
        "rcpt_type": identity.rcpt_type or None,
        "template_id": identity.template_id or None,
        "sending_ip": identity.sending_ip,
        "injection_time": _injection_iso(identity.injection_time),
        **_provider(identity.recipient_domain),
    }


@functools.lru_cache(maxsize=4096)
def _provider(domain: str) -> dict[str, str]:
    provider, region = mailbox_provider(domain)
    return {"mailbox_provider": provider, "mailbox_provider_region": region}


def _message_fields(identity: RecipientIdentity, plan: TrackingPlan, msg_size: int, event_id: str,
                    now: float) -> dict[str, Any]:
    return {
        **_recipient_fields(identity, event_id, now),
        "friendly_from": identity.friendly_from,
        "msg_from": identity.msg_from,
        "msg_size": str(msg_size),
        "subject": identity.subject,
        "ip_pool": identity.ip_pool,
        "routing_domain": identity.routing_domain,
        "recipient_domain": identity.recipient_domain,
        "transactional": "1" if identity.transactional else "0",
        "sandbox": "1" if identity.sandbox else None,
        "open_tracking": plan.open_tracking,
        "click_tracking": plan.click_tracking,
        "initial_pixel": plan.open_tracking and plan.initial_open,
        "recv_method": "esmtp",
    }


def _common(record: SpoolRecord, index: int, event_id: str, now: float, sending_ip: str = "") -> dict[str, Any]:
    """Every event's fields for recipient `index`; `sending_ip`, when known, is the address a delivery
    attempt actually left from (else the identity's: [delivery] source_address, or none)."""
    recipient = record.recipients[index]
    fields = {
        **_message_fields(recipient.identity, recipient.plan, record.body_length, event_id, now),
        "dsn_notify": recipient.dsn_notify or None,
        "dsn_orcpt": recipient.dsn_orcpt or None,
        "dsn_ret": record.dsn_ret or None,
        "dsn_envid": record.dsn_envid or None,
    }
    if sending_ip:
        fields["sending_ip"] = sending_ip
    return fields


def injection_events(record: SpoolRecord) -> list[InjectionEvent]:
    """The injection event of every recipient; their ids were fixed when the message was spooled."""
    return [InjectionEvent(**_common(record, index, recipient.injection_event_id, record.received_at))
            for index, recipient in enumerate(record.recipients)]


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
    sending_ip: str = "",
) -> DeliveryEvent:
    """The delivery event of recipient `index`, with queue_time in milliseconds.

    `warnings` are what building this recipient's copy reported (a part left untracked, …).
    """
    fields = _common(record, index, event_id, now, sending_ip)
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
    error_code: str, reason: str, raw_reason: str, bounce_class: str, sending_ip: str = "",
) -> DelayEvent:
    """A temporary failure of recipient `index`."""
    return DelayEvent(
        **_common(record, index, event_id, now, sending_ip),
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
    error_code: str, reason: str, raw_reason: str, bounce_class: str, sending_ip: str = "",
) -> BounceEvent:
    """A permanent failure of recipient `index`."""
    return BounceEvent(
        **_common(record, index, event_id, now, sending_ip),
        delv_method="esmtp",
        ip_address=ip_address,
        num_retries=str(num_retries),
        error_code=error_code,
        reason=reason,
        raw_reason=raw_reason,
        bounce_class=bounce_class,
    )


def policy_rejection_event(
    identity: RecipientIdentity, *, event_id: str, now: float, remote_addr: str, error_code: str, reason: str,
) -> PolicyRejectionEvent:
    """Policy refused a message before it was accepted (nothing was spooled)."""
    return PolicyRejectionEvent(
        **_message_fields(identity, TrackingPlan(), 0, event_id, now),
        remote_addr=remote_addr, error_code=error_code, reason=reason, raw_reason=reason,
    )


def engagement_event(
    event_type: str,
    identity: RecipientIdentity,
    *,
    event_id: str,
    now: float,
    ip_address: str,
    user_agent: str,
    accept_language: str,
    geo_ip: dict[str, Any] | None,
    machine_engagement: MachineEngagement | None,
    target_url: str = "",
    link_name: str = "",
) -> EngagementEvent:
    """An open, initial_open, click, link_unsubscribe or list_unsubscribe answered by the tracker.

    `target_url` and `link_name` are the clicked link's (ignored for opens).
    """
    fields = {
        "event_id": event_id,
        "timestamp": format_timestamp(now),
        **engagement_fields(event_type, identity, target_url=target_url, link_name=link_name),
        "ip_address": ip_address,
        "user_agent": user_agent,
        "accept_language": accept_language,
        "geo_ip": geo_ip,
        "machine_engagement": machine_engagement,
    }
    return _ENGAGEMENT_CLASSES[event_type](**fields)


def engagement_fields(event_type: str, identity: RecipientIdentity, *, target_url: str = "",
                      link_name: str = "") -> dict[str, Any]:
    """The fields of an engagement event that its token alone decides (all but the request's own), without
    those left at their defaults: the tracker encodes them once per token and adds the request's fields."""
    fields = _identity_fields(identity)
    fields.update(  # SparkPost's engagement events describe the message too; delv_method is its copy's
        delv_method=identity.delv_method or "esmtp", friendly_from=identity.friendly_from,
        msg_from=identity.msg_from, subject=identity.subject, ip_pool=identity.ip_pool,
        routing_domain=identity.routing_domain, transactional="1" if identity.transactional else "0")
    if event_type in ("link_unsubscribe", "list_unsubscribe"):
        fields["mailfrom"] = identity.rcpt_to  # SparkPost: the address that asked to be unsubscribed
    if event_type in ("click", "link_unsubscribe", "amp_click"):
        fields["target_link_url"] = target_url
        fields["target_link_name"] = link_name or target_url
    return {name: value for name, value in fields.items()
            if not (name in _OMITTED_WHEN_EMPTY and not value)}


# Fields the engagement event Structs leave out at their default (""/None): the tracker's journal line is
# stored as written (engaged.tracker.loader), so it carries exactly what their encoding would.
_OMITTED_WHEN_EMPTY = frozenset({"rcpt_type", "template_id", "sending_ip", "injection_time", "friendly_from",
                                 "msg_from", "subject", "ip_pool", "routing_domain"})
