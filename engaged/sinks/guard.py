"""SSRF guard for webhook targets: refuse private, loopback and link-local addresses at creation and at connect."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from engaged._compat import set_connection_pool

__all__ = ["Networks", "TargetRefused", "check_target", "guarded_transport", "is_forbidden_address", "parse_networks"]

_RESOLVE_TIMEOUT = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(httpcore.ConnectError):
    """The target resolved to an address webhooks may not reach (raised at connect time)."""


def is_forbidden_address(address: IPAddress) -> bool:
    """True for anything but a public unicast address: loopback, RFC 1918, link-local, CGNAT, ULA, multicast …"""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return is_forbidden_address(embedded)
    return not address.is_global or address.is_multicast or address.is_unspecified


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (a literal IP resolves to itself); raises OSError when none."""
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), _RESOLVE_TIMEOUT)
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise OSError(f"{host} has no address")
    return addresses


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
"""Private networks an operator allows webhook targets in ([api] webhook_private_networks)."""


def parse_networks(values: Iterable[str]) -> Networks:
    """The configured networks (validated by config.load, so every value parses)."""
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def _allowed(address: IPAddress, networks: Networks) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in networks)


def _forbidden(addresses: Iterable[IPAddress], networks: Networks = ()) -> list[str]:
    return [str(address) for address in addresses
            if is_forbidden_address(address) and not _allowed(address, networks)]


async def check_target(url: str, allow_private: bool, *, unresolved_ok: bool = False,
                       networks: Networks = ()) -> str | None:
    """Why a webhook may not use `url` (None when it may): scheme, host, and every address it resolves to.

    Addresses inside `networks` (the operator's allowed private networks) pass. With `unresolved_ok` a
    host that does not resolve now passes (it is checked again at every connection).
    """
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        return f"target is not a valid URL: {error}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "target must be an http:// or https:// URL with a host"
    if allow_private:
        return None
    try:
        addresses = await resolve(parts.hostname, port)
    except (OSError, TimeoutError, UnicodeError) as error:
        return None if unresolved_ok else f"target host {parts.hostname} does not resolve: {error}"
    refused = _forbidden(addresses, networks)
    if refused:
        return (f"target {parts.hostname} resolves to a private, loopback or link-local address "
                f"({', '.join(refused)}); an operator may allow its network in [api] webhook_private_networks "
                "(or set the webhook's allow_private_targets)")
    return None


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves once, refuses forbidden addresses, then connects to the checked address (no DNS rebinding)."""

    def __init__(self, networks: Networks = ()) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._networks = networks

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve(host, port)
        except (OSError, TimeoutError, UnicodeError) as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
        refused = _forbidden(addresses, self._networks)
        if refused:
            raise TargetRefused(f"{host} resolves to a forbidden address ({', '.join(refused)})")
        return await self._inner.connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("webhooks never use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(allow_private: bool, networks: Networks = ()) -> httpx.AsyncHTTPTransport:
    """An httpx transport that ignores proxy variables and, unless `allow_private`, applies the guard per connection
    (addresses in `networks` allowed)."""
    transport = httpx.AsyncHTTPTransport(trust_env=False, retries=0)
    if not allow_private:
        set_connection_pool(transport, httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), network_backend=_GuardedBackend(networks),
            max_connections=10, max_keepalive_connections=5, keepalive_expiry=5.0,
        ))
    return transport
