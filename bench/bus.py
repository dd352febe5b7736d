"""Bus benchmark: tracker events through NATS JetStream into PostgreSQL, against one node's direct path.

Cases, each on a fresh PostgreSQL database, with one tracker worker per node:
- `direct`: one node with every role and no bus; its journal loader appends to PostgreSQL.
- `bus R1`: a `tracker` node publishing to a single JetStream server and an `events` node consuming.
- `bus R3`: the same on a 3-node JetStream cluster with a 3-replica stream.

Each case first drives `wrk -t1 -c50` at click links for SECONDS: events/s is every answered click
divided by the time from the start of the load until the last of them is visible in PostgreSQL (the
tracker, the bus and the store share the machine's cores). Then PROBES clicks, PROBE_CONCURRENCY at a
time, each on a link of its own, poll the store for their row: latency is "302 received → row visible"
(p50/p99) at that light load. Ratios are against `direct` from the same run.

`backlog`: BACKLOG events published while no events node runs (a consumer lagging by that many), then an
`events` node started: how fast it drains the stream into PostgreSQL, and its peak RSS meanwhile.
`--backlog 1000000` is the issue's million.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import httpx

from bench._harness import PG_ADMIN_DSN, free_port, pg_database, pg_fetchval
from bench._tracker_harness import BROWSER_UA, click_paths, run_wrk, write_lua
from engaged.keys import Keyring, load_keyring
from engaged.recipient import RecipientIdentity, TrackingPlan
from engaged.testing.server import ServerProcess, write_config
from engaged.tokens import RecipientLinks

SECONDS = 10
PROBES = 400
PROBE_CONCURRENCY = 4
BACKLOG = 200_000
PUBLISH_BATCH = 5000
CONNECTIONS = 50
LINKS = 300
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


@dataclass
class Result:
    label: str
    answered: int = 0
    events_per_second: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def start_nats(root: Path, size: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """`size` nats-servers with JetStream (routed into a cluster when size > 1), and their URLs."""
    ports = [(free_port(), free_port()) for _ in range(size)]
    processes = []
    for index, (port, cluster) in enumerate(ports):
        args = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(root / f"nats{index}"),
                "-n", f"bench{index}"]
        if size > 1:
            routes = ",".join(f"nats://127.0.0.1:{c}" for _, c in ports if c != cluster)
            args += ["--cluster_name", "bench", "--cluster", f"nats://127.0.0.1:{cluster}", "--routes", routes]
        processes.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for port, _ in ports:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
    return processes, [f"nats://127.0.0.1:{port}" for port, _ in ports]


def node(root: Path, name: str, dsn: str, keys: Path, extra: str, roles: str) -> ServerProcess:
    directory = root / name
    (directory / "data" / "keys").mkdir(parents=True, exist_ok=True)
    for path in keys.iterdir():
        shutil.copy2(path, directory / "data" / "keys" / path.name)
    config = write_config(directory, f'[events]\nstore = "{dsn}"\n[server]\nworkers = 1\n{extra}')
    expect = ["tracker", "api"] if "tracker" in roles else ["api"]
    return ServerProcess(config, args=["--role", roles], expect=expect).start(timeout=120)


async def _count(dsn: str, sql: str, *args: object) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(sql, *args) or 0)
    finally:
        await connection.close()


async def probe(address: str, paths: list[str], dsn: str, concurrency: int) -> list[float]:
    """Click each path (`concurrency` at a time), then poll the store for its row: the latencies in ms."""
    latencies: list[float] = []
    queue = list(enumerate(paths))

    async def one(client: httpx.AsyncClient, connection: asyncpg.Connection) -> None:
        while queue:
            n, path = queue.pop()
            response = await client.get(f"http://{address}{path}", timeout=10)
            answered = time.perf_counter()
            if response.status_code != 302:
                continue
            deadline = answered + 30
            while time.perf_counter() < deadline:
                if await connection.fetchval("SELECT 1 FROM events WHERE message_id = $1", f"probe{n:05d}"):
                    latencies.append((time.perf_counter() - answered) * 1000)
                    break
                await asyncio.sleep(0.001)

    connections = [await asyncpg.connect(dsn) for _ in range(concurrency)]
    try:
        async with httpx.AsyncClient() as client:
            await asyncio.gather(*(one(client, connection) for connection in connections))
    finally:
        for connection in connections:
            await connection.close()
    return latencies


def probe_paths(keyring: Keyring, address: str, count: int) -> list[str]:
    """Click links of their own (message ids probe00000…), so the probe can find its rows."""
    now = int(time.time())
    paths = []
    for n in range(count):
        identity = RecipientIdentity(message_id=f"probe{n:05d}", transmission_id="7001", rcpt_to=f"p{n}@example.com",
                                     raw_rcpt_to=f"p{n}@example.com", injection_time=now - 3600, campaign_id="probe")
        links = RecipientLinks(keyring, identity, TrackingPlan(tracking_domain=address, link_expiry=90000))
        paths.append(links.click_url("https://shop.example.com/probe", "probe", None, False).split(address, 1)[1])
    return paths


def run_case(root: Path, label: str, replicas: int | None, seconds: int) -> Result:
    name = f"engaged_bench_bus_{secrets.token_hex(3)}"
    asyncio.run(pg_fetchval(f'CREATE DATABASE "{name}"'))
    dsn = pg_database(name)
    case = root / label.replace(" ", "_")
    case.mkdir()
    keys_root = case / "keyring"
    load_keyring(keys_root)
    keys = keys_root / "keys"
    nats: list[subprocess.Popen[bytes]] = []
    nodes: list[ServerProcess] = []
    result = Result(label)
    try:
        if replicas is None:
            front = node(case, "node", dsn, keys, "", "smtp,tracker,events,api")
            nodes.append(front)
        else:
            nats, servers = start_nats(case, replicas)
            urls = ", ".join(f'"{url}"' for url in servers)
            bus = f"[bus]\nservers = [{urls}]\nreplicas = {replicas}\n"
            nodes.append(node(case, "events", dsn, keys, bus + "node_id = 2\n", "events"))
            front = node(case, "front", dsn, keys, bus + "node_id = 1\n", "tracker")
            nodes.append(front)
        host, port = front.tracker
        address = f"{host}:{port}"
        script = write_lua(case / "clicks.lua", click_paths(load_keyring(keys_root), address, LINKS))
        started = time.perf_counter()
        wrk = run_wrk(f"http://{address}", script, seconds, CONNECTIONS, cpu=None)
        answered = wrk.requests
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            stored = asyncio.run(_count(dsn, "SELECT count(*) FROM events"))
            if stored >= answered:
                break
            time.sleep(0.01)
        finished = time.perf_counter()
        result.answered = stored
        result.events_per_second = stored / (finished - started)
        paths = probe_paths(load_keyring(keys_root), address, PROBES)
        result.latencies_ms = asyncio.run(probe(address, paths, dsn, PROBE_CONCURRENCY))
        if wrk.errors:
            print(f"  {label}: wrk reported {wrk.errors}")
    finally:
        for server in nodes:
            if server.process is not None:
                server.stop(60)
        for process in nats:
            process.kill()
            process.wait(10)
        asyncio.run(pg_fetchval(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return result


async def _publish_backlog(url: str, count: int) -> float:
    """Publish `count` open events through BusEventStore in batches; the publish rate (events/s)."""
    from engaged.bus.connection import BusConnection
    from engaged.bus.publisher import BusEventStore
    from engaged.config import BusConfig
    from engaged.events.model import OpenEvent
    from engaged.events.store_sqlite import SqliteEventStore

    reads = SqliteEventStore(Path(tempfile.mkdtemp(prefix="engaged-bench-reads-")) / "unused.sqlite3")
    connection = BusConnection(BusConfig(servers=[url], publish_timeout=30.0))
    connection.start()
    await asyncio.wait_for(connection.ready.wait(), 30)
    publisher = BusEventStore(reads, connection)
    base = 7_200_000_000_000_000
    started = time.perf_counter()
    for first in range(0, count, PUBLISH_BATCH):
        await publisher.append([OpenEvent(
            event_id=str(base + n), timestamp=f"{1_700_000_000 + n % 86400}.000", message_id=f"lag{n // 2}",
            transmission_id="t", campaign_id="backlog", customer_id="1", rcpt_to=f"u{n % 1000}@example.com",
            raw_rcpt_to=f"u{n % 1000}@example.com", rcpt_meta={}, rcpt_tags=[], user_agent=BROWSER_UA,
            ip_address="192.0.2.1") for n in range(first, min(first + PUBLISH_BATCH, count))])
    rate = count / (time.perf_counter() - started)
    await connection.stop()
    return rate


def backlog(root: Path, count: int) -> str:
    """A consumer `count` events behind: drain rate into PostgreSQL and the events node's peak RSS."""
    name = f"engaged_bench_lag_{secrets.token_hex(3)}"
    asyncio.run(pg_fetchval(f'CREATE DATABASE "{name}"'))
    dsn = pg_database(name)
    case = root / "backlog"
    case.mkdir()
    keys_root = case / "keyring"
    load_keyring(keys_root)
    nats, servers = start_nats(case, 1)
    events: ServerProcess | None = None
    try:
        publish_rate = asyncio.run(_publish_backlog(servers[0], count))
        started = time.perf_counter()
        events = node(case, "events", dsn, keys_root / "keys", f'[bus]\nservers = ["{servers[0]}"]\nnode_id = 2\n',
                      "events")
        peak = 0
        stored = 0
        deadline = time.monotonic() + 1800
        while stored < count and time.monotonic() < deadline:
            stored = asyncio.run(_count(dsn, "SELECT count(*) FROM events"))
            peak = max(peak, _node_rss_kib(events))
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        return (f"backlog  {count:,} events: published at {publish_rate:,.0f}/s; drained into PostgreSQL at "
                f"{stored / seconds:,.0f} events/s ({seconds:.1f} s incl. the node's start), node process peak "
                f"RSS {peak / 1024:.0f} MiB")
    finally:
        if events is not None and events.process is not None:
            events.stop(60)
        for process in nats:
            process.kill()
            process.wait(10)
        asyncio.run(pg_fetchval(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _node_rss_kib(server: ServerProcess) -> int:
    pid = server.pids().get("node")
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def report(results: list[Result]) -> None:
    base = results[0]
    for result in results:
        ratio = result.events_per_second / base.events_per_second if base.events_per_second else float("nan")
        print(f"{result.label:<8} {result.events_per_second:>8,.0f} events/s ({ratio:4.2f}x direct)   "
              f"click->row p50 {result.percentile(0.5):7.1f} ms  p99 {result.percentile(0.99):7.1f} ms   "
              f"({len(result.latencies_ms)} probes, {result.answered} events)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=SECONDS)
    parser.add_argument("--backlog", type=int, default=BACKLOG, help="events of the lagging-consumer case (0: skip)")
    args = parser.parse_args()
    if not (os.path.exists(NATS_SERVER) and shutil.which("wrk")):
        print("skipped: needs nats-server and wrk")
        return 0
    try:
        asyncio.run(pg_fetchval("SELECT 1"))
    except (OSError, asyncpg.PostgresError) as error:
        print(f"skipped: PostgreSQL unreachable at {PG_ADMIN_DSN}: {error}")
        return 0
    root = Path(tempfile.mkdtemp(prefix="engaged-bench-bus-"))
    try:
        results = [run_case(root, "direct", None, args.seconds), run_case(root, "bus R1", 1, args.seconds),
                   run_case(root, "bus R3", 3, args.seconds)]
        report(results)
        if args.backlog:
            print(backlog(root, args.backlog))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
