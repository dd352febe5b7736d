"""The tracker's HTTP/1.1 server: an asyncio.Protocol on httptools' parser, with the tracker's bounds.

Chosen by measurement over uvicorn (bench/tracker.py --http-options): the tracker serves a few GET
routes with fixed responses, so the ASGI machinery per request (scope dicts, receive/send coroutines,
a task per request) was most of its cost. Keep-alive, HEAD and pipelining are HTTP/1.1's; responses
to pipelined requests leave in request order, each only once its event is durable in the journal.

Bounds: a request (head and any body, which is discarded) must be complete within `header_timeout`
of its first byte (a client that trickles a header a byte at a time is answered 408 and closed,
whatever its rate), an idle
keep-alive connection is closed after `idle_timeout`, the request target is at most MAX_URL_BYTES
(414 beyond it), at most MAX_HEADERS headers and MAX_HEADER_BYTES of them (400), and at most
`max_connections` connections are open at once (past that a new connection is closed at once).
Anything that is not HTTP is answered 400 and closed. A refused connection is closed the way nginx's
lingering close does it: the answer, then a FIN, then whatever the client still sends is read and
dropped until it closes too or LINGER_SECONDS pass. Closing at once would make the kernel answer the
client's next bytes with a reset, and a reset discards the answer the client has not read yet.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections import deque
from dataclasses import dataclass
from typing import Final, cast

import httptools

from engaged.tracker.handler import (
    ANSWER_BAD_REQUEST,
    ANSWER_TIMEOUT,
    ANSWER_TOO_LONG,
    MAX_SEGMENT_CHARS,
    Answer,
    Tracker,
)
from engaged.tracker.journal import Journal

log = logging.getLogger("engaged")

MAX_URL_BYTES: Final = MAX_SEGMENT_CHARS + 1024
MAX_HEADERS: Final = 100
MAX_HEADER_BYTES: Final = 32 * 1024
MAX_PIPELINED: Final = 32  # responses waiting on one connection before it stops reading
HEADER_TIMEOUT: Final = 10.0
IDLE_TIMEOUT: Final = 30.0
MAX_CONNECTIONS: Final = 10_000
LINGER_SECONDS: Final = 1.0  # how long a refused connection is drained after its answer (see above)
SWEEP_SECONDS: Final = 0.25  # how often deadlines are checked (timeouts fire up to this much late)

_CLOSE = b"connection: close\r\n"


class _TooLarge(Exception):
    """Raised inside a parser callback: the request is refused with `answer` and the connection closed."""

    def __init__(self, answer: Answer) -> None:
        super().__init__()
        self.answer = answer


@dataclass
class HttpLimits:
    """The per-connection and total bounds of one listener."""

    header_timeout: float = HEADER_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS


class HttpServerState:
    """What every connection of one listener shares: the tracker, the journal, limits, the Date header."""

    def __init__(self, tracker: Tracker, journal: Journal, limits: HttpLimits) -> None:
        self.tracker = tracker
        self.journal = journal
        self.limits = limits
        self.connections: set[TrackerProtocol] = set()
        self.date = b""
        self.now = 0.0  # the loop's clock at the last tick: deadlines are kept in ticks, not timers per request
        self._ticker: asyncio.TimerHandle | None = None
        self._tick_seconds = min(SWEEP_SECONDS, limits.header_timeout / 4, limits.idle_timeout / 4)

    def start(self) -> None:
        self._tick()

    def _tick(self) -> None:
        """Refresh the Date header and close connections past their deadline (one sweep for all of them)."""
        loop = asyncio.get_running_loop()
        self.now = loop.time()
        self.date = b"date: " + email.utils.formatdate(usegmt=True).encode("ascii") + b"\r\n"
        for connection in [connection for connection in self.connections if connection.deadline <= self.now]:
            connection.expire()
        self._ticker = loop.call_later(self._tick_seconds, self._tick)

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def close_idle(self) -> None:
        """Close connections with nothing in flight (at shutdown); busy ones close after their answers."""
        for connection in list(self.connections):
            connection.close_when_idle()


class TrackerProtocol(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, state: HttpServerState) -> None:
        self._state = state
        self._tracker = state.tracker
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._url = b""
        self._user_agent = b""
        self._accept_language = b""
        self._forwarded = b""
        self._header_count = 0
        self._header_bytes = 0
        self._pending: deque[tuple[asyncio.Future[bool] | None, bytes]] = deque()
        self.deadline = float("inf")
        self._time = asyncio.get_running_loop().time
        self._closing = False
        self._linger = False  # refused: half-close after the answer, then drain (see the module docstring)
        self._lingering = False  # the FIN is sent; waiting for the client's
        self._in_request = False
        self._paused = False

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's stream transports do not subclass it
        self._transport = transport
        state = self._state
        if len(state.connections) >= state.limits.max_connections:
            self._tracker.stats.refused_connections += 1
            transport.abort()
            return
        state.connections.add(self)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else ""
        self._arm(state.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state.connections.discard(self)
        self._closing = True
        self.deadline = float("inf")
        self._pending.clear()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except _TooLarge as refused:
            self._refuse(refused.answer)
        except httptools.HttpParserUpgrade:
            self._refuse(ANSWER_BAD_REQUEST)
        except httptools.HttpParserError as error:
            cause = error.__context__
            self._refuse(cause.answer if isinstance(cause, _TooLarge) else ANSWER_BAD_REQUEST)

    def eof_received(self) -> bool:
        if self._lingering:
            return False  # both sides are done: the transport closes itself
        self.close_when_idle()
        return True  # keep the transport open until queued answers are written

    def pause_writing(self) -> None:
        self._pause()

    def resume_writing(self) -> None:
        self._resume()

    # --- httptools callbacks --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._user_agent = self._accept_language = self._forwarded = b""
        self._header_count = self._header_bytes = 0
        self._in_request = True
        self._arm(self._state.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL_BYTES:
            self._tracker.stats.too_long += 1
            raise _TooLarge(ANSWER_TOO_LONG)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_count > MAX_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            raise _TooLarge(ANSWER_BAD_REQUEST)
        if len(name) == 10 and name.lower() == b"user-agent":
            self._user_agent = value
        elif len(name) == 15 and name.lower() == b"accept-language":
            self._accept_language = value
        elif len(name) == 15 and name.lower() == b"x-forwarded-for":
            self._forwarded = self._forwarded + b"," + value if self._forwarded else value

    def on_message_complete(self) -> None:
        self._in_request = False
        parser = self._parser
        method = parser.get_method()
        target = self._url
        if target[:1] != b"/":
            target = _origin_form(target)
        path = target.partition(b"?")[0].decode("latin-1")
        answer = self._tracker.handle(method, path, self._user_agent, self._accept_language, self._forwarded,
                                      self._peer)
        keep_alive = parser.should_keep_alive()
        response = answer.head + self._state.date + (b"\r\n" if keep_alive else _CLOSE + b"\r\n")
        if method != b"HEAD":
            response += answer.body
        waiter = self._state.journal.append(answer.event) if answer.event is not None else None
        self._send(waiter, response)
        if not keep_alive:
            self.close_when_idle()
        elif not self._closing:
            self._arm(self._state.limits.idle_timeout)

    # --- answers in order ----------------------------------------------------------------------------

    def _send(self, waiter: asyncio.Future[bool] | None, response: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        if waiter is None and not self._pending:
            transport.write(response)
            return
        self._pending.append((waiter, response))
        if waiter is not None and len(self._pending) == 1:
            waiter.add_done_callback(self._drain)
        if len(self._pending) >= MAX_PIPELINED:
            self._pause()

    def _drain(self, _: object = None) -> None:
        transport = self._transport
        if transport is None:
            return
        pending = self._pending
        while pending:
            waiter, response = pending[0]
            if waiter is not None and not waiter.done():
                waiter.add_done_callback(self._drain)
                return
            pending.popleft()
            transport.write(response)
        self._resume()
        if self._closing:
            self._finish(transport)

    def _refuse(self, answer: Answer) -> None:
        """Answer a request that cannot be parsed or is over a bound, then close."""
        self._tracker.stats.bad_requests += answer is ANSWER_BAD_REQUEST
        self._in_request = False
        self._linger = True
        self._send(None, answer.head + self._state.date + _CLOSE + b"\r\n" + answer.body)
        self.close_when_idle()

    def close_when_idle(self) -> None:
        """Close once every queued answer has been written."""
        if self._lingering:
            return
        self._closing = True
        self._disarm()
        if self._transport is not None and not self._pending:
            self._finish(self._transport)

    def _finish(self, transport: asyncio.Transport) -> None:
        """Every answer is written: close, or for a refused connection send a FIN and drain until LINGER_SECONDS."""
        if self._linger and not self._lingering and transport.can_write_eof():
            self._lingering = True
            transport.write_eof()
            self._arm(LINGER_SECONDS)
        elif not self._lingering:
            transport.close()

    def abort(self) -> None:
        """Drop the connection now (shutdown past its grace period)."""
        if self._transport is not None:
            self._transport.abort()

    # --- flow control and timers ---------------------------------------------------------------------

    def _pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and self._transport is not None and len(self._pending) < MAX_PIPELINED:
            self._paused = False
            self._transport.resume_reading()

    def _arm(self, seconds: float) -> None:
        self.deadline = self._time() + seconds

    def _disarm(self) -> None:
        self.deadline = float("inf")

    def expire(self) -> None:
        """The deadline passed: answer 408 to a request that is still arriving, or close an idle connection."""
        self.deadline = float("inf")
        if self._transport is None:
            return
        if self._lingering:  # the client did not close within LINGER_SECONDS
            self._transport.close()
        elif self._in_request:  # a request began and did not arrive in time
            self._tracker.stats.timeouts += 1
            self._refuse(ANSWER_TIMEOUT)
        elif not self._pending:
            self.close_when_idle()  # idle keep-alive
        else:
            self._arm(self._state.limits.idle_timeout)


def _origin_form(target: bytes) -> bytes:
    """The path of an absolute-form target (`http://host/path?q`); b"" when it has none."""
    try:
        parsed = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        return b""
    path = parsed.path or b""
    return path + (b"?" + parsed.query if parsed.query else b"")
