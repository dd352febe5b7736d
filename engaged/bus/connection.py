"""BusConnection: one process's NATS connection, kept up in the background, and the stream it checks at connect.

A node starts whatever the bus is doing: the connection is made (and remade) by a background task with
backoff, so an outage at start is like one mid-run. Until the stream is known to be usable, `jetstream()`
raises BusUnavailable, which the callers treat as a store failure: they keep the events where they are
durable (the spool log, the tracker journal) and try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Final

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig, StreamInfo

from engaged.bus.stream import SUBJECTS, stream_problems
from engaged.config import BusConfig
from engaged.errors import StoreError

log = logging.getLogger("engaged")

RETRY_FIRST: Final = 0.5
RETRY_MAX: Final = 10.0
CONNECT_TIMEOUT: Final = 2


class BusUnavailable(StoreError):
    """The bus cannot take events now (not connected, stream missing or unusable, acks not received)."""


def tls_context(bus: BusConfig) -> ssl.SSLContext | None:
    """The client TLS context for tls:// servers or a CA/certificate in [bus]; None for plain nats://."""
    if not (bus.tls_ca or bus.tls_cert or any(server.startswith("tls://") for server in bus.servers)):
        return None
    context = ssl.create_default_context(cafile=bus.tls_ca or None)
    if bus.tls_cert:
        context.load_cert_chain(bus.tls_cert, bus.tls_key)
    return context


class BusConnection:
    """Connects to [bus] servers, makes sure the stream exists and fits, and reconnects for ever."""

    def __init__(self, config: BusConfig, *, name: str = "engaged") -> None:
        self.config = config
        self._name = name
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._problem = "not connected yet"
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._last_error = ""
        self.ready = asyncio.Event()

    @property
    def problem(self) -> str:
        """Why the bus cannot take events now ("" when it can)."""
        return self._problem

    def start(self) -> None:
        """Connect in the background (returns at once)."""
        self._task = asyncio.get_running_loop().create_task(self._keep_connected())

    def recheck(self) -> None:
        """The stream went missing under us (deleted, or a cluster that lost it): find or create it again."""
        if self._task is not None and self._task.done() and not self._stopping.is_set():
            self._problem = "stream missing; checking again"
            self._task = asyncio.get_running_loop().create_task(self._keep_connected())

    def jetstream(self) -> JetStreamContext:
        """The JetStream context once connected to a usable stream; BusUnavailable otherwise."""
        client = self._client
        if self._js is None or client is None or not client.is_connected or self._problem:
            raise BusUnavailable(f"bus: {self._problem or 'disconnected'}")
        return self._js

    async def _keep_connected(self) -> None:
        delay = RETRY_FIRST
        while not self._stopping.is_set():
            try:
                if self._client is None:
                    self._client = await self._connect()
                    self._last_error = ""
                    log.info("bus: connected to %s", self._client.connected_url.netloc if self._client.connected_url
                             else self.config.servers)
                await self._check_stream()
                self.ready.set()
                return
            except Exception as error:
                self._problem = f"{self._describe(error)}"
                log.warning("bus: %s; retrying in %.1f s", self._problem, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, RETRY_MAX)

    def _describe(self, error: Exception) -> str:
        if isinstance(error, nats.errors.NoServersError | OSError | nats.errors.TimeoutError):
            return f"cannot reach {', '.join(self.config.servers)} ({type(error).__name__})"
        return str(error) or type(error).__name__

    async def _connect(self) -> Client:
        bus = self.config
        options: dict[str, object] = {}
        if bus.credentials:
            options["user_credentials"] = bus.credentials
        if bus.user:
            options.update(user=bus.user, password=bus.password)
        if bus.token:
            options["token"] = bus.token
        context = tls_context(bus)
        if context is not None:
            options["tls"] = context
        return await nats.connect(
            servers=list(bus.servers), name=self._name, connect_timeout=CONNECT_TIMEOUT, allow_reconnect=True,
            max_reconnect_attempts=-1, reconnect_time_wait=1, error_cb=self._on_error,
            disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected,
            **options,
        )

    async def _check_stream(self) -> None:
        """Find the stream (create it when missing); refuse one whose subjects or retention do not fit."""
        if self._client is None:
            raise BusUnavailable("bus: not connected")
        js = self._client.jetstream(timeout=self.config.publish_timeout)
        bus = self.config
        try:
            info: StreamInfo = await js.stream_info(bus.stream)
        except nats.js.errors.NotFoundError:
            info = await js.add_stream(StreamConfig(
                name=bus.stream, subjects=list(SUBJECTS), num_replicas=bus.replicas, storage=StorageType.FILE,
                duplicate_window=bus.duplicate_window,
                description="engaged events (SparkPost JSON); see engaged docs/deployment.md"))
            log.info("bus: created stream %s (subjects %s, %d replica(s))", bus.stream, ", ".join(SUBJECTS),
                     bus.replicas)
        fatal, notes = stream_problems(info.config, bus)
        for note in notes:
            log.warning("bus: stream %s: %s", bus.stream, note)
        if fatal:
            raise BusUnavailable(f"stream {bus.stream} cannot hold engaged's events: {'; '.join(fatal)}")
        self._js = js
        self._problem = ""

    async def _on_error(self, error: Exception) -> None:
        # the client retries by itself (at start too) and reports every failed attempt here: log each change once
        text = self._describe(error)
        if self._client is None or not self._client.is_connected:
            self._problem = text
        if text != self._last_error:
            self._last_error = text
            log.warning("bus: %s; retrying (events are kept locally meanwhile)", text)

    async def _on_disconnected(self) -> None:
        if not self._stopping.is_set():
            log.warning("bus: disconnected; reconnecting (events are kept locally meanwhile)")

    async def _on_reconnected(self) -> None:
        self._last_error = ""
        if self._js is not None:  # the stream was checked before: usable again
            self._problem = ""
        client = self._client
        url = client.connected_url.netloc if client is not None and client.connected_url else "?"
        log.info("bus: reconnected to %s", url)

    async def stop(self) -> None:
        """Stop connecting; flush and close the connection."""
        self._stopping.set()
        if self._task is not None:
            if not self._task.done():  # still connecting (the client retries for ever): give up
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        client, self._client, self._js = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.drain(), 5.0)
            with contextlib.suppress(Exception):
                await client.close()
