"""Story: the bus is down when the nodes start and again mid-run; the front node holds its events (the gauge
shows them) and everything reaches PostgreSQL once the bus is back, exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from engaged.testing.server import ServerProcess, wait_until
from tests.bus.cluster import NatsCluster
from tests.bus.nodes import Load, node_config, shared_keys, start, stored_rows

pytestmark = pytest.mark.slow


def held(front: ServerProcess) -> float:
    host, port = front.address("api")
    for line in httpx.get(f"http://{host}:{port}/metrics", timeout=10).text.splitlines():
        if line.startswith(("engaged_bus_held_events ", "engaged_bus_held_journal_bytes ")):
            value = float(line.split()[1])
            if value:
                return value
    return 0.0


def settled(dsn: str, load: Load) -> bool:
    accepted, answered, _ = load.snapshot()
    kinds = Counter((kind, message_id) for _, kind, message_id, _ in stored_rows(dsn))
    return all(kinds[("injection", m)] == 2 and kinds[("delivery", m)] == 2 for m in accepted) and \
        all(kinds[("click", m)] >= n for m, n in answered.items())


def test_a_bus_down_at_start_and_mid_run_holds_events_locally_and_loses_none(
        tmp_path: Path, pg_database: str) -> None:
    from tests.bus.cluster import NATS_SERVER
    from tests.conftest import require_tool

    require_tool("nats-server", NATS_SERVER)
    cluster = NatsCluster.create(tmp_path / "nats", 1)  # not started yet
    keys = shared_keys(tmp_path)
    bus = {"publish_timeout": 1.0, "ack_wait": 3.0}
    front = start(node_config(tmp_path, "front", pg_database, cluster, 1, keys, **bus), "smtp,tracker")
    events = start(node_config(tmp_path, "events", pg_database, cluster, 2, keys, **bus), "events")
    load = Load([front])
    try:
        load.run()
        wait_until(lambda: len(load.accepted) >= 5 and sum(load.clicks_answered.values()) >= 5, 120, interval=0.1)
        wait_until(lambda: held(front) > 0, 60, interval=0.2)
        assert stored_rows(pg_database) == [] or all(k != "click" for _, k, _, _ in stored_rows(pg_database))
        cluster.start()
        wait_until(lambda: settled(pg_database, load), 180, interval=0.5)

        cluster.nodes[0].kill()  # mid-run
        mark = len(load.accepted), sum(load.clicks_answered.values())
        wait_until(lambda: len(load.accepted) >= mark[0] + 5 and sum(load.clicks_answered.values()) >= mark[1] + 5,
                   120, interval=0.1)
        cluster.nodes[0].start()
        load.join()
        wait_until(lambda: settled(pg_database, load), 180, interval=0.5)
        rows = stored_rows(pg_database)
        per = Counter((kind, message_id, rcpt) for _, kind, message_id, rcpt in rows if kind != "click")
        assert [key for key, n in per.items() if n > 1] == []
        wait_until(lambda: held(front) == 0, 120, interval=0.5)
        lines = [line for line in front.log if "bus: " in line]
        assert any("cannot reach" in line and "events are kept locally meanwhile" in line for line in lines), lines
        assert any("bus: connected to" in line for line in lines) and any("reconnected to" in line for line in lines)
    except BaseException:
        print("\n".join(line for line in front.log if "bus: " in line)[-6000:])
        raise
    finally:
        load.join()
        front.stop(60)
        events.stop(60)
        cluster.stop()
