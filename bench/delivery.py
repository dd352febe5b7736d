"""Delivery throughput: spool to a Postfix smtp-sink receiver (relay mode), and injection to delivery; the cost of
DKIM signing (RSA-2048 and Ed25519) end to end and per composed copy, and of options.inline_css per copy."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import free_port, measure, pin_self, settle_filesystem, start_engaged, start_smtp_sink
from injection import html_20k, plain_1k

from engaged.config import DkimConfig
from engaged.delivery.compose import CopyComposer
from engaged.delivery.dkim import DkimSigner
from engaged.dkim_keys import generate_key
from engaged.keys import load_keyring
from engaged.recipient import TrackingPlan, identify
from engaged.spool.record import SpoolRecipient, SpoolRecord

COUNT = 2000
# Each server's directory is removed at the end of the run, not after the server: on an ext4 without a
# journal the next server's new spool files would pay for the removed ones (_harness.CHEAP_CREATE_US).
FINISHED: list[tempfile.TemporaryDirectory[str]] = []


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


def run_case(body: bytes, sink: subprocess.Popen[bytes], sink_port: int, extra: str = "") -> tuple[float, float]:
    """(spool-to-sink msg/s draining a full spool, injection-to-delivered msg/s)."""
    server, tmp = start_engaged(relay_to(sink_port, extra))
    data_dir = Path(tmp.name) / "data"
    try:
        host, port = server.smtp
        started = time.perf_counter()
        measure(host, port, body, 20, COUNT // 20)
        wait_delivered(data_dir, COUNT)
        end_to_end = COUNT / (time.perf_counter() - started)
    finally:
        server.stop()
        FINISHED.append(tmp)
    # Fill the spool while the sink is frozen (SIGSTOP: attempts hang, none completes), kill the
    # server, thaw the sink, and time a fresh server draining the whole spool.
    server, tmp = start_engaged(relay_to(sink_port, extra))
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
        FINISHED.append(tmp)
    return drain, end_to_end


def dkim_config(keys: dict[str, Path], algorithm: str) -> str:
    return f'[[dkim]]\ndomain = "example.org"\nselector = "{algorithm}"\nprivate_key = "{keys[algorithm]}"\n'


STYLE = (b"<head><style>p { margin: 0 0 8px; color: #333; font-family: Arial, sans-serif }\r\n"
         b"a { color: #0066cc; text-decoration: none } body { background: #fff }</style></head>")


def compose_record(plan: TrackingPlan) -> SpoolRecord:
    now = time.time()
    identity = identify("bob@example.com", message_id="0" * 20, transmission_id="1", injection_time=now)
    return SpoolRecord(message_id="0" * 20, transmission_id="1", received_at=now, mail_from="a@example.org",
                       recipients=[SpoolRecipient(identity=identity, plan=plan, injection_event_id="1")])


def compose_costs(keys: dict[str, Path], rounds: int = 300) -> list[tuple[str, float]]:
    """Microseconds per composed copy of the 20 KB HTML message, tracked: without and with each DKIM key, and with
    options.inline_css (the same message with a <style> block of three rules, which restyle 340 elements)."""
    body = html_20k(tracking=True)
    tracked = TrackingPlan(open_tracking=True, click_tracking=True)
    inlined = TrackingPlan(open_tracking=True, click_tracking=True, inline_css=True)
    costs = []
    with tempfile.TemporaryDirectory() as directory:
        keyring = load_keyring(Path(directory))
        cases: list[tuple[str, DkimSigner | None, bytes, TrackingPlan]] = [("tracked", None, body, tracked)]
        cases += [(f"tracked + DKIM {algorithm}", DkimSigner.from_config([DkimConfig(
            domain="example.org", selector=algorithm, private_key=str(keys[algorithm]))]), body, tracked)
            for algorithm in ("rsa", "ed25519")]
        cases.append(("tracked + inline_css", None, body.replace(b"<html><body>", b"<html>" + STYLE + b"<body>"),
                      inlined))
        for name, signer, data, plan in cases:
            composer = CopyComposer(keyring, dkim=signer)
            record = compose_record(plan)
            composer(data, record, 0)
            started = time.perf_counter()
            for _ in range(rounds):
                composer(data, record, 0)
            costs.append((name, (time.perf_counter() - started) / rounds * 1e6))
    return costs


def main() -> int:
    pin_self(1)
    sink_port = free_port()
    sink = start_smtp_sink(sink_port)
    if sink is None:
        print("smtp-sink not installed (Debian package postfix): nothing to deliver to")
        return 0
    keys_dir = tempfile.TemporaryDirectory()
    settle_filesystem(Path(keys_dir.name))
    keys = {algorithm: Path(keys_dir.name) / f"{algorithm}.key" for algorithm in ("rsa", "ed25519")}
    for algorithm, path in keys.items():
        path.write_bytes(generate_key(algorithm))
    cases = [("1 KB plain", plain_1k(), ""), ("20 KB HTML", html_20k(), "")] + [
        (f"20 KB + {algorithm}", html_20k(), dkim_config(keys, algorithm)) for algorithm in ("rsa", "ed25519")
    ]
    try:
        print(f"{'case':16} {'sink accepts msg/s':>19} {'spool->sink msg/s':>18} {'inject->delivered msg/s':>24}"
              f" {'drain / sink':>13}")
        for name, body, extra in cases:
            sink_rate = measure("127.0.0.1", sink_port, body, 20, COUNT // 20)
            drain, end_to_end = run_case(body, sink, sink_port, extra)
            print(f"{name:16} {sink_rate:19.0f} {drain:18.0f} {end_to_end:24.0f} {drain / sink_rate:13.2f}")
    finally:
        sink.kill()
        for finished in FINISHED:
            finished.cleanup()
    print(f"{COUNT} messages per case, 20 injecting sessions, relay mode with connection reuse to smtp-sink;")
    print("'sink accepts' is the receiver's own rate from our load generator, for reference;")
    print("'+ rsa' / '+ ed25519': every copy DKIM-signed (RSA-2048, Ed25519) after rewriting.")
    costs = compose_costs(keys)
    base = costs[0][1]
    print(f"\n{'composing one copy (20 KB HTML)':34} {'us/copy':>9} {'vs tracked':>11}")
    for name, micros in costs:
        print(f"{name:34} {micros:9.0f} {micros / base:11.2f}")
    keys_dir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
