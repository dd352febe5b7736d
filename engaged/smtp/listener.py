"""SMTP listeners: the asyncio.Protocol adapter that feeds the protocol core; sockets, TLS, timeouts, caps."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable
from typing import Protocol

import msgspec

from engaged.config import Config, format_hostport
from engaged.inject import Injector
from engaged.policy.engine import PolicyEngine
from engaged.server.sockets import bind_every
from engaged.smtp import replies
from engaged.smtp.auth import UserAuthenticator
from engaged.smtp.gate import ConnectionGate
from engaged.smtp.handler import InjectionHandler, Network, Reply, Session
from engaged.smtp.protocol import Mode, ServerProtocol, Settings
from engaged.smtp.proxy import Proxied, parse_proxy
from engaged.smtp.steps import Authenticate, Hello, MailFrom, Message, RcptTo, Reset, Step

log = logging.getLogger("engaged.smtp")

_MAX_BACKLOG = 1 << 20  # pipelined input held while a step is decided, before reading pauses


class Handler(Protocol):
    """The decisions an SMTP listener asks for (InjectionHandler; the test sink has its own)."""

    def is_relay_network(self, ip: str) -> bool: ...
    def connect(self, session: Session) -> str | None: ...
    def hello(self, session: Session, step: Hello) -> str | None: ...
    def mail(self, session: Session, step: MailFrom) -> Reply: ...
    def rcpt(self, session: Session, step: RcptTo) -> Reply: ...
    def reset(self, session: Session) -> None: ...
    def authenticate(self, session: Session, step: Authenticate) -> Awaitable[str]: ...
    def message(self, session: Session, step: Message) -> Awaitable[str]: ...


class Listener:
    """What every connection of one listen address shares."""

    def __init__(self, handler: Handler, gate: ConnectionGate, *, settings: Settings, tls: ssl.SSLContext | None,
                 command_timeout: float, first_command_timeout: float, data_timeout: float,
                 proxy_protocol: bool = False, policy: PolicyEngine | None = None, name: str = "") -> None:
        self.handler = handler
        self.gate = gate
        self.tls = tls
        self.settings = {True: settings, False: msgspec_replace(settings, auth_requires_tls=False)}
        self.command_timeout = command_timeout
        self.first_command_timeout = min(first_command_timeout, command_timeout)
        self.data_timeout = data_timeout
        self.proxy_protocol = proxy_protocol
        self.policy = policy if policy is not None and policy.active else None
        self.name = name


def msgspec_replace(settings: Settings, **changes: bool) -> Settings:
    return msgspec.structs.replace(settings, **changes)


class SmtpConnection(asyncio.Protocol):
    """One client connection: bytes go to the core, its steps to the handler, its replies to the socket."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._core: ServerProtocol | None = None
        self._session: Session | None = None
        self._socket_ip = ""
        self._admitted = False
        self._proxy_buffer: bytearray | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._mark = 0.0
        self._seen = 0
        self._idle = False
        self._paused = False
        self._problem = ""
        self._admitted_ip = ""
        self._early = b""

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio's classes
        peer = transport.get_extra_info("peername")
        self._socket_ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self._mark = self._loop.time()
        if self._listener.proxy_protocol:
            self._proxy_buffer = bytearray()
            self._arm(self._listener.first_command_timeout)
            return
        self._begin(self._socket_ip)

    def data_received(self, data: bytes) -> None:
        core = self._core
        if core is None:
            self._proxy_header(data)
            return
        if core.mode is Mode.TLS:
            # Reading was paused before the handshake, so these bytes came through TLS: decrypted
            # input that raced ahead of start_tls() returning. They are fed once the core knows.
            self._early += data
            return
        core.receive(data)
        if core.mode is Mode.DATA or core.mode is Mode.BDAT:
            self._mark = self._loop.time()
        self._pump()
        if core.waiting and core.buffered > _MAX_BACKLOG and self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, error: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        core, session = self._core, self._session
        if session is not None:
            self._listener.gate.set_idle(session.ip, self, False, trusted=session.trusted)
        if self._admitted:
            self._listener.gate.release(self._admitted_ip)
            self._admitted = False
        if core is not None and not core.closing and core.mode is Mode.DATA and not self._problem:
            self._problem = "disconnected during DATA; nothing queued"
        if self._problem:
            log.info("SMTP session from %s ended: %s", session.ip if session else self._socket_ip, self._problem)
        self._transport = None
        self._core = None

    # -- the gate's side ---------------------------------------------------------------------
    def evict(self) -> None:
        """Close an idle session to make room for another client."""
        if self._core is not None and self._transport is not None:
            self._core.reply(replies.R421_IDLE)
            self._core.close()
            self._problem = "closed to make room (idle)"
            self._flush()

    # -- internals -----------------------------------------------------------------------------
    def _begin(self, ip: str) -> None:
        listener = self._listener
        trusted = listener.handler.is_relay_network(ip)
        transport = self._transport
        if transport is None:
            return
        if not listener.gate.admit(ip, trusted=trusted):
            if listener.gate.refused % 100 == 1:
                log.warning("refusing connections from %s and others: too many connections (%d refused so far)",
                            ip, listener.gate.refused)
            transport.write((replies.R421_TOO_MANY_CONNECTIONS + "\r\n").encode())
            transport.close()
            return
        self._admitted, self._admitted_ip = True, ip
        listener.gate.make_room(ip)
        policy = listener.policy.session(peer_ip=ip, listener=listener.name, tls=False, can_relay=trusted) \
            if listener.policy is not None else None
        session = self._session = Session(ip, trusted=trusted, policy=policy)
        core = self._core = ServerProtocol(listener.settings[auth_requires_tls(ip)])
        core.greet(listener.handler.connect(session) if policy is not None else None)
        self._pump()

    def _proxy_header(self, data: bytes) -> None:
        if self._proxy_buffer is None:
            return
        self._proxy_buffer += data
        result = parse_proxy(bytes(self._proxy_buffer))
        if result is None:
            return
        if not isinstance(result, Proxied):
            self._problem = f"bad PROXY header ({result.reason})"
            if self._transport is not None:
                self._transport.close()
            return
        rest = bytes(self._proxy_buffer[result.length :])
        self._proxy_buffer = None
        self._begin(result.client_ip or self._socket_ip)
        if rest and self._core is not None:
            self.data_received(rest)

    def _pump(self) -> None:
        core, session = self._core, self._session
        if core is None or session is None:
            return
        while True:
            step = core.next_step()
            if step is None or not self._decide(core, session, step):
                break
        self._flush()

    def _decide(self, core: ServerProtocol, session: Session, step: Step) -> bool:
        """Hand one step to the handler; False when the answer comes later (the pump stops)."""
        handler = self._listener.handler
        reply: Reply | str | None
        if isinstance(step, MailFrom):
            reply = handler.mail(session, step)
        elif isinstance(step, RcptTo):
            reply = handler.rcpt(session, step)
        elif isinstance(step, Message):
            reply = handler.message(session, step)
        elif isinstance(step, Hello):
            reply = handler.hello(session, step)
        elif isinstance(step, Reset):
            handler.reset(session)
            return True
        elif isinstance(step, Authenticate):
            reply = handler.authenticate(session, step)
        else:
            self._start_tls(core)
            return False
        if reply is None or isinstance(reply, str):
            core.answer(reply)
            return True
        self._task = self._loop.create_task(self._resolve(reply))
        return False

    async def _resolve(self, pending: Awaitable[str]) -> None:
        try:
            reply = await pending
        except Exception:
            log.exception("SMTP step failed for %s", self._session.ip if self._session else "?")
            reply = replies.R451_INTERNAL
        core = self._core
        if core is None:
            return
        core.answer(reply)
        self._mark = self._loop.time()
        self._pump()
        if self._paused and self._transport is not None and not (core.waiting and core.buffered > _MAX_BACKLOG):
            self._paused = False
            self._transport.resume_reading()

    def _start_tls(self, core: ServerProtocol) -> None:
        transport = self._transport
        if transport is None or self._listener.tls is None:
            core.close()
            return
        transport.pause_reading()  # the ClientHello must reach the TLS layer, not the core
        self._flush()
        self._task = self._loop.create_task(self._handshake(transport, self._listener.tls))

    async def _handshake(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        try:
            secure = await self._loop.start_tls(transport, self, context, server_side=True,
                                                ssl_handshake_timeout=self._listener.command_timeout)
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError, RuntimeError) as error:
            self._problem = f"TLS handshake failed: {type(error).__name__}"
            transport.close()
            return
        core, session = self._core, self._session
        if secure is None or core is None or session is None:
            transport.close()
            return
        self._transport = secure
        session.tls = True
        core.tls_started()
        self._mark = self._loop.time()
        early, self._early = self._early, b""
        if early:
            self.data_received(early)
        else:
            self._pump()

    def _flush(self) -> None:
        core, transport = self._core, self._transport
        if core is None or transport is None:
            return
        out = core.data_to_send()
        if out:
            transport.write(out)
        if core.closing:
            transport.close()
            return
        if core.commands_seen != self._seen:
            self._seen = core.commands_seen
            self._mark = self._loop.time()
        session = self._session
        if session is not None:
            # relay_networks clients (pooled connections of local apps) and authenticated ones are never evicted
            idle = core.envelope is None and not core.waiting and session.user is None and not session.trusted
            if idle != self._idle:
                self._idle = idle
                self._listener.gate.set_idle(session.ip, self, idle, trusted=session.trusted)
        self._arm(self._timeout_for(core))

    def _timeout_for(self, core: ServerProtocol) -> float | None:
        if core.waiting or core.mode is Mode.TLS:
            return None
        if core.mode is Mode.DATA or core.mode is Mode.BDAT:
            return self._listener.data_timeout
        return self._listener.first_command_timeout if core.commands_seen == 0 else self._listener.command_timeout

    def _arm(self, timeout: float | None) -> None:
        if timeout is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        deadline = self._mark + timeout
        if self._timer is None or self._timer.when() > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._check_timeout)

    def _check_timeout(self) -> None:
        self._timer = None
        core, transport = self._core, self._transport
        if transport is None:
            return
        timeout = self._timeout_for(core) if core is not None else self._listener.first_command_timeout
        if timeout is None:
            return
        if self._loop.time() < self._mark + timeout:
            self._arm(timeout)
            return
        if core is not None and (core.mode is Mode.DATA or core.mode is Mode.BDAT):
            self._problem = "no data within data_timeout"
            core.send_raw(replies.R421_DATA_TIMEOUT)
            core.close()
            self._flush()
            return
        self._problem = "no complete command within the command timeout"
        transport.close()


class Servers:
    """The asyncio servers of a set of SMTP listeners; `addresses` are (configured, bound) pairs.

    A listen address whose host resolves to several addresses ("localhost": 127.0.0.1 and ::1) is
    served on each, on one port: one server per socket, one pair per bound address.
    """

    def __init__(self) -> None:
        self._servers: list[asyncio.AbstractServer] = []
        self.addresses: list[tuple[str, str]] = []

    async def open(self, listener: Listener, listen: str, *, sockets: list[socket.socket] | None = None,
                   reuse_port: bool = False) -> None:
        """Accept connections for `listener` on `listen`, or on `sockets` when they are bound for it already."""
        loop = asyncio.get_running_loop()
        factory = functools.partial(SmtpConnection, listener)
        pending = list(sockets) if sockets is not None else bind_every(listen, reuse_port=reuse_port)
        while pending:
            try:
                server = await loop.create_server(factory, sock=pending[0])
            except BaseException:
                for sock in pending:
                    sock.close()
                raise
            pending.pop(0)
            self._servers.append(server)
            name = server.sockets[0].getsockname()
            self.addresses.append((listen, format_hostport(str(name[0]), int(name[1]))))

    async def close(self) -> None:
        """Stop accepting; return once every server is closed."""
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()


def auth_requires_tls(ip: str) -> bool:
    """AUTH needs TLS, except from loopback where no password crosses a network."""
    try:
        return not ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        return True


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
    """Every [smtp] listen address, bound and serving; `addresses` are the bound host:port pairs.

    `sockets` maps a listen address to a socket bound for it already (the worker processes of
    `engaged serve` pass their SO_REUSEPORT sockets); other addresses are bound here. `gate` counts
    connections against the caps (the workers share one across processes).
    """

    def __init__(self, config: Config, injector: Injector, policy: PolicyEngine | None = None, *,
                 reuse_port: bool = False, sockets: dict[str, list[socket.socket]] | None = None,
                 gate: ConnectionGate | None = None) -> None:
        self._config = config
        # SO_REUSEPORT: several worker processes bind the same addresses. Or a parent binds once and hands
        # each worker the bound sockets, keyed by their [smtp] listen entry (needed for port 0).
        self._reuse_port = reuse_port
        self._sockets = sockets or {}
        self._policy = policy
        self._injector = injector
        self._listening = Servers()
        smtp = config.smtp
        self._tls = tls_context(config)
        self._gate = gate or ConnectionGate(smtp.max_connections, smtp.max_connections_per_ip,
                                            reserved=smtp.reserved_connections, max_idle_per_ip=smtp.max_idle_per_ip)
        self._networks: list[Network] = [ipaddress.ip_network(n, strict=False) for n in smtp.relay_networks]
        self._authenticator = UserAuthenticator(
            smtp.users, max_failures=smtp.auth_max_failures, max_user_failures=smtp.auth_max_failures_per_user,
            window=smtp.auth_lockout_window, concurrency=smtp.auth_hash_threads)

    async def start(self) -> None:
        smtp = self._config.smtp
        settings = Settings(hostname=smtp.hostname or socket.getfqdn(), max_message_size=smtp.max_message_size,
                            max_commands=smtp.max_commands, max_errors=smtp.max_errors,
                            tls_available=self._tls is not None)
        for entry in smtp.listeners():
            listen = entry.address
            handler = InjectionHandler(self._injector, listener=listen, relay_networks=self._networks,
                                       max_recipients=smtp.max_recipients, authenticator=self._authenticator)
            shared = Listener(handler, self._gate, settings=settings, tls=self._tls,
                              command_timeout=smtp.command_timeout, first_command_timeout=smtp.first_command_timeout,
                              data_timeout=smtp.data_timeout, proxy_protocol=bool(entry.proxy_protocol),
                              policy=self._policy, name=listen)
            await self._listening.open(shared, listen, sockets=self._sockets.get(listen),
                                       reuse_port=self._reuse_port)

    @property
    def addresses(self) -> list[tuple[str, str]]:
        """(configured, bound) address pairs, after start."""
        return self._listening.addresses

    async def stop(self) -> None:
        await self._listening.close()
        self._authenticator.close()


__all__ = ["ConnectionGate", "Servers", "SmtpListeners", "auth_requires_tls"]
