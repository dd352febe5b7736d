"""ApiService: the private API listener, uvicorn on our loop and our own socket, serving what it is given."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Sequence

import uvicorn
from starlette.middleware import Middleware

from engaged._compat import EmbeddedServer
from engaged.api.asgi import build_app
from engaged.config import Config, format_hostport, parse_hostport
from engaged.errors import ConfigError
from engaged.prometheus import Metrics
from engaged.server.sockets import bind_tcp
from engaged.sinks.guard import Networks
from engaged.suppression.model import SuppressionStore
from engaged.types import EventStore

log = logging.getLogger("engaged")

_START_TIMEOUT = 10.0
_GRACE = 1


class ApiService:
    """Serves the events, metrics and webhooks APIs, the live stream and /metrics on [api] listen.

    app.py wires it: `webhooks_changed` wakes webhook delivery after a change through the API,
    `outer` are middlewares placed outside the API's access rule (the dashboard), `stopping` ends
    live streams (set by `stop`).
    """

    def __init__(self, config: Config, store: EventStore, *, metrics: Metrics, stopping: asyncio.Event,
                 webhooks_changed: Callable[[], None], networks: Networks = (), outer: Sequence[Middleware] = (),
                 keepalive: float = 15.0, poll: float = 0.25, suppressions: SuppressionStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._stopping = stopping
        self._app = build_app(store, metrics, keys=config.api.keys, stopping=stopping, networks=networks,
                              webhooks_changed=webhooks_changed, outer=outer, keepalive=keepalive, poll=poll,
                              suppressions=suppressions, clock=clock)
        self._server: EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._address = ""

    @property
    def address(self) -> str:
        """`host:port` the listener is bound to (after start)."""
        return self._address

    async def start(self) -> None:
        """Bind [api] listen and serve; returns once requests are answered (logs `api listening on …`)."""
        api = self._config.api
        if api.tls_cert:
            try:  # the same files uvicorn loads; a bad pair stops startup with the key's name
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(api.tls_cert, api.tls_key)
            except (OSError, ssl.SSLError) as error:
                raise ConfigError([f"api.tls_cert: cannot load {api.tls_cert} with {api.tls_key}: {error}"]) from error
        sock = bind_tcp(*parse_hostport(api.listen))
        self._address = format_hostport(*sock.getsockname()[:2])
        config = uvicorn.Config(self._app, lifespan="off", log_config=None, access_log=False,
                                timeout_graceful_shutdown=_GRACE, timeout_keep_alive=30, server_header=False,
                                ssl_certfile=api.tls_cert or None, ssl_keyfile=api.tls_key or None)
        server = self._server = EmbeddedServer(config)
        task = self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        serving = asyncio.ensure_future(server.serving.wait())
        try:
            await asyncio.wait({task, serving}, timeout=_START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            serving.cancel()
        if not server.serving.is_set():
            server.should_exit = True
            with contextlib.suppress(Exception):
                await task
            sock.close()
            raise RuntimeError(f"api listener on {api.listen} did not start")
        log.info("api listening on %s%s", self._address, " (https)" if api.tls_cert else "")

    async def stop(self) -> None:
        """End live streams, then stop the listener."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
