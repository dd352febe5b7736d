"""BusEventStore against a real nats-server: acks, the duplicate window, outages held locally and counted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from nats.js.api import RawStreamMsg

from engaged.bus.connection import BusUnavailable
from engaged.bus.stream import MSG_ID, TYPE_HEADER
from engaged.config import BusConfig
from engaged.events.model import ClickEvent, OpenEvent
from engaged.events.wire import api_json, decode_api_json
from tests.bus.cluster import NatsCluster
from tests.bus.publishing import Publisher, open_event, until


async def publisher(tmp_path: Path, bus: BusConfig) -> Publisher:
    store = Publisher(tmp_path / "events.sqlite3", bus)
    await store.open()
    return store


async def published(url: str, stream: str = "ENGAGED_EVENTS") -> list[RawStreamMsg]:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info(stream)
        messages = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            messages.append(await js.get_msg(stream, seq))
        return messages
    finally:
        await client.close()


async def test_events_are_published_to_their_type_subject_with_the_event_id_as_msg_id(
        tmp_path: Path, nats_factory: Callable[[int], NatsCluster]) -> None:
    cluster = nats_factory(1)
    store = await publisher(tmp_path, BusConfig(servers=cluster.urls))
    try:
        await store._bus.ready.wait()
        await store.append([open_event(1), open_event(2)])
        await store.append([open_event(1)])  # a retry: dropped by the duplicate window
        messages = await published(cluster.urls[0])
        assert [m.subject for m in messages] == ["engaged.events.open", "engaged.events.open"]
        assert [m.headers[MSG_ID] for m in messages if m.headers] == [open_event(1).event_id, open_event(2).event_id]
        assert all(m.headers and m.headers[TYPE_HEADER] == "open" for m in messages)
        assert messages[0].data == api_json(open_event(1))  # SparkPost's JSON, as its Events API answers
        assert b'"timestamp":"2023-11-14T22:13:21.000+00:00"' in (messages[0].data or b"")
        assert decode_api_json(messages[0].data or b"") == open_event(1)  # what the consumer stores: exact
        assert store.stats() == {"held": 0, "published": 2, "failures": 0}
    finally:
        await store.close()


async def test_a_bus_down_at_start_holds_events_until_it_comes_up(
        tmp_path: Path, nats_factory: Callable[[int], NatsCluster]) -> None:
    cluster = NatsCluster.create(tmp_path / "late", 1)
    store = await publisher(tmp_path, BusConfig(servers=cluster.urls, publish_timeout=1.0))
    try:
        with pytest.raises(BusUnavailable, match=r"not connected yet|cannot reach"):
            await store.append([open_event(1), open_event(2)])
        assert store.held == 2
        cluster.start()
        await asyncio.wait_for(store._bus.ready.wait(), 60)
        await store.append([open_event(1), open_event(2)])
        assert store.held == 0
        assert len(await published(cluster.urls[0])) == 2
    finally:
        await store.close()
        cluster.stop()


async def test_a_bus_lost_mid_run_fails_appends_then_recovers_without_duplicates(
        tmp_path: Path, nats_factory: Callable[[int], NatsCluster]) -> None:
    cluster = nats_factory(1)
    store = await publisher(tmp_path, BusConfig(servers=cluster.urls, publish_timeout=1.0))
    try:
        await store._bus.ready.wait()
        await store.append([open_event(1)])
        node = cluster.nodes[0]
        node.kill()
        with pytest.raises(BusUnavailable):
            await store.append([open_event(2), open_event(3)])
        assert store.held == 2
        node.start()  # same port, same store directory: the stream survives
        for _ in range(600):  # as the spool or the journal retries: the same events, until the bus takes them
            try:
                await store.append([open_event(2), open_event(3)])
                break
            except BusUnavailable:
                await asyncio.sleep(0.1)
        assert store.held == 0
        assert [m.headers[MSG_ID] for m in await published(cluster.urls[0]) if m.headers] == \
            [open_event(n).event_id for n in (1, 2, 3)]
    finally:
        await store.close()


async def test_a_stream_without_engaged_subjects_is_refused_with_the_reason(
        tmp_path: Path, nats_factory: Callable[[int], NatsCluster]) -> None:
    cluster = nats_factory(1)
    client = await nats.connect(cluster.urls[0])
    await client.jetstream().add_stream(name="ENGAGED_EVENTS", subjects=["other.>"])
    await client.close()
    store = await publisher(tmp_path, BusConfig(servers=cluster.urls))
    try:
        await until(lambda: "do not include engaged.events.>" in store._bus.problem)
        with pytest.raises(BusUnavailable, match=r"do not include engaged\.events"):
            await store.append([open_event(1)])
    finally:
        await store.close()


async def test_a_stream_with_other_limits_is_used_and_its_differences_logged(
        tmp_path: Path, nats_factory: Callable[[int], NatsCluster], caplog: pytest.LogCaptureFixture) -> None:
    cluster = nats_factory(1)
    client = await nats.connect(cluster.urls[0])
    await client.jetstream().add_stream(name="EVENTS2", subjects=["engaged.>"], duplicate_window=10, max_age=86400)
    await client.close()
    store = await publisher(tmp_path, BusConfig(servers=cluster.urls, stream="EVENTS2", replicas=3))
    try:
        await asyncio.wait_for(store._bus.ready.wait(), 30)
        click = ClickEvent(**{**{f: getattr(open_event(5), f) for f in OpenEvent.__struct_fields__}})
        await store.append([click])
        assert [m.subject for m in await published(cluster.urls[0], "EVENTS2")] == ["engaged.events.click"]
        text = caplog.text
        assert "has 1 replica(s), [bus] replicas says 3" in text and "duplicate window 10 s" in text
        assert "max_age 86400 s" in text
    finally:
        await store.close()


async def test_a_node_stops_promptly_while_the_bus_is_still_unreachable(tmp_path: Path) -> None:
    from tests.bus.cluster import free_port

    store = await publisher(tmp_path, BusConfig(servers=[f"nats://127.0.0.1:{free_port()}"]))
    with pytest.raises(BusUnavailable):
        await store.append([open_event(1)])
    await asyncio.wait_for(store.close(), 10)
    assert store.held == 1


async def test_a_stream_deleted_while_running_is_created_again(
        tmp_path: Path, nats_factory: Callable[[int], NatsCluster]) -> None:
    cluster = nats_factory(1)
    store = await publisher(tmp_path, BusConfig(servers=cluster.urls, publish_timeout=1.0))
    try:
        await store._bus.ready.wait()
        client = await nats.connect(cluster.urls[0])
        await client.jetstream().delete_stream("ENGAGED_EVENTS")
        await client.close()
        with pytest.raises(BusUnavailable):
            await store.append([open_event(1)])
        for _ in range(300):  # the caller's retries, as the spool and the journal make them
            try:
                await store.append([open_event(1)])
                break
            except BusUnavailable:
                await asyncio.sleep(0.1)
        assert [m.headers[MSG_ID] for m in await published(cluster.urls[0]) if m.headers] == [open_event(1).event_id]
    finally:
        await store.close()
