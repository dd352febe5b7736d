"""SMTP transport (aiosmtplib) for relay and MX modes: routes, opportunistic STARTTLS, connection reuse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import defaultdict
from typing import Protocol

import aiosmtplib

from engaged.config import DeliveryConfig
from engaged.delivery.mx import NoRoute, Route
from engaged.delivery.outcome import Bounced, Deferred, Delivered, OutboundMessage, Outcome

log = logging.getLogger("engaged.delivery")

_IDLE_SECONDS = 30.0


class Router(Protocol):
    """Finds the next hop for a recipient domain."""

    async def route(self, domain: str) -> Route | NoRoute: ...


class _Connection:
    """One open client connection and what it negotiated."""

    def __init__(self, client: aiosmtplib.SMTP, tls: str, ip: str) -> None:
        self.client = client
        self.tls = tls
        self.ip = ip
        self.local = _own_ip(client)
        self.last_used = time.monotonic()


class SmtpTransport:
    """Delivers each copy over SMTP to the first host of its route that answers.

    Connections are reused for later copies to the same host:port (up to
    max_connections_per_destination open at once, max_connections in all). 4xx replies and
    connection failures are Deferred, 5xx replies Bounced; the caller retries.
    """

    def __init__(self, config: DeliveryConfig, router: Router, *, helo: str) -> None:
        self._config = config
        self._router = router
        self._helo = helo or socket.getfqdn()
        self._source = (config.source_address, 0) if config.source_address else None
        self._idle: dict[tuple[str, int], list[_Connection]] = defaultdict(list)
        self._per_destination: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._total = asyncio.Semaphore(config.max_connections)
        self._opportunistic = ssl.create_default_context()
        self._opportunistic.check_hostname = False
        self._opportunistic.verify_mode = ssl.CERT_NONE
        self._verifying = ssl.create_default_context()

    async def deliver(self, message: OutboundMessage) -> Outcome:
        domain = message.rcpt_to.rpartition("@")[2]
        route = await self._router.route(domain)
        if isinstance(route, NoRoute):
            code = "554" if route.permanent else "451"
            return Bounced(error_code=code, reason=route.reason) if route.permanent \
                else Deferred(error_code=code, reason=route.reason)
        last: Outcome = Deferred(error_code="451", reason="4.4.1 no host answered")
        for host in route.hosts:
            outcome = await self._deliver_to(host, route.port, message)
            if isinstance(outcome, Deferred) and outcome.error_code in ("", "421"):
                last = outcome
                continue  # connection-level failure: try the next MX
            return outcome
        return last

    async def _deliver_to(self, host: str, port: int, message: OutboundMessage) -> Outcome:
        key = (host, port)
        limit = self._per_destination.setdefault(key, asyncio.Semaphore(self._config.max_connections_per_destination))
        async with limit, self._total:
            connection = self._take_idle(key)
            if connection is None:
                opened = await self._connect(host, port)
                if not isinstance(opened, _Connection):
                    return opened
                connection = opened
            outcome, reusable = await self._send(connection, message)
            if reusable:
                connection.last_used = time.monotonic()
                self._idle[key].append(connection)
            else:
                connection.client.close()
            return outcome

    def _take_idle(self, key: tuple[str, int]) -> _Connection | None:
        pool = self._idle[key]
        now = time.monotonic()
        while pool:
            connection = pool.pop()
            if connection.client.is_connected and now - connection.last_used < _IDLE_SECONDS:
                return connection
            connection.client.close()
        return None

    async def _connect(self, host: str, port: int) -> _Connection | Outcome:
        config = self._config
        client = aiosmtplib.SMTP(hostname=host, port=port, local_hostname=self._helo, start_tls=False,
                                 timeout=config.command_timeout, source_address=self._source)
        try:
            await client.connect(timeout=config.connect_timeout)
            await client.ehlo()
        except aiosmtplib.SMTPResponseException as error:
            client.close()
            return _failure(str(error.code), error.message, host)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            client.close()
            return Deferred(error_code="", reason=f"4.4.1 connection to {host}:{port} failed: {_describe(error)}")
        ip = _peer_ip(client)
        tls = "0"
        if config.tls != "none" and client.supports_extension("starttls"):
            context = self._verifying if config.tls == "verify" else self._opportunistic
            try:
                await client.starttls(tls_context=context, server_hostname=host)
                tls = "1"
            except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as error:
                client.close()
                if config.tls in ("required", "verify"):
                    return Deferred(error_code="", reason=f"4.7.5 TLS with {host} failed: {_describe(error)}")
                log.info("STARTTLS with %s failed (%s); retrying without TLS", host, error)
                retry = await self._connect_plain(host, port)
                if isinstance(retry, _Connection):
                    retry.tls = "-1"
                return retry
        elif config.tls in ("required", "verify"):
            client.close()
            return Deferred(error_code="", reason=f"4.7.4 {host} does not offer STARTTLS and TLS is required")
        if config.relay_username:
            try:
                await client.login(config.relay_username, config.relay_password)
            except aiosmtplib.SMTPResponseException as error:
                client.close()
                return _failure(str(error.code), error.message, host)
            except (aiosmtplib.SMTPException, OSError) as error:
                client.close()
                return Deferred(error_code="", reason=f"4.7.0 AUTH with {host} failed: {_describe(error)}")
        return _Connection(client, tls, ip)

    async def _connect_plain(self, host: str, port: int) -> _Connection | Outcome:
        client = aiosmtplib.SMTP(hostname=host, port=port, local_hostname=self._helo, start_tls=False,
                                 timeout=self._config.command_timeout, source_address=self._source)
        try:
            await client.connect(timeout=self._config.connect_timeout)
            await client.ehlo()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            client.close()
            return Deferred(error_code="", reason=f"4.4.1 connection to {host}:{port} failed: {_describe(error)}")
        return _Connection(client, "-1", _peer_ip(client))

    async def _send(self, connection: _Connection, message: OutboundMessage) -> tuple[Outcome, bool]:
        client = connection.client
        data = message.data if message.data.endswith(b"\r\n") else message.data + b"\r\n"
        options: list[str] = []
        if not data.isascii():
            if not client.supports_extension("8bitmime"):
                return Bounced(error_code="554", reason="5.6.3 the next hop does not accept 8-bit data (no 8BITMIME)",
                               ip_address=connection.ip, sending_ip=connection.local), True
            options.append("BODY=8BITMIME")
        needs_utf8 = not (message.mail_from.isascii() and message.rcpt_to.isascii())
        if needs_utf8:
            if not client.supports_extension("smtputf8"):
                return Bounced(error_code="553", reason="5.6.7 the next hop does not accept non-ASCII addresses"
                               " (no SMTPUTF8)", ip_address=connection.ip, sending_ip=connection.local), True
            options.append("SMTPUTF8")
        encoding = "utf-8" if needs_utf8 else "ascii"
        rcpt_options = _dsn_options(client, message, options)
        try:
            await client.mail(message.mail_from, options=options, encoding=encoding)
            await client.rcpt(message.rcpt_to, options=rcpt_options, encoding=encoding)
            response = await client.data(data)
        except aiosmtplib.SMTPResponseException as error:
            reusable = error.code != 421
            if reusable:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    await client.rset()
            return (_failure(str(error.code), error.message, connection.ip, connection.local),
                    reusable and client.is_connected)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            return Deferred(error_code="", reason=f"4.4.2 connection lost: {_describe(error)}",
                            ip_address=connection.ip, sending_ip=connection.local), False
        return Delivered(ip_address=connection.ip, sending_ip=connection.local, outbound_tls=connection.tls,
                         delv_method="esmtp",
                         response=f"{response.code} {response.message}"), True

    async def close(self) -> None:
        for pool in self._idle.values():
            for connection in pool:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                    await asyncio.wait_for(connection.client.quit(), 2)
                connection.client.close()
        self._idle.clear()


def _dsn_options(client: aiosmtplib.SMTP, message: OutboundMessage, mail_options: list[str]) -> list[str]:
    """RFC 3461 parameters the client gave, passed on when the next hop offers DSN (else dropped:
    the next hop then applies its defaults, as RFC 3461 4 expects of a relay without DSN)."""
    if not client.supports_extension("dsn"):
        return []
    mail_options += [f"RET={message.dsn_ret}"] if message.dsn_ret else []
    mail_options += [f"ENVID={message.dsn_envid}"] if message.dsn_envid else []
    rcpt = [f"NOTIFY={message.dsn_notify}"] if message.dsn_notify else []
    return rcpt + ([f"ORCPT={message.dsn_orcpt}"] if message.dsn_orcpt else [])


def _failure(code: str, text: str, ip: str, local: str = "") -> Outcome:
    reason = " ".join(text.split())
    if code.startswith("5"):
        return Bounced(error_code=code, reason=reason, ip_address=ip, sending_ip=local)
    return Deferred(error_code=code, reason=reason, ip_address=ip, sending_ip=local)


def _peer_ip(client: aiosmtplib.SMTP) -> str:
    peer = client.get_transport_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def _own_ip(client: aiosmtplib.SMTP) -> str:
    own = client.get_transport_info("sockname")
    return str(own[0]) if isinstance(own, tuple) and own else ""


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())[:200]
