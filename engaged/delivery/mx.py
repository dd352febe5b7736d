"""Where a recipient's mail goes: the relay host, or the recipient domain's MX hosts (dnspython)."""

from __future__ import annotations

import ipaddress

import dns.asyncresolver
import dns.exception
import dns.resolver
import msgspec

from engaged.config import DeliveryConfig, parse_hostport


class Route(msgspec.Struct, frozen=True):
    """Hosts to try in order, all on `port`."""

    hosts: tuple[str, ...]
    port: int


class NoRoute(msgspec.Struct, frozen=True):
    """No way to deliver: permanent (null MX, no such domain) or temporary (DNS failure)."""

    permanent: bool
    reason: str


class RelayRouter:
    """Every recipient goes to the one configured relay."""

    def __init__(self, relay: str) -> None:
        host, port = parse_hostport(relay)
        self._route = Route((host,), port)

    async def route(self, domain: str) -> Route | NoRoute:
        return self._route


class MxRouter:
    """MX lookup per recipient domain: preference order, A/AAAA fallback, null MX (RFC 7505) bounces."""

    def __init__(self, config: DeliveryConfig) -> None:
        self._port = config.mx_port
        self._resolver = dns.asyncresolver.Resolver(configure=not config.dns_servers)
        if config.dns_servers:
            self._resolver.nameservers = [_server_address(s) for s in config.dns_servers]
            ports = {_server_port(s) for s in config.dns_servers}
            self._resolver.port = ports.pop() if len(ports) == 1 else 53
        self._resolver.lifetime = config.connect_timeout
        self._resolver.timeout = min(5.0, config.connect_timeout)

    async def route(self, domain: str) -> Route | NoRoute:
        literal = _address_literal(domain)
        if literal is not None:
            return Route((literal,), self._port)
        try:
            answer = await self._resolver.resolve(domain, "MX")
        except dns.resolver.NXDOMAIN:
            return NoRoute(True, f"5.1.2 domain {domain} does not exist (NXDOMAIN)")
        except dns.resolver.NoAnswer:
            return await self._address_route(domain)
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.exception.DNSException) as error:
            return NoRoute(False, f"4.4.3 DNS lookup of {domain} MX failed: {type(error).__name__}")
        records = sorted(answer, key=lambda r: (r.preference, str(r.exchange)))
        if len(records) == 1 and str(records[0].exchange) == ".":
            return NoRoute(True, f"5.1.10 domain {domain} does not accept mail (null MX)")
        addresses: list[str] = []
        failed = False
        for record in records:
            exchange = str(record.exchange).rstrip(".")
            if not exchange:
                continue
            found = await self._addresses(exchange)
            failed = failed or found is None
            addresses.extend(a for a in found or [] if a not in addresses)
        if not addresses:
            if failed:
                return NoRoute(False, f"4.4.3 DNS lookup of the MX hosts of {domain} failed")
            return NoRoute(True, f"5.1.2 no MX host of {domain} has an address")
        return Route(tuple(addresses), self._port)

    async def _address_route(self, domain: str) -> Route | NoRoute:
        found = await self._addresses(domain)
        if found is None:
            return NoRoute(False, f"4.4.3 DNS lookup of {domain} failed")
        if not found:
            return NoRoute(True, f"5.1.2 domain {domain} has no MX, A or AAAA record")
        return Route(tuple(found), self._port)

    async def _addresses(self, host: str) -> list[str] | None:
        """IPv4 then IPv6 addresses of a host; None when the lookup failed temporarily."""
        addresses: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(host, rdtype)
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            except dns.exception.DNSException:
                return None
            addresses.extend(str(record.address) for record in answer)
        return addresses


def _address_literal(domain: str) -> str | None:
    if domain.startswith("[") and domain.endswith("]"):
        inner = domain[1:-1]
        inner = inner[5:] if inner.lower().startswith("ipv6:") else inner
        try:
            return str(ipaddress.ip_address(inner))
        except ValueError:
            return None
    return None


def _server_address(server: str) -> str:
    if server.startswith("["):
        return server[1:].split("]", 1)[0]
    return server.rsplit(":", 1)[0] if server.count(":") == 1 else server


def _server_port(server: str) -> int:
    if server.startswith("[") and "]:" in server:
        return int(server.rsplit(":", 1)[1])
    if server.count(":") == 1:
        return int(server.rsplit(":", 1)[1])
    return 53
