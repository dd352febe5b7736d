"""The library internals engaged relies on (engaged/_compat.py) still exist in the installed versions."""

from __future__ import annotations

import asyncio
import inspect
import signal
import socket
import threading

import httpcore
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from engaged._compat import EmbeddedServer, set_connection_pool


def test_httpx_is_a_version_whose_transport_keeps_an_httpcore_pool() -> None:
    major, minor = (int(part) for part in httpx.__version__.split(".")[:2])
    assert (major, minor) in {(0, 27), (0, 28), (0, 29)}, f"httpx {httpx.__version__}: check AsyncHTTPTransport._pool"
    transport = httpx.AsyncHTTPTransport()
    assert isinstance(transport._pool, httpcore.AsyncConnectionPool)


async def test_set_connection_pool_makes_the_transport_use_that_pool() -> None:
    transport = httpx.AsyncHTTPTransport()
    pool = httpcore.AsyncConnectionPool()
    set_connection_pool(transport, pool)
    assert transport._pool is pool
    await transport.aclose()


def test_uvicorn_server_keeps_the_two_methods_embedded_server_overrides() -> None:
    major, minor = (int(part) for part in uvicorn.__version__.split(".")[:2])
    assert (0, 29) <= (major, minor) < (1, 0), f"uvicorn {uvicorn.__version__}: check Server.capture_signals/startup"
    capture = uvicorn.Server.capture_signals
    assert list(inspect.signature(capture).parameters) == ["self"]
    assert inspect.isgeneratorfunction(inspect.unwrap(capture)), "capture_signals is no longer a context manager"
    startup = uvicorn.Server.startup
    assert inspect.iscoroutinefunction(startup)
    assert list(inspect.signature(startup).parameters) == ["self", "sockets"]


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def test_embedded_server_serves_without_touching_the_signal_handlers() -> None:
    # Fails (handlers replaced, or `serving` never set) if uvicorn.Server.serve stops calling either override.
    assert threading.current_thread() is threading.main_thread(), "uvicorn installs handlers only on the main thread"
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(Starlette(routes=[Route("/", hello)]), lifespan="off", log_config=None, access_log=False)
    server = EmbeddedServer(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        await asyncio.wait_for(server.serving.wait(), timeout=10)
        assert {number: signal.getsignal(number) for number in before} == before
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://{host}:{port}/")
        assert response.text == "hello"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()
