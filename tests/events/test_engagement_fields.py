"""Engagement and policy_rejection events carry what SparkPost's do (issue 14 item 8), from the RecipientIdentity."""

from __future__ import annotations

import json

import pytest

from engaged.events.message import engagement_event, policy_rejection_event
from engaged.events.model import MachineEngagement
from engaged.events.wire import webhook_json
from tests.records import recipient_identity

IDENTITY = recipient_identity(
    "Ann@Gmail.com", campaign_id="spring", tags=("vip",), metadata={"plan": "gold"}, ip_pool="shared",
    sending_ip="192.0.2.10", rcpt_type="cc", subject="Spring sale", friendly_from="shop@example.net",
    msg_from="bounces@example.net", transactional=True, delv_method="capture")


@pytest.mark.parametrize("kind", ["open", "initial_open", "click", "link_unsubscribe", "list_unsubscribe"])
def test_an_engagement_event_describes_its_message_and_the_copy_it_came_from(kind: str) -> None:
    event = engagement_event(kind, IDENTITY, event_id="1", now=1_700_000_100.0, ip_address="198.51.100.7",
                             user_agent="Mozilla/5.0", accept_language="", geo_ip=None,
                             machine_engagement=MachineEngagement(kind=None, reason=""),
                             target_url="https://example.com/", link_name="banner")
    body = json.loads(webhook_json(event))
    assert body["delv_method"] == "capture"  # honest: the copy was captured, not sent by SMTP
    assert (body["ip_pool"], body["sending_ip"], body["transactional"]) == ("shared", "192.0.2.10", "1")
    assert (body["subject"], body["friendly_from"], body["msg_from"]) == (
        "Spring sale", "shop@example.net", "bounces@example.net")
    assert body["routing_domain"] == "gmail.com" and body["rcpt_type"] == "cc"
    assert (body["mailbox_provider"], body["mailbox_provider_region"]) == ("Gmail", "Global")
    assert body["campaign_id"] == "spring" and body["rcpt_tags"] == ["vip"] and body["rcpt_meta"] == {"plan": "gold"}


def test_a_policy_rejection_keeps_the_transmission_campaign_metadata_and_tags() -> None:
    event = policy_rejection_event(IDENTITY, event_id="2", now=1_700_000_000.0, remote_addr="203.0.113.9",
                                   error_code="550", reason="550 5.7.1 no")
    body = json.loads(webhook_json(event))
    assert body["transmission_id"] == IDENTITY.transmission_id and body["campaign_id"] == "spring"
    assert body["rcpt_meta"] == {"plan": "gold"} and body["rcpt_tags"] == ["vip"]
