"""SMTP listeners: sockets, TLS, connection limits; one aiosmtpd SMTP (with bulk DATA) per connection."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import socket
import ssl
import typing
from collections import Counter
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Session, syntax

from engaged.config import Config, parse_hostport
from engaged.inject import Injector
from engaged.policy.engine import PolicyEngine
from engaged.smtp import replies
from engaged.smtp.auth import UserAuthenticator
from engaged.smtp.data import DataProblem, DataTimeout, read_data
from engaged.smtp.handler import InjectionHandler, Network, PolicedSession, peer_ip, run_policy

log = logging.getLogger("engaged.smtp")

_SIMPLE_PATH = re.compile(r"\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9][A-Za-z0-9.-]*)>(|\s.*)", re.S)
_DATA_REFUSALS = {
    DataProblem.TOO_BIG: replies.R552_TOO_BIG,
    DataProblem.BARE_LINE_ENDING: replies.R550_BARE_LINE_ENDING,
    DataProblem.LINE_TOO_LONG: replies.R500_LINE_TOO_LONG,
}


class ConnectionGate:
    """Counts open connections, in all and per client address, against the configured caps."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self._max_total = max_total
        self._max_per_ip = max_per_ip
        self._per_ip: Counter[str] = Counter()
        self._total = 0

    def admit(self, ip: str) -> bool:
        if self._total >= self._max_total or self._per_ip[ip] >= self._max_per_ip:
            return False
        self._total += 1
        self._per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self._total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]


class InjectionSMTP(SMTP):
    """aiosmtpd's SMTP with our DATA reader, enhanced status codes, per-peer AUTH-over-TLS and limits."""

    def __init__(self, handler: InjectionHandler, *, gate: ConnectionGate, data_timeout: float,
                 policy: PolicyEngine | None = None, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._injection_handler = handler
        self._policy = policy if policy is not None and policy.active else None
        self._gate = gate
        self._gate_ip: str | None = None
        self._data_timeout = data_timeout
        self._in_ehlo = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if self._gate_ip is None and self._original_transport is None:
            if not self._gate.admit(ip):
                log.warning("refusing connection from %s: too many connections", ip)
                # uvloop's transports are not asyncio.WriteTransport subclasses, hence the cast.
                writer = typing.cast(asyncio.WriteTransport, transport)
                writer.write((replies.R421_TOO_MANY_CONNECTIONS + "\r\n").encode())
                transport.close()
                self.transport = None
                return
            self._gate_ip = ip
            self._auth_require_tls = auth_requires_tls(ip)
            super().connection_made(transport)
            self._start_policy(ip)
            return
        super().connection_made(transport)

    def _create_session(self) -> Session:
        return PolicedSession(self.loop)

    def _start_policy(self, ip: str) -> None:
        """A policy session for the connection and its validate_connect; a refusal replaces the greeting."""
        session = self.session
        if self._policy is None or not isinstance(session, PolicedSession):
            return
        handler = self._injection_handler
        session.policy = self._policy.session(peer_ip=ip, listener=handler.listener, tls=False,
                                              can_relay=handler.may_relay(session))
        session.refusal = run_policy(session, "validate_connect")

    def connection_lost(self, error: Exception | None) -> None:
        if self._gate_ip is None:
            return
        self._gate.release(self._gate_ip)
        self._gate_ip = None
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._gate_ip is None:
            return False
        result: bool | None = super().eof_received()
        return result

    async def push(self, status: AnyStr) -> None:
        session = self.session
        if isinstance(status, str) and status.startswith("220 ") and isinstance(session, PolicedSession) \
                and session.refusal is not None and self._original_transport is None:
            await super().push(session.refusal)
            if self.transport is not None:
                self.transport.close()
            return
        if isinstance(status, str) and not self._in_ehlo and session is not None and session.extended_smtp:
            status = with_code(status)
        await super().push(status)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd parses every path with email's header parser and builds a Protocol class per call;
        # plain dot-atom paths, nearly all real traffic, are read directly.
        match = _SIMPLE_PATH.fullmatch(arg)
        if match is not None and ".." not in match.group(1) and not match.group(1).startswith(".") \
                and "(" not in match.group(2):
            local = match.group(1).rpartition("@")[0]
            if not local.endswith("."):
                return match.group(1), match.group(2).lstrip()
        address, rest = super()._getaddr(arg)
        return address, rest

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        self._in_ehlo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_ehlo = False

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope, session, transport = self.envelope, self.session, self.transport
        if envelope is None or session is None or transport is None:
            return
        if not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            result = await read_data(self._reader, max_size=self.data_size_limit or 0, timeout=self._data_timeout)
        except DataTimeout:
            await self.push(replies.R421_DATA_TIMEOUT)
            transport.close()
            return
        except asyncio.IncompleteReadError:
            log.info("%r disconnected during DATA; nothing queued", session.peer)
            transport.close()
            return
        self._reset_timeout()
        if result.problem is not None:
            self.envelope = self._create_envelope()
            await self.push(_DATA_REFUSALS[result.problem])
            return
        envelope.content = result.content
        envelope.original_content = result.content
        status = await self._call_handler_hook("DATA")
        self.envelope = self._create_envelope()
        await self.push(status)


def auth_requires_tls(ip: str) -> bool:
    """AUTH needs TLS, except from loopback where no password crosses a network."""
    try:
        return not ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        return True


def with_code(status: str) -> str:
    """Enhanced status code on every single-line reply but the greeting."""
    if status.startswith("220 "):
        return status
    return replies.with_enhanced_code(status)


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The STARTTLS server context when a certificate is configured (TLS 1.2 or newer)."""
    smtp = config.smtp
    if not (smtp.tls_cert_file and smtp.tls_key_file):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(smtp.tls_cert_file, smtp.tls_key_file)
    return context


class SmtpListeners:
    """Every [smtp] listen address, bound and serving; `addresses` are the bound host:port pairs."""

    def __init__(self, config: Config, injector: Injector, policy: PolicyEngine | None = None, *,
                 reuse_port: bool = False, sockets: dict[str, socket.socket] | None = None) -> None:
        self._config = config
        # SO_REUSEPORT: several worker processes bind the same addresses. Or a parent binds once and hands
        # each worker the bound sockets, keyed by their [smtp] listen entry (needed for port 0).
        self._reuse_port = reuse_port
        self._sockets = sockets or {}
        self._policy = policy
        self._injector = injector
        self._servers: list[asyncio.AbstractServer] = []
        self.addresses: list[tuple[str, str]] = []
        self._tls = tls_context(config)
        self._gate = ConnectionGate(config.smtp.max_connections, config.smtp.max_connections_per_ip)
        self._networks: list[Network] = [
            ipaddress.ip_network(n, strict=False) for n in config.smtp.relay_networks
        ]
        self._authenticator = UserAuthenticator(config.smtp.users)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for listen in self._config.smtp.listen:
            host, port = parse_hostport(listen)
            handler = InjectionHandler(
                self._injector,
                listener=listen,
                relay_networks=self._networks,
                max_recipients=self._config.smtp.max_recipients,
            )
            factory = functools.partial(self._protocol, handler)
            bound_socket = self._sockets.get(listen)
            if bound_socket is not None:
                server = await loop.create_server(factory, sock=bound_socket)
            else:
                server = await loop.create_server(factory, host=host, port=port, reuse_port=self._reuse_port or None)
            self._servers.append(server)
            sock = server.sockets[0].getsockname()
            bound = f"[{sock[0]}]:{sock[1]}" if ":" in str(sock[0]) else f"{sock[0]}:{sock[1]}"
            self.addresses.append((listen, bound))

    def _protocol(self, handler: InjectionHandler) -> InjectionSMTP:
        smtp = self._config.smtp
        return InjectionSMTP(
            handler,
            gate=self._gate,
            data_timeout=smtp.data_timeout,
            policy=self._policy,
            hostname=smtp.hostname or None,
            ident="engaged ESMTP",
            data_size_limit=smtp.max_message_size,
            enable_SMTPUTF8=True,
            tls_context=self._tls,
            timeout=smtp.command_timeout,
            authenticator=self._authenticator,
            auth_require_tls=True,
            command_call_limit=smtp.max_commands,
        )

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()


__all__ = ["SmtpListeners", "peer_ip"]
