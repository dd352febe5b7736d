"""Prometheus metrics: names, labels, the store's commit hook, the spool depth source, and GET /metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from engaged.app import ApiApp
from engaged.config import ApiConfig, Config
from engaged.events.model import MachineEngagement
from engaged.events.store_sqlite import SqliteEventStore
from engaged.prometheus import Metrics
from tests.sample_events import make_event


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_observed_events_are_counted_by_type_and_machine_kind() -> None:
    metrics = Metrics()
    scanner = msgspec.structs.replace(make_event("click", 2),
                                      machine_engagement=MachineEngagement(kind="scanner", reason="ua"))
    human = msgspec.structs.replace(make_event("click", 3), machine_engagement=MachineEngagement(kind=None, reason=""))
    for event in (make_event("injection", 0), make_event("delivery", 1), make_event("delivery", 4), scanner, human,
                  make_event("open", 5)):
        metrics.observe_event(event)
    got = samples(metrics)
    assert got[("engaged_events_messages_total", (("type", "injection"),))] == 1
    assert got[("engaged_events_messages_total", (("type", "delivery"),))] == 2
    assert got[("engaged_events_engagements_total", (("machine", "scanner"), ("type", "click")))] == 1
    assert got[("engaged_events_engagements_total", (("machine", "human"), ("type", "click")))] == 1
    assert got[("engaged_events_engagements_total", (("machine", "proxy"), ("type", "open")))] == 1


def test_each_registry_is_its_own_and_every_name_follows_the_convention() -> None:
    first, second = Metrics(), Metrics()
    first.set_tracker_source(lambda: {"journal_failed": 1, "requests_click": 4})
    assert samples(first)[("engaged_tracker_journal_failures_total", ())] == 1
    assert samples(first)[("engaged_tracker_requests_click_total", ())] == 4
    assert samples(second)[("engaged_tracker_journal_failures_total", ())] == 0
    names = {name for name, _ in samples(first)}
    assert all(name.startswith("engaged_") for name in names)
    assert {"engaged_spool_depth_messages", "engaged_events_store_write_seconds_count",
            "engaged_api_stream_clients"} <= names


def test_the_spool_depth_is_read_from_its_source_at_scrape_time() -> None:
    metrics = Metrics()
    depth = [3]
    metrics.set_spool_depth_source(lambda: depth[0])
    assert samples(metrics)[("engaged_spool_depth_messages", ())] == 3
    depth[0] = 7
    assert samples(metrics)[("engaged_spool_depth_messages", ())] == 7


async def test_a_store_built_with_the_commit_hook_feeds_write_latency_and_event_counts(tmp_path: Path) -> None:
    metrics = Metrics()
    store = SqliteEventStore(tmp_path / "events.sqlite3", on_commit=metrics.observe_commit)
    await store.open()
    try:
        await store.append([make_event("delivery", n) for n in range(4)])
        await store.append([make_event("bounce", 9)])
    finally:
        await store.close()
    got = samples(metrics)
    assert got[("engaged_events_store_write_seconds_count", ())] == 2
    assert got[("engaged_events_messages_total", (("type", "delivery"),))] == 4
    assert got[("engaged_events_messages_total", (("type", "bounce"),))] == 1


async def test_the_api_listener_serves_the_text_exposition_format(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.observe_store_write(0.002)
    store = SqliteEventStore(tmp_path / "events.sqlite3")
    await store.open()
    service = ApiApp(Config(data_dir=str(tmp_path), api=ApiConfig(listen="127.0.0.1:0")), store, metrics=metrics)
    await service.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://{service.address}") as client:
            response = await client.get("/metrics")
    finally:
        await service.stop()
        await store.close()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "engaged_events_store_write_seconds_count 1.0" in response.text


def test_the_loops_events_are_counted_under_their_own_types() -> None:
    metrics = Metrics()
    for n, kind in enumerate(("out_of_band", "spam_complaint", "list_unsubscribe", "link_unsubscribe")):
        metrics.observe_event(make_event(kind, n))
    metrics.observe_inbound("matched")
    got = samples(metrics)
    assert got[("engaged_events_messages_total", (("type", "out_of_band"),))] == 1
    assert got[("engaged_events_messages_total", (("type", "spam_complaint"),))] == 1
    for kind in ("list_unsubscribe", "link_unsubscribe"):
        assert got[("engaged_events_engagements_total", (("machine", "human"), ("type", kind)))] == 1
    assert got[("engaged_inbound_messages_total", (("outcome", "matched"),))] == 1


def test_the_inbound_spools_directories_are_counted_at_every_scrape() -> None:
    metrics = Metrics()
    counts = {"new": 2, "unmatched": 5}
    metrics.set_inbound_sources(pending=lambda: counts["new"], unmatched=lambda: counts["unmatched"])
    assert samples(metrics)[("engaged_inbound_pending_messages", ())] == 2
    counts["unmatched"] = 6
    assert samples(metrics)[("engaged_inbound_unmatched_messages", ())] == 6
