"""Prometheus metrics: one registry per process (no global), fed by the store, webhooks, spool and tracker."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from engaged.events.model import Event, event_type

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The text exposition format's media type, for GET /metrics."""

_ENGAGEMENTS = frozenset({"open", "initial_open", "click", "link_unsubscribe", "list_unsubscribe"})
_WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every engaged metric, named `engaged_<component>_<what>_<unit>`, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.messages = Counter(
            "engaged_events_messages_total", "Message events stored, per recipient (injection, delivery, delay, "
            "bounce, policy_rejection, out_of_band, spam_complaint).", ["type"], registry=registry)
        self.engagements = Counter(
            "engaged_events_engagements_total", "Engagement events stored, by type and machine kind "
            "(machine=\"human\" when the tracker did not flag it).", ["type", "machine"], registry=registry)
        self.store_write = Histogram(
            "engaged_events_store_write_seconds", "Duration of one event store commit (a group of appends).",
            buckets=_WRITE_BUCKETS, registry=registry)
        self._tracker = _TrackerCollector()
        registry.register(self._tracker)
        self.spool_depth = Gauge(
            "engaged_spool_depth_messages", "Messages in the spool awaiting delivery.", registry=registry)
        self.webhook_lag_events = Gauge(
            "engaged_webhook_lag_events", "Stored events past the webhook's acknowledged cursor (any type).",
            ["webhook"], registry=registry)
        self.webhook_lag_seconds = Gauge(
            "engaged_webhook_lag_seconds", "Age of the oldest event the webhook has not delivered yet (0: caught up).",
            ["webhook"], registry=registry)
        self.webhook_delivered = Counter(
            "engaged_webhook_delivered_events_total", "Events acknowledged by the webhook's target (replays included).",
            ["webhook"], registry=registry)
        self.webhook_failures = Counter(
            "engaged_webhook_failures_total", "Failed delivery attempts, by reason (http_<status>, timeout, "
            "connect, refused).", ["webhook", "reason"], registry=registry)
        self.webhook_dead_letters = Counter(
            "engaged_webhook_dead_letters_total", "Batches moved to the dead-letter list after retry_max_age.",
            ["webhook"], registry=registry)
        self.inbound = Counter(
            "engaged_inbound_messages_total", "Mail received by the inbound listener, by outcome (matched: it "
            "became events; unmatched: kept in data_dir/inbound/unmatched).", ["outcome"], registry=registry)
        self.inbound_pending = Gauge(
            "engaged_inbound_pending_messages", "Inbound mail in data_dir/inbound/new: received, not yet events "
            "(the event store is down, or its copy's events are awaited).", registry=registry)
        self.inbound_unmatched = Gauge(
            "engaged_inbound_unmatched_messages", "Inbound mail kept in data_dir/inbound/unmatched (survives "
            "restarts, unlike engaged_inbound_messages_total).", registry=registry)
        self.stream_clients = Gauge(
            "engaged_api_stream_clients", "Open Server-Sent Events connections.", registry=registry)

    def observe_event(self, event: Event) -> None:
        """Count one stored event by its type (and machine kind for engagements)."""
        kind = event_type(event)
        if kind in _ENGAGEMENTS:
            machine = getattr(event, "machine_engagement", None)
            label = "human" if machine is None or machine.kind is None else machine.kind
            self.engagements.labels(kind, label).inc()
        else:
            self.messages.labels(kind).inc()

    def observe_inbound(self, outcome: str) -> None:
        """One processed inbound message: `matched` or `unmatched`."""
        self.inbound.labels(outcome).inc()

    def observe_store_write(self, seconds: float) -> None:
        """Record the duration of one store commit."""
        self.store_write.observe(seconds)

    def observe_commit(self, events: Sequence[Event], seconds: float) -> None:
        """A store's `on_commit` hook: the commit's duration and each of its events."""
        self.observe_store_write(seconds)
        for event in events:
            self.observe_event(event)

    def set_tracker_source(self, source: Callable[[], Mapping[str, float]]) -> None:
        """Export the tracker's counters (TrackerService.metrics, the loader's) at every scrape.

        `journal_failed` becomes engaged_tracker_journal_failures_total (answers whose event was lost);
        the gauges in TRACKER_GAUGES keep their name (engaged_tracker_loader_lag_seconds: how long the
        last stored batch's oldest event waited in the journal); every other counter `<name>` becomes
        engaged_tracker_<name>_total.
        """
        self._tracker.source = source

    def set_spool_depth_source(self, source: Callable[[], float]) -> None:
        """Read the spool depth from `source` at every scrape."""
        self.spool_depth.set_function(source)

    def set_inbound_sources(self, *, pending: Callable[[], float], unmatched: Callable[[], float]) -> None:
        """Count the inbound spool's new/ and unmatched/ at every scrape."""
        self.inbound_pending.set_function(pending)
        self.inbound_unmatched.set_function(unmatched)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


TRACKER_GAUGES: Final = {
    "loader_lag_seconds": "Seconds the oldest event of the journal loader's last batch waited to be stored "
                          "(0 when it is caught up).",
    "loader_lag_bytes": "Journaled bytes not yet stored by the journal loader.",
    "loader_lag_max_seconds": "The largest loader_lag_seconds since the loader started.",
    "connections_open": "Open connections to the tracker.",
}


class _TrackerCollector(Collector):
    """Reads the tracker's own counters at scrape time (they live in the tracker, not in this registry)."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, float]] | None = None

    def collect(self) -> Iterator[Metric]:
        counters = dict(self.source()) if self.source is not None else {}
        failed = CounterMetricFamily("engaged_tracker_journal_failures",
                                     "Engagements answered whose event could not be journaled (lost events).")
        failed.add_metric([], counters.pop("journal_failed", 0))
        yield failed
        for name, help_text in TRACKER_GAUGES.items():
            gauge = GaugeMetricFamily(f"engaged_tracker_{name}", help_text)
            gauge.add_metric([], counters.pop(name, 0))
            yield gauge
        for name, value in sorted(counters.items()):
            family = CounterMetricFamily(f"engaged_tracker_{name}", f"Tracker counter {name}.")
            family.add_metric([], value)
            yield family
