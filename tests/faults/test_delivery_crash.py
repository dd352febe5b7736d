"""SIGKILL of `engaged serve` three times while it injects and relays multi-recipient mail.

Exact accounting afterwards: every copy of every message answered 250 reached the next hop, every
delivery has one event (one event id), and the only copies sent twice are those whose SMTP transaction
was in flight at a kill: at most `[delivery] workers` per kill (docs/architecture.md, the crash window).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import threading
from collections import Counter
from pathlib import Path

from engaged.testing.server import ServerProcess, wait_until
from engaged.testing.sink import SinkServer
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp

MESSAGES = 100
RCPTS = 5
KILLS = 3
WORKERS = 4
_SUBJECT = re.compile(rb"^Subject: crash-(\d+)\r$", re.M)


def inject(server: ServerProcess, answered: dict[int, str], stop: threading.Event) -> None:
    """One message after another, each on a new connection; a message counts only once answered 250."""
    for n in range(MESSAGES):
        client = connect(server, stop)
        if client is None:
            return
        try:
            client.transaction([f"r{k}-{n}@example.com" for k in range(RCPTS)])
            if client.command("DATA").startswith("354"):
                client.send(b"Subject: crash-%d\r\n\r\n" % n + b"line\r\n" * 200 + b".\r\n")
                reply = client.reply()
                if reply.startswith("250") and "queued as " in reply:
                    answered[n] = reply.rsplit("queued as ", 1)[1].split()[0]
        except (OSError, ConnectionError, AssertionError):
            pass
        finally:
            client.close()


def connect(server: ServerProcess, stop: threading.Event) -> RawSmtp | None:
    """A connection to the server as it is now, waiting out a restart (nothing was sent yet, so no loss)."""
    while not stop.is_set():
        try:
            return RawSmtp(server.smtp)
        except (OSError, KeyError, ConnectionError):
            stop.wait(0.05)
    return None


def kill_everything(server: ServerProcess) -> None:
    """SIGKILL the supervisor and every process under it at once: the crash of the whole service."""
    if server.process is None:
        return
    pids, frontier = [], [server.process.pid]
    while frontier:
        pid = frontier.pop()
        pids.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                frontier.extend(int(child) for child in (task / "children").read_text().split())
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.kill()


def delivery_events(data: Path) -> list[tuple[str, str, str]]:
    connection = sqlite3.connect(f"file:{data / 'events.sqlite3'}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT message_id, rcpt_to, event_id FROM events WHERE type = 'delivery'")
        return [(str(m), str(r), str(e)) for m, r, e in rows.fetchall()]
    finally:
        connection.close()


def test_sigkill_under_load_resends_only_copies_in_flight_and_stores_one_event_per_delivery(
        engaged_server: ServerFactory) -> None:
    sink = SinkServer().start()
    try:
        server = engaged_server(f'[delivery]\nmode = "relay"\nrelay = "{sink.address}"\ntls = "none"\n'
                                f"workers = {WORKERS}\nretry_base = 0.2\n")
        data = server.config.parent / "data"
        answered: dict[int, str] = {}
        stop = threading.Event()
        injector = threading.Thread(target=inject, args=(server, answered, stop))
        injector.start()
        try:
            for kill in range(1, KILLS + 1):
                wait_until(lambda k=kill: len(sink.received()) >= k * MESSAGES * RCPTS // (KILLS + 1)  # type: ignore[misc]
                           or not injector.is_alive(), 180)
                kill_everything(server)
                server.start()
            injector.join(300)
        finally:
            stop.set()
            injector.join(60)
        wait_until(lambda: not list((data / "spool").glob("**/*.msg")), 180)
        kill_everything(server)  # the accounting is complete; a clean stop is test_signals' business
    finally:
        sink.stop()

    sent: Counter[tuple[int, str]] = Counter()
    for received in sink.received():
        match = _SUBJECT.search(received.data)
        assert match is not None and len(received.rcpt_tos) == 1
        sent[(int(match.group(1)), received.rcpt_tos[0])] += 1
    events = delivery_events(data)
    per_delivery = Counter((message_id, rcpt) for message_id, rcpt, _ in events)
    wanted = [(n, f"r{k}-{n}@example.com") for n in answered for k in range(RCPTS)]
    lost = [copy for copy in wanted if sent[copy] == 0]
    resent = sum(count - 1 for count in sent.values())
    twice = {key: count for key, count in per_delivery.items() if count > 1}
    unevented = [(n, rcpt) for n, rcpt in wanted if per_delivery[(answered[n], rcpt)] == 0]
    counts = (f"{len(answered)} of {MESSAGES} messages answered 250 ({len(wanted)} copies), {len(sent)} copies "
              f"reached the sink, {sum(sent.values())} transactions, {resent} re-sent (bound {KILLS * WORKERS}), "
              f"{len(lost)} lost, {len(events)} delivery events, {len(twice)} deliveries with more than one "
              f"event, {len(unevented)} answered copies without a delivery event")
    assert len(answered) >= MESSAGES - 2 * KILLS, counts  # only a connection cut by a kill goes unanswered
    assert lost == [], counts
    assert unevented == [], counts
    assert twice == {}, counts
    assert resent <= KILLS * WORKERS, counts
