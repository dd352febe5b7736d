"""TrackerService: one tracker worker — its listener (HTTP or HTTPS) and its own journal, nothing else.

A worker answers opens and clicks and appends each event to `tracker-journal/<worker>/`; it never
touches the event store. The journal loader (engaged.tracker.loader), in the node process, stores
what every worker journaled. With `reuse_port` several workers bind the same address (SO_REUSEPORT)
and the kernel spreads connections over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import resource
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from engaged.config import Config
from engaged.events.ids import EventIdGenerator
from engaged.server.sockets import bind_every
from engaged.tokens import SigningKeys
from engaged.tracker.classify import Classifier
from engaged.tracker.geo import GeoIp
from engaged.tracker.handler import Tracker
from engaged.tracker.http import HttpLimits, HttpServerState, TrackerProtocol
from engaged.tracker.journal import Journal, worker_directory

log = logging.getLogger("engaged")

GRACEFUL_SECONDS: Final = 10.0
BACKLOG: Final = 4096


class TrackerService:
    """Tracker worker `worker` of `engaged serve`: answers at [engagement_tracker] listen.

    `sockets` are bound already (on the supervisor's reserved addresses, SO_REUSEPORT), else start() binds
    [engagement_tracker] listen itself, on every address its host resolves to, all on one port (port 0
    allowed), as the SMTP listeners do. start() opens the journal `tracker-journal/<worker>/`, listens
    and logs `tracker listening on host:port` for each address;
    stop() stops accepting, lets answered requests finish, closes idle connections and the journal.
    reload_tls() re-reads tls_cert and tls_key (SIGHUP); connections already open keep their session.
    `durable=False` (no fdatasync) exists only to measure what the disk costs; never serve with it.
    """

    def __init__(self, config: Config, keyring: SigningKeys, *, ids: EventIdGenerator, worker: int = 0,
                 reuse_port: bool = False, sockets: Sequence[socket.socket] | None = None,
                 durable: bool = True) -> None:
        tracker = config.engagement_tracker
        self._config = tracker
        self._geo_path = Path(tracker.geoip_database) if tracker.geoip_database else None
        self._geo: GeoIp | None = None
        self.worker = worker
        self.journal = Journal(worker_directory(config.data_path, worker), sync=durable)
        self._keyring = keyring
        self._ids = ids
        self._reuse_port = reuse_port
        self._bound = list(sockets) if sockets is not None else None
        self._tracker: Tracker | None = None
        self._state: HttpServerState | None = None
        self._servers: list[asyncio.Server] = []
        self._tls: ssl.SSLContext | None = None
        self.addresses: list[str] = []
        """Every bound `host:port` (`[v6]:port` for IPv6), in the order the listen host resolved; empty before
        start()."""

    @property
    def address(self) -> str:
        """The first bound address (see `addresses`); empty before start()."""
        return self.addresses[0] if self.addresses else ""

    @property
    def scheme(self) -> str:
        """`https` when the listener terminates TLS, else `http`."""
        return "https" if self._config.tls_cert else "http"

    @property
    def tracker(self) -> Tracker:
        """The request handler (available after start())."""
        if self._tracker is None:
            raise RuntimeError("the tracker is not started")
        return self._tracker

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()  # release the journal lock, threads and socket of a half-done start
            raise

    async def _start(self) -> None:
        _raise_open_files_limit()
        if self._config.tls_cert:
            self._tls = tls_context(self._config.tls_cert, self._config.tls_key)
        await self.journal.open()
        if self._geo_path is not None:
            self._geo = GeoIp(self._geo_path)
        self._tracker = Tracker(keyring=self._keyring, ids=self._ids, classifier=Classifier(), geo=self._geo,
                                trusted_proxies=self._config.trusted_proxies)
        limits = HttpLimits(header_timeout=self._config.header_timeout, idle_timeout=self._config.idle_timeout,
                            max_connections=self._config.max_connections)
        state = self._state = HttpServerState(self._tracker, self.journal, limits)
        state.start()
        shared = self._reuse_port or self._bound is not None
        pending, self._bound = self._bound or bind_every(self._config.listen, reuse_port=self._reuse_port), None
        loop = asyncio.get_running_loop()
        while pending:
            try:
                server = await loop.create_server(
                    lambda: TrackerProtocol(state), sock=pending[0], ssl=self._tls, backlog=BACKLOG,
                    ssl_handshake_timeout=self._config.header_timeout if self._tls else None)
            except BaseException:
                for sock in pending:
                    sock.close()
                raise
            sock = pending.pop(0)
            self._servers.append(server)
            host, port = sock.getsockname()[:2]
            self.addresses.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        suffix = f" (worker {self.worker}, {self.scheme})" if shared or self._tls else ""
        for address in self.addresses:
            log.info("tracker listening on %s%s", address, suffix)

    def reload_tls(self) -> bool:
        """Load tls_cert and tls_key again into the live context; False (and logged) when they do not load."""
        if self._tls is None:
            return False
        try:
            self._tls.load_cert_chain(self._config.tls_cert, self._config.tls_key or None)
        except (OSError, ssl.SSLError) as error:
            log.error("tracker TLS reload failed, keeping the current certificate: %s", error)
            return False
        log.info("tracker TLS certificate reloaded from %s", self._config.tls_cert)
        return True

    async def stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for sock in self._bound or []:  # handed over but never served (start failed before listening)
            sock.close()
        self._bound = None
        state = self._state
        if state is not None:
            state.close_idle()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + GRACEFUL_SECONDS
            while state.connections and loop.time() < deadline:
                await asyncio.sleep(0.01)
            for connection in list(state.connections):
                connection.abort()
            state.stop()
        for server in servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        await self.journal.close()
        if self._geo is not None:
            self._geo.close()
            self._geo = None

    def metrics(self) -> dict[str, int]:
        """Counters for the metrics endpoint: requests by outcome and journal activity.

        `journal_failed` counts responses sent whose event could not be made durable (lost events).
        """
        counters = {f"journal_{name}": value for name, value in dataclasses.asdict(self.journal.stats).items()}
        if self._tracker is not None:
            counters.update({f"requests_{name}": value
                             for name, value in dataclasses.asdict(self._tracker.stats).items()})
        if self._state is not None:
            counters["connections_open"] = len(self._state.connections)
        return counters


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for the tracker: TLS 1.2+, HTTP/1.1 by ALPN."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert, key or None)
    return context


def _raise_open_files_limit() -> None:
    """Every connection is a descriptor: lift the soft limit to the hard one (10,000 connections need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
