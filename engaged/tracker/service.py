"""TrackerService: the engagement tracker's uvicorn server on the caller's event loop, with its journal and loader."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from pathlib import Path
from typing import Final

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from engaged.config import Config, parse_hostport
from engaged.events.ids import EventIdGenerator
from engaged.tokens import SigningKeys
from engaged.tracker.asgi import MAX_SEGMENT_CHARS, TrackerApp
from engaged.tracker.classify import Classifier
from engaged.tracker.geo import GeoIp
from engaged.tracker.journal import JOURNAL_DIR, Journal, JournalLoader
from engaged.types import EventSink

log = logging.getLogger("engaged")

MAX_URL_BYTES: Final = MAX_SEGMENT_CHARS + 1024
MAX_HEADERS: Final = 100
MAX_HEADER_BYTES: Final = 32 * 1024
MAX_CONCURRENCY: Final = 10_000
GRACEFUL_SECONDS: Final = 10.0


class _RequestTooLarge(Exception):
    """Raised inside the parser: httptools reports it as a parser error and uvicorn answers 400 and closes."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on the request line and headers (it buffers both unbounded)."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > MAX_URL_BYTES:
            raise _RequestTooLarge("request target too long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if len(self.headers) >= MAX_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            raise _RequestTooLarge("too many or too large headers")
        super().on_header(name, value)


class TrackerService:
    """The engagement tracker of `engaged serve`: answers opens and clicks at [engagement_tracker] listen.

    `store` (an EventStore; only its append is used) must be open before start() and stay open until
    stop() returns. start() loads what an earlier run left in the journal, then binds (port 0 allowed)
    and logs `tracker listening on host:port`; stop() stops accepting, lets answered requests finish
    and loads the journal into the store (what the store refuses then stays for the next start).
    """

    def __init__(self, config: Config, store: EventSink, keyring: SigningKeys, *, ids: EventIdGenerator) -> None:
        tracker = config.engagement_tracker
        self._host, self._port = parse_hostport(tracker.listen)
        self._geo_path = Path(tracker.geoip_database) if tracker.geoip_database else None
        self._geo: GeoIp | None = None
        self.journal = Journal(config.data_path / JOURNAL_DIR)
        self._loader = JournalLoader(self.journal, store)
        self._keyring = keyring
        self._ids = ids
        self._trusted_proxies = list(tracker.trusted_proxies)
        self._app: TrackerApp | None = None
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._address = ""

    @property
    def address(self) -> str:
        """The bound `host:port` (`[v6]:port` for IPv6); empty before start()."""
        return self._address

    @property
    def app(self) -> TrackerApp:
        """The ASGI application (available after start())."""
        if self._app is None:
            raise RuntimeError("the tracker is not started")
        return self._app

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()  # release the journal lock, threads and socket of a half-done start
            raise

    async def _start(self) -> None:
        left = await self.journal.open()
        try:
            if left:
                replayed = await self._loader.load_available()
                log.info("tracker journal: %d event(s) from an earlier run loaded into the store", replayed)
        except Exception as error:  # the store is down: the background loader keeps retrying
            log.warning("tracker journal: cannot load events left by an earlier run yet: %s", error)
        if self._geo_path is not None:
            self._geo = GeoIp(self._geo_path)
        self._app = TrackerApp(keyring=self._keyring, journal=self.journal, ids=self._ids, classifier=Classifier(),
                               geo=self._geo, trusted_proxies=self._trusted_proxies)
        sock = self._socket = _bind(self._host, self._port)
        config = uvicorn.Config(
            self._app, host=self._host, port=self._port, loop="none", http=BoundedHttpToolsProtocol,
            lifespan="off", access_log=False, log_config=None, server_header=False, proxy_headers=False,
            limit_concurrency=MAX_CONCURRENCY, timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)  # what Server.serve() sets up before startup()
        await server.startup(sockets=[sock])
        self._server = server
        self._ticker = asyncio.get_running_loop().create_task(server.main_loop())  # Date header, exit flag
        self._loader.start()
        host, port = sock.getsockname()[:2]
        self._address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("tracker listening on %s", self._address)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
            if self._ticker is not None:
                await self._ticker
            await server.shutdown(sockets=[self._socket] if self._socket is not None else None)
        elif self._socket is not None:
            self._socket.close()
        self._socket = None
        await self._loader.stop()
        await self.journal.close()
        if self._geo is not None:
            self._geo.close()
            self._geo = None

    async def flush(self) -> int:
        """Load everything journaled so far into the store now; returns how many events that took.

        Store errors propagate (the events stay journaled and the background loader retries).
        """
        return await self._loader.load_available()

    def metrics(self) -> dict[str, int]:
        """Counters for the metrics endpoint: requests by outcome, journal and loader activity.

        `journal_failed` counts responses sent whose event could not be made durable (lost events).
        """
        counters = {f"journal_{name}": value for name, value in dataclasses.asdict(self.journal.stats).items()}
        if self._app is not None:
            counters.update({f"requests_{name}": value for name, value in dataclasses.asdict(self._app.stats).items()})
        return counters


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and without it a
    # body written after its headers waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
