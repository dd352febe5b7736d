"""Delivery throughput: spool to a Postfix smtp-sink receiver (relay mode), and injection to delivery."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import free_port, measure, pin_self, start_engaged, start_smtp_sink
from injection import html_20k, plain_1k

COUNT = 2000


def delivered(data_dir: Path) -> int:
    path = data_dir / "events.sqlite3"
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT count(*) FROM events WHERE type = 'delivery'").fetchone()
        return int(row[0])
    finally:
        conn.close()


def wait_delivered(data_dir: Path, count: int, limit: float = 180.0) -> None:
    deadline = time.monotonic() + limit
    while delivered(data_dir) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {delivered(data_dir)} of {count} delivered after {limit} s")
        time.sleep(0.05)


def relay_to(port: int, extra: str = "") -> str:
    return (f'[delivery]\nmode = "relay"\nrelay = "127.0.0.1:{port}"\nworkers = 32\n'
            f"max_connections_per_destination = 20\n{extra}")


def run_case(body: bytes, sink: subprocess.Popen[bytes], sink_port: int) -> tuple[float, float]:
    """(spool-to-sink msg/s draining a full spool, injection-to-delivered msg/s)."""
    server, tmp = start_engaged(relay_to(sink_port))
    data_dir = Path(tmp.name) / "data"
    try:
        host, port = server.smtp
        started = time.perf_counter()
        measure(host, port, body, 20, COUNT // 20)
        wait_delivered(data_dir, COUNT)
        end_to_end = COUNT / (time.perf_counter() - started)
    finally:
        server.stop()
        tmp.cleanup()
    # Fill the spool while the sink is frozen (SIGSTOP: attempts hang, none completes), kill the
    # server, thaw the sink, and time a fresh server draining the whole spool.
    server, tmp = start_engaged(relay_to(sink_port))
    data_dir = Path(tmp.name) / "data"
    try:
        host, port = server.smtp
        os.kill(sink.pid, signal.SIGSTOP)
        try:
            measure(host, port, body, 20, COUNT // 20)
            server.kill()
        finally:
            os.kill(sink.pid, signal.SIGCONT)
        started = time.perf_counter()
        server.start()
        wait_delivered(data_dir, COUNT)
        drain = COUNT / (time.perf_counter() - started)
    finally:
        server.stop()
        tmp.cleanup()
    return drain, end_to_end


def main() -> int:
    pin_self(1)
    sink_port = free_port()
    sink = start_smtp_sink(sink_port)
    if sink is None:
        print("smtp-sink not installed (Debian package postfix): nothing to deliver to")
        return 0
    try:
        print(f"{'case':14} {'sink accepts msg/s':>19} {'spool->sink msg/s':>18} {'inject->delivered msg/s':>24}")
        for name, body in (("1 KB plain", plain_1k()), ("20 KB HTML", html_20k())):
            sink_rate = measure("127.0.0.1", sink_port, body, 20, COUNT // 20)
            drain, end_to_end = run_case(body, sink, sink_port)
            print(f"{name:14} {sink_rate:19.0f} {drain:18.0f} {end_to_end:24.0f}")
    finally:
        sink.kill()
    print(f"{COUNT} messages per case, 20 injecting sessions, relay mode with connection reuse to smtp-sink;")
    print("'sink accepts' is the receiver's own rate from our load generator, for reference.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
