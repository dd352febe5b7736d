"""SMTP conversations against the real server: relay control, limits, X-MSYS-API refusals, bad input."""

from __future__ import annotations

import json
import smtplib
from pathlib import Path

import pytest

from engaged.smtp import replies
from engaged.testing.server import ServerProcess, wait_until
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, captured_files, queued_id, stored_events, wait_captured

MESSAGE = b"From: App <app@example.org>\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHello\r\n"


def _send(server: ServerProcess, data: bytes, rcpts: list[str] | None = None) -> str:
    client = RawSmtp(server.smtp)
    try:
        client.transaction(rcpts)
        assert client.command("DATA").startswith("354")
        client.send(data + b".\r\n")
        return client.reply()
    finally:
        client.close()


def test_ehlo_advertises_the_extensions(shared_server: ServerProcess) -> None:
    with smtplib.SMTP(*shared_server.smtp) as client:
        code, _ = client.ehlo("client.example")
        assert code == 250
        for extension in ("size", "8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes", "auth"):
            assert client.has_extn(extension), extension
        assert client.esmtp_features["size"] == "26214400"


def test_message_is_accepted_with_its_id(shared_server: ServerProcess) -> None:
    reply = _send(shared_server, MESSAGE)
    assert reply.startswith("250 2.0.0 OK queued as ")
    message_id = queued_id(reply)
    assert len(message_id) == 20 and int(message_id, 16) >= 0
    assert wait_captured(shared_server, message_id) == [MESSAGE]


def test_each_recipient_gets_a_copy_and_events(shared_server: ServerProcess) -> None:
    rcpts = ["a@example.com", "B@Example.com", "c@example.net"]
    message_id = queued_id(_send(shared_server, MESSAGE, rcpts))
    copies = wait_captured(shared_server, message_id, count=3)
    assert copies == [MESSAGE] * 3
    from tests.helpers import wait_events

    events = wait_events(shared_server, message_id, {"injection", "delivery"})
    injections = [e for e in events if e["type"] == "injection"]
    assert sorted(str(e["raw_rcpt_to"]) for e in injections) == sorted(rcpts)
    assert {str(e["rcpt_to"]) for e in injections} == {"a@example.com", "b@example.com", "c@example.net"}
    assert len({e["transmission_id"] for e in events}) == 1


def test_enhanced_status_codes_on_every_reply(shared_server: ServerProcess) -> None:
    client = RawSmtp(shared_server.smtp)
    try:
        client.command("EHLO x")
        assert client.command("DATA").startswith("503 5.5.1")
        assert client.command("MAIL FROM:<not an address>").startswith("5")
        assert client.command("FOO").startswith("500 5.5.2")
        assert client.command("NOOP") == "250 2.0.0 OK"
        assert client.command("QUIT") == "221 2.0.0 Bye"
    finally:
        client.close()


def test_clients_outside_relay_networks_must_authenticate(engaged_server: ServerFactory) -> None:
    server = engaged_server('[smtp]\nrelay_networks = ["192.0.2.0/24"]\n')
    client = RawSmtp(server.smtp)
    try:
        client.command("EHLO x")
        assert client.command("MAIL FROM:<a@example.org>") == replies.R530_AUTH_REQUIRED
        assert client.command("RCPT TO:<victim@example.net>").startswith("5")
    finally:
        client.close()
    assert captured_files(server) == []


def test_too_many_recipients_get_452(engaged_server: ServerFactory) -> None:
    server = engaged_server("[smtp]\nmax_recipients = 3\n")
    client = RawSmtp(server.smtp)
    try:
        client.transaction(["a@x.com", "b@x.com", "c@x.com"])
        assert client.command("RCPT TO:<d@x.com>") == replies.R452_TOO_MANY_RECIPIENTS
    finally:
        client.close()


def test_size_limit_applies_to_declared_and_actual_size(engaged_server: ServerFactory) -> None:
    server = engaged_server("[smtp]\nmax_message_size = 2000\n")
    client = RawSmtp(server.smtp)
    try:
        client.command("EHLO x")
        assert client.command("MAIL FROM:<a@x.com> SIZE=2001").startswith("552 5.3.4")
        assert client.command("MAIL FROM:<a@x.com> SIZE=100").startswith("250")
        assert client.command("RCPT TO:<b@x.com>").startswith("250")
        client.command("DATA")
        client.send(b"Subject: big\r\n\r\n" + b"y" * 70 + b"\r\n" + (b"x" * 70 + b"\r\n") * 100 + b".\r\n")
        assert client.reply() == replies.R552_TOO_BIG
        assert client.command("NOOP").startswith("250")
    finally:
        client.close()
    assert captured_files(server) == []


@pytest.mark.parametrize(
    "ending",
    [b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r\n\x00.\r\n",
     b"\r\n.\x00\r\n"],
)
def test_smuggled_end_of_data_never_splits_a_message(shared_server: ServerProcess, ending: bytes) -> None:
    server = shared_server
    smuggled = b"MAIL FROM:<spoof@victim.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\nSubject: spoof\r\n\r\nx\r\n"
    client = RawSmtp(server.smtp)
    try:
        client.transaction()
        client.command("DATA")
        client.send(b"Subject: real\r\n\r\nreal" + ending + smuggled + b".\r\n")
        reply = client.reply()
    finally:
        client.close()
    if reply.startswith("250"):
        copies = wait_captured(server, queued_id(reply))
        assert len(copies) == 1 and b"spoof" in copies[0] and b"\r\n.\r\n" not in copies[0]
    else:
        assert reply == replies.R550_BARE_LINE_ENDING
    assert all(b"Subject: spoof\r\n\r\nx" not in p.read_bytes()[:30] for p in captured_files(server))


def test_two_pipelined_messages_in_one_write_are_two_messages(shared_server: ServerProcess) -> None:
    client = RawSmtp(shared_server.smtp)
    try:
        client.command("EHLO x")
        one = b"MAIL FROM:<a@x.com>\r\nRCPT TO:<b@x.com>\r\nDATA\r\n"
        client.send(one + b"Subject: 1\r\n\r\none\r\n.\r\n" + one + b"Subject: 2\r\n\r\ntwo\r\n.\r\nQUIT\r\n")
        answers = [client.reply() for _ in range(9)]
    finally:
        client.close()
    accepted = [queued_id(a) for a in answers if "queued as" in a]
    assert len(accepted) == 2
    assert answers[-1] == "221 2.0.0 Bye"
    assert wait_captured(shared_server, accepted[1]) == [b"Subject: 2\r\n\r\ntwo\r\n"]


def test_long_lines_and_long_commands_get_500(shared_server: ServerProcess) -> None:
    client = RawSmtp(shared_server.smtp)
    try:
        client.command("EHLO x")
        assert client.command(b"NOOP " + b"x" * 600).startswith("500")
        client.transaction()
        client.command("DATA")
        client.send(b"Subject: long\r\n\r\n" + b"z" * 1200 + b"\r\n.\r\n")
        assert client.reply() == replies.R500_LINE_TOO_LONG
        assert client.command("NOOP").startswith("250")
    finally:
        client.close()


def test_disconnect_mid_data_queues_nothing(shared_server: ServerProcess) -> None:
    server = shared_server
    client = RawSmtp(server.smtp)
    client.transaction()
    client.command("DATA")
    client.send(b"Subject: cut\r\n\r\nhalf a mess")
    client.close()
    # The server keeps serving and the half message is nowhere.
    assert _send(server, MESSAGE).startswith("250")
    assert all(b"half a mess" not in p.read_bytes() for p in captured_files(server))
    spool = server.config.parent / "data" / "spool"
    assert not [path for path in spool.rglob("*") if path.is_file() and b"half a mess" in path.read_bytes()]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b'{"metadata": []}', "X-MSYS-API 'metadata' must be of type 'json object'"),
        (b'{"campaign_id": "' + b"c" * 65 + b'"}', "smtpapi_campaign_id context is limited to 64 bytes"),
        (b'{"tags": "promo"}', "X-MSYS-API 'tags' must be of type 'json array'"),
        (b'{"options": {"open_tracking": "yes"}}', "X-MSYS-API 'options.open_tracking' must be of type 'boolean'"),
        (b'{"campaign_id": "x",', "JSON parsing error in X-MSYS-API"),
        (b"[1, 2]", "X-MSYS-API must be a json object"),
        (b'{"campaign_id": "caf\xe9"}', "X-MSYS-API header is not valid UTF-8"),
        (b'{"cc": ["not an address"]}', "X-MSYS-API 'cc[0]' is not a valid email address"),
        (b'{"options": {"teleport": true}}', "X-MSYS-API option 'options.teleport' is not supported"),
    ],
)
def test_broken_x_msys_api_is_refused_with_momentums_wording(
    shared_server: ServerProcess, header: bytes, reason: str
) -> None:
    # The shared server may still be delivering an earlier test's message: count once its spool is empty.
    spool = shared_server.config.parent / "data" / "spool"
    wait_until(lambda: not any(spool.glob("*/*.msg")), timeout=30)
    before = len(captured_files(shared_server))
    reply = _send(shared_server, b"X-MSYS-API: " + header + b"\r\nSubject: x\r\n\r\nbody\r\n")
    assert reply.startswith("550 5.6.0 " + reason), reply
    assert len(captured_files(shared_server)) == before


def test_x_msys_api_is_removed_and_everything_else_kept(shared_server: ServerProcess) -> None:
    api = {"campaign_id": "spring", "metadata": {"user": "42"}, "tags": ["a", "b"],
           "options": {"transactional": True, "ip_pool": "pool1"}}
    raw = json.dumps(api).encode()
    cut = raw.index(b" ", 20)
    folded = raw[:cut] + b"\r\n" + raw[cut:]
    message = (b"Received: from x by y; Fri, 27 Nov 2026 00:00:00 +0000\r\nX-MSYS-API: " + folded
               + b"\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nFrom: app@example.org\r\n\r\nBody \xc3\xa9\r\n.dot\r\n")
    message_id = queued_id(_send(shared_server, message.replace(b"\r\n.dot", b"\r\n..dot")))
    [copy] = wait_captured(shared_server, message_id)
    assert copy == message.replace(b"X-MSYS-API: " + folded + b"\r\n", b"")
    from tests.helpers import wait_events

    [injection] = [e for e in wait_events(shared_server, message_id, {"injection"}) if e["type"] == "injection"]
    assert injection["campaign_id"] == "spring"
    assert injection["rcpt_meta"] == {"user": "42"}
    assert injection["rcpt_tags"] == ["a", "b"]
    assert injection["transactional"] == "1"
    assert injection["ip_pool"] == "pool1"
    assert injection["subject"] == "café"


def test_rfc2047_encoded_header_is_decoded(shared_server: ServerProcess) -> None:
    encoded = b"=?utf-8?b?eyJjYW1wYWlnbl9pZCI6ICJlbmMifQ==?="
    message_id = queued_id(_send(shared_server, b"X-MSYS-API: " + encoded + b"\r\nSubject: x\r\n\r\nb\r\n"))
    from tests.helpers import wait_events

    events = wait_events(shared_server, message_id, {"injection"})
    assert events[0]["campaign_id"] == "enc"


def test_not_mime_and_invalid_utf8_headers_are_still_accepted(shared_server: ServerProcess) -> None:
    odd = b"Subject: \xff\xfe broken\r\nContent-Type: multipart/mixed; boundary=\r\n\r\n--x\r\nno end\r\n"
    message_id = queued_id(_send(shared_server, odd))
    assert wait_captured(shared_server, message_id) == [odd]


def test_the_events_cli_prints_injection_and_delivery(shared_server: ServerProcess, tmp_path: Path) -> None:
    import subprocess
    import sys

    message_id = queued_id(_send(shared_server, MESSAGE))
    from tests.helpers import wait_events

    wait_events(shared_server, message_id, {"injection", "delivery"})
    result = subprocess.run(
        [sys.executable, "-m", "engaged", "events", "--config", str(shared_server.config), "--type", "delivery"],
        capture_output=True, text=True, check=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert any(e["message_id"] == message_id and e["type"] == "delivery" for e in lines)
    assert all(e["type"] == "delivery" for e in lines)
    assert stored_events(shared_server, message_id)[0]["type"] == "injection"
