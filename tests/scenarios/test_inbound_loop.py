"""Mail sent back to a real server's inbound listener: DSNs become out_of_band, ARF reports spam_complaint,
a List-Unsubscribe mailto list_unsubscribe; each suppresses the recipient; the rest is kept, never relayed."""

from __future__ import annotations

import smtplib
from pathlib import Path

import httpx
import pytest

from engaged import verp
from engaged.keys import load_keyring
from engaged.testing.server import ServerProcess, wait_until
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, stored_events, wait_events

SAMPLES = Path(__file__).parents[1] / "inbound" / "samples"
DOMAIN = "bounces.example.com"
CONFIG = f'[inbound]\nlisten = ["127.0.0.1:0"]\nbounce_domain = "{DOMAIN}"\n'


def inject(server: ServerProcess, rcpt: str) -> str:
    client = RawSmtp(server.smtp)
    try:
        client.transaction([rcpt])
        client.command("DATA")
        client.send(b'From: Shop <shop@example.org>\r\nSubject: Spring sale\r\nX-MSYS-API: {"campaign_id": "spring"}'
                    b"\r\n\r\nHello\r\n.\r\n")
        message_id = queued_id(client.reply())
    finally:
        client.close()
    wait_events(server, message_id, {"delivery"})
    return message_id


def send_back(server: ServerProcess, rcpt: str, content: bytes, mail_from: str = "") -> None:
    host, port = server.address("inbound")
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.sendmail(mail_from, [rcpt], content)


def data_dir(server: ServerProcess) -> Path:
    return server.config.parent / "data"


def events_of(server: ServerProcess, kind: str) -> list[dict[str, object]]:
    return [event for event in stored_events(server) if event["type"] == kind]


def suppressed(server: ServerProcess, rcpt: str) -> list[dict[str, object]] | None:
    host, port = server.address("api")
    reply = httpx.get(f"http://{host}:{port}/api/v1/suppression-list/{rcpt}", timeout=30)
    return reply.json()["results"] if reply.status_code == 200 else None


def test_a_postfix_dsn_to_the_return_path_is_out_of_band_and_suppresses(engaged_server: ServerFactory) -> None:
    server = engaged_server(CONFIG)
    message_id = inject(server, "unknown@dest.example")
    path = verp.address(load_keyring(data_dir(server)), "b", message_id, "unknown@dest.example", DOMAIN)
    send_back(server, path, (SAMPLES / "postfix-5.1.1-user-unknown.eml").read_bytes())
    [event] = wait_until(lambda: events_of(server, "out_of_band"), 30)
    assert event["message_id"] == message_id and event["rcpt_to"] == "unknown@dest.example"
    assert event["campaign_id"] == "spring" and event["subject"] == "Spring sale"
    assert event["bounce_class"] == "10" and event["error_code"] == "550"
    assert str(event["reason"]).startswith("550 5.1.1")
    [entry] = wait_until(lambda: suppressed(server, "unknown@dest.example"), 30)
    assert entry["source"] == "Bounce Rule"
    assert not list((data_dir(server) / "inbound" / "new").glob("*.eml"))


def test_an_arf_report_matched_by_x_msfbl_is_a_spam_complaint(engaged_server: ServerFactory) -> None:
    server = engaged_server(CONFIG)
    message_id = inject(server, "user@example.com")
    value = verp.msfbl(load_keyring(data_dir(server)), message_id, "user@example.com")
    report = (SAMPLES / "rfc5965-abuse.eml").read_bytes().replace(
        b"Subject: Earn money\r\n", b"Subject: Earn money\r\nX-MSFBL: " + value.encode() + b"\r\n")
    send_back(server, f"fbl@{DOMAIN}", report, mail_from="fbl@isp.example")
    [event] = wait_until(lambda: events_of(server, "spam_complaint"), 30)
    assert event["message_id"] == message_id and event["rcpt_to"] == "user@example.com"
    assert event["fbtype"] == "abuse" and event["report_by"] == "fbl@isp.example"
    assert event["report_to"] == f"fbl@{DOMAIN}" and event["user_str"] == "SomeGenerator/1.0"
    [entry] = wait_until(lambda: suppressed(server, "user@example.com"), 30)
    assert entry["source"] == "Spam Complaint" and entry["type"] == "non_transactional"


def test_a_mail_to_the_unsubscribe_mailto_is_a_list_unsubscribe(engaged_server: ServerFactory) -> None:
    server = engaged_server(CONFIG)
    message_id = inject(server, "ann@example.com")
    mailto = verp.address(load_keyring(data_dir(server)), "u", message_id, "ann@example.com", DOMAIN)
    send_back(server, mailto, b"From: ann@example.com\r\nSubject: unsubscribe\r\n\r\n\r\n", mail_from="ann@example.com")
    [event] = wait_until(lambda: events_of(server, "list_unsubscribe"), 30)
    assert event["rcpt_to"] == "ann@example.com" and event["mailfrom"] == "ann@example.com"
    assert event["campaign_id"] == "spring"
    [entry] = wait_until(lambda: suppressed(server, "ann@example.com"), 30)
    assert entry["source"] == "List Unsubscribe"


def test_forged_and_unknown_reports_are_kept_unmatched_and_counted(engaged_server: ServerFactory) -> None:
    server = engaged_server(CONFIG + "wait_for_copy = 1.0\n")  # the copy never sent is given 1 s to appear
    dsn = (SAMPLES / "postfix-5.1.1-user-unknown.eml").read_bytes()
    forged = verp.address(load_keyring(data_dir(server)), "b", "0" * 20, "unknown@dest.example", DOMAIN)
    send_back(server, forged, dsn)  # genuine signature, but a message this store never sent
    send_back(server, "b-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@" + DOMAIN, dsn)  # forged signature
    send_back(server, f"postmaster@{DOMAIN}", b"Subject: hello\r\n\r\nJust a note.\r\n", mail_from="x@y.example")
    unmatched = data_dir(server) / "inbound" / "unmatched"
    wait_until(lambda: len(list(unmatched.glob("*.eml"))) == 3, 30)
    reasons = sorted(path.read_text() for path in unmatched.glob("*.reason"))
    assert any("never" in reason or "no copy" in reason for reason in reasons)
    host, port = server.address("api")
    metrics = httpx.get(f"http://{host}:{port}/metrics", timeout=30).text
    assert 'engaged_inbound_messages_total{outcome="unmatched"} 3.0' in metrics
    assert "engaged_inbound_unmatched_messages 3.0" in metrics and "engaged_inbound_pending_messages 0.0" in metrics
    assert events_of(server, "out_of_band") == []


def test_the_inbound_listener_is_never_a_relay(engaged_server: ServerFactory) -> None:
    server = engaged_server(CONFIG)
    host, port = server.address("inbound")
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo("client.example")
        assert not client.has_extn("auth")  # nobody logs in here, not even from loopback
        assert client.docmd("AUTH", "PLAIN AGFwcABwdw==")[0] == 502
        client.mail("")
        code, text = client.rcpt("victim@elsewhere.example")
        assert code == 550 and b"Relay access denied" in text
        code, _ = client.rcpt(f"anything@{DOMAIN}")
        assert code == 250
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_back(server, "victim@elsewhere.example", b"Subject: x\r\n\r\nx\r\n")
