"""One sample event per type engaged produces, and what each field means: the documentation endpoints' data.

Served by `/api/v1/events/message/documentation`, `/api/v1/events/samples`,
`/api/v1/webhooks/events/documentation` and `/api/v1/webhooks/events/samples`, in SparkPost's shapes.
The samples are real Structs of the event model, so they can never drift from what engaged sends.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engaged.events.model import (
    EVENT_TYPES,
    AmpClickEvent,
    AmpInitialOpenEvent,
    AmpOpenEvent,
    BounceEvent,
    ClickEvent,
    DelayEvent,
    DeliveryEvent,
    Event,
    InitialOpenEvent,
    InjectionEvent,
    LinkUnsubscribeEvent,
    ListUnsubscribeEvent,
    MachineEngagement,
    OpenEvent,
    OutOfBandEvent,
    PolicyRejectionEvent,
    SpamComplaintEvent,
    UserAgentParsed,
    envelope_of,
)

__all__ = ["DESCRIPTIONS", "ENVELOPE_DESCRIPTIONS", "TYPE_DESCRIPTIONS", "documentation", "envelope_documentation",
           "sample"]

DESCRIPTIONS: dict[str, str] = {
    "type": "Type of event this record describes",
    "event_id": "Unique event identifier",
    "timestamp": "Event date and time (webhooks: Unix seconds; Events API: ISO-8601 with milliseconds)",
    "message_id": "Message identifier, unique across the cluster",
    "transmission_id": "Transmission the message belongs to (one per SMTP message)",
    "campaign_id": "Campaign of the message (X-MSYS-API campaign_id, at most 64 bytes)",
    "customer_id": "Customer the message belongs to (mo_customer_id)",
    "subaccount_id": "Subaccount of the message",
    "template_id": "Template used to build the message",
    "template_version": "Version of the template used",
    "rcpt_to": "Lower-cased envelope recipient",
    "raw_rcpt_to": "Envelope recipient as given at RCPT TO",
    "rcpt_type": "cc, bcc or archive for the copies X-MSYS-API adds; absent for the envelope recipient",
    "rcpt_meta": "Metadata of the recipient (X-MSYS-API metadata)",
    "rcpt_tags": "Tags of the recipient (X-MSYS-API tags)",
    "friendly_from": "From header of the message",
    "msg_from": "Envelope sender (MAIL FROM)",
    "msg_size": "Message size in bytes",
    "subject": "Subject line of the message (RFC 2047 decoded)",
    "ip_pool": "IP pool the message was sent from",
    "sending_ip": "IP address the message was sent from",
    "routing_domain": "Domain the message was routed to",
    "recipient_domain": "Domain part of the recipient",
    "injection_time": "When the message was injected (ISO-8601 with milliseconds)",
    "transactional": "\"1\" for transactional mail, else \"0\"",
    "open_tracking": "Whether open tracking was enabled for the message",
    "click_tracking": "Whether click tracking was enabled for the message",
    "initial_pixel": "Whether the top (initial_open) pixel was placed",
    "recv_method": "Protocol the message was received by (esmtp)",
    "sandbox": "\"1\" when the message was sent in sandbox mode",
    "warnings": "What engaged could not do to the message (a part left untracked, ...); an engaged addition",
    "delv_method": "Protocol the message was delivered with (esmtp; capture when engaged kept it locally)",
    "ip_address": "Delivery: IP address of the receiving MTA; engagement: IP address of the client",
    "num_retries": "Failed attempts before this one",
    "queue_time": "Milliseconds between injection and this event",
    "outbound_tls": "1 when TLS was used, 0 when not",
    "bounce_class": "Bounce classification code (SparkPost's Bounce Classification Codes)",
    "error_code": "SMTP reply code of the failure",
    "reason": "Canonicalised reply text of the failure",
    "raw_reason": "Reply text of the failure exactly as received",
    "remote_addr": "IP address of the client the rejected message came from",
    "user_agent": "User-Agent of the request that opened or clicked",
    "accept_language": "Accept-Language of the request that opened or clicked",
    "geo_ip": "Where the client's IP address is (country, region, city, latitude, longitude)",
    "machine_engagement": "Why the tracker thinks software, not a person, made the request; an engaged addition",
    "target_link_url": "URL of the clicked link",
    "target_link_name": "Name of the clicked link (data-msys-linkname, else the URL)",
    "user_agent_parsed": "The client's agent, device and system as parsed from user_agent; is_proxy and "
                         "is_prefetched from the tracker's machine classification",
    "mailbox_provider": "Mailbox provider of the recipient's domain (Gmail, Hotmail / Outlook, ...; Other)",
    "mailbox_provider_region": "Region of the mailbox provider",
    "mailfrom": "link_unsubscribe: envelope sender of the message; list_unsubscribe: the recipient's address",
    "fbtype": "Feedback type of the complaint report (abuse, ...)",
    "report_by": "Who sent the complaint report",
    "report_to": "Where the complaint report was sent",
    "user_str": "User string of the complaint report",
}
"""What each field engaged sends means (SparkPost's field dictionary, in our words)."""

TYPE_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "injection": ("Injection", "Message is received by or injected into engaged."),
    "delivery": ("Delivery", "The receiving MTA (or capture) accepted the message."),
    "delay": ("Delay", "The receiving MTA temporarily refused the message; it stays queued."),
    "bounce": ("Bounce", "The receiving MTA permanently refused the message, or it stayed queued too long."),
    "policy_rejection": ("Policy Rejection", "Policy refused the message before it was accepted."),
    "initial_open": ("Initial Open", "The recipient's client fetched the tracking pixel at the top of the message."),
    "open": ("Open", "The recipient's client fetched the tracking pixel at the bottom of the message."),
    "click": ("Click", "The recipient followed a tracked link."),
    "link_unsubscribe": ("Link Unsubscribe", "The recipient followed a link marked as an unsubscribe link."),
    "list_unsubscribe": ("List Unsubscribe", "The recipient used the List-Unsubscribe header (one-click or mail)."),
    "out_of_band": ("Out of Band", "The receiving system accepted the message, then sent a bounce back."),
    "spam_complaint": ("Spam Complaint", "A feedback loop report says the recipient marked the message as spam."),
    "amp_initial_open": ("AMP Initial Open", "The recipient's client loaded the top pixel of the AMP part."),
    "amp_open": ("AMP Open", "The recipient's client loaded the pixel of the AMP part."),
    "amp_click": ("AMP Click", "The recipient followed a tracked link of the AMP part."),
}

ENVELOPE_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "message_event": ("Message Events", "Injection, delivery and failure events of messages."),
    "track_event": ("Engagement Events", "Opens and clicks of recipients."),
    "unsubscribe_event": ("Unsubscribe Events", "Recipients who unsubscribed."),
}

_COMMON: dict[str, Any] = {
    "event_id": "92356927693813856", "timestamp": "1460989507.000", "message_id": "000443ee14578172be22",
    "transmission_id": "65832150921904138", "campaign_id": "Example Campaign Name", "customer_id": "1",
    "rcpt_to": "recipient@example.com", "raw_rcpt_to": "Recipient@Example.com",
    "rcpt_meta": {"customKey": "customValue"}, "rcpt_tags": ["male", "US"],
}
_MESSAGE: dict[str, Any] = {
    "friendly_from": "sender@example.com", "msg_from": "sender@example.com", "msg_size": "1337",
    "subject": "Summer deals are here!", "ip_pool": "Example-Ip-Pool", "routing_domain": "example.com",
    "recipient_domain": "example.com", "injection_time": "2016-04-18T14:25:07.000+00:00", "transactional": "0",
    "open_tracking": True, "click_tracking": True, "initial_pixel": True, "recv_method": "esmtp",
    "sending_ip": "127.0.0.1", "mailbox_provider": "Other", "mailbox_provider_region": "Global",
}
_ATTEMPT: dict[str, Any] = {"delv_method": "esmtp", "ip_address": "192.0.2.25", "num_retries": "2"}
_FAILURE: dict[str, Any] = {"bounce_class": "10", "error_code": "550", "reason": "550 5.1.1 ...@... unknown user",
                            "raw_reason": "550 5.1.1 <recipient@example.com>: unknown user"}
_TRACK: dict[str, Any] = {
    "delv_method": "esmtp", "sending_ip": "127.0.0.1", "ip_address": "198.51.100.7",
    "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_10_3) AppleWebKit/537.36 (KHTML, like Gecko)",
    "accept_language": "en-US,en;q=0.9",
    "geo_ip": {"country": "US", "region": "MD", "city": "Columbia", "latitude": 39.1749, "longitude": -76.8375},
    "machine_engagement": MachineEngagement(kind=None, reason=""),
    "injection_time": "2016-04-18T14:25:07.000+00:00",
    "user_agent_parsed": UserAgentParsed(agent_family="Chrome", device_brand="Apple", device_family="Mac",
                                         os_family="Mac OS X", os_version="10.10", is_mobile=False, is_proxy=False,
                                         is_prefetched=False),
    "friendly_from": "sender@example.com", "msg_from": "sender@example.com", "subject": "Summer deals are here!",
    "ip_pool": "Example-Ip-Pool", "routing_domain": "example.com", "transactional": "0",
    "mailbox_provider": "Other", "mailbox_provider_region": "Global",
}
_INBOUND: dict[str, Any] = {
    "friendly_from": "sender@example.com", "msg_from": "sender@example.com", "subject": "Summer deals are here!",
    "ip_pool": "Example-Ip-Pool", "sending_ip": "127.0.0.1", "routing_domain": "example.com",
    "recipient_domain": "example.com", "injection_time": "2016-04-18T14:25:07.000+00:00",
}
_LINK: dict[str, Any] = {"target_link_url": "http://example.com", "target_link_name": "Example Link Name"}

_SAMPLES: dict[str, Event] = {
    "injection": InjectionEvent(**_COMMON, **_MESSAGE),
    "delivery": DeliveryEvent(**_COMMON, **_MESSAGE, **_ATTEMPT, queue_time="12", outbound_tls="1"),
    "delay": DelayEvent(**_COMMON, **_MESSAGE, **_ATTEMPT, **{**_FAILURE, "bounce_class": "22", "error_code": "452"},
                        queue_time="1200", outbound_tls="1"),
    "bounce": BounceEvent(**_COMMON, **_MESSAGE, **_ATTEMPT, **_FAILURE),
    "policy_rejection": PolicyRejectionEvent(**_COMMON, **_MESSAGE, remote_addr="203.0.113.9", error_code="550",
                                             reason="550 5.7.1 policy rejection", raw_reason="550 5.7.1 policy"),
    "initial_open": InitialOpenEvent(**_COMMON, **_TRACK),
    "open": OpenEvent(**_COMMON, **_TRACK),
    "click": ClickEvent(**_COMMON, **_TRACK, **_LINK),
    "link_unsubscribe": LinkUnsubscribeEvent(**_COMMON, **_TRACK, **_LINK, mailfrom="sender@example.com"),
    "list_unsubscribe": ListUnsubscribeEvent(**_COMMON, **_TRACK, mailfrom="recipient@example.com"),
    "out_of_band": OutOfBandEvent(**_COMMON, **_INBOUND, **_FAILURE),
    "amp_initial_open": AmpInitialOpenEvent(**_COMMON, **_TRACK),
    "amp_open": AmpOpenEvent(**_COMMON, **_TRACK),
    "amp_click": AmpClickEvent(**_COMMON, **_TRACK, **_LINK),
    "spam_complaint": SpamComplaintEvent(**_COMMON, **_INBOUND, fbtype="abuse", report_by="fbl.example.org",
                                         report_to="fbl@bounces.example.com", user_str="recipient"),
}
if set(_SAMPLES) != set(EVENT_TYPES):
    raise RuntimeError("every event type needs its sample in engaged.events.samples")
_SAMPLES = {name: _SAMPLES[name] for name in EVENT_TYPES}


def sample(type_name: str) -> Event:
    """The sample event of a type engaged produces (KeyError for any other)."""
    return _SAMPLES[type_name]


def documentation(type_name: str) -> dict[str, dict[str, Any]]:
    """`{field: {"description", "sampleValue"}}` for every field of the type's sample."""
    fields: dict[str, Any] = msgspec.to_builtins(_SAMPLES[type_name])
    return {name: {"description": DESCRIPTIONS.get(name, ""), "sampleValue": value} for name, value in fields.items()}


def envelope_documentation() -> dict[str, Any]:
    """The webhooks documentation: per envelope, its event types and each type's fields."""
    result: dict[str, Any] = {}
    for type_name in EVENT_TYPES:
        envelope = envelope_of(type_name)
        display, description = ENVELOPE_DESCRIPTIONS[envelope]
        group = result.setdefault(envelope, {"display_name": display, "description": description, "events": {}})
        name, text = TYPE_DESCRIPTIONS[type_name]
        group["events"][type_name] = {"display_name": name, "description": text, "event": documentation(type_name)}
    return result
