"""Sample events for tests: one realistic event of every SparkPost type, with ids derived from a number."""

from __future__ import annotations

from typing import Any

from engaged.events.model import (
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
)

T0 = 1_700_000_000.0


def make_event(
    kind: str,
    n: int,
    *,
    message_id: str = "m-1",
    campaign: str = "spring",
    rcpt: str = "ann@example.com",
    transmission: str = "t-1",
    ts: float | None = None,
) -> Event:
    """A realistic event of type `kind`, with event_id derived from `n`."""
    common: dict[str, Any] = {
        "event_id": str(7_000_000_000_000_000 + n),
        "timestamp": f"{T0 + n if ts is None else ts:.3f}",
        "message_id": message_id,
        "transmission_id": transmission,
        "campaign_id": campaign,
        "customer_id": "1",
        "rcpt_to": rcpt,
        "raw_rcpt_to": rcpt.upper(),
        "rcpt_meta": {"plan": "gold", "nested": {"ids": [1, 2]}, "flag": True},
        "rcpt_tags": ["vip", "ünïcode"],
        "subaccount_id": "7",
    }
    message: dict[str, Any] = {
        "friendly_from": "Shop <shop@example.net>",
        "msg_from": "bounces@example.net",
        "msg_size": "2048",
        "subject": "Spring sale — 20 % off ✓",
        "ip_pool": "default",
        "routing_domain": "example.com",
        "recipient_domain": "example.com",
        "injection_time": "2023-11-14T22:13:20.000+00:00",
        "transactional": "0",
        "open_tracking": True,
        "click_tracking": True,
        "initial_pixel": False,
        "recv_method": "esmtp",
    }
    attempt: dict[str, Any] = {"delv_method": "esmtp", "ip_address": "192.0.2.25", "num_retries": "1"}
    failure: dict[str, Any] = {
        "bounce_class": "10",
        "error_code": "550",
        "reason": "550 5.1.1 <ann@example.com>: unknown user",
        "raw_reason": "550 5.1.1 <ann@example.com>: Recipient address rejected: unknown user",
    }
    track: dict[str, Any] = {
        "ip_address": "198.51.100.7",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "geo_ip": {"country": "DE", "city": "Berlin", "latitude": 52.52},
        "injection_time": "2023-11-14T22:13:20.000+00:00",
    }
    link: dict[str, Any] = {"target_link_url": "https://example.com/sale?a=1&b=2", "target_link_name": "sale"}
    match kind:
        case "injection":
            return InjectionEvent(**common, **message, warnings=["header folded"])
        case "delivery":
            return DeliveryEvent(**common, **message, **attempt, queue_time="120", outbound_tls="1")
        case "delay":
            return DelayEvent(**common, **message, **attempt, **failure, queue_time="9000", outbound_tls="0")
        case "bounce":
            return BounceEvent(**common, **message, **attempt, **failure)
        case "policy_rejection":
            return PolicyRejectionEvent(**common, **message, remote_addr="203.0.113.9", error_code="554")
        case "initial_open":
            return InitialOpenEvent(**common, **track)
        case "open":
            return OpenEvent(**common, **track, machine_engagement=MachineEngagement(kind="proxy", reason="ua"))
        case "click":
            return ClickEvent(**common, **track, **link)
        case "link_unsubscribe":
            return LinkUnsubscribeEvent(**common, **track, **link, mailfrom="ann@example.com")
        case "list_unsubscribe":
            return ListUnsubscribeEvent(**common, **track, mailfrom="ann@example.com", subject=message["subject"])
        case "out_of_band":
            inbound = {key: message[key] for key in ("friendly_from", "msg_from", "subject", "routing_domain")}
            return OutOfBandEvent(**common, **inbound, **failure)
        case "spam_complaint":
            inbound = {key: message[key] for key in ("friendly_from", "msg_from", "subject", "routing_domain")}
            return SpamComplaintEvent(**common, **inbound, fbtype="abuse", report_by="fbl.example.org",
                                      report_to="fbl@bounces.example.net", user_str="ann")
        case "amp_initial_open":
            return AmpInitialOpenEvent(**common, **track)
        case "amp_open":
            return AmpOpenEvent(**common, **track)
        case "amp_click":
            return AmpClickEvent(**common, **track, **link)
    raise ValueError(kind)


def eid(n: int) -> str:
    return str(7_000_000_000_000_000 + n)
