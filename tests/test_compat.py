"""The library internals engaged relies on (engaged/_compat.py) still exist in the installed versions."""

from __future__ import annotations

import httpcore
import httpx

from engaged._compat import set_connection_pool


def test_httpx_is_a_version_whose_transport_keeps_an_httpcore_pool() -> None:
    major, minor = (int(part) for part in httpx.__version__.split(".")[:2])
    assert (major, minor) in {(0, 27), (0, 28)}, f"httpx {httpx.__version__}: check AsyncHTTPTransport._pool"
    transport = httpx.AsyncHTTPTransport()
    assert isinstance(transport._pool, httpcore.AsyncConnectionPool)


async def test_set_connection_pool_makes_the_transport_use_that_pool() -> None:
    transport = httpx.AsyncHTTPTransport()
    pool = httpcore.AsyncConnectionPool()
    set_connection_pool(transport, pool)
    assert transport._pool is pool
    await transport.aclose()
