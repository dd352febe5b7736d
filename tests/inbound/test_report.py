"""Parsing what comes back: real Postfix DSNs, RFC 5965's example, the corpus's DSN, plain replies, junk."""

from __future__ import annotations

from pathlib import Path

import pytest

from engaged.inbound.report import Bounce, Complaint, NotAReport, failure, original_header, parse
from tests.conftest import corpus_dir

SAMPLES = Path(__file__).parent / "samples"


@pytest.mark.parametrize(("name", "status", "bounce_class", "code"), [
    ("postfix-5.1.1-user-unknown.eml", "5.1.1", "10", "550"),
    ("postfix-5.2.2-mailbox-full.eml", "5.2.2", "22", "552"),
    ("postfix-5.7.1-blocked.eml", "5.7.1", "51", "554"),
])
def test_postfix_dsns_give_their_status_class_and_the_original_headers(name: str, status: str, bounce_class: str,
                                                                       code: str) -> None:
    report = parse((SAMPLES / name).read_bytes())
    assert isinstance(report, Bounce) and report.structured
    [recipient] = report.recipients
    assert recipient.action == "failed" and recipient.status == status
    assert recipient.final_recipient.endswith("@dest.example")
    assert recipient.diagnostic.startswith(code)  # "smtp;" is dropped, the folded text unfolded
    assert report.reporting_mta == "mx.relay.example"
    assert failure(recipient) == (bounce_class, code, recipient.diagnostic)
    assert original_header(report.original_headers, "Subject") == "Spring sale"
    assert original_header(report.original_headers, "X-MSFBL") == "placeholder"
    assert original_header(report.original_headers, "Return-Path") == "<b-verp@bounces.example.com>"


def corpus_messages() -> list[object]:
    root = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "mime"
    files = sorted(root.rglob("*.eml"))
    if not files:
        return [pytest.param(None, id="corpus-missing")]
    return [pytest.param(path, id=str(path.relative_to(root))) for path in files]


@pytest.mark.parametrize("path", corpus_messages())
def test_every_corpus_message_parses_and_only_its_dsn_is_a_report(path: Path | None) -> None:
    if path is None:
        corpus_dir("mime")  # skips, or fails under CI=true
        return
    report = parse(path.read_bytes())
    if path.name == "delivery-status.eml":
        assert isinstance(report, Bounce)
    else:
        assert isinstance(report, NotAReport), report  # ordinary mail sent to a bounce address is kept, not an event


def test_the_corpus_dsn_parses() -> None:
    report = parse((corpus_dir("mime") / "mailparser" / "delivery-status.eml").read_bytes())
    assert isinstance(report, Bounce)
    [recipient] = report.recipients
    assert recipient.final_recipient == "xxxx@xxxx.com" and recipient.status == "5.1.1"
    result = failure(recipient)
    assert result is not None and result[0] == "10"
    assert original_header(report.original_headers, "To") == "not@found.com"


def test_rfc_5965s_example_is_an_abuse_complaint() -> None:
    report = parse((SAMPLES / "rfc5965-abuse.eml").read_bytes())
    assert isinstance(report, Complaint)
    assert report.feedback_type == "abuse" and report.user_agent == "SomeGenerator/1.0"
    assert report.original_rcpt_to == "user@example.com"
    assert report.original_mail_from == "somespammer@example.net"
    assert report.reported_domain == "example.net" and report.source_ip == "192.0.2.1"
    assert original_header(report.original_headers, "Subject") == "Earn money"
    assert report.msfbl == ""


def test_an_arf_report_with_only_the_required_fields_and_quoted_headers_is_a_complaint() -> None:
    raw = (b"From: staff@hotmail.example\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"\r\n\r\n'
           b"--b1\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
           b"--b1\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: FBL/1\r\n"
           b"Version: 1\r\n\r\n"
           b"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n"
           b"X-MSFBL: c2ln|\r\n ZGF0YQ==\r\nTo: redacted@example.com\r\n"
           b"Subject: Spring sale\r\n\r\n--b1--\r\n")
    report = parse(raw)
    assert isinstance(report, Complaint) and report.feedback_type == "abuse" and report.user_agent == "FBL/1"
    assert report.msfbl == "c2ln| ZGF0YQ==" and original_header(report.original_headers, "Subject") == "Spring sale"


def test_a_plain_bounce_reply_is_a_bounce_with_the_quoted_reply() -> None:
    raw = (b"From: MAILER-DAEMON@mx.example.net\r\nTo: b-x@bounces.example.com\r\nSubject: failure notice\r\n\r\n"
           b"Hi. This is the qmail-send program at mx.example.net.\r\nI'm afraid I wasn't able to deliver your "
           b"message to the following addresses.\r\n\r\n<ann@example.net>:\r\n192.0.2.9 does not like recipient."
           b"\r\nRemote host said: 550 5.1.1 <ann@example.net>... User unknown\r\n")
    report = parse(raw)
    assert isinstance(report, Bounce) and not report.structured
    [recipient] = report.recipients
    assert recipient.status == "5.1.1" and recipient.diagnostic.startswith("550 5.1.1")
    result = failure(recipient)
    assert result is not None and result[:2] == ("10", "550")


@pytest.mark.parametrize("raw", [
    b"",
    b"\x00\xff\xfe garbage",
    b"From: friend@example.net\r\nSubject: hello\r\n\r\nJust saying hi.\r\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\n"
    b"Content-Type: text/plain\r\n\r\nno status part\r\n--x--\r\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\n"
    b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n--x--\r\n",
    b"Content-Type: multipart/report; report-type=feedback-report; boundary=x\r\n\r\n--x\r\n"
    b"Content-Type: message/feedback-report\r\n\r\nUser-Agent: x\r\n\r\n--x--\r\n",
    b"Content-Type: multipart/report; report-type=feedback-report\r\n\r\nno boundary at all\r\n",
])
def test_malformed_reports_are_not_reports(raw: bytes) -> None:
    assert isinstance(parse(raw), NotAReport)


def test_a_10_mb_attachment_does_not_stop_the_parse() -> None:
    dsn = (SAMPLES / "postfix-5.1.1-user-unknown.eml").read_bytes()
    boundary = b"--A317421C567.1796163335/mx.relay.example--"
    line = b"QUFB" * 19 + b"\r\n"
    big = (b"--A317421C567.1796163335/mx.relay.example\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + line * 180_000)
    report = parse(dsn.replace(boundary, big + boundary))
    assert isinstance(report, Bounce) and report.recipients[0].status == "5.1.1"


def test_delayed_and_delivered_blocks_are_not_failures() -> None:
    raw = (SAMPLES / "postfix-5.2.2-mailbox-full.eml").read_bytes()
    report = parse(raw.replace(b"Action: failed", b"Action: delayed").replace(b"Status: 5.2.2", b"Status: 4.2.2"))
    assert isinstance(report, Bounce)
    assert failure(report.recipients[0]) is None
