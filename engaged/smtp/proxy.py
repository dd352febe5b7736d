"""PROXY protocol v1 and v2 headers (HAProxy), sans-I/O: the real client address ahead of the SMTP stream."""

from __future__ import annotations

import ipaddress

import msgspec

_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_MAX = 107  # the longest v1 line, CRLF included


class Proxied(msgspec.Struct, frozen=True):
    """A complete header: the client's address ("" for LOCAL/UNKNOWN: keep the socket's) and its length."""

    client_ip: str
    length: int


class ProxyError(msgspec.Struct, frozen=True):
    """Not a PROXY header: the connection is closed."""

    reason: str


def parse_proxy(data: bytes) -> Proxied | ProxyError | None:
    """Parse the header at the start of `data`; None while more bytes are needed."""
    if data[:1] == b"\r":
        if len(data) < 16:
            return None if _V2_SIGNATURE.startswith(data[:12]) else ProxyError("bad v2 signature")
        return _v2(data)
    if not b"PROXY ".startswith(data[:6]):
        return ProxyError("no PROXY header")
    end = data.find(b"\r\n")
    if end < 0:
        return None if len(data) < _V1_MAX else ProxyError("v1 header too long")
    return _v1(data[:end], end + 2)


def _v1(line: bytes, length: int) -> Proxied | ProxyError:
    parts = line.decode("ascii", "replace").split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return Proxied("", length)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        return ProxyError("bad v1 header")
    try:
        address = ipaddress.ip_address(parts[2])
    except ValueError:
        return ProxyError("bad v1 source address")
    if (address.version == 4) != (parts[1] == "TCP4") or not all(p.isdigit() for p in parts[4:]):
        return ProxyError("bad v1 header")
    return Proxied(str(address), length)


def _v2(data: bytes) -> Proxied | ProxyError | None:
    if len(data) < 16:
        return None
    if not data.startswith(_V2_SIGNATURE):
        return ProxyError("bad v2 signature")
    version, command, family = data[12] >> 4, data[12] & 0x0F, data[13]
    size = int.from_bytes(data[14:16], "big")
    if version != 2 or command > 1:
        return ProxyError("bad v2 version or command")
    if len(data) < 16 + size:
        return None
    body, length = data[16 : 16 + size], 16 + size
    if command == 0:  # LOCAL: a health check from the proxy itself
        return Proxied("", length)
    if family >> 4 == 1 and size >= 12:
        return Proxied(str(ipaddress.IPv4Address(body[:4])), length)
    if family >> 4 == 2 and size >= 36:
        return Proxied(str(ipaddress.IPv6Address(body[:16])), length)
    return Proxied("", length)  # UNSPEC or UNIX: keep the socket's address
