"""A real HTTP webhook receiver on loopback for tests: answers per a script, records every request."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import msgspec

Behaviour = Callable[[int], int | str]
"""Request number (from 0) -> status to answer, or "hang" (never answer) or "close" (drop the connection)."""


class Request(msgspec.Struct, frozen=True):
    """One request as the receiver read it."""

    headers: dict[str, str]
    body: bytes
    at: float
    status: int


def always(status: int) -> Behaviour:
    return lambda n: status


VALIDATION_BATCH = b'[{"msys":{}}]'


class Receiver:
    """HTTP/1.1 on 127.0.0.1; `behaviour` may be swapped while it runs.

    SparkPost's validation batch (sent when a webhook is created, its target changed, or `validate`
    is asked for) is answered by `validation` and kept in `validations`: `behaviour`'s request
    numbers and `requests` count only the other requests.
    """

    def __init__(self, behaviour: Behaviour | None = None, reply: bytes = b"ok") -> None:
        self.behaviour = behaviour or always(200)
        self.reply = reply
        """The body of every answer (a JSON token for an OAuth 2.0 token endpoint, say)."""
        self.requests: list[Request] = []
        self.validation: Behaviour = always(200)
        self.validations: list[Request] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._release = asyncio.Event()
        self._count = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Receiver:
        self._release = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def accepted(self) -> list[Request]:
        return [request for request in self.requests if 200 <= request.status < 300]

    def events(self) -> list[dict[str, object]]:
        """Every event in the bodies answered 2xx, unwrapped from {"msys": {envelope: event}}."""
        out: list[dict[str, object]] = []
        for request in self.accepted():
            for item in msgspec.json.decode(request.body):
                (event,) = item["msys"].values()
                out.append(event)
        return out

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if body == VALIDATION_BATCH:
                action = self.validation(len(self.validations))
                status = action if isinstance(action, int) else 0
                self.validations.append(Request(headers, body, time.time(), status))
            else:
                number = self._count
                self._count += 1
                action = self.behaviour(number)
                status = action if isinstance(action, int) else 0
                self.requests.append(Request(headers, body, time.time(), status))
            if action == "hang":
                await self._release.wait()
            elif action != "close":
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(self.reply)}\r\nConnection: close\r\n\r\n"
                             .encode() + self.reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
