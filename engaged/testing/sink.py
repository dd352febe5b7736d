"""SinkServer: a real SMTP receiver (aiosmtpd) for tests, recording every message it accepts."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import msgspec
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class Received(msgspec.Struct, frozen=True):
    """One message as the sink received it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    mail_options: list[str]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Responder = Callable[[Envelope], str | None]


class _Handler:
    def __init__(self, sink: SinkServer) -> None:
        self._sink = sink

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        reply = self._sink.rcpt_reply(address) if self._sink.rcpt_reply else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._sink.data_delay:
            await asyncio.sleep(self._sink.data_delay)
        reply = self._sink.data_reply(envelope) if self._sink.data_reply else None
        if reply:
            return reply
        with self._sink.lock:
            self._sink.messages.append(Received(
                mail_from=str(envelope.mail_from), rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""), tls=session.ssl is not None,
                mail_options=list(envelope.mail_options),
            ))
        return "250 2.0.0 OK sink"


class SinkServer:
    """aiosmtpd on 127.0.0.1:<free port> in its own thread.

    `rcpt_reply(address)` / `data_reply(envelope)` may return a reply to refuse with (None: accept);
    `data_delay` holds the DATA reply back; `tls_context` offers STARTTLS.
    """

    def __init__(self, *, tls_context: Any = None, smtputf8: bool = True) -> None:
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.rcpt_reply: Callable[[str], str | None] | None = None
        self.data_reply: Responder | None = None
        self.data_delay = 0.0
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=free_port(), tls_context=tls_context,
                                      enable_SMTPUTF8=smtputf8, ready_timeout=10)

    def start(self) -> SinkServer:
        self._controller.start()
        return self

    @property
    def port(self) -> int:
        port: int = self._controller.port
        return port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._controller.stop()

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.messages)
