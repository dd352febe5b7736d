"""Tracker benchmark helpers: a tracker process, nginx `return 302`, wrk with a rotating Lua script.

Run as `python bench/_tracker_harness.py serve DATA_DIR [POSTGRES_DSN]` it is the tracker process: a
TrackerService on 127.0.0.1:0 with SQLite in DATA_DIR (or the DSN), on uvloop, stopped by SIGTERM, after
which it prints its metrics as one JSON line. Without `serve` (as `make bench` runs it) it does nothing.
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
from engaged.tokens import LinkData, RecipientLinks

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


def run_wrk(url: str, script: Path, seconds: int, connections: int = 50) -> WrkResult:
    """wrk -t1 against `url` on CPU 1 with the Lua `script`; throughput and latency percentiles."""
    command = pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url], 1)
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
        links = RecipientLinks(keyring, LinkData(
            message_id=f"bench{n:05d}", transmission_id="7000", rcpt_to=f"user{n}@example.com",
            raw_rcpt_to=f"user{n}@example.com", campaign_id="bench", tags=("bench",),
            metadata={"user_id": str(n), "plan": "gold"}, tracking_domain=address, expires=now + 86400,
            injection_time=now - 3600))
        url = links.click_url(f"https://shop.example.com/item/{n}?utm_source=mail", "item", None, False)
        paths.append(url.split(address, 1)[1])
    return paths


def start_nginx(directory: Path, port: int) -> subprocess.Popen[bytes] | None:
    """nginx (one worker, CPU 0) answering every request with `302 https://example.com/`; None if missing."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if binary is None:
        return None
    temp = directory / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text(
        f"worker_processes 1;\ndaemon off;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {temp};\n  proxy_temp_path {temp};\n"
        f"  fastcgi_temp_path {temp};\n  uwsgi_temp_path {temp};\n  scgi_temp_path {temp};\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ return 302 https://example.com/; }} }}\n}}\n")
    process = subprocess.Popen(pinned([binary, "-c", str(config), "-p", str(directory)], 0),
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


class TrackerProcess:
    """This file run as the tracker process, pinned to CPU 0."""

    def __init__(self, data_dir: Path, dsn: str | None = None) -> None:
        command = [sys.executable, __file__, "serve", str(data_dir), *([dsn] if dsn else [])]
        self.process = subprocess.Popen(pinned(command, 0), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.address = ""
        self.log: list[str] = []
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        if not ready.wait(60) or not self.address:
            self.process.kill()
            raise RuntimeError("the tracker did not start:\n" + "\n".join(self.log[-20:]))

    def _read(self, ready: threading.Event) -> None:
        if self.process.stderr is None:
            return
        for line in self.process.stderr:
            self.log.append(line.rstrip("\n"))
            if "tracker listening on " in line:
                self.address = line.split()[-1]
                ready.set()
        ready.set()

    def stop(self) -> dict[str, int]:
        """SIGTERM; the tracker's metrics once it has loaded its journal and exited."""
        self.process.send_signal(signal.SIGTERM)
        stdout, _ = self.process.communicate(timeout=120)
        for line in reversed(stdout.splitlines()):
            if line.startswith("{"):
                metrics: dict[str, int] = json.loads(line)
                return metrics
        raise RuntimeError("the tracker printed no metrics:\n" + "\n".join(self.log[-20:]))


async def _serve(data_dir: Path, dsn: str | None) -> None:
    from engaged.config import Config, EngagementTrackerConfig
    from engaged.events.ids import EventIdGenerator
    from engaged.events.store_postgres import PostgresEventStore
    from engaged.events.store_sqlite import SqliteEventStore
    from engaged.keys import load_keyring
    from engaged.tracker.service import TrackerService

    store = PostgresEventStore(dsn) if dsn else SqliteEventStore(data_dir / "events.sqlite3")
    await store.open()
    config = Config(data_dir=str(data_dir), engagement_tracker=EngagementTrackerConfig(listen="127.0.0.1:0"))
    service = TrackerService(config, store, load_keyring(data_dir), ids=EventIdGenerator())
    await service.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await service.stop()
    await store.close()
    print(json.dumps(service.metrics()), flush=True)


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    import uvloop

    logging.basicConfig(level=logging.INFO, format="engaged: %(message)s", stream=sys.stderr)
    uvloop.run(_serve(Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
