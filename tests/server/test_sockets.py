"""bind_tcp: the one way an HTTP listener (API, tracker) gets its socket."""

from __future__ import annotations

import asyncio
import socket

from engaged.server.sockets import bind_tcp


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
