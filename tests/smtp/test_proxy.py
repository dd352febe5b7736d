"""PROXY protocol v1/v2 headers: parsing, and the proxied address as the client address over a real socket."""

from __future__ import annotations

import ipaddress
import socket
import struct

from engaged.smtp import replies
from engaged.smtp.proxy import Proxied, ProxyError, parse_proxy
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
