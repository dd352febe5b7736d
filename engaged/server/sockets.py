"""Listening addresses shared by every worker: reserved once by the supervisor, bound by each worker.

The supervisor binds one socket per address with SO_REUSEPORT and never listens on it: it only
holds the port (so `:0` resolves to one concrete port for every worker, and a restarting worker
finds its port still free of other programs). Each worker binds its own SO_REUSEPORT socket to the
same address and listens; the kernel spreads new connections over the listening sockets.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field
from typing import cast

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
    """The supervisor's placeholder sockets and the endpoints they hold, per listen setting.

    A listen setting holds every address its host resolves to ("localhost:2525": 127.0.0.1 and ::1),
    all on one port: each SMTP listen setting, and the tracker's (empty when the node has no tracker).
    """

    smtp: dict[str, list[Endpoint]] = field(default_factory=dict)
    tracker: list[Endpoint] = field(default_factory=list)
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


def new_socket(family: int, *, reuse_port: bool = True) -> socket.socket:
    """A TCP socket (IPPROTO_TCP, so asyncio sets TCP_NODELAY on accepted sockets), SO_REUSEPORT by default."""
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_every(listen: str, *, reuse_port: bool = True) -> list[socket.socket]:
    """Bound, non-blocking sockets on every IPv4/IPv6 address `listen`'s host resolves to, all on one port.

    Port 0 takes a free port on the first address and the same port on the others (a few tries when
    another program holds it there). OSError when nothing resolves or an address is taken.
    """
    host, port = parse_hostport(listen)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
                               flags=socket.AI_PASSIVE)
    addresses: list[tuple[int, SockAddr]] = []
    for family, _, _, _, address in infos:
        entry = (int(family), cast(SockAddr, address))
        if int(family) in (socket.AF_INET, socket.AF_INET6) and entry not in addresses:
            addresses.append(entry)
    if not addresses:
        raise OSError(f"{listen}: no IPv4 or IPv6 address")
    for _ in range(9 if port == 0 and len(addresses) > 1 else 0):
        try:
            return _bind_on_one_port(addresses, port, reuse_port)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
    return _bind_on_one_port(addresses, port, reuse_port)


def _bind_on_one_port(addresses: list[tuple[int, SockAddr]], port: int, reuse_port: bool) -> list[socket.socket]:
    bound: list[socket.socket] = []
    try:
        for family, address in addresses:
            sock = new_socket(family, reuse_port=reuse_port)
            bound.append(sock)
            sock.bind((address[0], port, *address[2:]))
            sock.setblocking(False)
            port = sock.getsockname()[1]
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


def _reserve(listen: str, placeholders: list[socket.socket]) -> list[Endpoint]:
    """The addresses `listen` resolves to, each held by a placeholder socket."""
    held = bind_every(listen)
    placeholders.extend(held)
    endpoints = []
    for sock in held:
        bound = sock.getsockname()
        endpoints.append(Endpoint(sock.family, (bound[0], bound[1], *bound[2:])))
    return endpoints


def reserve(config: Config) -> Reservation:
    """Hold every [smtp] listen address and every tracker address; OSError (with the address) if one is taken."""
    reservation = Reservation()
    roles = config.server.roles
    try:
        for listen in config.smtp.addresses() if "smtp" in roles else []:
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
