"""Story: engaged as four nodes on a 3-node JetStream cluster, with a NATS node, a front node (SIGKILL, mid-publish)
and the events node killed in turn under load, then every PostgreSQL connection cut; every accepted recipient's
events and every answered click end up in PostgreSQL exactly once.

Nodes: `smtp,tracker` ×2 (the fronts), `events` ×1 (the consumer into the store), `api` ×1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from engaged.testing.server import ServerProcess, wait_until
from tests.bus.cluster import NatsCluster
from tests.bus.nodes import Load, cut_connections, node_config, shared_keys, start, stored_rows

pytestmark = pytest.mark.slow

PHASE_MESSAGES = 8
PHASE_CLICKS = 8
SETTLE = 240.0  # seconds for the last held events to reach the store on a busy 2-core machine


def progress(load: Load, after: tuple[int, int], messages: int = PHASE_MESSAGES, clicks: int = PHASE_CLICKS) -> None:
    """Wait until the load got `messages` more accepted and `clicks` more answered than at `after`."""
    wait_until(lambda: (load.totals()[0] >= after[0] + messages and load.totals()[1] >= after[1] + clicks), 180,
               interval=0.1)


def test_four_nodes_lose_and_duplicate_nothing_through_nats_front_and_events_node_kills(
        tmp_path: Path, nats_factory: Callable[[int], NatsCluster], pg_database: str) -> None:
    cluster = nats_factory(3)
    keys = shared_keys(tmp_path)
    bus = {"replicas": 3, "ack_wait": 3.0, "publish_timeout": 2.0}
    configs = {name: node_config(tmp_path, name, pg_database, cluster, node_id, keys, **bus)
               for node_id, name in enumerate(["front-a", "front-b", "events", "api"])}
    nodes: dict[str, ServerProcess] = {}
    load: Load | None = None
    try:
        nodes["events"] = start(configs["events"], "events")
        nodes["api"] = start(configs["api"], "api")
        nodes["front-a"] = start(configs["front-a"], "smtp,tracker")
        nodes["front-b"] = start(configs["front-b"], "smtp,tracker")
        load = Load([nodes["front-a"], nodes["front-b"]])
        load.run()
        progress(load, (0, 0))

        cluster.nodes[0].kill()  # one NATS node: the stream keeps its quorum on the other two
        progress(load, load.totals())
        cluster.nodes[0].start()

        load.up[0] = False  # front A: SIGKILL of the whole node while it injects, answers and publishes
        nodes["front-a"].kill()
        progress(load, load.totals())
        nodes["front-a"].start(timeout=120)  # resumes its spool and its journal
        load.up[0] = True

        nodes["events"].kill()  # the consumer: the stream holds everything meanwhile
        progress(load, load.totals())
        nodes["events"] = start(configs["events"], "events")
        progress(load, load.totals())

        assert cut_connections(pg_database) > 0  # every node's PostgreSQL connections, as in a restart
        progress(load, load.totals())
        load.join()

        accepted, answered, tried = load.snapshot()

        def complete() -> list[tuple[str, str, str, str]] | None:
            rows = stored_rows(pg_database)
            kinds = Counter((kind, message_id) for _, kind, message_id, _ in rows)
            if all(kinds[("injection", m)] >= 2 and kinds[("delivery", m)] >= 2 for m in accepted) and \
                    all(kinds[("click", m)] >= n for m, n in answered.items()):
                return rows
            return None

        rows = wait_until(complete, SETTLE, interval=0.5)
        ids = Counter(event_id for event_id, _, _, _ in rows)
        assert [event_id for event_id, n in ids.items() if n > 1] == []
        per = Counter((kind, message_id, rcpt) for _, kind, message_id, rcpt in rows)
        for message_id, recipients in accepted.items():
            for rcpt in recipients:
                assert per[("injection", message_id, rcpt)] == 1, (message_id, rcpt)
                assert per[("delivery", message_id, rcpt)] == 1, (message_id, rcpt)
        clicks = Counter(message_id for _, kind, message_id, _ in rows if kind == "click")
        for message_id, count in answered.items():
            assert count <= clicks[message_id] <= tried[message_id], (message_id, count, clicks[message_id])
        assert sum(answered.values()) >= 5 * PHASE_CLICKS and len(accepted) >= 5 * PHASE_MESSAGES

        for name in ("front-a", "front-b"):  # a node without the api role still serves /metrics
            host, port = nodes[name].address("api")

            def nothing_held(host: str = host, port: int = port) -> bool:
                text = httpx.get(f"http://{host}:{port}/metrics", timeout=10).text
                return "engaged_bus_published_events_total" in text and "engaged_bus_held_events 0.0" in text

            # events whose publish failed are held (spool log, journal) until their own retry is acknowledged
            wait_until(nothing_held, 120, interval=0.5)
        host, port = nodes["api"].address("api")
        assert httpx.get(f"http://{host}:{port}/api/v1/events/message?per_page=1", timeout=10).status_code == 200
    finally:
        if load is not None:
            load.join()
        for node in nodes.values():
            if node.process is not None:
                node.stop(60)
