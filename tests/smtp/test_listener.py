"""Listener limits: connections per client, idle and DATA timeouts, clean shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import socket

import pytest

from engaged.smtp import replies
from engaged.smtp.listener import ConnectionGate
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, wait_captured


def test_gate_counts_per_ip_and_in_total() -> None:
    gate = ConnectionGate(max_total=3, max_per_ip=2)
    assert gate.admit("a") and gate.admit("a")
    assert not gate.admit("a")
    assert gate.admit("b")
    assert not gate.admit("c")
    gate.release("a")
    assert gate.admit("c")


def test_connections_over_the_per_client_cap_get_421(engaged_server: ServerFactory) -> None:
    server = engaged_server("[smtp]\nmax_connections_per_ip = 2\n")
    first, second = RawSmtp(server.smtp), RawSmtp(server.smtp)
    assert first.greeting.startswith("220") and second.greeting.startswith("220")
    third = socket.create_connection(server.smtp, timeout=10)
    assert third.recv(1024).decode().strip() == replies.R421_TOO_MANY_CONNECTIONS
    third.close()
    first.close()

    def admitted() -> bool:
        try:
            client = RawSmtp(server.smtp)
        except ConnectionError:
            return False
        ok = client.greeting.startswith("220")
        client.close()
        return ok

    from engaged.testing.server import wait_until

    wait_until(admitted, 10)
    second.close()


def test_idle_clients_are_disconnected(engaged_server: ServerFactory) -> None:
    server = engaged_server("[smtp]\ncommand_timeout = 0.5\n")
    client = RawSmtp(server.smtp)
    client.sock.settimeout(10)
    assert client.sock.recv(1024) == b""  # the server closed the connection
    client.close()


def test_silence_during_data_gets_421(engaged_server: ServerFactory) -> None:
    server = engaged_server("[smtp]\ndata_timeout = 0.5\n")
    client = RawSmtp(server.smtp)
    client.transaction()
    client.command("DATA")
    client.send(b"Subject: slow\r\n")
    assert client.reply() == replies.R421_DATA_TIMEOUT
    client.close()


def test_sigterm_shuts_down_cleanly_and_keeps_queued_mail(engaged_server: ServerFactory) -> None:
    server = engaged_server()
    client = RawSmtp(server.smtp)
    client.transaction()
    client.command("DATA")
    client.send(b"Subject: before stop\r\n\r\nx\r\n.\r\n")
    message_id = queued_id(client.reply())
    client.close()
    assert server.stop() == 0
    assert any("stopped" in line for line in server.log)
    server.start()
    assert wait_captured(server, message_id) == [b"Subject: before stop\r\n\r\nx\r\n"]


async def test_listeners_share_a_port_with_reuse_port_or_take_a_bound_socket() -> None:
    from typing import cast

    from engaged.config import Config, SmtpConfig
    from engaged.inject import Injector
    from engaged.smtp.listener import SmtpListeners

    first = socket.socket()
    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    first.bind(("127.0.0.1", 0))
    first.listen()
    port = first.getsockname()[1]
    injector = cast(Injector, None)  # binding needs no injector
    shared = SmtpListeners(Config(smtp=SmtpConfig(listen=[f"127.0.0.1:{port}"])), injector, reuse_port=True)
    await shared.start()
    assert shared.addresses == [(f"127.0.0.1:{port}", f"127.0.0.1:{port}")]
    await shared.stop()
    handed = SmtpListeners(Config(smtp=SmtpConfig(listen=["127.0.0.1:0"])), injector, sockets={"127.0.0.1:0": [first]})
    await handed.start()
    assert handed.addresses == [("127.0.0.1:0", f"127.0.0.1:{port}")]
    await handed.stop()


class _Session:
    def __init__(self) -> None:
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True


def test_gate_closes_the_oldest_idle_session_of_an_address_over_the_idle_cap() -> None:
    gate = ConnectionGate(max_total=100, max_per_ip=100, max_idle_per_ip=2)
    old, newer, other = _Session(), _Session(), _Session()
    for session, ip in ((old, "a"), (newer, "a"), (other, "b")):
        assert gate.admit(ip)
        gate.set_idle(ip, session, True, trusted=False)
    gate.make_room("a")
    assert (old.evicted, newer.evicted, other.evicted) == (True, False, False)
    gate.set_idle("a", newer, False, trusted=False)  # busy now: not a candidate
    gate.make_room("a")
    assert not newer.evicted


def test_gate_keeps_a_reserve_for_trusted_clients_and_makes_room_for_them() -> None:
    gate = ConnectionGate(max_total=4, max_per_ip=10, reserved=2)
    idle = _Session()
    assert gate.admit("x") and gate.admit("x")
    gate.set_idle("x", idle, True, trusted=False)
    assert not gate.admit("x")  # the last two slots are reserved
    assert gate.admit("local", trusted=True) and gate.admit("local", trusted=True)
    assert not idle.evicted
    assert gate.admit("local", trusted=True)  # full: the oldest idle untrusted session makes room
    assert idle.evicted


async def test_a_listen_host_with_two_addresses_is_served_on_both(monkeypatch: pytest.MonkeyPatch) -> None:
    from typing import cast

    from engaged.config import Config, SmtpConfig
    from engaged.inject import Injector
    from engaged.smtp.listener import SmtpListeners
    from tests.resolver import resolve_dual_to_both_loopbacks

    resolve_dual_to_both_loopbacks(monkeypatch)
    listeners = SmtpListeners(Config(smtp=SmtpConfig(listen=["dual.test:0"])), cast(Injector, None))
    await listeners.start()
    try:
        (_, v4), (_, v6) = listeners.addresses
        port = int(v4.rpartition(":")[2])
        assert (v4, v6) == (f"127.0.0.1:{port}", f"[::1]:{port}")
        for host in ("127.0.0.1", "::1"):
            client = await asyncio.to_thread(RawSmtp, (host, port))
            assert client.greeting.startswith("220 ")
            assert (await asyncio.to_thread(client.command, "QUIT")).startswith("221")
            client.close()
    finally:
        await listeners.stop()
