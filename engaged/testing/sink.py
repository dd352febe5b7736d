"""SinkServer: a real SMTP receiver (engaged's own SMTP engine) for tests, recording every message it accepts."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable

import msgspec

from engaged.smtp import replies
from engaged.smtp.gate import ConnectionGate
from engaged.smtp.handler import Session
from engaged.smtp.listener import Listener, SmtpConnection
from engaged.smtp.protocol import Settings
from engaged.smtp.steps import Authenticate, Envelope, Hello, MailFrom, Message, RcptTo


class Received(msgspec.Struct, frozen=True):
    """One message as the sink received it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    mail_options: list[str]
    notify: list[str] = msgspec.field(default_factory=list)
    orcpt: list[str] = msgspec.field(default_factory=list)
    peer: str = ""  # the client's address


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Responder = Callable[[Envelope], str | None]


def _mail_options(envelope: Envelope) -> list[str]:
    options = [f"BODY={envelope.body}"] if envelope.body != "7BIT" else []
    options += ["SMTPUTF8"] if envelope.smtputf8 else []
    options += [f"RET={envelope.ret}"] if envelope.ret else []
    return options + ([f"ENVID={envelope.envid}"] if envelope.envid else [])


class _Handler:
    def __init__(self, sink: SinkServer) -> None:
        self._sink = sink

    def is_relay_network(self, ip: str) -> bool:
        return True

    def connect(self, session: Session) -> str | None:
        return None

    def hello(self, session: Session, step: Hello) -> str | None:
        return None

    def mail(self, session: Session, step: MailFrom) -> str:
        return "250 2.1.0 OK"

    def rcpt(self, session: Session, step: RcptTo) -> str:
        reply = self._sink.rcpt_reply(step.address) if self._sink.rcpt_reply else None
        return reply or "250 2.1.5 OK"

    def reset(self, session: Session) -> None:
        return None

    async def authenticate(self, session: Session, step: Authenticate) -> str:
        return replies.R535_AUTH_FAILED

    async def message(self, session: Session, step: Message) -> str:
        sink, envelope = self._sink, step.envelope
        if sink.data_delay:
            await asyncio.sleep(sink.data_delay)
        reply = sink.data_reply(envelope) if sink.data_reply else None
        if reply:
            return reply
        with sink.lock:
            sink.messages.append(Received(
                mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos), data=step.content, tls=session.tls,
                mail_options=_mail_options(envelope), notify=list(envelope.notify), orcpt=list(envelope.orcpt),
                peer=session.ip,
            ))
        return "250 2.0.0 OK sink"


class SinkServer:
    """An SMTP receiver on 127.0.0.1:<free port>, its event loop in its own thread.

    `rcpt_reply(address)` / `data_reply(envelope)` may return a reply to refuse with (None: accept);
    `data_delay` holds the DATA reply back; `tls_context` offers STARTTLS; `smtputf8` and `dsn`
    choose whether those extensions are offered.
    """

    def __init__(self, *, tls_context: ssl.SSLContext | None = None, smtputf8: bool = True, dsn: bool = True) -> None:
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.rcpt_reply: Callable[[str], str | None] | None = None
        self.data_reply: Responder | None = None
        self.data_delay = 0.0
        self._tls = tls_context
        self._settings = Settings(hostname="127.0.0.1", max_message_size=64 << 20,
                                  tls_available=tls_context is not None, auth_requires_tls=False,
                                  smtputf8=smtputf8, dsn=dsn)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def start(self) -> SinkServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="sink-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the sink server did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        listener = Listener(_Handler(self), ConnectionGate(1000, 1000), settings=self._settings, tls=self._tls,
                            command_timeout=300.0, first_command_timeout=300.0, data_timeout=300.0)
        server = loop.run_until_complete(loop.create_server(lambda: SmtpConnection(listener), sock=self._sock))
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()
            self._stopped.set()

    @property
    def port(self) -> int:
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.messages)
