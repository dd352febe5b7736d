"""A webhook receiver that is down for a while, then back: every stored event reaches it exactly once.

The hostile run of issue 15 stopped a receiver for 60 s under load. Here the receiver's port is bound but not
listening (every connection is refused, and no other program can take the port) while mail flows and the
webhook retries; then it listens. Counted by event id: none missing, none delivered twice, none unknown.
"""

from __future__ import annotations

import http.server
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from typing import ClassVar

import msgspec
import pytest

from engaged.testing.server import ServerProcess, wait_until
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, stored_events

MESSAGES = 40


class _Handler(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]]

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


class Receiver:
    """An HTTP receiver bound to its port from the start, which refuses connections until `come_back()`."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        handler = type("Handler", (_Handler,), {"bodies": self.bodies})
        self.site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler, bind_and_activate=False)
        self.site.server_bind()  # bound, not listening: a connection gets a reset, as from a stopped receiver
        self.url = f"http://127.0.0.1:{self.site.server_address[1]}/hook"
        self._thread: threading.Thread | None = None

    def come_back(self) -> None:
        self.site.server_activate()
        self._thread = threading.Thread(target=self.site.serve_forever, daemon=True)
        self._thread.start()

    def delivered(self) -> Counter[str]:
        return Counter(str(next(iter(item["msys"].values()))["event_id"])
                       for body in list(self.bodies) for item in msgspec.json.decode(body))

    def close(self) -> None:
        if self._thread is not None:
            self.site.shutdown()
        self.site.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    site = Receiver()
    yield site
    site.close()


def webhook_state(server: ServerProcess) -> tuple[int, bool]:
    """(failed attempts of the batch in flight, whether every stored event is acknowledged)."""
    with sqlite3.connect(server.config.parent / "data" / "events.sqlite3", timeout=10) as db:
        attempts, acked = db.execute("SELECT max(attempts), min(acked_seq) FROM webhooks").fetchone()
        (last,) = db.execute("SELECT max(seq) FROM events").fetchone()
    return int(attempts or 0), last is not None and acked is not None and acked >= last


def failed_attempts(server: ServerProcess) -> int:
    return webhook_state(server)[0]


def inject(server: ServerProcess, n: int) -> str:
    client = RawSmtp(server.smtp)
    try:
        client.transaction([f"r{n}@example.com"])
        client.command("DATA")
        client.send(f"Subject: outage {n}\r\n\r\nbody {n}\r\n.\r\n".encode())
        return queued_id(client.reply())
    finally:
        client.close()


def test_a_receiver_down_for_a_while_then_back_gets_every_event_exactly_once(
        engaged_server: ServerFactory, receiver: Receiver) -> None:
    server = engaged_server(f'[[webhooks]]\nname = "outage"\ntarget = "{receiver.url}"\n'
                            "allow_private_targets = true\nbatch_size = 25\nbatch_age = 0.1\nretry_base = 0.2\n"
                            "timeout = 2\n")
    sent = [inject(server, n) for n in range(MESSAGES // 2)]
    wait_until(lambda: failed_attempts(server) >= 3, 60)  # down long enough for several retries of one batch
    sent += [inject(server, n) for n in range(MESSAGES // 2, MESSAGES)]  # more mail while it is still down
    wait_until(lambda: len(stored_events(server)) == 2 * MESSAGES, 60)  # an injection and a delivery each
    receiver.come_back()
    wanted = {str(event["event_id"]) for event in stored_events(server)}
    wait_until(lambda: set(receiver.delivered()) >= wanted, 60)
    wait_until(lambda: webhook_state(server) == (0, True), 30)  # nothing in flight that could still come twice
    delivered = receiver.delivered()
    twice = sorted(event_id for event_id, count in delivered.items() if count > 1)
    unknown = sorted(set(delivered) - wanted)
    counts = (f"{len(sent)} messages, {len(wanted)} events stored, {len(set(delivered) & wanted)} delivered, "
              f"{len(twice)} delivered more than once, {len(unknown)} unknown, "
              f"{failed_attempts(server)} failed attempts outstanding, {len(receiver.bodies)} batches")
    assert len(wanted) == 2 * MESSAGES and not twice and not unknown, counts
