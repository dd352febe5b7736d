"""Composition root: builds every part from Config, owns the start and stop order."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.middleware import Middleware

from engaged.api.service import ApiService
from engaged.config import Config, effective_smtpapi
from engaged.delivery.capture import CaptureTransport
from engaged.delivery.compose import CopyComposer
from engaged.delivery.dkim import DkimSigner
from engaged.delivery.mx import MxRouter, RelayRouter
from engaged.delivery.outcome import Transport
from engaged.delivery.queue import DeliveryQueue
from engaged.delivery.relay import SmtpTransport
from engaged.delivery.unsubscribe import ReturnHeaders
from engaged.errors import ConfigError
from engaged.events.ids import EventIdGenerator
from engaged.events.store_postgres import PostgresEventStore
from engaged.events.store_sqlite import CommitObserver, SqliteEventStore
from engaged.inbound.service import InboundService
from engaged.inject import Injector
from engaged.keys import LiveKeyring
from engaged.policy.engine import PolicyEngine
from engaged.prometheus import Metrics
from engaged.server.stats import RUN_DIR, CounterFile, EventCounter, summed
from engaged.sinks.dispatch import WebhookDispatcher, target_problems
from engaged.sinks.guard import parse_networks
from engaged.smtp.gate import ConnectionGate
from engaged.smtp.listener import SmtpListeners
from engaged.spool.record import SpoolRecord
from engaged.spool.store import FileSpool
from engaged.spool.sync import Durability
from engaged.suppression.check import SuppressionCheck
from engaged.suppression.model import SuppressionStore
from engaged.suppression.rules import SuppressionRules
from engaged.suppression.store_postgres import PostgresSuppressionStore
from engaged.suppression.store_sqlite import SqliteSuppressionStore
from engaged.tracker.loader import METRICS_FILE as LOADER_METRICS_FILE
from engaged.tracker.loader import JournalLoader, follow
from engaged.tracker.service import TrackerService
from engaged.types import EventStore
from engaged.web.middleware import DashboardMiddleware

log = logging.getLogger("engaged")


def build_store(config: Config, metrics: Metrics | None = None, *, count_events: bool = True) -> EventStore:
    """The configured event store (not yet opened): SQLite in data_dir, or a PostgreSQL DSN.

    With `metrics`, every commit is timed, and its events counted unless `count_events` is false.
    """
    on_commit: CommitObserver | None = None
    if metrics is not None:
        observe = metrics.observe_store_write
        on_commit = metrics.observe_commit if count_events else lambda events, seconds: observe(seconds)
    if config.events.store == "sqlite":
        return SqliteEventStore(config.data_path / "events.sqlite3", on_commit=on_commit)
    return PostgresEventStore(config.events.store, on_commit=on_commit)


def build_suppressions(config: Config) -> SuppressionStore:
    """The suppression list (not yet opened), beside the event store: data_dir for SQLite, else the same DSN."""
    if config.events.store == "sqlite":
        return SqliteSuppressionStore(config.data_path / "suppression.sqlite3")
    return PostgresSuppressionStore(config.events.store)


def describe_store(config: Config) -> str:
    """The store for log lines, without credentials."""
    if config.events.store == "sqlite":
        return f"sqlite {config.data_path / 'events.sqlite3'}"
    parts = urlsplit(config.events.store)
    host = parts.hostname or "localhost"
    return f"postgresql {host}:{parts.port or 5432}{parts.path}"


def build_transport(config: Config, durability: Durability) -> Transport:
    """The configured delivery transport: capture, the relay host, or MX delivery."""
    delivery = config.delivery
    if delivery.mode == "relay":
        return SmtpTransport(delivery, RelayRouter(delivery.relay), helo=delivery.helo_name or config.smtp.hostname)
    if delivery.mode == "mx":
        return SmtpTransport(delivery, MxRouter(delivery), helo=delivery.helo_name or config.smtp.hostname)
    return build_capture(config, durability)


def build_capture(config: Config, durability: Durability) -> CaptureTransport:
    """Capture into data_dir/captured (the default mode, and where sandbox messages always go)."""
    return CaptureTransport(config.data_path / "captured", durability=durability)


def shard_path(data_dir: Path, index: int) -> Path:
    """Spool shard `index` (owned by worker `index`): data_dir/spool/<index>/."""
    return data_dir / "spool" / str(index)


def spool_depth(data_dir: Path) -> int:
    """Messages held in every spool shard."""
    return sum(1 for _ in (data_dir / "spool").glob("*/*.msg"))


class WorkerApp:
    """One worker process of `engaged serve`: SMTP in, spool shard `index`, its delivery queue, tracker worker `index`.

    `smtp_sockets` and `tracker_socket` are sockets bound already (SO_REUSEPORT, shared port with the
    other workers); without them the worker binds [smtp] listen and [engagement_tracker] listen itself.
    `smtp_gate` counts connections against the caps across every worker. Started in dependency order
    and stopped in reverse.
    """

    def __init__(self, config: Config, *, index: int = 0, ids: EventIdGenerator | None = None,
                 smtp_sockets: dict[str, socket.socket] | None = None,
                 tracker_socket: socket.socket | None = None, smtp_gate: ConnectionGate | None = None) -> None:
        self.config = config
        self.index = index
        data = config.data_path
        self.ids = ids or EventIdGenerator()
        self.keyring = LiveKeyring(data)
        self.metrics = Metrics()
        self.store = build_store(config, self.metrics)
        self.suppressions = build_suppressions(config)
        self.durability = Durability(config.smtp.sync, data)
        self.spool = FileSpool(shard_path(data, index), durability=self.durability)
        self.delivery = DeliveryQueue(
            self.spool,
            self.store,
            build_transport(config, self.durability),
            CopyComposer(self.keyring, ReturnHeaders(self.keyring, list_unsubscribe=config.unsubscribe.list_unsubscribe,
                                                     bounce_domain=config.inbound.bounce_domain),
                         dkim=DkimSigner.from_config(config.dkim),
                         peer_headers=lambda listener: effective_smtpapi(config, listener).accept_headers),
            sandbox=build_capture(config, self.durability),
            workers=config.delivery.workers,
            retry_base=config.delivery.retry_base,
            max_attempt_age=config.delivery.max_attempt_age,
            ids=self.ids,
        )
        self.policy = PolicyEngine.load(config.policy.scripts)
        check = SuppressionCheck(self.suppressions) if config.suppression.enabled else None
        self.injector = Injector(config, self.spool, self._accepted, ids=self.ids, events=self.store,
                                 suppression=check)
        self.smtp = SmtpListeners(config, self.injector, self.policy, sockets=smtp_sockets, gate=smtp_gate)
        self.tracker = TrackerService(config, self.keyring, ids=self.ids, worker=index, sock=tracker_socket)
        self.counters = CounterFile(data / RUN_DIR, f"tracker-{index}", self.tracker.metrics)
        self.resumed = 0

    async def _accepted(self, record: SpoolRecord, announced: bool) -> None:
        await self.delivery.submit(record, announced)

    async def start(self) -> None:
        data: Path = self.config.data_path
        data.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        await self.suppressions.open()
        self.spool.open()
        self.resumed = await self.delivery.start()
        mode = self.config.delivery.mode
        target = {"relay": self.config.delivery.relay, "mx": "MX lookups", "capture": str(data / "captured")}[mode]
        log.info("delivery %s to %s: %d spooled message(s) resumed from %s", mode, target, self.resumed,
                 self.spool.directory)
        await self.tracker.start()
        self.counters.start()
        await self.smtp.start()
        for configured, bound in self.smtp.addresses:
            log.info("smtp listening on %s (configured %s)", bound, configured)

    async def stop(self) -> None:
        await self.smtp.stop()
        await self.delivery.stop()
        await self.counters.stop()
        await self.tracker.stop()
        await self.store.close()
        await self.suppressions.close()
        self.spool.close()
        self.durability.close()
        self.policy.close()
        log.info("stopped")


class ApiApp:
    """The API listener with the dashboard mounted on it, and webhook delivery: NodeApp's API side.

    Before the listener binds, the [[webhooks]] targets are checked (load_config checked the rest) and
    merged into the webhook table; delivery starts once the API answers. Tests start it alone.
    """

    def __init__(self, config: Config, store: EventStore, *, metrics: Metrics, owner: str | None = None,
                 keepalive: float = 15.0, poll: float = 0.25, suppressions: SuppressionStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._networks = parse_networks(config.api.webhook_private_networks)
        node = owner or f"{socket.gethostname()}:{config.data_path}"
        self.webhooks = WebhookDispatcher(store, metrics, node, self._networks)
        stopping = asyncio.Event()
        dashboard = Middleware(DashboardMiddleware, store=store, keys=config.api.keys, stopping=stopping,
                               keepalive=keepalive, poll=poll, suppressions=suppressions)
        self.api = ApiService(config, store, metrics=metrics, stopping=stopping, networks=self._networks,
                              webhooks_changed=self.webhooks.refresh, outer=[dashboard], keepalive=keepalive,
                              poll=poll, suppressions=suppressions, clock=clock)

    @property
    def address(self) -> str:
        """`host:port` the API listener is bound to (after start)."""
        return self.api.address

    async def start(self) -> None:
        """ConfigError (before anything binds) when a [[webhooks]] target resolves to a refused address."""
        problems = await target_problems(self._config.webhooks, self._networks)
        if problems:
            raise ConfigError(problems)
        await self.webhooks.merge_config(self._config.webhooks)
        await self.api.start()
        try:
            await self.webhooks.start()
        except BaseException:
            await self.api.stop()
            raise

    async def stop(self) -> None:
        """End live streams and stop the listener, then the webhook workers (their leases are released)."""
        await self.api.stop()
        await self.webhooks.stop()


class NodeApp:
    """The once-per-node process of `engaged serve`: API, dashboard, webhook dispatch, automatic
    suppressions, the [inbound] listener and the tracker journal loader (it stores what every
    tracker worker journaled).

    Its /metrics counts every event stored from its start (by following the store, whichever process
    stored it), the spool depth of every shard, the workers' tracker counters and the loader's.
    """

    def __init__(self, config: Config, *, ids: EventIdGenerator | None = None) -> None:
        self.config = config
        data = config.data_path
        self.metrics = Metrics()
        self.store = build_store(config, self.metrics, count_events=False)
        self.suppressions = build_suppressions(config)
        self.suppression_rules = SuppressionRules(self.store, self.suppressions)
        self.api = ApiApp(config, self.store, metrics=self.metrics, suppressions=self.suppressions)
        self.inbound = InboundService(config, self.store, LiveKeyring(data), ids=ids or EventIdGenerator(),
                                      outcome=self.metrics.observe_inbound)
        self.events = EventCounter(self.store, self.metrics)
        self.loader = JournalLoader(data, self.store)
        self._loader_stop = asyncio.Event()
        self._loader_task: asyncio.Task[None] | None = None
        self.metrics.set_spool_depth_source(lambda: spool_depth(data))
        self.metrics.set_tracker_source(lambda: {**summed(data / RUN_DIR, "tracker-"), **self.loader.metrics()})

    async def start(self) -> None:
        data = self.config.data_path
        data.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        await self.suppressions.open()
        log.info("events store %s", describe_store(self.config))
        await self.events.start()
        self._loader_task = asyncio.get_running_loop().create_task(
            follow(self.loader, self._loader_stop, data / LOADER_METRICS_FILE))
        await self.api.start()
        await self.suppression_rules.start()
        await self.inbound.start()
        for configured, bound in self.inbound.addresses:
            log.info("inbound listening on %s (configured %s)", bound, configured)

    async def stop(self) -> None:
        await self.inbound.stop()
        await self.suppression_rules.stop()
        await self.api.stop()
        self._loader_stop.set()
        if self._loader_task is not None:
            await self._loader_task
        await self.events.stop()
        await self.store.close()
        await self.suppressions.close()
        log.info("stopped")
