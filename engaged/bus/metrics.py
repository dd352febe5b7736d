"""The bus's Prometheus metrics, read at scrape time from the publishers and the consumer of this node."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

GAUGES: Final = {
    "held": ("engaged_bus_held_events", "Events whose publish failed, held in a local durable copy (spool log, "
             "tracker journal) until the bus acknowledges them."),
    "held_bytes": ("engaged_bus_held_journal_bytes", "Tracker journal bytes not yet published (grows in an outage)."),
    "consumer_pending": ("engaged_bus_consumer_pending_events", "Events in the stream the durable consumer has not "
                         "acknowledged yet (all events nodes together)."),
    "consumer_lag_seconds": ("engaged_bus_consumer_lag_seconds", "Age of the oldest event of the consumer's last "
                             "batch when it was stored (0 when idle)."),
}
COUNTERS: Final = {
    "published": ("engaged_bus_published_events", "Events the stream acknowledged as new (repeats not counted)."),
    "failures": ("engaged_bus_publish_failures", "Publish batches that failed (bus down, no ack in time)."),
    "consumed": ("engaged_bus_consumed_events", "Events the consumer stored (then acknowledged)."),
    "consumer_store_errors": ("engaged_bus_consumer_store_errors", "Store appends of a consumed batch that failed."),
    "consumer_malformed": ("engaged_bus_consumer_malformed", "Stream messages dropped as not an engaged event."),
}


class BusCollector(Collector):
    """Exports `source()` (keys of GAUGES and COUNTERS; missing ones are 0) at every scrape."""

    def __init__(self, source: Callable[[], Mapping[str, float]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        values = dict(self._source())
        for key, (name, text) in GAUGES.items():
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], values.get(key, 0))
            yield gauge
        for key, (name, text) in COUNTERS.items():
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], values.get(key, 0))
            yield counter
