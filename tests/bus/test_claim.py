"""NodeClaim: one node per [bus] node_id, checked on a real nats-server; a second `engaged serve` with it stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from engaged.bus.claim import NodeClaim
from engaged.bus.connection import BusConnection
from engaged.config import BusConfig
from engaged.errors import ConfigError
from engaged.testing.server import ServerProcess, wait_until, write_config
from tests.bus.cluster import NatsCluster
from tests.bus.publishing import until
from tests.conftest import TEST_SERVER_DEFAULTS


@contextlib.asynccontextmanager
async def connected(cluster: NatsCluster) -> AsyncIterator[BusConnection]:
    connection = BusConnection(BusConfig(servers=cluster.urls))
    connection.start()
    try:
        await asyncio.wait_for(connection.ready.wait(), 30)
        yield connection
    finally:
        await connection.stop()


class Clashes:
    def __init__(self) -> None:
        self.seen: list[ConfigError] = []

    def __call__(self, error: ConfigError) -> None:
        self.seen.append(error)


async def test_a_node_id_held_by_another_node_is_refused_and_the_same_node_takes_its_own_over(
        nats_factory: Callable[[int], NatsCluster]) -> None:
    cluster = nats_factory(1)
    async with connected(cluster) as first, connected(cluster) as second:
        held = NodeClaim(first, 3, "host-a:/var/lib/engaged", Clashes())
        await held.start()
        other = NodeClaim(second, 3, "host-b:/var/lib/engaged", Clashes())
        with pytest.raises(ConfigError) as refused:
            await other.start()
        [problem] = refused.value.problems
        assert problem.startswith("bus.node_id: node_id 3 is held by host-a:/var/lib/engaged (pid ")
        assert problem.endswith("give each node its own node_id")
        again = NodeClaim(second, 3, "host-a:/var/lib/engaged", Clashes())  # a restart of the same node
        await again.start()
        neighbour = NodeClaim(second, 4, "host-b:/var/lib/engaged", Clashes())  # another id is free
        await neighbour.start()
        for claim in (again, neighbour, held):
            await claim.stop()


async def test_a_stopped_node_gives_its_id_back_and_a_crashed_one_keeps_it_until_the_claim_expires(
        nats_factory: Callable[[int], NatsCluster]) -> None:
    cluster = nats_factory(1)
    async with connected(cluster) as first, connected(cluster) as second:
        stopped = NodeClaim(first, 1, "host-a:/d", Clashes(), ttl=5.0)
        await stopped.start()
        await stopped.stop()
        successor = NodeClaim(second, 1, "host-b:/d", Clashes(), ttl=5.0)
        await successor.start()  # at once: the key was deleted
        crashed = NodeClaim(first, 2, "host-a:/d", Clashes(), ttl=5.0)
        await crashed.start()
        assert crashed._task is not None
        crashed._task.cancel()  # it stops refreshing without giving the key back, as a SIGKILL would
        late = NodeClaim(second, 2, "host-b:/d", Clashes(), ttl=5.0)
        with pytest.raises(ConfigError):
            await late.start()
        refused_until_expiry = 0

        async def try_claim() -> bool:
            nonlocal refused_until_expiry
            try:
                await NodeClaim(second, 2, "host-b:/d", Clashes(), ttl=5.0).start()
            except ConfigError:
                refused_until_expiry += 1
                return False
            return True

        deadline = asyncio.get_running_loop().time() + 30
        while not await try_claim():
            assert asyncio.get_running_loop().time() < deadline, "the crashed node's claim never expired"
            await asyncio.sleep(0.2)
        await successor.stop()


async def test_a_clash_found_while_running_is_reported(nats_factory: Callable[[int], NatsCluster]) -> None:
    cluster = nats_factory(1)
    async with connected(cluster) as connection:
        clashes = Clashes()
        claim = NodeClaim(connection, 5, "host-a:/d", clashes, ttl=1.2)  # refreshed every 0.2 s
        await claim.start()
        kv = await connection.jetstream().key_value(claim.bucket)
        # another node wrote the key while this one could not see the bus (a partition at its start)
        await kv.put("node-5", json.dumps({"holder": "host-b:/d", "pid": 1, "at": 0}).encode())
        await until(lambda: bool(clashes.seen))
        assert "node_id 5 is held by host-b:/d" in clashes.seen[0].problems[0]
        await claim.stop()


def test_a_second_serve_with_the_same_node_id_stops_with_the_reason(
        nats_factory: Callable[[int], NatsCluster], tmp_path: Path) -> None:
    cluster = nats_factory(1)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    configs = [write_config(tmp_path / name, TEST_SERVER_DEFAULTS + cluster.toml(node_id=7),
                            data_dir=tmp_path / name / "data") for name in ("a", "b")]
    first = ServerProcess(configs[0]).start(timeout=120)
    try:
        second = subprocess.run([sys.executable, "-m", "engaged", "serve", "--config", str(configs[1])],
                                capture_output=True, text=True, check=False, timeout=120)
        assert second.returncode == 2, second.stderr
        assert "bus.node_id: node_id 7 is held by " in second.stderr, second.stderr
        assert str(tmp_path / "a" / "data") in second.stderr, second.stderr
    finally:
        assert first.stop() == 0, "\n".join(first.log[-30:])


def test_a_serve_that_finds_its_node_id_taken_while_running_stops_with_exit_2(
        nats_factory: Callable[[int], NatsCluster], tmp_path: Path) -> None:
    cluster = nats_factory(1)
    config = write_config(tmp_path, TEST_SERVER_DEFAULTS + cluster.toml(node_id=9), data_dir=tmp_path / "data")
    server = ServerProcess(config).start(timeout=120)

    async def take() -> None:  # another node wrote the key while this one could not see the bus
        async with connected(cluster) as connection:
            kv = await connection.jetstream().key_value("ENGAGED_EVENTS_NODES")
            await kv.put("node-9", json.dumps({"holder": "host-b:/d", "pid": 1, "at": 0}).encode())

    asyncio.run(take())
    assert server.process is not None
    code = server.process.wait(120)  # the next refresh (every 5 s) finds the clash
    assert code == 2, "\n".join(server.log)
    wait_until(lambda: any("node_id 9 is held by host-b:/d" in line for line in server.log), 30)  # log read to EOF
