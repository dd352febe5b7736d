"""Recipient copies: header removed, tracking per plan, undecodable parts left alone with a warning."""

from __future__ import annotations

import email
import re
from pathlib import Path

import msgspec

from engaged.delivery.compose import CopyComposer
from engaged.delivery.unsubscribe import ReturnHeaders
from engaged.keys import load_keyring
from engaged.recipient import TrackingPlan
from engaged.spool.record import SpoolRecord
from engaged.testing.server import ServerProcess
from engaged.tokens import CLICK_KINDS, decode_token
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


def test_undecodable_part_is_delivered_untouched_and_warned_about(shared_server: ServerProcess) -> None:
    server = shared_server
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


LISTED = (b"From: app@example.org\r\nCc: old@example.com\r\nBcc: secret@example.com\r\nX-MSYS-API: {}\r\n"
          b"Content-Type: text/html\r\n\r\n<html><body><a href=\"https://example.com/\">x</a></body></html>\r\n")


def listed_record(plan: TrackingPlan) -> SpoolRecord:
    """An envelope recipient, a cc, a bcc and an archive copy of it, as inject.py builds them."""
    to, cc, bcc, vault = (recipient_identity(address, rcpt_type=kind) for address, kind in (
        ("to@y.com", ""), ("cc@y.com", "cc"), ("bcc@y.com", "bcc"), ("vault@y.com", "archive")))
    base = spool_record((to, plan), (cc, plan), (bcc, plan), (vault, plan),
                        cc_field=b"Cc: old@example.com,\r\n cc@y.com\r\n", drop_bcc=True)
    recipients = list(base.recipients)
    recipients[2] = msgspec.structs.replace(recipients[2], bcc_field=b"Bcc: bcc@y.com\r\n")
    recipients[3] = msgspec.structs.replace(recipients[3], replica_of=to)
    return msgspec.structs.replace(base, recipients=recipients)


def fields(data: bytes, name: str) -> list[str]:
    return [str(value) for value in email.message_from_bytes(data).get_all(name, [])]


def test_every_copy_shows_the_cc_field_and_only_a_bcc_copy_its_own_bcc(tmp_path: Path) -> None:
    compose = CopyComposer(load_keyring(tmp_path))
    record = listed_record(TrackingPlan())
    to, cc, bcc, vault = (compose(LISTED, record, index).data for index in range(4))
    for copy in (to, cc, bcc, vault):
        assert fields(copy, "Cc") == ["old@example.com,\r\n cc@y.com"]
        assert b"X-MSYS-API" not in copy
    assert fields(bcc, "Bcc") == ["bcc@y.com"]
    assert [fields(copy, "Bcc") for copy in (to, cc, vault)] == [[]] * 3  # not even the message's own
    assert to == vault


def test_cc_and_bcc_copies_have_links_of_their_own_and_archive_the_originals(tmp_path: Path) -> None:
    keyring = load_keyring(tmp_path)
    returns = ReturnHeaders(keyring, list_unsubscribe=True, bounce_domain="bounces.example")
    compose = CopyComposer(keyring, returns)
    plan = TrackingPlan(open_tracking=True, click_tracking=True, tracking_domain="t.example")
    record = listed_record(plan)
    copies = [compose(LISTED, record, index) for index in range(4)]

    def tokens(data: bytes) -> list[str]:
        html = email.message_from_bytes(data).get_payload(decode=True)
        assert isinstance(html, bytes)
        return re.findall(r"http://t\.example/(?:f/a|q)/[A-Za-z0-9_-]+", html.decode())

    to, cc, bcc, vault = (tokens(copy.data) for copy in copies)
    assert len(to) == 3 and to == vault  # the archive copy's links are the envelope recipient's
    assert not set(to) & set(cc) and not set(to) & set(bcc) and not set(cc) & set(bcc)
    click = decode_token(cc[1].rpartition("/")[2], keyring, expect=CLICK_KINDS)
    assert (click.identity.rcpt_to, click.identity.rcpt_type) == ("cc@y.com", "cc")
    click = decode_token(vault[1].rpartition("/")[2], keyring, expect=CLICK_KINDS)
    assert (click.identity.rcpt_to, click.identity.rcpt_type) == ("to@y.com", "")
    # What tells replies apart differs: the return path, X-MSFBL and List-Unsubscribe are the archive's own.
    assert copies[0].mail_from != copies[3].mail_from
    for name in ("X-MSFBL", "List-Unsubscribe"):
        assert fields(copies[0].data, name) != fields(copies[3].data, name)
    strip = re.compile(rb"(?m)^(X-MSFBL|List-Unsubscribe): .*\r\n(?: .*\r\n)*")
    assert strip.sub(b"", copies[0].data) == strip.sub(b"", copies[3].data)
