"""Listening addresses shared by every worker: reserved once by the supervisor, bound by each worker.

The supervisor binds one socket per address with SO_REUSEPORT and never listens on it: it only
holds the port (so `:0` resolves to one concrete port for every worker, and a restarting worker
finds its port still free of other programs). Each worker binds its own SO_REUSEPORT socket to the
same address and listens; the kernel spreads new connections over the listening sockets.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from engaged.config import Config, parse_hostport

SockAddr = tuple[str, int] | tuple[str, int, int, int]


@dataclass(frozen=True)
class Endpoint:
    """One resolved address of a listen setting: its family and concrete socket address."""

    family: int
    address: SockAddr

    def describe(self) -> str:
        host, port = self.address[0], self.address[1]
        return f"[{host}]:{port}" if self.family == socket.AF_INET6 else f"{host}:{port}"


@dataclass
class Reservation:
    """The supervisor's placeholder sockets and the endpoints they hold, per listen setting."""

    smtp: dict[str, Endpoint] = field(default_factory=dict)
    tracker: Endpoint | None = None
    placeholders: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in self.placeholders:
            sock.close()
        self.placeholders.clear()


def bind_tcp(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking TCP socket on the first address `host` resolves to (port 0: any free port).

    proto is IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and without it a body
    written after its headers waits ~40 ms for the client's delayed ACK. SO_REUSEPORT when several
    workers share the address.
    """
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
                                                  flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def new_socket(family: int) -> socket.socket:
    """A TCP socket (IPPROTO_TCP, so asyncio sets TCP_NODELAY on accepted sockets) with SO_REUSEPORT."""
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def _reserve(listen: str, placeholders: list[socket.socket]) -> Endpoint:
    """The first address `listen` resolves to (as the API listener), held by a placeholder socket."""
    host, port = parse_hostport(listen)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
                               flags=socket.AI_PASSIVE)
    for family, _, _, _, address in infos:
        if int(family) not in (socket.AF_INET, socket.AF_INET6):
            continue
        sock = new_socket(family)
        try:
            sock.bind(address)
        except BaseException:
            sock.close()
            raise
        placeholders.append(sock)
        bound = sock.getsockname()
        return Endpoint(family, (bound[0], bound[1], *bound[2:]))
    raise OSError(f"{listen}: no IPv4 or IPv6 address")


def reserve(config: Config) -> Reservation:
    """Hold every [smtp] listen address and the tracker's; OSError (with the address) if one is taken."""
    reservation = Reservation()
    roles = config.server.roles
    try:
        for listen in config.smtp.listen if "smtp" in roles else []:
            try:
                reservation.smtp[listen] = _reserve(listen, reservation.placeholders)
            except OSError as error:
                raise OSError(error.errno, f"cannot listen on {listen}: {error.strerror or error}") from None
        listen = config.engagement_tracker.listen
        try:
            if "tracker" in roles:
                reservation.tracker = _reserve(listen, reservation.placeholders)
        except OSError as error:
            raise OSError(error.errno, f"cannot listen on {listen}: {error.strerror or error}") from None
    except BaseException:
        reservation.close()
        raise
    return reservation


def bind(endpoint: Endpoint) -> socket.socket:
    """A worker's own non-blocking socket on a reserved endpoint (the caller listens)."""
    sock = new_socket(endpoint.family)
    try:
        sock.bind(endpoint.address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
