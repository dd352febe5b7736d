"""The one place engaged reaches into a library's internals; tests/test_compat.py pins each against its version.

- httpx: `AsyncHTTPTransport` has no public hook for httpcore's network backend (where the webhook guard
  checks every address it connects to), so `set_connection_pool` replaces the transport's `_pool`, the
  documented `httpcore.AsyncConnectionPool` it builds in its constructor (httpx 0.27 to 0.29).
- uvicorn: `Server.serve` installs its own SIGTERM/SIGINT handlers and says nothing when it is ready, so
  `EmbeddedServer` overrides two of its methods, `capture_signals` (a context manager, since uvicorn 0.29)
  and `startup(sockets)`, for the API listener (api/service.py), whose loop owns the signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import httpcore
import httpx
import uvicorn


def set_connection_pool(transport: httpx.AsyncHTTPTransport, pool: httpcore.AsyncConnectionPool) -> None:
    """Make `transport` send through `pool` (its own pool is never used and holds no connection yet)."""
    transport._pool = pool


class EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its signal handlers, and with `serving`, an event set once it serves."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.serving = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self.serving.set()
