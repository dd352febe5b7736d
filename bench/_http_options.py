"""HTTP layers the tracker could sit on, each answering every request with a fixed 302 (no tracker work).

`python bench/_http_options.py uvicorn|protocol PORT` serves on 127.0.0.1:PORT; granian serves `app`
from this module by its own CLI. bench/tracker.py --http-options measures them next to nginx.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httptools

_HEADERS = [(b"location", b"https://example.com/"), (b"content-length", b"0")]
_RESPONSE = b"HTTP/1.1 302 Found\r\nlocation: https://example.com/\r\ncontent-length: 0\r\n\r\n"


async def app(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
              send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
    """The empty ASGI application: a 302 and nothing else."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 302, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b""})


class EmptyProtocol(asyncio.Protocol):
    """An asyncio.Protocol on httptools answering 302 to every request, in order, with keep-alive."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    def on_message_complete(self) -> None:
        if self._transport is not None:
            self._transport.write(_RESPONSE)


async def _protocol(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(EmptyProtocol, "127.0.0.1", port, backlog=4096)
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    kind, listen_port = sys.argv[1], int(sys.argv[2])
    if kind == "uvicorn":
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=listen_port, loop="uvloop", http="httptools", lifespan="off",
                    access_log=False, log_level="warning")
    else:
        uvloop.run(_protocol(listen_port))
