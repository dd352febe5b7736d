"""Bad input of issue 12 over real sockets: each gets a clear reply or a closed connection, others are served."""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import threading
from pathlib import Path

import trustme

from engaged.smtp import replies
from engaged.testing.server import ServerProcess, wait_until
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, captured_files, queued_id, wait_captured

MESSAGE = b"Subject: ok\r\n\r\nfine\r\n"


def _served(server: ServerProcess) -> bool:
    """Another client still gets a message through."""
    client = RawSmtp(server.smtp)
    try:
        client.transaction()
        client.command("DATA")
        client.send(MESSAGE + b".\r\n")
        return client.reply().startswith("250")
    finally:
        client.close()


def _closed(client: RawSmtp) -> bool:
    client.sock.settimeout(10)
    try:
        while client.sock.recv(65536):
            pass
    except ConnectionError:
        pass
    return True


def test_bdat_carries_a_message_from_a_raw_client(shared_server: ServerProcess) -> None:
    client = RawSmtp(shared_server.smtp)
    try:
        client.transaction()
        client.send(b"BDAT 13\r\nSubject: ok\r\nBDAT 8 LAST\r\n\r\nfine\r\n")
        assert client.reply() == "250 2.0.0 13 octets received"
        reply = client.reply()
    finally:
        client.close()
    assert wait_captured(shared_server, queued_id(reply)) == [MESSAGE]


def test_bdat_with_a_wrong_or_huge_size_is_refused_and_closed(shared_server: ServerProcess) -> None:
    for command, reply in ((b"BDAT ten", replies.R501_BDAT_SYNTAX),
                           (b"BDAT 999999999999 LAST", replies.R552_TOO_BIG)):
        client = RawSmtp(shared_server.smtp)
        client.transaction()
        client.send(command + b"\r\nSubject: x\r\n\r\nbody\r\n")
        assert client.reply() == reply
        assert _closed(client)
        client.close()
    assert _served(shared_server)


def test_bdat_mixed_with_data_is_refused(shared_server: ServerProcess) -> None:
    client = RawSmtp(shared_server.smtp)
    try:
        client.transaction()
        client.send(b"BDAT 11\r\nmixed-one\r\n")
        assert client.reply().startswith("250")
        assert client.command("DATA") == replies.R503_DATA_WITH_BDAT
        assert client.command("NOOP") == "250 2.0.0 OK"
        client.send(b"BDAT 0 LAST\r\n")
        assert client.reply() == "503 5.5.1 Error: need MAIL command"  # the transaction went with the DATA
    finally:
        client.close()
    assert _served(shared_server)
    assert all(b"mixed-one" not in path.read_bytes() for path in captured_files(shared_server))


def test_pipelined_garbage_after_a_valid_command_gets_replies_then_a_close(shared_server: ServerProcess) -> None:
    client = RawSmtp(shared_server.smtp)
    try:
        client.send(b"EHLO x\r\n" + b"\x00\xffGARBAGE \x1b[2J\r\n" * 30)
        answers = [client.reply() for _ in range(21)]
        assert answers[0].startswith("250-")
        assert all(a.startswith("500 5.5.2") for a in answers[1:20])
        assert answers[20] == replies.R502_TOO_MANY_ERRORS
        assert _closed(client)
    finally:
        client.close()
    assert _served(shared_server)
    assert not any("\x1b" in line or "\x00" in line for line in shared_server.log)


def _tls_files(tmp_path: Path) -> tuple[trustme.CA, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return ca, f'[smtp]\ntls_cert_file = "{cert_path}"\ntls_key_file = "{key_path}"\n'


def test_commands_pipelined_with_starttls_are_not_run_inside_tls(engaged_server: ServerFactory,
                                                                  tmp_path: Path) -> None:
    ca, config = _tls_files(tmp_path)
    server = engaged_server(config)
    client = RawSmtp(server.smtp)
    client.command("EHLO x")
    client.send(b"STARTTLS\r\nMAIL FROM:<spoof@victim.example>\r\nRCPT TO:<x@example.com>\r\n")
    assert client.reply() == "220 Ready to start TLS"
    context = ssl.create_default_context()
    ca.configure_trust(context)
    client.sock = context.wrap_socket(client.sock, server_hostname="localhost")
    try:
        assert client.command("EHLO x").startswith("250-")
        # Had the pipelined MAIL run inside TLS, this RCPT would be accepted.
        assert client.command("RCPT TO:<x@example.com>") == "503 5.5.1 Error: need MAIL command"
    finally:
        client.close()
    assert _served(server)


def test_an_auth_payload_of_a_megabyte_is_refused(shared_server: ServerProcess) -> None:
    client = RawSmtp(shared_server.smtp)
    try:
        client.command("EHLO x")
        assert client.command(b"AUTH PLAIN " + base64.b64encode(b"\x00app\x00" + b"p" * 750_000)) \
            == "500 5.5.2 Command line too long"
        assert client.command("AUTH PLAIN") == "334 "
        assert client.command(b"A" * 1_000_000) == "500 5.5.2 Command line too long"
        assert client.command("NOOP") == "250 2.0.0 OK"
    finally:
        client.close()


def test_two_thousand_one_byte_a_second_connections_do_not_keep_others_out(engaged_server: ServerFactory) -> None:
    server = engaged_server('[smtp]\nrelay_networks = ["127.0.0.2/32"]\nfirst_command_timeout = 5\n')
    host, port = server.smtp
    attackers: list[socket.socket] = []
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for sock in list(attackers):
                try:
                    sock.send(b"E")
                except OSError:
                    attackers.remove(sock)

    for n in range(2000):
        sock = socket.socket()
        sock.bind((f"127.0.0.{10 + n % 10}", 0))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect((host, port))
        attackers.append(sock)
    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        def legit() -> bool:
            sock = socket.socket()
            sock.bind(("127.0.0.2", 0))
            sock.settimeout(10)
            sock.connect((host, port))
            client = RawSmtp.__new__(RawSmtp)
            client.sock, client.buffer = sock, b""
            try:
                client.greeting = client.reply()
                if not client.greeting.startswith("220"):
                    return False
                client.transaction()
                client.command("DATA")
                client.send(MESSAGE + b".\r\n")
                return client.reply().startswith("250")
            except ConnectionError:
                return False
            finally:
                client.close()

        for _ in range(3):
            assert wait_until(legit, 60)
        # And the trickling connections are cut: by the idle cap at once, the rest by the first-command timeout.
        wait_until(lambda: len(attackers) < 300, 120)
    finally:
        stop.set()
        sender.join(5)
        for sock in attackers:
            sock.close()
