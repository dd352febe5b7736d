"""Issue 15 items 4-10 over real sockets: AUTH off the loop, timeouts, null sender, 8-bit commands, logs."""

from __future__ import annotations

import base64
import select
import socket
import struct
import time

import pytest

from engaged.smtp import replies
from engaged.smtp.auth import hash_password
from engaged.testing.server import ServerProcess
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, wait_captured

MESSAGE = b"Subject: ok\r\n\r\nfine\r\n"


def _plain(user: str, password: str) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_password_hashing_does_not_hold_up_other_sessions(engaged_server: ServerFactory) -> None:
    slow = hash_password("pw", iterations=1_500_000)
    server = engaged_server(f'[[smtp.users]]\nname = "app"\npassword_hash = "{slow}"\n')
    guessers = [RawSmtp(server.smtp) for _ in range(4)]
    other = RawSmtp(server.smtp)
    try:
        for client in [*guessers, other]:
            client.command("EHLO x")
        for client in guessers:
            client.send((_plain("app", "wrong") + "\r\n").encode())
        assert other.command("NOOP") == "250 2.0.0 OK"
        # The NOOP was answered while hashes were still running: not every guess has its reply yet.
        ready, _, _ = select.select([g.sock for g in guessers], [], [], 0)
        assert len(ready) < len(guessers), "every AUTH was answered before the other session's NOOP"
        assert all(g.reply() == replies.R535_AUTH_FAILED for g in guessers)
    finally:
        for client in [*guessers, other]:
            client.close()


def test_lockout_limits_are_settings_and_count_per_user_too(engaged_server: ServerFactory) -> None:
    users = "".join(f'[[smtp.users]]\nname = "{n}"\npassword_hash = "{hash_password("pw", iterations=1000)}"\n'
                    for n in ("app", "other"))
    server = engaged_server("[smtp]\nauth_max_failures = 10\nauth_max_failures_per_user = 2\n" + users)
    client = RawSmtp(server.smtp)
    try:
        client.command("EHLO x")
        assert client.command(_plain("app", "guess")) == replies.R535_AUTH_FAILED
        assert client.command(_plain("app", "guess")) == replies.R535_AUTH_FAILED
        assert client.command(_plain("app", "pw")) == replies.R535_AUTH_FAILED  # this user, this address: locked
        assert client.command(_plain("other", "pw")) == replies.R235_AUTH_OK  # another app on 127.0.0.1 is not
    finally:
        client.close()


def test_command_timeout_does_not_cut_a_steady_data_transfer(engaged_server: ServerFactory) -> None:
    server = engaged_server("[smtp]\ncommand_timeout = 1\ndata_timeout = 60\n")
    client = RawSmtp(server.smtp)
    try:
        client.transaction()
        assert client.command("DATA").startswith("354")
        client.send(b"Subject: slow\r\n\r\n")
        started = time.monotonic()
        while time.monotonic() - started < 3.5:  # three and a half command timeouts of steady data
            client.send(b"x" * 500 + b"\r\n")
            time.sleep(0.2)
        client.send(b".\r\n")
        reply = client.reply()
    finally:
        client.close()
    assert reply.startswith("250 2.0.0 OK queued as"), reply


def test_the_null_sender_is_accepted_and_delivered(shared_server: ServerProcess) -> None:
    server = shared_server
    client = RawSmtp(server.smtp)
    try:
        client.command("EHLO x")
        assert client.command("MAIL FROM:<>") == replies.R250_SENDER_OK
        assert client.command("RCPT TO:<b@example.com>") == replies.R250_RECIPIENT_OK
        client.command("DATA")
        client.send(MESSAGE + b".\r\n")
        reply = client.reply()
    finally:
        client.close()
    assert wait_captured(server, queued_id(reply)) == [MESSAGE]


@pytest.mark.parametrize(("command", "reply"), [
    (b"EHLO caf\xc3\xa9.example", replies.R501_BAD_CHARACTERS),
    (b"MAIL FROM:<caf\xe9@example.org>", replies.R501_BAD_CHARACTERS),
    (b"MAIL FROM:<caf\xc3\xa9@example.org>", replies.R501_BAD_SENDER),
    (b"RCPT TO:<caf\xc3\xa9@example.com>", replies.R501_BAD_ADDRESS),
])
def test_eight_bit_commands_are_refused_at_the_command(shared_server: ServerProcess, command: bytes,
                                                       reply: str) -> None:
    server = shared_server
    client = RawSmtp(server.smtp)
    try:
        client.command("EHLO x")
        if command.startswith(b"RCPT"):
            client.command("MAIL FROM:<a@example.org>")
        assert client.command(command) == reply
    finally:
        client.close()


def test_utf8_addresses_under_smtputf8_are_queued(shared_server: ServerProcess) -> None:
    server = shared_server
    client = RawSmtp(server.smtp)
    try:
        client.command("EHLO x")
        assert client.command("MAIL FROM:<jörg@bücher.example> SMTPUTF8".encode()).startswith("250")
        assert client.command("RCPT TO:<zoë@example.com>".encode()).startswith("250")
        client.command("DATA")
        client.send(MESSAGE + b".\r\n")
        reply = client.reply()
    finally:
        client.close()
    assert wait_captured(server, queued_id(reply)) == [MESSAGE]


@pytest.mark.parametrize("path", ["<.user@x.example>", "<us..er@x.example>", "<user@-x.example>", "user@x.example",
                                  "<jörg@x.example>"])
def test_address_syntax_follows_rfc_5321(shared_server: ServerProcess, path: str) -> None:
    server = shared_server
    client = RawSmtp(server.smtp)
    try:
        client.command("EHLO x")
        client.command("MAIL FROM:<a@example.org>")
        assert client.command(f"RCPT TO:{path}".encode()) == "501 5.1.3 Bad recipient address syntax"
    finally:
        client.close()


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_resets_during_data_log_at_most_one_line_each_and_no_client_bytes(engaged_server: ServerFactory) -> None:
    users = f'[[smtp.users]]\nname = "app"\npassword_hash = "{hash_password("pw", iterations=1000)}"\n'
    server = engaged_server(users)
    before = len(server.log)
    for _ in range(50):
        client = RawSmtp(server.smtp)
        client.command(b"EHLO evil\x1b[31m")
        client.command(_plain("app", "pw"))
        client.transaction()
        client.command("DATA")
        client.send(b"Subject: cut\r\n\r\nhalf\x00a\rmess")
        _reset(client.sock)
    client = RawSmtp(server.smtp)
    client.transaction()
    client.command("DATA")
    client.send(MESSAGE + b".\r\n")
    assert client.reply().startswith("250")
    client.close()
    lines = server.log[before:]
    assert len(lines) <= 50 + 5, "\n".join(lines[:40])
    assert not any("\x00" in line or "\r" in line or "\x1b" in line for line in lines)
    assert not any("Traceback" in line or "never retrieved" in line or "Deprecat" in line for line in lines)


def test_an_authenticated_idle_session_is_never_closed_to_make_room(engaged_server: ServerFactory) -> None:
    user = f'[[smtp.users]]\nname = "app"\npassword_hash = "{hash_password("pw", iterations=1000)}"\n'
    server = engaged_server("[smtp]\nrelay_networks = []\nmax_idle_per_ip = 2\n" + user)  # loopback untrusted here
    app = RawSmtp(server.smtp)
    idle: list[RawSmtp] = []
    try:
        app.command("EHLO app")
        assert app.command(_plain("app", "pw")) == replies.R235_AUTH_OK  # then it idles, as a pooled connection
        for n in range(4):  # anonymous sessions that idle after EHLO, one more than the cap each time
            client = RawSmtp(server.smtp)
            client.command(f"EHLO idle{n}")
            idle.append(client)
        # the idle cap of the address closed its oldest anonymous sessions, never the authenticated one
        closed = [client for client in idle if not _answers_noop(client)]
        assert closed, "the idle cap closed nothing"
        assert app.command("NOOP") == "250 2.0.0 OK"
    finally:
        for client in [app, *idle]:
            client.close()


def _answers_noop(client: RawSmtp) -> bool:
    try:
        return client.command("NOOP").startswith("250")
    except (OSError, ConnectionError, AssertionError, ValueError):
        return False
