"""ApiService: the private API listener (uvicorn on our loop, our own socket) and the webhook workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator

import uvicorn

from engaged.api.asgi import build_app
from engaged.config import Config, parse_hostport
from engaged.errors import ConfigError
from engaged.prometheus import Metrics
from engaged.sinks.dispatch import WebhookDispatcher
from engaged.sinks.guard import parse_networks
from engaged.suppression.model import SuppressionStore
from engaged.types import EventStore

log = logging.getLogger("engaged")

_START_TIMEOUT = 10.0
_GRACE = 1


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: engaged's loop owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(listen: str) -> socket.socket:
    """A listening, non-blocking TCP socket on `host:port` (port 0: any free port)."""
    host, port = parse_hostport(listen)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class ApiService:
    """Serves the events, metrics and webhooks APIs, the live stream and /metrics; runs webhook delivery."""

    def __init__(self, config: Config, store: EventStore, *, metrics: Metrics, owner: str | None = None,
                 keepalive: float = 15.0, poll: float = 0.25, suppressions: SuppressionStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._store = store
        self._stopping = asyncio.Event()
        node = owner or f"{socket.gethostname()}:{config.data_path}"
        networks = parse_networks(config.api.webhook_private_networks)
        self._webhooks = WebhookDispatcher(store, metrics, node, networks)
        self._app = build_app(store, metrics, keys=config.api.keys, stopping=self._stopping, networks=networks,
                              webhooks_changed=self._webhooks.refresh, keepalive=keepalive, poll=poll,
                              suppressions=suppressions, clock=clock)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._address = ""

    @property
    def address(self) -> str:
        """`host:port` the listener is bound to (after start)."""
        return self._address

    async def start(self) -> None:
        """Bind [api] listen, merge [[webhooks]] (ConfigError if invalid), start their workers and serve.

        Logs `api listening on <host>:<port>` once requests are answered.
        """
        api = self._config.api
        if api.tls_cert:
            try:  # the same files uvicorn loads; a bad pair stops startup with the key's name
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(api.tls_cert, api.tls_key)
            except (OSError, ssl.SSLError) as error:
                raise ConfigError([f"api.tls_cert: cannot load {api.tls_cert} with {api.tls_key}: {error}"]) from error
        sock = bind(api.listen)
        try:
            await self._webhooks.merge_config(self._config.webhooks)
        except BaseException:
            sock.close()
            raise
        await self._webhooks.start()
        host, port = sock.getsockname()[:2]
        self._address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        config = uvicorn.Config(self._app, lifespan="off", log_config=None, access_log=False,
                                timeout_graceful_shutdown=_GRACE, timeout_keep_alive=30, server_header=False,
                                ssl_certfile=api.tls_cert or None, ssl_keyfile=api.tls_key or None)
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT
        while not self._server.started:
            if self._task.done() or asyncio.get_running_loop().time() > deadline:
                sock.close()
                await self._webhooks.stop()
                raise RuntimeError(f"api listener on {self._config.api.listen} did not start")
            await asyncio.sleep(0.01)
        log.info("api listening on %s%s", self._address, " (https)" if api.tls_cert else "")

    async def stop(self) -> None:
        """End live streams, stop the listener, then the webhook workers (their leases are released)."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        await self._webhooks.stop()
