"""PROXY protocol v1/v2 headers: parsing, and the proxied address as the client address over a real socket."""

from __future__ import annotations

import ipaddress
import re
import socket
import struct

from engaged.smtp import replies
from engaged.smtp.proxy import Proxied, ProxyError, parse_proxy
from engaged.testing.server import ServerProcess
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp


def _v2(source: str, *, command: int = 1) -> bytes:
    address = ipaddress.ip_address(source)
    family = 0x11 if address.version == 4 else 0x21
    body = address.packed + address.packed + struct.pack("!HH", 4000, 25)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def test_v1_headers() -> None:
    assert parse_proxy(b"PROXY TCP4 192.0.2.7 10.0.0.1 4000 25\r\nEHLO") == Proxied("192.0.2.7", 39)
    assert parse_proxy(b"PROXY TCP6 2001:db8::1 ::1 4000 25\r\n") == Proxied("2001:db8::1", 36)
    assert parse_proxy(b"PROXY UNKNOWN\r\n") == Proxied("", 15)
    assert parse_proxy(b"PROXY TCP4 192.0.2.7") is None
    assert isinstance(parse_proxy(b"PROXY TCP4 2001:db8::1 ::1 1 2\r\n"), ProxyError)
    assert isinstance(parse_proxy(b"EHLO x\r\n"), ProxyError)
    assert isinstance(parse_proxy(b"PROXY " + b"x" * 200), ProxyError)


def test_v2_headers() -> None:
    header = _v2("198.51.100.9")
    assert parse_proxy(header + b"EHLO x") == Proxied("198.51.100.9", len(header))
    assert parse_proxy(_v2("2001:db8::7")) == Proxied("2001:db8::7", 52)
    assert parse_proxy(_v2("198.51.100.9", command=0)) == Proxied("", 28)  # LOCAL: the proxy's own check
    assert parse_proxy(header[:10]) is None and parse_proxy(header[:20]) is None
    assert isinstance(parse_proxy(b"\r\n\r\nnot a signature!"), ProxyError)


def test_the_proxied_address_decides_relaying(engaged_server: ServerFactory) -> None:
    server = engaged_server('[smtp]\nproxy_protocol = true\nrelay_networks = ["198.51.100.0/24"]\n')
    for header, allowed in ((b"PROXY TCP4 198.51.100.9 127.0.0.1 4000 25\r\n", True),
                            (_v2("198.51.100.200"), True),
                            (b"PROXY TCP4 203.0.113.5 127.0.0.1 4000 25\r\n", False)):
        sock = socket.create_connection(server.smtp, timeout=10)
        sock.sendall(header)
        client = RawSmtp.__new__(RawSmtp)
        client.sock, client.buffer = sock, b""
        try:
            assert client.reply().startswith("220")
            client.command("EHLO x")
            reply = client.command("MAIL FROM:<a@example.org>")
            assert (reply == replies.R250_SENDER_OK) is allowed, reply
        finally:
            client.close()


def test_a_connection_without_a_header_is_closed(engaged_server: ServerFactory) -> None:
    server = engaged_server("[smtp]\nproxy_protocol = true\n")
    sock = socket.create_connection(server.smtp, timeout=10)
    sock.sendall(b"EHLO x\r\n")
    assert sock.recv(1024) == b""
    sock.close()


def _bound(server: ServerProcess, configured: str) -> tuple[str, int]:
    """The address the server logged for one [smtp] listen entry."""
    for line in server.log:
        match = re.match(r"^engaged: smtp listening on (\S+) \(configured (\S+)\)", line)
        if match and match.group(2) == configured:
            host, _, port = match.group(1).rpartition(":")
            return host.strip("[]"), int(port)
    raise AssertionError(f"{configured} not logged")


def _mail_from_after(address: tuple[str, int], header: bytes) -> str:
    sock = socket.create_connection(address, timeout=10)
    sock.sendall(header)
    client = RawSmtp.__new__(RawSmtp)
    client.sock, client.buffer = sock, b""
    try:
        assert client.reply().startswith("220")
        client.command("EHLO x")
        return client.command("MAIL FROM:<a@example.org>")
    finally:
        client.close()


def test_a_listener_opts_in_to_proxy_protocol_and_the_others_refuse_a_header(engaged_server: ServerFactory) -> None:
    server = engaged_server('[smtp]\nlisten = ["127.0.0.1:0", { address = "127.0.0.2:0", proxy_protocol = true }]\n'
                           'relay_networks = ["198.51.100.0/24"]\n')
    plain, proxied = _bound(server, "127.0.0.1:0"), _bound(server, "127.0.0.2:0")
    assert _mail_from_after(proxied, b"PROXY TCP4 198.51.100.9 127.0.0.2 4000 25\r\n") == replies.R250_SENDER_OK
    assert _mail_from_after(proxied, _v2("198.51.100.200")) == replies.R250_SENDER_OK
    assert _mail_from_after(proxied, b"PROXY TCP4 203.0.113.5 127.0.0.2 4000 25\r\n") != replies.R250_SENDER_OK

    sock = socket.create_connection(proxied, timeout=10)  # the opted-in listener needs its header
    sock.sendall(b"EHLO x\r\n")
    assert sock.recv(1024) == b""
    sock.close()

    # the other listener takes the socket's address (127.0.0.1, not a relay network here) and no header
    client = RawSmtp(plain)
    try:
        assert client.command("PROXY TCP4 198.51.100.9 127.0.0.1 4000 25").startswith("500 ")
        client.command("EHLO x")
        assert client.command("MAIL FROM:<a@example.org>") != replies.R250_SENDER_OK
    finally:
        client.close()
    client = RawSmtp(plain)
    try:
        client.send(_v2("198.51.100.9"))
        refusals = [client.reply() for _ in range(3)]
        assert all(reply[:1] == "5" for reply in refusals), refusals
    finally:
        client.close()


def test_a_listener_may_opt_out_of_the_global_proxy_protocol(engaged_server: ServerFactory) -> None:
    server = engaged_server('[smtp]\nproxy_protocol = true\n'
                           'listen = ["127.0.0.1:0", { address = "127.0.0.2:0", proxy_protocol = false }]\n')
    assert _mail_from_after(_bound(server, "127.0.0.1:0"),
                            b"PROXY TCP4 127.0.0.9 127.0.0.1 4000 25\r\n") == replies.R250_SENDER_OK
    client = RawSmtp(_bound(server, "127.0.0.2:0"))
    try:
        client.command("EHLO x")
        assert client.command("MAIL FROM:<a@example.org>") == replies.R250_SENDER_OK
    finally:
        client.close()
