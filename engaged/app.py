"""Composition root: builds every part from Config, owns the start and stop order."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.middleware import Middleware

from engaged.api.service import ApiService
from engaged.bus.claim import NodeClaim
from engaged.bus.connection import BusConnection
from engaged.bus.consumer import BusConsumer
from engaged.bus.exposition import MetricsListener
from engaged.bus.metrics import BusCollector
from engaged.bus.publisher import BusEventStore
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
from engaged.events.store_sqlite import WORKER_CACHE_KIB, WRITER_CACHE_KIB, CommitObserver, SqliteEventStore
from engaged.inbound.service import InboundService
from engaged.inject import Injector
from engaged.keys import LiveKeyring
from engaged.policy.engine import PolicyEngine
from engaged.prometheus import CONTENT_TYPE, Metrics
from engaged.server.stats import RUN_DIR, CounterFile, EventCounter, summed
from engaged.sinks.dispatch import WebhookDispatcher, target_problems
from engaged.sinks.guard import Networks, parse_networks
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
from engaged.types import EventLog, EventStore
from engaged.web.middleware import DashboardMiddleware

log = logging.getLogger("engaged")


def build_store(config: Config, metrics: Metrics | None = None, *, count_events: bool = True,
                worker: bool = False) -> EventStore:
    """The configured event store (not yet opened): SQLite in data_dir, or a PostgreSQL DSN.

    With `metrics`, every commit is timed, and its events counted unless `count_events` is false. A
    `worker`'s SQLite writer keeps SQLite's default page cache, not the one sized for large batches.
    """
    on_commit: CommitObserver | None = None
    if metrics is not None:
        observe = metrics.observe_store_write
        on_commit = metrics.observe_commit if count_events else lambda events, seconds: observe(seconds)
    if config.events.store == "sqlite":
        cache = WORKER_CACHE_KIB if worker else WRITER_CACHE_KIB
        return SqliteEventStore(config.data_path / "events.sqlite3", on_commit=on_commit, cache_kib=cache)
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

    `smtp_sockets` and `tracker_sockets` are sockets bound already (SO_REUSEPORT, shared port with the
    other workers); without them the worker binds [smtp] listen and [engagement_tracker] listen itself.
    `smtp_gate` counts connections against the caps across every worker. Started in dependency order
    and stopped in reverse.
    """

    def __init__(self, config: Config, *, index: int = 0, ids: EventIdGenerator | None = None,
                 smtp_sockets: dict[str, list[socket.socket]] | None = None,
                 tracker_sockets: list[socket.socket] | None = None, smtp_gate: ConnectionGate | None = None) -> None:
        self.config = config
        self.index = index
        data = config.data_path
        self.ids = ids or EventIdGenerator()
        self.keyring = LiveKeyring(data)
        self.metrics = Metrics()
        self.store = build_store(config, self.metrics, worker=True)
        # with a [bus], what the worker would append is published instead (reads stay on the store)
        self.bus = BusConnection(config.bus, name=f"engaged worker {index}") if config.bus.servers else None
        self.publisher = BusEventStore(self.store, self.bus) if self.bus is not None else None
        self.events: EventLog = self.publisher or self.store
        self.suppressions = build_suppressions(config)
        self.durability = Durability(config.smtp.sync, data)
        self.spool = FileSpool(shard_path(data, index), durability=self.durability)
        self.delivery = DeliveryQueue(
            self.spool,
            self.events,
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
        self.injector = Injector(config, self.spool, self._accepted, ids=self.ids, events=self.events,
                                 suppression=check)
        roles = config.server.roles
        self.smtp = (SmtpListeners(config, self.injector, self.policy, sockets=smtp_sockets, gate=smtp_gate)
                     if "smtp" in roles else None)
        self.tracker = (TrackerService(config, self.keyring, ids=self.ids, worker=index, sockets=tracker_sockets)
                        if "tracker" in roles else None)
        self.counters = [CounterFile(data / RUN_DIR, f"tracker-{index}", self.tracker.metrics)] if self.tracker else []
        if self.publisher is not None:
            self.counters.append(CounterFile(data / RUN_DIR, f"bus-{index}", self.publisher.stats))
        self.resumed = 0

    def reload_tls(self) -> None:
        """SIGHUP: the tracker reloads its TLS certificate."""
        if self.tracker is not None:
            self.tracker.reload_tls()

    async def _accepted(self, record: SpoolRecord, announced: asyncio.Task[bool]) -> None:
        await self.delivery.submit(record, announced)

    async def start(self) -> None:
        data: Path = self.config.data_path
        data.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        if self.bus is not None:
            self.bus.start()
        await self.suppressions.open()
        self.spool.open()
        # delivery adopts the outcomes the store holds: first let the events nodes store what is in the stream
        if self.publisher is not None and any(self.spool.directory.glob("*.msg")) and \
                not await self.publisher.settle():
            log.warning("bus: the store did not catch up with the stream in time; resuming the spool anyway "
                        "(a copy delivered just before a crash may be sent again)")
        self.resumed = await self.delivery.start()
        mode = self.config.delivery.mode
        target = {"relay": self.config.delivery.relay, "mx": "MX lookups", "capture": str(data / "captured")}[mode]
        log.info("delivery %s to %s: %d spooled message(s) resumed from %s", mode, target, self.resumed,
                 self.spool.directory)
        if self.tracker is not None:
            await self.tracker.start()
        for counter in self.counters:
            counter.start()
        if self.smtp is not None:
            await self.smtp.start()
            for configured, bound in self.smtp.addresses:
                log.info("smtp listening on %s (configured %s)", bound, configured)

    async def stop(self) -> None:
        if self.smtp is not None:
            await self.smtp.stop()
        await self.delivery.stop()
        for counter in self.counters:
            await counter.stop()
        if self.tracker is not None:
            await self.tracker.stop()
        if self.bus is not None:
            await self.bus.stop()
        await self.store.close()
        await self.suppressions.close()
        self.spool.close()
        self.durability.close()
        self.policy.close()
        log.info("stopped")


async def start_webhooks(config: Config, webhooks: WebhookDispatcher, networks: Networks, *,
                         before: Callable[[], Awaitable[None]] | None = None,
                         undo: Callable[[], Awaitable[None]] | None = None) -> None:
    """Check the [[webhooks]] targets (ConfigError), merge them into the table, run `before`, start delivery."""
    problems = await target_problems(config.webhooks, networks)
    if problems:
        raise ConfigError(problems)
    await webhooks.merge_config(config.webhooks)
    if before is not None:
        await before()
    try:
        await webhooks.start()
    except BaseException:
        if undo is not None:
            await undo()
        raise


class ApiApp:
    """The API listener with the dashboard mounted on it, and webhook delivery: NodeApp's API side.

    Before the listener binds, the [[webhooks]] targets are checked (load_config checked the rest) and
    merged into the webhook table; delivery starts once the API answers. Tests start it alone.
    """

    def __init__(self, config: Config, store: EventStore, *, metrics: Metrics, owner: str | None = None,
                 keepalive: float = 15.0, poll: float = 0.25, suppressions: SuppressionStore | None = None,
                 clock: Callable[[], float] = time.time, dispatch: bool = True) -> None:
        self._config = config
        self._dispatch = dispatch  # webhook delivery here (the `events` role); else on the events nodes
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
        if self._dispatch:
            await start_webhooks(self._config, self.webhooks, self._networks, before=self.api.start,
                                 undo=self.api.stop)
        else:
            await self.api.start()

    async def stop(self) -> None:
        """End live streams and stop the listener, then the webhook workers (their leases are released)."""
        await self.api.stop()
        await self.webhooks.stop()


class NodeApp:
    """The once-per-node process of `engaged serve`; what it runs follows the node's roles ([server] roles).

    - `api`: the API listener with the dashboard (and /metrics; without `api` the listener serves only /metrics).
    - `events`: webhook dispatch, automatic suppressions and, with a [bus], the consumer into the store.
    - `tracker`: the journal loader (it stores, or publishes, what every tracker worker journaled).
    - `smtp`: the [inbound] listener.

    Its /metrics counts every event stored from its start (by following the store, whichever process
    stored it), the spool depth of every shard, the workers' tracker counters, the loader's and the bus's.
    """

    def __init__(self, config: Config, *, ids: EventIdGenerator | None = None) -> None:
        self.config = config
        data = config.data_path
        roles = config.server.roles
        self.metrics = Metrics()
        self.store = build_store(config, self.metrics, count_events=False)
        self.bus = BusConnection(config.bus, name="engaged node") if config.bus.servers else None
        self.publisher: BusEventStore | None = None
        sink: EventLog = self.store
        if self.bus is not None and ("smtp" in roles or "tracker" in roles):
            sink = self.publisher = BusEventStore(self.store, self.bus)
        self.suppressions = build_suppressions(config)
        self.suppression_rules = SuppressionRules(self.store, self.suppressions) if "events" in roles else None
        owner = f"{socket.gethostname()}:{data}"
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # cannot go on: stop
        self.claim = (NodeClaim(self.bus, config.bus.node_id, owner, self._taken)
                      if self.bus is not None and config.bus.node_id >= 0 else None)
        self.api = (ApiApp(config, self.store, metrics=self.metrics, suppressions=self.suppressions, owner=owner,
                           dispatch="events" in roles) if "api" in roles else None)
        self.networks = parse_networks(config.api.webhook_private_networks)
        self.dispatcher = (WebhookDispatcher(self.store, self.metrics, owner, self.networks)
                           if "events" in roles and "api" not in roles else None)
        self.metrics_listener = (MetricsListener(config.api.listen, self.metrics.exposition, CONTENT_TYPE)
                                 if self.api is None else None)
        self.inbound = (InboundService(config, sink, LiveKeyring(data), ids=ids or EventIdGenerator(),
                                       outcome=self.metrics.observe_inbound) if "smtp" in roles else None)
        self.consumer = BusConsumer(self.bus, self.store) if self.bus is not None and "events" in roles else None
        self.events = EventCounter(self.store, self.metrics) if "api" in roles else None
        self.loader = JournalLoader(data, sink) if "tracker" in roles else None
        self._loader_stop = asyncio.Event()
        self._loader_task: asyncio.Task[None] | None = None
        self.metrics.set_spool_depth_source(lambda: spool_depth(data))
        if self.inbound is not None:
            spool = self.inbound.spool
            self.metrics.set_inbound_sources(pending=spool.pending_count, unmatched=spool.unmatched_count)
        self.metrics.set_tracker_source(lambda: {**summed(data / RUN_DIR, "tracker-"),
                                                 **(self.loader.metrics() if self.loader else {})})
        if self.bus is not None:
            self.metrics.registry.register(BusCollector(self._bus_metrics))

    def _taken(self, error: ConfigError) -> None:
        log.error("%s; stopping", "; ".join(error.problems))
        if not self.failed.done():
            self.failed.set_exception(error)

    def _bus_metrics(self) -> dict[str, float]:
        values: dict[str, float] = dict(summed(self.config.data_path / RUN_DIR, "bus-"))
        if self.publisher is not None:
            for key, value in self.publisher.stats().items():
                values[key] = values.get(key, 0) + value
        if self.loader is not None and self.publisher is not None:
            values["held_bytes"] = self.loader.metrics().get("loader_lag_bytes", 0)
        if self.consumer is not None:
            values.update(self.consumer.metrics())
        return values

    @property
    def api_address(self) -> str:
        """`host:port` of the API listener (or of the metrics-only one), after start."""
        if self.api is not None:
            return self.api.address
        return self.metrics_listener.address if self.metrics_listener is not None else ""

    async def start(self) -> None:
        data = self.config.data_path
        data.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        await self.suppressions.open()
        log.info("events store %s", describe_store(self.config))
        if self.bus is not None:
            self.bus.start()
        if self.claim is not None:
            await self.claim.start()  # another node holding this node_id: ConfigError, before anything else
        if self.events is not None:
            await self.events.start()
        if self.loader is not None:
            self._loader_task = asyncio.get_running_loop().create_task(
                follow(self.loader, self._loader_stop, data / LOADER_METRICS_FILE))
        if self.consumer is not None:
            self.consumer.start()
        if self.api is not None:
            await self.api.start()
        if self.dispatcher is not None:
            await start_webhooks(self.config, self.dispatcher, self.networks)
        if self.metrics_listener is not None:
            await self.metrics_listener.start()
            log.info("api listening on %s (/metrics only: this node has no api role)", self.api_address)
        if self.suppression_rules is not None:
            await self.suppression_rules.start()
        if self.inbound is not None:
            await self.inbound.start()
            for configured, bound in self.inbound.addresses:
                log.info("inbound listening on %s (configured %s)", bound, configured)

    async def stop(self) -> None:
        if self.inbound is not None:
            await self.inbound.stop()
        if self.suppression_rules is not None:
            await self.suppression_rules.stop()
        if self.metrics_listener is not None:
            await self.metrics_listener.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.api is not None:
            await self.api.stop()
        self._loader_stop.set()
        if self._loader_task is not None:
            await self._loader_task
        if self.consumer is not None:
            await self.consumer.stop()
        if self.claim is not None:
            await self.claim.stop()
        if self.bus is not None:
            await self.bus.stop()
        if self.events is not None:
            await self.events.stop()
        await self.store.close()
        await self.suppressions.close()
        log.info("stopped")
