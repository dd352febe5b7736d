"""Engaged nodes for the bus scenarios: configs sharing one PostgreSQL and one NATS cluster, load, and counts."""

from __future__ import annotations

import asyncio
import email
import random
import re
import shutil
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from engaged.keys import load_keyring
from engaged.testing.server import ServerProcess, write_config
from tests.bus.cluster import NatsCluster
from tests.helpers import RawSmtp, queued_id

MESSAGE = (
    b"From: Shop <shop@example.com>\r\nSubject: offer\r\nMIME-Version: 1.0\r\n"
    b'X-MSYS-API: {"campaign_id": "bus", "options": {"open_tracking": false, "click_tracking": true}}\r\n'
    b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    b'<html><body><a href="https://shop.example/offer">offer</a></body></html>\r\n'
)
RECIPIENTS = ["ann@example.net", "bob@example.net"]
_LINK = re.compile(rb'href="https?://[^/"]+(/f/[A-Za-z0-9_/-]+)"')


def node_config(root: Path, name: str, dsn: str, cluster: NatsCluster | None, node_id: int, keys: Path,
                **bus: object) -> Path:
    """engaged.toml for node `name` under root/name: the shared store and bus, the shared signing keys."""
    directory = root / name
    data = directory / "data"
    (data / "keys").mkdir(parents=True, exist_ok=True)
    for path in keys.iterdir():
        shutil.copy2(path, data / "keys" / path.name)
    extra = f'[events]\nstore = "{dsn}"\n[server]\nworkers = 1\n[delivery]\nretry_base = 1.0\n'
    extra += cluster.toml(node_id=node_id, **bus) if cluster is not None else f"[bus]\nnode_id = {node_id}\n"
    return write_config(directory, extra, data_dir=data)


def shared_keys(root: Path) -> Path:
    """One keyring every node signs and verifies with (production copies data_dir/keys/ to each node)."""
    load_keyring(root / "keyring")
    return root / "keyring" / "keys"


def start(config: Path, roles: str) -> ServerProcess:
    expect = [name for name in ("smtp", "tracker") if name in roles.split(",")] + ["api"]
    return ServerProcess(config, args=["--role", roles], expect=expect).start(timeout=120)


@dataclass
class Load:
    """Injects through the front nodes and clicks through them, counting what they answered."""

    fronts: list[ServerProcess]
    accepted: dict[str, list[str]] = field(default_factory=dict)  # message id -> recipients
    clicks_answered: Counter[str] = field(default_factory=Counter)  # message id -> 302s received
    clicks_tried: Counter[str] = field(default_factory=Counter)
    links: dict[str, str] = field(default_factory=dict)  # message id -> tracked path
    up: list[bool] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.up = [True] * len(self.fronts)

    def run(self) -> None:
        self._threads = [threading.Thread(target=self._inject, daemon=True),
                         threading.Thread(target=self._click, daemon=True)]
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)

    def totals(self) -> tuple[int, int]:
        with self._lock:
            return len(self.accepted), sum(self.clicks_answered.values())

    def snapshot(self) -> tuple[dict[str, list[str]], Counter[str], Counter[str]]:
        """Copies of (accepted, clicks answered, clicks tried), safe to read while the load runs."""
        with self._lock:
            return dict(self.accepted), Counter(self.clicks_answered), Counter(self.clicks_tried)

    def _pick(self) -> ServerProcess | None:
        live = [front for front, up in zip(self.fronts, self.up, strict=True) if up and front.process is not None]
        return random.choice(live) if live else None

    def _inject(self) -> None:
        while not self.stop.is_set():
            front = self._pick()
            if front is None:
                self.stop.wait(0.05)
                continue
            try:
                client = RawSmtp(front.smtp, timeout=10)
                try:
                    client.transaction(RECIPIENTS)
                    client.command("DATA")
                    client.send(MESSAGE + b".\r\n")
                    message_id = queued_id(client.reply())
                finally:
                    client.close()
            except (OSError, AssertionError, KeyError, ConnectionError):
                continue  # a front node going down: this message was not accepted
            with self._lock:
                self.accepted[message_id] = list(RECIPIENTS)
            self._find_link(front, message_id)

    def _find_link(self, front: ServerProcess, message_id: str) -> None:
        directory = front.config.parent / "data" / "captured"
        for path in directory.glob(f"{message_id}.*.eml"):
            payload = email.message_from_bytes(path.read_bytes()).get_payload(decode=True)
            match = _LINK.search(payload if isinstance(payload, bytes) else b"")
            if match:
                with self._lock:
                    self.links[message_id] = match.group(1).decode()
                return

    def _click(self) -> None:
        while not self.stop.is_set():
            with self._lock:
                pending = [m for m in self.accepted if m not in self.links][-20:] if not self.links else []
                choices = list(self.links.items())
            for message_id in pending:  # copies delivered after the injector looked
                for node in self.fronts:
                    if node.process is not None:
                        self._find_link(node, message_id)
            if not choices:
                self.stop.wait(0.05)
                continue
            message_id, path = random.choice(choices)
            front = self._pick()
            if front is None:
                self.stop.wait(0.05)
                continue
            try:
                host, port = front.tracker
                with self._lock:
                    self.clicks_tried[message_id] += 1
                response = httpx.get(f"http://{host}:{port}{path}", timeout=10)
            except (httpx.HTTPError, KeyError):
                continue
            if response.status_code == 302:
                with self._lock:
                    self.clicks_answered[message_id] += 1


async def _rows(dsn: str) -> list[tuple[str, str, str, str]]:
    connection = await asyncpg.connect(dsn)
    try:
        records = await connection.fetch("SELECT event_id, type, message_id, rcpt_to FROM events")
    finally:
        await connection.close()
    return [(r["event_id"], r["type"], r["message_id"], r["rcpt_to"]) for r in records]


def cut_connections(dsn: str) -> int:
    """Terminate every connection to the test database: a PostgreSQL restart as the nodes see it."""
    name = dsn.rsplit("/", 1)[1]

    async def cut() -> int:
        connection = await asyncpg.connect(dsn)
        try:
            return int(await connection.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 "
                "AND pid <> pg_backend_pid()", name) or 0)
        finally:
            await connection.close()

    return asyncio.run(cut())


def stored_rows(dsn: str) -> list[tuple[str, str, str, str]]:
    """(event_id, type, message_id, rcpt_to) of every event in the store."""
    try:
        return asyncio.run(_rows(dsn))
    except asyncpg.UndefinedTableError:
        return []
