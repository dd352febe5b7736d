"""The one place engaged reaches into a library's internals; tests/test_compat.py pins each against its version.

- httpx: `AsyncHTTPTransport` has no public hook for httpcore's network backend (where the webhook guard
  checks every address it connects to), so `set_connection_pool` replaces the transport's `_pool`, the
  documented `httpcore.AsyncConnectionPool` it builds in its constructor (httpx 0.27 and 0.28).
"""

from __future__ import annotations

import httpcore
import httpx


def set_connection_pool(transport: httpx.AsyncHTTPTransport, pool: httpcore.AsyncConnectionPool) -> None:
    """Make `transport` send through `pool` (its own pool is never used and holds no connection yet)."""
    transport._pool = pool
