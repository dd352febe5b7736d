"""Composition root: builds every part from Config, owns the start and stop order."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

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
from engaged.events.ids import EventIdGenerator
from engaged.events.store_postgres import PostgresEventStore
from engaged.events.store_sqlite import SqliteEventStore
from engaged.inbound.service import InboundService
from engaged.inject import Injector
from engaged.keys import LiveKeyring
from engaged.policy.engine import PolicyEngine
from engaged.prometheus import Metrics
from engaged.smtp.listener import SmtpListeners
from engaged.spool.record import SpoolRecord
from engaged.spool.store import FileSpool
from engaged.spool.sync import Durability
from engaged.suppression.check import SuppressionCheck
from engaged.suppression.model import SuppressionStore
from engaged.suppression.rules import SuppressionRules
from engaged.suppression.store_postgres import PostgresSuppressionStore
from engaged.suppression.store_sqlite import SqliteSuppressionStore
from engaged.tracker.loader import LoaderProcess
from engaged.tracker.service import TrackerService
from engaged.types import EventStore

log = logging.getLogger("engaged")


def build_store(config: Config, metrics: Metrics | None = None) -> EventStore:
    """The configured event store (not yet opened): SQLite in data_dir, or a PostgreSQL DSN."""
    on_commit = metrics.observe_commit if metrics is not None else None
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


class App:
    """Every component of `engaged serve`, started in dependency order and stopped in reverse."""

    def __init__(self, config: Config) -> None:
        self.config = config
        data = config.data_path
        self.ids = EventIdGenerator()
        self.keyring = LiveKeyring(data)
        self.metrics = Metrics()
        self.store = build_store(config, self.metrics)
        self.suppressions = build_suppressions(config)
        self.durability = Durability(config.smtp.sync, data)
        self.spool = FileSpool(data / "spool", durability=self.durability)
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
        self.suppression_rules = SuppressionRules(self.store, self.suppressions)
        self.smtp = SmtpListeners(config, self.injector, self.policy)
        self.tracker = TrackerService(config, self.keyring, ids=self.ids)
        self.inbound = InboundService(config, self.store, self.keyring, ids=self.ids,
                                      outcome=self.metrics.observe_inbound)
        self.loader = LoaderProcess(msgspec.json.encode(config), data)
        self.api = ApiService(config, self.store, metrics=self.metrics, suppressions=self.suppressions)
        self.metrics.set_spool_depth_source(self.delivery.depth)
        self.metrics.set_tracker_source(lambda: {**self.tracker.metrics(), **self.loader.metrics()})

    async def _accepted(self, record: SpoolRecord, announced: bool) -> None:
        await self.delivery.submit(record, announced)

    async def start(self) -> None:
        data: Path = self.config.data_path
        data.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        await self.suppressions.open()
        log.info("events store %s", describe_store(self.config))
        await self.api.start()
        await self.suppression_rules.start()
        self.spool.open()
        resumed = await self.delivery.start()
        mode = self.config.delivery.mode
        target = {"relay": self.config.delivery.relay, "mx": "MX lookups", "capture": str(data / "captured")}[mode]
        log.info("delivery %s to %s: %d spooled message(s) resumed", mode, target, resumed)
        await self.loader.start()
        await self.tracker.start()
        await self.smtp.start()
        for configured, bound in self.smtp.addresses:
            log.info("smtp listening on %s (configured %s)", bound, configured)
        await self.inbound.start()
        for configured, bound in self.inbound.addresses:
            log.info("inbound listening on %s (configured %s)", bound, configured)
        log.info("ready")

    async def stop(self) -> None:
        await self.inbound.stop()
        await self.smtp.stop()
        await self.delivery.stop()
        await self.tracker.stop()
        await self.loader.stop()
        await self.suppression_rules.stop()
        await self.api.stop()
        await self.store.close()
        await self.suppressions.close()
        self.spool.close()
        self.durability.close()
        self.policy.close()
        log.info("stopped")


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly (ConfigError: a policy script did not load)."""
    # The handlers go in before anything starts: a SIGTERM during startup lets startup finish, then shuts down
    # cleanly, instead of killing a half-started process with the default disposition.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = App(config)
    loop.add_signal_handler(signal.SIGHUP, app.tracker.reload_tls)
    await app.start()
    await stop.wait()
    log.info("shutting down")
    await app.stop()

