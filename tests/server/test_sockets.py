"""bind_tcp: the one way an HTTP listener (API, tracker) gets its socket; reserve/bind_every for SMTP listeners."""

from __future__ import annotations

import asyncio
import socket

import pytest

from engaged.config import Config, EngagementTrackerConfig, SmtpConfig
from engaged.server.sockets import bind, bind_every, bind_tcp, reserve
from tests.resolver import resolve_dual_to_both_loopbacks


async def test_connections_accepted_on_a_bound_socket_have_tcp_nodelay() -> None:
    sock = bind_tcp("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("socket")
            accepted.set_result(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        assert await asyncio.wait_for(accepted, 10) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_reuse_port_lets_two_sockets_bind_one_address() -> None:
    first = bind_tcp("127.0.0.1", 0, reuse_port=True)
    try:
        second = bind_tcp("127.0.0.1", first.getsockname()[1], reuse_port=True)
        assert second.getsockname() == first.getsockname() and second.proto == socket.IPPROTO_TCP
        second.close()
    finally:
        first.close()


def test_a_listen_host_with_two_addresses_is_reserved_and_bound_on_both_at_one_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    resolve_dual_to_both_loopbacks(monkeypatch)
    config = Config(smtp=SmtpConfig(listen=["dual.test:0"]),
                    engagement_tracker=EngagementTrackerConfig(listen="127.0.0.1:0"))
    reservation = reserve(config)
    try:
        endpoints = reservation.smtp["dual.test:0"]
        assert [(e.family, e.address[0]) for e in endpoints] == [(socket.AF_INET, "127.0.0.1"),
                                                                 (socket.AF_INET6, "::1")]
        port = endpoints[0].address[1]
        assert port != 0 and endpoints[1].address[1] == port
        assert len(reservation.tracker) == 1 and len(reservation.placeholders) == 3
        workers = [bind(endpoint) for endpoint in endpoints for _ in range(2)]  # two workers, SO_REUSEPORT
        for sock in workers:
            sock.listen()
        for host in ("127.0.0.1", "::1"):
            socket.create_connection((host, port), timeout=10).close()
        for sock in workers:
            sock.close()
    finally:
        reservation.close()


def test_bind_every_without_reuse_port_refuses_a_taken_port(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve_dual_to_both_loopbacks(monkeypatch)
    first = bind_every("dual.test:0", reuse_port=False)
    try:
        port = first[0].getsockname()[1]
        assert [s.getsockname()[1] for s in first] == [port, port]
        first[1].listen()
        with pytest.raises(OSError):
            bind_every(f"dual.test:{port}", reuse_port=False)
    finally:
        for sock in first:
            sock.close()


def test_the_tracker_listen_host_is_reserved_on_every_address_it_resolves_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    resolve_dual_to_both_loopbacks(monkeypatch)
    config = Config(smtp=SmtpConfig(listen=["127.0.0.1:0"]),
                    engagement_tracker=EngagementTrackerConfig(listen="dual.test:0"))
    reservation = reserve(config)
    try:
        endpoints = reservation.tracker
        assert [(e.family, e.address[0]) for e in endpoints] == [(socket.AF_INET, "127.0.0.1"),
                                                                 (socket.AF_INET6, "::1")]
        assert endpoints[0].address[1] != 0 and endpoints[1].address[1] == endpoints[0].address[1]
    finally:
        reservation.close()
