"""MetricsListener: GET /metrics on [api] listen for a node without the `api` role (nothing else is served)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from engaged.config import parse_hostport

log = logging.getLogger("engaged")

_MAX_REQUEST = 8192
_TIMEOUT = 10.0


class MetricsListener:
    """A tiny HTTP/1.0 responder: `/metrics` gets `render()`, anything else 404; one request per connection."""

    def __init__(self, listen: str, render: Callable[[], bytes], content_type: str) -> None:
        self._listen = listen
        self._render = render
        self._content_type = content_type
        self._server: asyncio.Server | None = None
        self.address = ""

    async def start(self) -> None:
        host, port = parse_hostport(self._listen)
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        bound = self._server.sockets[0].getsockname()
        self.address = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _TIMEOUT)
            parts = head[:_MAX_REQUEST].split(b" ", 2)
            if len(parts) >= 2 and parts[0] in (b"GET", b"HEAD") and parts[1].split(b"?")[0] == b"/metrics":
                body, status = self._render(), b"200 OK"
                kind = self._content_type.encode()
            else:
                body, status, kind = b"not found: this node serves only /metrics\n", b"404 Not Found", b"text/plain"
            writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: " + kind + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                         + (body if parts[0] != b"HEAD" else b""))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
