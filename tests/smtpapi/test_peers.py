"""Peers' headers: each vendor's documented example (golden), off by default, precedence, refusals, removal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engaged.config import EngagementTrackerConfig, SmtpapiSettings
from engaged.smtpapi.header import HeaderError, XMsysApi
from engaged.smtpapi.peers import PEERS, PeerHeaders, merge_peers, read_peer_headers, strip_peer_headers
from engaged.smtpapi.resolve import PlanError, resolve_recipient
from engaged.testing.server import ServerProcess
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, wait_captured, wait_events
from tests.records import recipient_identity

GOLDEN: dict[str, dict[str, Any]] = json.loads((Path(__file__).parents[1] / "golden" / "peers.json").read_text())
BASE = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: peers\r\nContent-Type: text/html\r\n"
BODY = b"\r\n<html><body><a href=\"https://example.com/x\">x</a></body></html>\r\n"


def message(*headers: str) -> bytes:
    return BASE + b"".join(header.encode() + b"\r\n" for header in headers) + BODY


DEFAULTS = SmtpapiSettings()


class Resolved:
    """What X-MSYS-API and peers' headers decided for one recipient: identity fields and tracking switches."""

    def __init__(self, header: XMsysApi | None, settings: SmtpapiSettings, context: dict[str, str]) -> None:
        result = resolve_recipient(settings, EngagementTrackerConfig(), header, context, recipient_identity())
        assert not isinstance(result, PlanError)
        identity, plan = result
        self.campaign_id = identity.campaign_id
        self.metadata = identity.metadata
        self.tags = list(identity.tags)
        self.open_tracking = plan.open_tracking
        self.click_tracking = plan.click_tracking


def plan_of(header: XMsysApi | None, settings: SmtpapiSettings = DEFAULTS,
            context: dict[str, str] | None = None) -> Resolved:
    return Resolved(header, settings, context or {})


@pytest.mark.parametrize("vendor", PEERS)
def test_each_vendors_documented_example_maps_to_the_tracking_plan(vendor: str) -> None:
    golden = GOLDEN[vendor]
    raw = message(*golden["headers"])
    peers = read_peer_headers(raw, [vendor])
    assert isinstance(peers, PeerHeaders)
    plan = plan_of(merge_peers(None, peers))
    assert {field: getattr(plan, field) for field in golden["plan"]} == golden["plan"]
    assert strip_peer_headers(raw, [vendor]) == message()


def test_every_vendor_is_off_by_default_and_only_accepted_vendors_are_read_or_removed() -> None:
    raw = message(*(header for vendor in PEERS for header in GOLDEN[vendor]["headers"]))
    assert read_peer_headers(raw, []) is None
    assert strip_peer_headers(raw, []) is raw
    only_ses = strip_peer_headers(raw, ["ses"])
    assert b"X-SES-" not in only_ses and b"X-SMTPAPI" in only_ses and b"X-PM-Tag" in only_ses
    assert strip_peer_headers(raw, list(PEERS)) == message()
    assert read_peer_headers(message("X-Other: 1"), list(PEERS)) is None


def test_x_msys_api_beats_peer_headers_which_beat_the_listener_and_global_settings() -> None:
    peers = read_peer_headers(message("X-PM-TrackOpens: false", "X-PM-Tag: pm"), ["postmark"])
    assert isinstance(peers, PeerHeaders)
    on = SmtpapiSettings(open_tracking_enabled=True)
    assert plan_of(merge_peers(None, peers), on).open_tracking is False
    header = merge_peers(XMsysApi(open_tracking=True, tags=["msys"]), peers)
    assert plan_of(header, on).open_tracking is True and plan_of(header).tags == ["msys"]
    assert plan_of(header, on, {"smtpapi_open_tracking": "0"}).open_tracking is False
    assert merge_peers(XMsysApi(campaign_id="c"), None) == XMsysApi(campaign_id="c")


def test_with_several_vendors_the_first_accepted_that_sets_a_field_wins() -> None:
    raw = message("X-PM-Tag: from-postmark", "X-Mailgun-Tag: from-mailgun", "X-Mailgun-Track-Opens: yes")
    peers = read_peer_headers(raw, ["mailgun", "postmark"])
    assert peers == PeerHeaders(tags=["from-mailgun"], open_tracking=True)
    assert read_peer_headers(raw, ["postmark", "mailgun"]) == PeerHeaders(tags=["from-postmark"], open_tracking=True)


def test_mailgun_specific_switches_override_x_mailgun_track() -> None:
    peers = read_peer_headers(message("X-Mailgun-Track: no", "X-Mailgun-Track-Clicks: htmlonly"), ["mailgun"])
    assert peers == PeerHeaders(open_tracking=False, click_tracking=True)


@pytest.mark.parametrize(
    ("vendor", "header", "reason"),
    [
        ("sendgrid", 'X-SMTPAPI: {"to": ["a@example.com"]}',
         "X-SMTPAPI 'to' lists are not accepted: engaged takes the recipients from RCPT TO"),
        ("sendgrid", "X-SMTPAPI: {not json", "JSON parsing error in X-SMTPAPI"),
        ("sendgrid", "X-SMTPAPI: [1, 2]", "X-SMTPAPI must be a json object"),
        ("sendgrid", 'X-SMTPAPI: {"unique_args": {"n": 5}}',
         "X-SMTPAPI 'unique_args' must be a json object of strings"),
        ("sendgrid", 'X-SMTPAPI: {"unique_args": {"n": "' + "x" * 10_000 + '"}}',
         "X-SMTPAPI 'unique_args' is longer than 10000 bytes"),
        ("sendgrid", 'X-SMTPAPI: {"category": 7}', "X-SMTPAPI 'category' must be a string or a json array of strings"),
        ("sendgrid", 'X-SMTPAPI: {"filters": {"clicktrack": {"settings": {"enable": "maybe"}}}}',
         "X-SMTPAPI 'filters.clicktrack.settings.enable' must be 0 or 1"),
        ("sendgrid", 'X-SMTPAPI: {"filters": {"opentrack": "on"}}',
         "X-SMTPAPI 'filters.opentrack.settings.enable' must be 0 or 1"),
        ("sendgrid", "X-SMTPAPI: {}\r\nX-SMTPAPI: {}", "X-SMTPAPI header must appear at most once"),
        ("sendgrid", "X-SMTPAPI: " + "{" * 5 + " " * (1 << 20), "X-SMTPAPI header is longer than 65536 bytes"),
        ("mailgun", "X-Mailgun-Variables: not-json", "JSON parsing error in X-Mailgun-Variables"),
        ("mailgun", "X-Mailgun-Track: maybe", "X-Mailgun-Track must be one of yes, no, true, false"),
        ("mailgun", "X-Mailgun-Campaign-Id: " + "c" * 65, "X-Mailgun-Campaign-Id is limited to 64 bytes (campaign_id)"),
        ("mailgun", "X-Mailgun-Tag: " + "t" * 129, "X-Mailgun-Tag must be a tag of 1 to 128 characters"),
        ("postmark", "X-PM-TrackLinks: Everything", "X-PM-TrackLinks must be one of None, HtmlAndText, HtmlOnly"),
        ("postmark", "X-PM-TrackOpens: 1", "X-PM-TrackOpens must be one of true, false"),
        ("postmark", "X-PM-Tag: =?utf-8?b?A?=", "X-PM-Tag header has an undecodable RFC 2047 encoded-word"),
        ("postmark", "X-PM-Metadata-: blue", "X-PM-Metadata- needs a key name after the prefix"),
        ("sendgrid", 'X-SMTPAPI: {"category": "=?x?b?]a{=?="}',
         "X-SMTPAPI header has an undecodable RFC 2047 encoded-word"),
        ("ses", "X-SES-MESSAGE-TAGS: a=b, broken", "X-SES-MESSAGE-TAGS must be name=value pairs"),
        ("ses", "X-SES-CONFIGURATION-SET: two words", "X-SES-CONFIGURATION-SET must be a name of letters"),
        ("ses", "X-SES-CONFIGURATION-SET: " + "c" * 65, "X-SES-CONFIGURATION-SET must be a name of letters, digits, _ "
         "and - (at most 64)"),
    ],
)
def test_malformed_peer_headers_are_refused_with_a_clear_reason(vendor: str, header: str, reason: str) -> None:
    result = read_peer_headers(message(header), [vendor])
    assert isinstance(result, HeaderError) and result.reason.startswith(reason)


def test_bytes_that_are_not_utf8_are_refused() -> None:
    result = read_peer_headers(BASE + b"X-PM-Tag: caf\xe9\r\n" + BODY, ["postmark"])
    assert result == HeaderError("X-PM-Tag header is not valid UTF-8; use RFC 2047")
    encoded = read_peer_headers(BASE + b"X-PM-Tag: =?utf-8?q?caf=C3=A9?=\r\n" + BODY, ["postmark"])
    assert encoded == PeerHeaders(tags=["café"])


def inject(server: Any, data: bytes) -> str:
    client = RawSmtp(server.smtp)
    try:
        client.transaction(["b@example.net"])
        client.command("DATA")
        client.send(data + b".\r\n")
        return client.reply()
    finally:
        client.close()


def test_a_message_with_peers_headers_is_tracked_as_its_sender_meant(engaged_server: ServerFactory) -> None:
    server = engaged_server('[smtpapi]\naccept_headers = ["sendgrid", "mailgun", "postmark", "ses"]\n')
    for vendor in ("sendgrid", "mailgun", "postmark"):
        reply = inject(server, message(*GOLDEN[vendor]["headers"]))
        message_id = queued_id(reply)
        [copy] = wait_captured(server, message_id)
        head = copy.split(b"\r\n\r\n")[0] + b"\r\n"
        assert head.startswith(BASE) and not any(name in head for name in (b"X-SMTPAPI", b"X-Mailgun", b"X-PM-"))
        expected = GOLDEN[vendor]["plan"]
        [injection] = [e for e in wait_events(server, message_id, {"injection"}) if e["type"] == "injection"]
        assert (injection["open_tracking"], injection["click_tracking"]) == (
            expected["open_tracking"], expected["click_tracking"]), vendor
        assert (b"/f/a/" in copy) is expected["click_tracking"] and (b"/q/" in copy) is expected["open_tracking"]
        assert injection["rcpt_meta"] == expected["metadata"] and injection["rcpt_tags"] == expected["tags"]
    refused = inject(server, message('X-SMTPAPI: {"to": ["x@example.com"]}'))
    assert refused.startswith("550 5.6.0 X-SMTPAPI 'to' lists are not accepted")
    # Base64 that cannot decode raised email.errors.HeaderParseError: 451 4.3.0, retried by the client forever.
    undecodable = inject(server, message("X-Mailgun-Tag: =?utf-8?b?A?="))
    assert undecodable == "550 5.6.0 X-Mailgun-Tag header has an undecodable RFC 2047 encoded-word"
    subject = BASE.replace(b"Subject: peers", b"Subject: =?utf-8?b?A?= sale")
    events = wait_events(server, queued_id(inject(server, subject + BODY)), {"injection"})
    assert [e["subject"] for e in events if e["type"] == "injection"] == ["=?utf-8?b?A?= sale"]


def test_without_accept_headers_peers_headers_are_forwarded_untouched(shared_server: ServerProcess) -> None:
    server = shared_server
    raw = message(*GOLDEN["mailgun"]["headers"])
    [copy] = wait_captured(server, queued_id(inject(server, raw)))
    assert copy == raw
