"""Recipient copies: header removed, tracking per plan, undecodable parts left alone with a warning."""

from __future__ import annotations

import email
import re
from pathlib import Path

from engaged.delivery.compose import CopyComposer
from engaged.keys import load_keyring
from engaged.recipient import TrackingPlan
from engaged.spool.record import SpoolRecord
from engaged.tokens import CLICK_KINDS, decode_token
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, wait_captured, wait_events
from tests.records import recipient_identity, spool_record

HTML = (b"X-MSYS-API: {}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b'<html><body><a href="https://example.com/?a=1&amp;b=2">x</a></body></html>\r\n')


def record(plan: TrackingPlan, **identity: object) -> SpoolRecord:
    return spool_record((recipient_identity("Bob@Y.com", **identity), plan))


def test_untracked_copy_is_the_message_without_the_header(tmp_path: Path) -> None:
    copy = CopyComposer(load_keyring(tmp_path))(HTML, record(TrackingPlan()), 0)
    assert copy.data == HTML.replace(b"X-MSYS-API: {}\r\n", b"")
    assert copy.warnings == ()


def test_tracked_copy_carries_signed_links_for_the_recipient(tmp_path: Path) -> None:
    keyring = load_keyring(tmp_path)
    plan = TrackingPlan(open_tracking=True, click_tracking=True, tracking_domain="t.example")
    copy = CopyComposer(keyring)(HTML, record(plan, campaign_id="c", metadata={"k": "v"}), 0)
    html = email.message_from_bytes(copy.data).get_payload(decode=True)
    assert isinstance(html, bytes)
    token = re.search(rb"http://t\.example/f/a/([A-Za-z0-9_-]+)", html)
    assert token is not None
    payload = decode_token(token.group(1).decode(), keyring, expect=CLICK_KINDS)
    assert payload.target_url == "https://example.com/?a=1&b=2"
    identity = payload.identity
    assert (identity.rcpt_to, identity.raw_rcpt_to, identity.campaign_id) == ("bob@y.com", "Bob@Y.com", "c")
    assert identity.metadata == {"k": "v"}
    assert html.count(b"http://t.example/q/") == 2
    assert payload.expires == 1_700_000_000 + plan.link_expiry


def test_undecodable_part_is_delivered_untouched_and_warned_about(engaged_server: ServerFactory) -> None:
    server = engaged_server()
    message = (b'X-MSYS-API: {"options": {"open_tracking": true, "click_tracking": true}}\r\n'
               b"Content-Type: text/html; charset=x-no-such-charset\r\n\r\n"
               b'<html><body><a href="https://example.com/">x</a></body></html>\r\n')
    client = RawSmtp(server.smtp)
    client.transaction()
    client.command("DATA")
    client.send(message + b".\r\n")
    message_id = queued_id(client.reply())
    client.close()
    [copy] = wait_captured(server, message_id)
    assert copy == message.split(b"\r\n", 1)[1]
    events = wait_events(server, message_id, {"injection", "delivery"})
    [injection] = [e for e in events if e["type"] == "injection"]
    [delivery] = [e for e in events if e["type"] == "delivery"]
    assert "warnings" not in injection
    warnings = delivery["warnings"]
    assert isinstance(warnings, list) and warnings and "charset" in str(warnings[0])
