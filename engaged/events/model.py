"""SparkPost-format event records: one Struct per event type, the wire shape of every event we emit."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Envelope = Literal["message_event", "track_event", "unsubscribe_event"]


class _EventBase(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="type"):
    """Fields every event carries (interface.md §6); optional extras are omitted when empty."""

    event_id: str
    timestamp: str
    message_id: str
    transmission_id: str
    campaign_id: str
    customer_id: str
    rcpt_to: str
    raw_rcpt_to: str
    rcpt_meta: dict[str, Any]
    rcpt_tags: list[str]
    rcpt_type: str | None = None
    subaccount_id: str | None = None
    template_id: str | None = None
    template_version: str | None = None
    mailbox_provider: str | None = None
    mailbox_provider_region: str | None = None


class _MessageFields(_EventBase, kw_only=True, omit_defaults=True):
    """Fields of the message_event family (injection, delivery, delay, bounce)."""

    friendly_from: str
    msg_from: str
    msg_size: str
    subject: str
    ip_pool: str
    routing_domain: str
    recipient_domain: str
    injection_time: str
    transactional: str
    open_tracking: bool
    click_tracking: bool
    initial_pixel: bool
    recv_method: str
    sending_ip: str = ""
    sandbox: str | None = None
    warnings: list[str] | None = None
    dsn_notify: str | None = None  # RFC 3461 parameters the client gave, when it gave them
    dsn_orcpt: str | None = None
    dsn_ret: str | None = None
    dsn_envid: str | None = None


class InjectionEvent(_MessageFields, tag="injection", kw_only=True, omit_defaults=True):
    """The message was received by engaged (one event per envelope recipient)."""


class DeliveryEvent(_MessageFields, tag="delivery", kw_only=True, omit_defaults=True):
    """The next hop (or capture) accepted the recipient's copy."""

    delv_method: str
    ip_address: str
    num_retries: str
    queue_time: str
    outbound_tls: str


class DelayEvent(_MessageFields, tag="delay", kw_only=True, omit_defaults=True):
    """A delivery attempt failed temporarily; the recipient stays queued."""

    delv_method: str
    ip_address: str
    num_retries: str
    queue_time: str
    outbound_tls: str
    bounce_class: str
    error_code: str
    reason: str
    raw_reason: str


class BounceEvent(_MessageFields, tag="bounce", kw_only=True, omit_defaults=True):
    """Delivery failed permanently (5xx reply, or too long in the queue)."""

    delv_method: str
    ip_address: str
    num_retries: str
    bounce_class: str
    error_code: str
    reason: str
    raw_reason: str


class PolicyRejectionEvent(_MessageFields, tag="policy_rejection", kw_only=True, omit_defaults=True):
    """Policy refused the message or recipient before acceptance."""

    remote_addr: str = ""
    error_code: str = ""
    reason: str = ""
    raw_reason: str = ""


class UserAgentParsed(msgspec.Struct, frozen=True, kw_only=True):
    """SparkPost's `user_agent_parsed` of an open or click (engaged.events.enrich builds it)."""

    agent_family: str
    device_brand: str
    device_family: str
    os_family: str
    os_version: str
    is_mobile: bool
    is_proxy: bool
    is_prefetched: bool


class MachineEngagement(msgspec.Struct, frozen=True, kw_only=True):
    """Why the tracker thinks a request came from software rather than a person."""

    kind: str | None
    reason: str


class _TrackFields(_EventBase, kw_only=True, omit_defaults=True):
    """Fields of engagement events answered by the tracker (`delv_method`: how the copy was delivered)."""

    delv_method: str = ""
    sending_ip: str = ""
    ip_address: str = ""
    user_agent: str = ""
    accept_language: str = ""
    geo_ip: dict[str, Any] | None = None
    machine_engagement: MachineEngagement | None = None
    injection_time: str = ""
    user_agent_parsed: UserAgentParsed | None = None
    friendly_from: str = ""
    msg_from: str = ""
    subject: str = ""
    ip_pool: str = ""
    routing_domain: str = ""
    transactional: str = ""


class OpenEvent(_TrackFields, tag="open", kw_only=True, omit_defaults=True):
    """The recipient's client fetched the bottom open pixel."""


class InitialOpenEvent(_TrackFields, tag="initial_open", kw_only=True, omit_defaults=True):
    """The recipient's client fetched the top open pixel."""


class ClickEvent(_TrackFields, tag="click", kw_only=True, omit_defaults=True):
    """The recipient followed a click-tracked link."""

    target_link_url: str = ""
    target_link_name: str = ""


class LinkUnsubscribeEvent(_TrackFields, tag="link_unsubscribe", kw_only=True, omit_defaults=True):
    """The recipient followed a link marked data-msys-unsubscribe."""

    mailfrom: str = ""
    target_link_url: str = ""
    target_link_name: str = ""


class ListUnsubscribeEvent(_TrackFields, tag="list_unsubscribe", kw_only=True, omit_defaults=True):
    """The recipient used the List-Unsubscribe header: the one-click POST (RFC 8058), or a mail to its mailto.

    `mailfrom` is the recipient's address (the MAIL FROM of an unsubscribe mail); `subject`, `friendly_from`
    and `msg_from` describe the message unsubscribed from when known.
    """

    mailfrom: str = ""


class _InboundFields(_EventBase, kw_only=True, omit_defaults=True):
    """Fields of events engaged learns from mail sent back to it (out_of_band, spam_complaint)."""

    friendly_from: str = ""
    msg_from: str = ""
    subject: str = ""
    ip_pool: str = ""
    sending_ip: str = ""
    routing_domain: str = ""
    recipient_domain: str = ""
    injection_time: str = ""
    transactional: str = "0"
    delv_method: str = "esmtp"
    recv_method: str = "esmtp"


class OutOfBandEvent(_InboundFields, tag="out_of_band", kw_only=True, omit_defaults=True):
    """The receiving system accepted the copy, then sent a bounce back (a DSN or a plain reply)."""

    bounce_class: str
    error_code: str = ""
    reason: str = ""
    raw_reason: str = ""


class SpamComplaintEvent(_InboundFields, tag="spam_complaint", kw_only=True, omit_defaults=True):
    """A feedback loop report (ARF, RFC 5965) says the recipient marked the copy as spam."""

    fbtype: str = ""  # ARF Feedback-Type (abuse, fraud, ...); builders set it, so it is never omitted
    report_by: str = ""
    report_to: str = ""
    user_str: str = ""


class AmpOpenEvent(_TrackFields, tag="amp_open", kw_only=True, omit_defaults=True):
    """The recipient's client fetched the bottom open pixel of the AMP part."""


class AmpInitialOpenEvent(_TrackFields, tag="amp_initial_open", kw_only=True, omit_defaults=True):
    """The recipient's client fetched the top open pixel of the AMP part."""


class AmpClickEvent(_TrackFields, tag="amp_click", kw_only=True, omit_defaults=True):
    """The recipient followed a click-tracked link of the AMP part."""

    target_link_url: str = ""
    target_link_name: str = ""


Event = (
    InjectionEvent
    | DeliveryEvent
    | DelayEvent
    | BounceEvent
    | PolicyRejectionEvent
    | OpenEvent
    | InitialOpenEvent
    | ClickEvent
    | LinkUnsubscribeEvent
    | ListUnsubscribeEvent
    | OutOfBandEvent
    | SpamComplaintEvent
    | AmpOpenEvent
    | AmpInitialOpenEvent
    | AmpClickEvent
)

EVENT_TYPES: tuple[str, ...] = (
    "injection",
    "delivery",
    "delay",
    "bounce",
    "policy_rejection",
    "initial_open",
    "open",
    "click",
    "link_unsubscribe",
    "list_unsubscribe",
    "out_of_band",
    "spam_complaint",
    "amp_initial_open",
    "amp_open",
    "amp_click",
)

SPARKPOST_EVENT_TYPES: tuple[str, ...] = tuple(dict.fromkeys((
    *EVENT_TYPES,
    "spam_complaint",
    "out_of_band",
    "generation_failure",
    "generation_rejection",
    "amp_open",
    "amp_initial_open",
    "amp_click",
    "list_unsubscribe",
    "relay_injection",
    "relay_rejection",
    "relay_delivery",
    "relay_tempfail",
    "relay_permfail",
    "sms_status",
    "ab_test_completed",
    "ab_test_cancelled",
    "ingest_success",
    "ingest_error",
)))
"""Every event type SparkPost documents: filters and webhooks accept each (ours are EVENT_TYPES; the rest match
nothing until engaged produces them)."""

_ENVELOPES: dict[str, Envelope] = {
    "injection": "message_event",
    "delivery": "message_event",
    "delay": "message_event",
    "bounce": "message_event",
    "policy_rejection": "message_event",
    "open": "track_event",
    "initial_open": "track_event",
    "click": "track_event",
    "link_unsubscribe": "unsubscribe_event",
    "list_unsubscribe": "unsubscribe_event",
    "out_of_band": "message_event",
    "spam_complaint": "message_event",
    "amp_open": "track_event",
    "amp_initial_open": "track_event",
    "amp_click": "track_event",
}

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)


def event_type(event: Event) -> str:
    """The SparkPost `type` of an event."""
    return str(type(event).__struct_config__.tag)


def envelope_of(type_name: str) -> Envelope:
    """The webhook envelope (`message_event`, `track_event`, …) an event type travels in."""
    return _ENVELOPES[type_name]


def encode_event(event: Event) -> bytes:
    """The event as SparkPost JSON, `type` first."""
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> Event:
    """Parse one event from its JSON; raises msgspec.ValidationError on a malformed record."""
    return _decoder.decode(data)
