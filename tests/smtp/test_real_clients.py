"""Real SMTP clients against the engine, one per EHLO extension: swaks (PIPELINING, over a pipe, STARTTLS with AUTH
LOGIN and PLAIN), smtp-source, smtplib (SMTPUTF8, CHUNKING/BDAT, 8BITMIME, SIZE, DSN)."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from engaged.smtp.auth import hash_password
from engaged.testing.server import ServerProcess, wait_until
from tests.conftest import IN_CI, ServerFactory, require_tool
from tests.helpers import captured_files, queued_id, wait_captured, wait_events


def test_swaks_pipelines_a_message(shared_server: ServerProcess) -> None:
    swaks = require_tool("swaks")
    host, port = shared_server.smtp
    result = subprocess.run([swaks, "--server", f"{host}:{port}", "--pipeline", "--to", "bob@example.com",
                             "--from", "app@example.org", "--body", "pipelined by swaks"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<** " not in result.stdout  # no error replies
    assert "250 2.0.0 OK queued as " in result.stdout


def test_swaks_talks_to_the_core_over_a_pipe(tmp_path: Path) -> None:
    swaks = require_tool("swaks")
    spool = tmp_path / "messages.jsonl"
    for extra in ([], ["--pipeline"]):
        result = subprocess.run([swaks, "--pipe", f"{sys.executable} -m engaged.testing.stdio {spool}",
                                 "--to", "bob@example.com", "--from", "<>", "--body", "over a pipe", *extra],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    messages = [json.loads(line) for line in spool.read_text().splitlines()]
    assert [(m["mail_from"], m["rcpt_tos"]) for m in messages] == [("", ["bob@example.com"])] * 2
    assert all("over a pipe" in m["data"] for m in messages)


def test_smtp_source_injects_over_many_connections(engaged_server: ServerFactory) -> None:
    source = require_tool("smtp-source", "/usr/sbin/smtp-source")
    server = engaged_server()
    host, port = server.smtp
    subprocess.run([source, "-s", "5", "-m", "50", "-l", "1024", "-f", "app@example.org", "-t", "bob@example.com",
                    f"{host}:{port}"], check=True, capture_output=True, timeout=120)
    wait_until(lambda: len(captured_files(server)) == 50, 60)


def test_smtplib_sends_utf8_addresses_with_smtputf8(shared_server: ServerProcess) -> None:
    with smtplib.SMTP(*shared_server.smtp) as client:
        client.ehlo()
        refused = client.sendmail("jörg@bücher.example", ["zoë@example.com"], "Subject: ü\r\n\r\nhi\r\n".encode(),
                                  mail_options=["SMTPUTF8"])
    assert refused == {}


def _swaks_tls(swaks: str) -> None:
    support = subprocess.run([swaks, "--support"], capture_output=True, text=True, timeout=30, check=False)
    if "=== TLS supported" not in support.stdout + support.stderr:
        message = "swaks has no TLS without Net::SSLeay (make sysdeps installs libnet-ssleay-perl)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_swaks_starts_tls_and_authenticates(engaged_server: ServerFactory, tmp_path: Path, mechanism: str) -> None:
    swaks = require_tool("swaks")
    _swaks_tls(swaks)
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    server = engaged_server(f'[smtp]\nrelay_networks = []\ntls_cert_file = "{cert_path}"\ntls_key_file = "{key_path}"\n'
                            f'[[smtp.users]]\nname = "app"\npassword_hash = "{hash_password("pw", iterations=1000)}"\n'
                            'customer_id = "42"\n')
    host, port = server.smtp
    result = subprocess.run([swaks, "--server", f"{host}:{port}", "-tls", "--auth", mechanism, "--auth-user", "app",
                             "--auth-password", "pw", "--to", "bob@example.com", "--from", "app@example.org",
                             "--body", f"over TLS with AUTH {mechanism}"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " -> STARTTLS" in result.stdout and "<-  220 " in result.stdout.split(" -> STARTTLS", 1)[1]
    assert "~> EHLO" in result.stdout  # after the handshake, swaks marks its lines ~>
    assert "~> AUTH " + mechanism in result.stdout and "<~  235 " in result.stdout, result.stdout
    message_id = queued_id(next(line for line in result.stdout.splitlines() if "queued as" in line))
    [injection] = [e for e in wait_events(server, message_id, {"injection"}) if e["type"] == "injection"]
    assert injection["customer_id"] == "42"


def test_python_sends_a_message_in_bdat_chunks(shared_server: ServerProcess) -> None:
    first, last = b"Subject: chunked\r\n\r\nline one\r\n.\r\n", b"BDAT 9 LAST looks like a command\r\n"
    with smtplib.SMTP(*shared_server.smtp) as client:
        client.ehlo()
        assert client.has_extn("chunking") and client.has_extn("pipelining")
        assert client.mail("app@example.org")[0] == 250 and client.rcpt("bob@example.com")[0] == 250
        client.send(b"BDAT %d\r\n" % len(first) + first)
        assert client.getreply()[0] == 250
        client.send(b"BDAT %d LAST\r\n" % len(last) + last)
        code, text = client.getreply()
    assert code == 250, text
    assert wait_captured(shared_server, queued_id("250 " + text.decode())) == [first + last]


def test_smtplib_sends_8bitmime_with_size_and_dsn(shared_server: ServerProcess) -> None:
    body = "Subject: Grüße\r\n\r\nGrüße aus Köln\r\n".encode()
    with smtplib.SMTP(*shared_server.smtp) as client:
        client.ehlo()
        assert all(client.has_extn(name) for name in ("8bitmime", "size", "dsn"))
        assert int(client.esmtp_features["size"]) > len(body)
        code, text = client.mail("app@example.org", ["SIZE=999999999"])
        assert code == 552, text  # SIZE is read at MAIL FROM, before any data is sent
        code, text = client.mail("app@example.org", [f"SIZE={len(body)}", "BODY=8BITMIME", "RET=HDRS", "ENVID=Q1"])
        assert code == 250, text
        assert client.rcpt("bob@example.com", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@example.com"])[0] == 250
        code, text = client.data(body)
    assert code == 250, text
    message_id = queued_id("250 " + text.decode())
    assert wait_captured(shared_server, message_id) == [body]
    [injection] = [e for e in wait_events(shared_server, message_id, {"injection"}) if e["type"] == "injection"]
    assert (injection["dsn_notify"], injection["dsn_ret"], injection["dsn_envid"]) == ("SUCCESS,FAILURE", "HDRS", "Q1")
    assert injection["dsn_orcpt"] == "rfc822;bob@example.com"
