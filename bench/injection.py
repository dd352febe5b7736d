"""Injection throughput: messages/s accepted by engaged (durable spool on) against Postfix smtp-sink.

Every case runs against smtp-sink, engaged with `[server] workers = 1` (all its processes pinned to
CPU 0, like smtp-sink) and engaged with `workers = "auto"` (one worker per CPU, unpinned), one
after the other in the same run, each after one unmeasured pass of the same case (WARMUP_PASSES);
the load generator runs on CPU 1. Then the memory of each
process: idle, and with 1,000 idle SMTP sessions open across the workers.

Before it starts, it waits until creating a file is cheap again (_harness.settle_filesystem): on an
ext4 without a journal, like this machine's, whatever removed thousands of files just before (a test
suite, another run) makes every new file dear for about a minute, and engaged's capture delivery
creates two a copy. The cost is probed again before each case and printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    creation_cost,
    free_port,
    measure,
    pin_self,
    rss_kib,
    server_processes,
    settle_filesystem,
    start_engaged,
    start_smtp_sink,
    wait_delivered,
)

from engaged.testing.server import ServerProcess

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "html"


def plain_1k() -> bytes:
    head = b"From: bench@example.org\r\nTo: bob@example.com\r\nSubject: 1 KB plain\r\n\r\n"
    return head + (b"x" * 76 + b"\r\n") * ((1024 - len(head)) // 78)


def html_20k(tracking: bool = False) -> bytes:
    api = b'X-MSYS-API: {"campaign_id": "bench", "options": {"open_tracking": true, "click_tracking": true}}\r\n'
    head = (api if tracking else b"") + (
        b"From: bench@example.org\r\nTo: bob@example.com\r\nSubject: 20 KB HTML\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    )
    links = b"".join(b'<p><a href="https://shop.example.com/item/%d?utm_source=mail&amp;x=1">Item %d</a></p>\r\n'
                     % (i, i) for i in range(40))
    body = b"<html><body>\r\n" + links
    filler = b"<p>" + b"Lorem ipsum dolor sit amet. " * 2 + b"</p>\r\n"
    while len(head) + len(body) < 20 * 1024:
        body += filler
    return head + body + b"</body></html>\r\n"


CASES = [  # name, message, sessions, messages per session, recipients per message, personalised
    ("1 KB plain, 1 session", plain_1k(), 1, 600, 1, False),
    ("1 KB plain, 20 sessions", plain_1k(), 20, 60, 1, False),
    ("20 KB HTML, 1 session", html_20k(), 1, 400, 1, False),
    ("20 KB HTML, 20 sessions", html_20k(), 20, 40, 1, False),
    ("20 KB HTML tracked, 20 sessions", html_20k(True), 20, 40, 1, False),
    # Every message's HTML differs, as in a mail merge: nothing read of one document serves the next.
    ("20 KB tracked personalised, 20 sess", html_20k(True), 20, 40, 1, True),
    # Ten recipients a message: ten tracked copies of one document (msg/s counts messages, not copies).
    ("20 KB tracked x 10 rcpts, 20 sess", html_20k(True), 20, 10, 10, False),
]


WARMUP_PASSES = 1  # unmeasured passes of each case on each server before the measured one
IDLE_SESSIONS = 1000
# 1,000 idle sessions from one loopback address need more than the per-address default caps.
BENCH_CONFIG = "[smtp]\nmax_connections = 5000\nmax_connections_per_ip = 5000\nmax_idle_per_ip = 5000\n"


def warmed(address: tuple[str, int], directory: Path | None, body: bytes, sessions: int, count: int, rcpts: int,
           personalise: bool) -> float:
    """msg/s of the pass after WARMUP_PASSES unmeasured ones; with `directory` (an engaged server's), its backlog
    is delivered after each pass, so that it never runs beside the next. The first pass of a case on a fresh
    server was up to a third slower than the ones after it (new spool files, a cold store and caches)."""
    rate = 0.0
    for _ in range(1 + WARMUP_PASSES):
        rate = measure(*address, body, sessions, count, rcpts=rcpts, personalise=personalise)
        if directory is not None:
            wait_delivered(directory)
    return rate


async def _hold_sessions(host: str, port: int, count: int, ready: asyncio.Event, release: asyncio.Event) -> int:
    """Open `count` sessions and keep them idle until `release`; returns how many are still open then."""
    sessions: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection(host, port)
            if (await reader.readline()).startswith(b"220"):  # the greeting: the session exists on the server
                sessions.append((reader, writer))
        ready.set()
        await release.wait()
        return sum(1 for reader, _ in sessions if not reader.at_eof())
    finally:
        for _, writer in sessions:
            writer.close()


def memory(server: ServerProcess) -> list[tuple[str, int, int, int, int]]:
    """(process, idle RSS, idle PSS, RSS with 1,000 idle sessions, PSS with them), KiB."""
    pids = server_processes(server)
    idle = {name: rss_kib(pid) for name, pid in pids.items()}
    busy: dict[str, tuple[int, int]] = {}
    held = [0]

    async def run() -> None:
        ready, release = asyncio.Event(), asyncio.Event()
        host, port = server.smtp
        task = asyncio.create_task(_hold_sessions(host, port, IDLE_SESSIONS, ready, release))
        await ready.wait()
        await asyncio.sleep(1.0)  # let the workers settle (buffers allocated, timers armed)
        busy.update({name: rss_kib(pid) for name, pid in pids.items()})
        release.set()
        held[0] = await task

    asyncio.run(run())
    print(f"({held[0]} of {IDLE_SESSIONS} idle sessions still open when measured)")
    return [(name, *idle[name], *busy[name]) for name in pids]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="", help="only cases whose name contains this")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply messages per session")
    args = parser.parse_args()
    probes = tempfile.TemporaryDirectory(prefix="engaged-bench-probes-")
    waited, cost = settle_filesystem(Path(probes.name))
    sink_port = free_port()
    sink = start_smtp_sink(sink_port)
    single, tmp_single = start_engaged(BENCH_CONFIG, workers=1, pin=True)
    auto, tmp_auto = start_engaged(BENCH_CONFIG, workers="auto", pin=False)  # before pin_self: it inherits CPUs
    pin_self(1)
    workers = sum(1 for name in auto.pids() if name.startswith("worker"))
    print(f"engaged workers = 1 (pinned to CPU 0) and workers = auto ({workers} workers on {os.cpu_count()} CPUs, "
          "unpinned); load generator on CPU 1")
    print(f"file creation {cost:.0f} us a file after {waited:.0f} s settling (the create column: probed before "
          "each case; see _harness.CHEAP_CREATE_US)")
    print(f"{'case':36} {'smtp-sink':>10} {'workers=1':>10} {'ratio':>6} {'auto':>10} {'ratio':>6} {'create':>7}"
          "  msg/s")
    try:
        for name, body, sessions, per_session, rcpts, personalise in CASES:
            if args.cases not in name:
                continue
            count = max(int(per_session * args.scale), 1)
            create = creation_cost(Path(probes.name))
            load = (body, sessions, count, rcpts, personalise)
            theirs = warmed(("127.0.0.1", sink_port), None, *load) if sink else float("nan")
            one = warmed(single.smtp, Path(tmp_single.name), *load)
            every = warmed(auto.smtp, Path(tmp_auto.name), *load)
            print(f"{name:36} {theirs:10.0f} {one:10.0f} {one / theirs:6.2f} {every:10.0f} {every / theirs:6.2f} "
                  f"{create:5.0f}us")
        for label, server in (("workers = 1", single), ("workers = auto", auto)):
            print(f"\nmemory, {label} (KiB; PSS counts pages shared by forked processes once)")
            print(f"{'process':12} {'idle RSS':>10} {'idle PSS':>10} {'1k sess RSS':>12} {'1k sess PSS':>12} "
                  f"{'+RSS':>8}")
            rows = memory(server)
            for process, rss, pss, rss_busy, pss_busy in rows:
                print(f"{process:12} {rss:10d} {pss:10d} {rss_busy:12d} {pss_busy:12d} {rss_busy - rss:8d}")
            added = sum(row[3] - row[1] for row in rows)
            print(f"{'all':12} {sum(r[1] for r in rows):10d} {sum(r[2] for r in rows):10d} "
                  f"{sum(r[3] for r in rows):12d} {sum(r[4] for r in rows):12d} {added:8d}")
    finally:
        single.stop()
        auto.stop()
        tmp_single.cleanup()
        tmp_auto.cleanup()
        probes.cleanup()
        if sink is not None:
            sink.kill()
    if sink is None:
        print("smtp-sink not installed (Debian package postfix): no baseline measured")
    print("engaged: durable spool on (default [smtp] sync: written, renamed and synced before every 250, one")
    print("sync shared by concurrent sessions), capture delivery running (each server's backlog is delivered")
    print("before the next server is measured). Goals (issue 12), 20 KB HTML tracked,")
    print("20 sessions: >= 0.5 x smtp-sink with workers = auto, >= 0.3 x with one worker; a worker idle < 100 MB")
    print("RSS; 1,000 idle sessions adding < 30 MB across the workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
