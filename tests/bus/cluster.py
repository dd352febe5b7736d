"""Test harness for the bus: real nats-server processes (one, or a JetStream cluster) on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from engaged.testing.server import wait_until
from tests.conftest import POSTGRES_ADMIN_DSN, postgres_admin

NATS_SERVER = "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        return sock.recv(4).startswith(b"INFO")
    return False


@dataclass
class NatsNode:
    """One nats-server: its client port, its cluster port and the process (killed only by its own handle)."""

    name: str
    port: int
    cluster_port: int
    directory: Path
    routes: list[int] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.directory / "js"),
                "-n", self.name, "-l", str(self.directory / "nats.log")]
        if self.routes:
            args += ["--cluster_name", "engaged-test", "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                     "--routes", ",".join(f"nats://127.0.0.1:{port}" for port in self.routes)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _answers(self.port), 30)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def log(self) -> str:
        path = self.directory / "nats.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@dataclass
class NatsCluster:
    """`size` nats-servers routed to each other (a single server when size is 1)."""

    nodes: list[NatsNode]

    @classmethod
    def create(cls, directory: Path, size: int) -> NatsCluster:
        ports = [(free_port(), free_port()) for _ in range(size)]
        cluster_ports = [cluster for _, cluster in ports]
        nodes = [NatsNode(f"n{i}", port, cluster, directory / f"n{i}",
                          routes=[p for p in cluster_ports if p != cluster] if size > 1 else [])
                 for i, (port, cluster) in enumerate(ports)]
        return cls(nodes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> NatsCluster:
        for node in self.nodes:
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def toml(self, **extra: object) -> str:
        """A [bus] section for this cluster."""
        lines = ["[bus]", "servers = [" + ", ".join(f'"{url}"' for url in self.urls) + "]"]
        for key, value in extra.items():
            lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
        return "\n".join(lines) + "\n"


def create_database() -> str:
    """A fresh PostgreSQL database (its DSN); raises OSError/asyncpg errors when PostgreSQL is unreachable."""
    name = f"engaged_bus_{secrets.token_hex(4)}"
    asyncio.run(postgres_admin(f'CREATE DATABASE "{name}"'))
    return urlunsplit(urlsplit(POSTGRES_ADMIN_DSN)._replace(path="/" + name))


def drop_database(dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    asyncio.run(postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
