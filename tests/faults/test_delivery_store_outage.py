"""The event store goes away while mail is delivered: no delivery loses its event, no copy is sent twice.

Messages are injected while the next hop defers them; then the server's PostgreSQL database refuses
connections (ALLOW_CONNECTIONS false, backends terminated), the next hop takes the copies, and the database
comes back. Before, a recipient was recorded done before its
event was stored, so a failed append finished the message without its delivery event.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter

import asyncpg

from engaged.testing.server import wait_until
from engaged.testing.sink import SinkServer
from tests.conftest import ServerFactory, cut_statements, postgres_admin, restore_statement
from tests.helpers import RawSmtp, queued_id

MESSAGES = 60
RCPTS = 2


def cut(name: str) -> None:
    asyncio.run(postgres_admin(*cut_statements(name)))


def restore(name: str) -> None:
    asyncio.run(postgres_admin(restore_statement(name)))


def stored(dsn: str) -> list[tuple[str, str, str]]:
    async def read() -> list[tuple[str, str, str]]:
        connection = await asyncpg.connect(dsn)
        try:
            rows = await connection.fetch("SELECT type, message_id, rcpt_to FROM events")
            return [(row[0], row[1], row[2]) for row in rows]
        finally:
            await connection.close()
    return asyncio.run(read())


def test_a_store_outage_during_delivery_loses_no_event_and_sends_no_copy_twice(
        engaged_server: ServerFactory, outage_database: tuple[str, str]) -> None:
    name, dsn = outage_database
    sink = SinkServer().start()
    gate = threading.Event()  # the next hop defers every copy until the store is down
    sink.data_reply = lambda envelope: None if gate.is_set() else "451 4.3.0 not yet"
    try:
        server = engaged_server(f'[events]\nstore = "{dsn}"\n[delivery]\nmode = "relay"\n'
                                f'relay = "{sink.address}"\ntls = "none"\nretry_base = 0.2\n')
        answered: list[str] = []
        client = RawSmtp(server.smtp)
        try:
            for n in range(MESSAGES):
                client.transaction([f"r{k}-{n}@example.com" for k in range(RCPTS)])
                client.command("DATA")
                client.send(b"Subject: outage-%d\r\n\r\nbody\r\n.\r\n" % n)
                answered.append(queued_id(client.reply()))
                client.command("RSET")
        finally:
            client.close()
        cut(name)
        gate.set()
        try:
            # Delivery goes on without the store: every copy reaches the next hop while no event can be stored.
            with contextlib.suppress(TimeoutError):  # judged below, with the counts
                wait_until(lambda: len(sink.received()) >= MESSAGES * RCPTS, 120)
            during = len(sink.received())
        finally:
            restore(name)
        data = server.config.parent / "data"
        wait_until(lambda: not list((data / "spool").glob("**/*.msg")), 180)
        events = stored(dsn)
        server.stop()
    finally:
        sink.stop()
    deliveries = Counter((message_id, rcpt) for kind, message_id, rcpt in events if kind == "delivery")
    sent = Counter((received.data.split(b"\r\n", 1)[0], received.rcpt_tos[0]) for received in sink.received())
    missing = [(m, f"r{k}-{n}@example.com") for n, m in enumerate(answered) for k in range(RCPTS)
               if deliveries[(m, f"r{k}-{n}@example.com")] != 1]
    counts = (f"{len(answered)} answered, {during} of {MESSAGES * RCPTS} copies sent during the outage, "
              f"{sum(sent.values())} transactions for {len(sent)} copies, {sum(deliveries.values())} delivery "
              f"events (want {MESSAGES * RCPTS}), {len(missing)} copies without exactly one")
    assert missing == [], counts
    assert sum(deliveries.values()) == MESSAGES * RCPTS, counts
    assert during == MESSAGES * RCPTS, counts
    assert max(sent.values()) == 1, counts
