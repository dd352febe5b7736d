"""Tracker benchmark helpers: a tracker process, nginx `return 302`, wrk with a rotating Lua script.

Run as `python bench/_tracker_harness.py worker DATA_DIR N PORT` it is tracker worker N (SO_REUSEPORT on
127.0.0.1:PORT, 0: any); as `... loader DATA_DIR [POSTGRES_DSN]` it is the journal loader into SQLite in
DATA_DIR (or the DSN). Both run on uvloop, stop on SIGTERM and then print their metrics as one JSON line.
Without those arguments (as `make bench` runs it) it does nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engaged.keys import Keyring
from engaged.recipient import RecipientIdentity, TrackingPlan
from engaged.tokens import RecipientLinks

BROWSER_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Safari/537.36")
_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def pinned(command: list[str], cpu: int) -> list[str]:
    """`command` under `taskset -c cpu` when taskset exists and there is more than one CPU."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu), *command]
    return command


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: str


def run_wrk(url: str, script: Path, seconds: int, connections: int = 50, cpu: int | None = 1) -> WrkResult:
    """wrk -t1 against `url` (on CPU 1 unless `cpu` is None) with the Lua `script`; rate and latency percentiles."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    command = pinned(command, cpu) if cpu is not None else command
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    latencies = {int(p): float(value) * _UNITS[unit] for p, value, unit in _LATENCY.findall(output)}
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", output)
    if rate is None or total is None or 50 not in latencies or 99 not in latencies:
        raise RuntimeError(f"cannot read wrk output:\n{output}")
    return WrkResult(float(rate.group(1)), latencies[50], latencies[99], int(total.group(1)),
                     errors.group(0) if errors else "")


def write_lua(path: Path, paths: list[str]) -> Path:
    """A wrk script that sends GETs rotating through `paths`, with a browser's User-Agent."""
    table = ",\n".join(json.dumps(item) for item in paths)
    path.write_text(
        f"local paths = {{\n{table}\n}}\nlocal n = 0\n"
        "request = function()\n  n = n + 1\n"
        f'  return wrk.format("GET", paths[(n % #paths) + 1], {{["User-Agent"] = {json.dumps(BROWSER_UA)}}})\n'
        "end\n")
    return path


def click_paths(keyring: Keyring, address: str, count: int) -> list[str]:
    """Paths of `count` valid click links, one per message (so no burst rule fires)."""
    now = int(time.time())
    paths = []
    for n in range(count):
        identity = RecipientIdentity(
            message_id=f"bench{n:05d}", transmission_id="7000", rcpt_to=f"user{n}@example.com",
            raw_rcpt_to=f"user{n}@example.com", injection_time=now - 3600, campaign_id="bench", tags=("bench",),
            metadata={"user_id": str(n), "plan": "gold"})
        links = RecipientLinks(keyring, identity, TrackingPlan(tracking_domain=address, link_expiry=3600 + 86400))
        url = links.click_url(f"https://shop.example.com/item/{n}?utm_source=mail", "item", None, False)
        paths.append(url.split(address, 1)[1])
    return paths


def start_nginx(directory: Path, port: int, workers: str = "1") -> subprocess.Popen[bytes] | None:
    """nginx answering every request with `302 https://example.com/`; None if missing.

    One worker is pinned to CPU 0 like engaged's one worker; `workers = "auto"` runs unpinned.
    """
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if binary is None:
        return None
    temp = directory / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text(
        f"worker_processes {workers};\ndaemon off;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log;\n"
        "worker_rlimit_nofile 20000;\nevents { worker_connections 4096; }\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {temp};\n  proxy_temp_path {temp};\n"
        f"  fastcgi_temp_path {temp};\n  uwsgi_temp_path {temp};\n  scgi_temp_path {temp};\n"
        f"  server {{ listen 127.0.0.1:{port} reuseport; location / {{ return 302 https://example.com/; }} }}\n}}\n")
    command = [binary, "-c", str(config), "-p", str(directory)]
    process = subprocess.Popen(pinned(command, 0) if workers == "1" else command,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not _wait_port(port, process):
        process.kill()
        return None
    return process


def _wait_port(port: int, process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 10) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Child:
    """This file run as a tracker worker or as the journal loader; its metrics come back on SIGTERM."""

    def __init__(self, args: list[str], cpu: int | None, ready_text: str, script: str = __file__) -> None:
        command = [sys.executable, script, *args]
        self.process = subprocess.Popen(pinned(command, cpu) if cpu is not None else command,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.address = ""
        self.log: list[str] = []
        self._ready_text = ready_text
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        if not ready.wait(60) or not any(ready_text in line for line in self.log):
            self.process.kill()
            raise RuntimeError("the child did not start:\n" + "\n".join(self.log[-20:]))

    def _read(self, ready: threading.Event) -> None:
        if self.process.stderr is None:
            return
        for line in self.process.stderr:
            self.log.append(line.rstrip("\n"))
            if self._ready_text in line:
                if "listening on" in line:
                    self.address = line.split("listening on ", 1)[1].split()[0]
                ready.set()
        ready.set()

    def stop(self) -> dict[str, float]:
        """SIGTERM; the child's metrics once it has finished and exited."""
        self.process.send_signal(signal.SIGTERM)
        stdout, _ = self.process.communicate(timeout=300)
        for line in reversed(stdout.splitlines()):
            if line.startswith("{"):
                metrics: dict[str, float] = json.loads(line)
                return metrics
        raise RuntimeError("the child printed no metrics:\n" + "\n".join(self.log[-20:]))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)


class TrackerWorkers:
    """`count` tracker workers on one SO_REUSEPORT address and one journal loader, like `engaged serve`.

    One worker runs on CPU 0 and the loader on CPU 1 (with wrk); several run unpinned.
    """

    def __init__(self, data_dir: Path, count: int, dsn: str | None = None, durable: bool = True) -> None:
        self.loader = Child(["loader", str(data_dir), *([dsn] if dsn else [])], 1 if count == 1 else None,
                            "loader following")
        self.workers: list[Child] = []
        try:
            port = "0"
            for number in range(count):
                child = Child(["worker", str(data_dir), str(number), port, *([] if durable else ["nosync"])],
                              0 if count == 1 else None, "tracker listening on")
                self.workers.append(child)
                port = child.address.rpartition(":")[2]
        except BaseException:
            self.kill()
            raise
        self.address = self.workers[0].address

    @property
    def pids(self) -> list[int]:
        return [child.process.pid for child in self.workers]

    def stop(self) -> tuple[dict[str, float], dict[str, float]]:
        """Stop the workers, then the loader (which stores what is left); (summed worker metrics, loader's)."""
        total: dict[str, float] = {}
        for child in self.workers:
            for name, value in child.stop().items():
                total[name] = total.get(name, 0) + value
        return total, self.loader.stop()

    def kill(self) -> None:
        for child in [*self.workers, self.loader]:
            if child.process.poll() is None:
                child.kill()


async def _worker(data_dir: Path, number: int, port: int, durable: bool) -> None:
    from engaged.config import Config, EngagementTrackerConfig
    from engaged.events.ids import EventIdGenerator
    from engaged.keys import load_keyring
    from engaged.tracker.service import TrackerService

    config = Config(data_dir=str(data_dir), engagement_tracker=EngagementTrackerConfig(listen=f"127.0.0.1:{port}"))
    service = TrackerService(config, load_keyring(data_dir), ids=EventIdGenerator(), worker=number, reuse_port=True,
                             durable=durable)
    await service.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await service.stop()
    print(json.dumps(service.metrics()), flush=True)


async def _loader(data_dir: Path, dsn: str | None) -> None:
    from engaged.events.store_postgres import PostgresEventStore
    from engaged.events.store_sqlite import SqliteEventStore
    from engaged.tracker.loader import JournalLoader, follow

    store = PostgresEventStore(dsn) if dsn else SqliteEventStore(data_dir / "events.sqlite3")
    await store.open()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    loader = JournalLoader(data_dir, store)
    logging.getLogger("engaged").info("loader following %s", data_dir)
    await follow(loader, stop)
    await store.close()
    print(json.dumps(loader.metrics()), flush=True)


if __name__ == "__main__" and sys.argv[1:2] in (["worker"], ["loader"]):
    import uvloop

    logging.basicConfig(level=logging.INFO, format="engaged: %(message)s", stream=sys.stderr)
    if sys.argv[1] == "worker":
        uvloop.run(_worker(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:6] != ["nosync"]))
    else:
        uvloop.run(_loader(Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
