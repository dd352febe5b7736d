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


class _TrackerOnAsgi:
    """The real tracker (handler and journal) as an ASGI app, to measure it on granian next to our own server.

    Its data directory comes from ENGAGED_BENCH_TRACKER_DIR (a benchmark helper, not engaged's config).
    """

    def __init__(self) -> None:
        self._tracker: Any = None
        self._journal: Any = None
        self._heads: dict[bytes, tuple[int, list[tuple[bytes, bytes]]]] = {}

    async def _start(self) -> None:
        import os
        from pathlib import Path

        from engaged.events.ids import EventIdGenerator
        from engaged.keys import load_keyring
        from engaged.tracker.classify import Classifier
        from engaged.tracker.handler import Tracker
        from engaged.tracker.journal import Journal, worker_directory

        data = Path(os.environ["ENGAGED_BENCH_TRACKER_DIR"])
        self._journal = Journal(worker_directory(data, 0))
        await self._journal.open()
        self._tracker = Tracker(keyring=load_keyring(data), ids=EventIdGenerator(), classifier=Classifier())

    def _head(self, head: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
        found = self._heads.get(head)
        if found is None:
            status_line, *lines = head.rstrip(b"\r\n").split(b"\r\n")
            headers = [(name, value) for name, _, value in (line.partition(b": ") for line in lines)]
            found = self._heads[head] = (int(status_line.split()[1]), headers)
        return found

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        if self._tracker is None:
            await self._start()
        user_agent = accept_language = forwarded = b""
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value
            elif name == b"accept-language":
                accept_language = value
            elif name == b"x-forwarded-for":
                forwarded = value
        method = scope["method"].encode()
        path = (scope.get("raw_path") or scope["path"].encode()).partition(b"?")[0].decode("latin-1")
        client = scope.get("client")
        answer = self._tracker.handle(method, path, user_agent, accept_language, forwarded, client[0] if client else "")
        if answer.event is not None:
            await self._journal.append(answer.event)
        status, headers = self._head(answer.head)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == b"HEAD" else answer.body})


tracker_app = _TrackerOnAsgi()
