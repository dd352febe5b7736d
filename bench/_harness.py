"""Benchmark harness: free ports, a real engaged server, smtp-sink, and an SMTP load generator."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engaged.testing.server import ServerProcess, write_config

PG_ADMIN_DSN = os.environ.get("ENGAGED_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


async def pg_fetchval(statement: str, dsn: str = PG_ADMIN_DSN) -> Any:
    """Run one statement on PostgreSQL (the admin database by default) and return its first value."""
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        return await connection.fetchval(statement)
    finally:
        await connection.close()


def pg_database(name: str) -> str:
    """The DSN of database `name` on the benchmark's PostgreSQL server."""
    return urlunsplit(urlsplit(PG_ADMIN_DSN)._replace(path="/" + name))


def count_sqlite(path: Path) -> int:
    """Events stored in the SQLite event store at `path` (read-only)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        count: int = connection.execute("SELECT count(*) FROM events").fetchone()[0]
        return count
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_smtp_sink(port: int) -> subprocess.Popen[bytes] | None:
    """Postfix smtp-sink on 127.0.0.1:port, pinned to CPU 0 like our server; None when not installed."""
    binary = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
    if binary is None:
        return None
    command = [binary, "-c", "-8", "-p"]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]
    command += [f"127.0.0.1:{port}", "256"]
    process = subprocess.Popen(_pinned(command, 0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    return None


def _pinned(command: list[str], cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu), *command]
    return command


def start_engaged(extra: str = "", *, workers: int | str = 1,
                  pin: bool = True) -> tuple[ServerProcess, tempfile.TemporaryDirectory[str]]:
    """A real `engaged serve` (durable spool on) in a temporary directory.

    `workers` is [server] workers (1 unless told). With `pin`, every process of the server
    (supervisor, node, workers) is pinned to CPU 0, leaving CPU 1 to the load generator.
    """
    tmp = tempfile.TemporaryDirectory(prefix="engaged-bench-")
    setting = f'"{workers}"' if isinstance(workers, str) else str(workers)
    config = write_config(Path(tmp.name), f"[server]\nworkers = {setting}\n" + extra)
    server = ServerProcess(config).start()
    if pin and shutil.which("taskset") and server.process is not None:
        for pid in [server.process.pid, *server.pids().values()]:
            subprocess.run(["taskset", "-a", "-p", "-c", "0", str(pid)], capture_output=True, check=False)
    return server, tmp


def server_processes(server: ServerProcess) -> dict[str, int]:
    """The pids of a running server: `supervisor`, `node`, `worker 0` ..."""
    found = {"supervisor": server.process.pid} if server.process is not None else {}
    found.update(server.pids())
    return found


def rss_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB; PSS shares pages that forked processes have in common fairly."""
    rss = pss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


async def _session(host: str, port: int, body: bytes, count: int, rcpts: list[str], session: int | None) -> int:
    reader, writer = await asyncio.open_connection(host, port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            if line[3:4] != b"-":
                return line

    await reply()
    writer.write(b"EHLO bench.example\r\n")
    await writer.drain()
    await reply()
    sent = 0
    payload = body + b".\r\n"
    for number in range(count):
        if session is not None:
            payload = body.replace(b"<body>\r\n", b"<body>\r\n<p>Dear reader %d.%d,</p>\r\n" % (session, number), 1)
            payload += b".\r\n"
        writer.write(b"MAIL FROM:<bench@example.org>\r\n")
        await writer.drain()
        await reply()
        for rcpt in rcpts:
            writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
            await writer.drain()
            await reply()
        writer.write(b"DATA\r\n")
        await writer.drain()
        await reply()
        writer.write(payload)
        await writer.drain()
        line = await reply()
        if line.startswith(b"250"):
            sent += 1
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()
    return sent


def measure(host: str, port: int, body: bytes, sessions: int, per_session: int, *, rcpts: int = 1,
            personalise: bool = False) -> float:
    """Messages per second accepted by the server at host:port (connection reuse, no pipelining).

    `rcpts`: recipients per message. `personalise`: every message's HTML differs (a line after `<body>`
    names its session and number), as a mail merge makes it; otherwise they are all the same.
    """
    to = ["bob@example.com"] if rcpts == 1 else [f"bob+{n}@example.com" for n in range(rcpts)]

    async def run() -> tuple[int, float]:
        start = time.perf_counter()
        counts = await asyncio.gather(*(_session(host, port, body, per_session, to, session if personalise else None)
                                         for session in range(sessions)))
        return sum(counts), time.perf_counter() - start

    sent, elapsed = asyncio.run(run())
    return sent / elapsed


def wait_delivered(directory: Path, timeout: float = 600.0) -> float:
    """Wait until the server whose temporary directory is `directory` has delivered all it accepted (no
    message left in any spool shard); returns the seconds waited. A server measured right after another
    would otherwise share the CPU with the other's delivery backlog: accepting outruns delivering, and
    ten tracked copies a message leave a backlog of seconds."""
    spool = directory / "data" / "spool"
    began = time.monotonic()
    while any(shard.name.isdigit() and any(shard.glob("*.msg")) for shard in spool.iterdir()):
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"messages still in {spool} after {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - began


CHEAP_CREATE_US = 150.0
"""A file creation costs tens of microseconds of CPU on a settled ext4; after many deletions, an ext4
without a journal scans past every recently deleted inode of the block group for each new one (the
kernel's find_inode_bit and recently_deleted): measured here at up to 1.2 ms a file for a minute or so
after 8,000 files were removed, which halved engaged's tracked injection rate (its capture delivery
creates two files a copy) while smtp-sink, which writes nothing, was unaffected."""


def creation_cost(directory: Path, files: int = 200) -> float:
    """CPU microseconds to create one empty file, in a new directory under `directory`.

    The files are kept (`directory` is removed with the run): removing them would itself make the next
    creations dear."""
    probe = Path(tempfile.mkdtemp(prefix="create-probe-", dir=directory))
    began = time.process_time()
    for number in range(files):
        os.close(os.open(probe / str(number), os.O_WRONLY | os.O_CREAT, 0o600))
    return (time.process_time() - began) / files * 1e6


def settle_filesystem(directory: Path, timeout: float = 180.0) -> tuple[float, float]:
    """Wait until creating files on the filesystem of `directory` is cheap three probes in a row (what ran
    before, a test suite or another benchmark, may have just removed thousands); (seconds waited, the last
    probe's microseconds a file). Gives up after `timeout` and says so."""
    os.sync()  # the inode tables written back: ext4 then holds a deleted inode for 60 s, not 360
    began = time.monotonic()
    cheap = 0
    while True:
        cost = creation_cost(directory)
        cheap = cheap + 1 if cost < CHEAP_CREATE_US else 0
        waited = time.monotonic() - began
        if cheap >= 3 or waited > timeout:
            if cheap < 3:
                print(f"(file creation still costs {cost:.0f} us after {waited:.0f} s: engaged's figures are low)")
            return waited, cost
        time.sleep(2)


def pin_self(cpu: int = 1) -> None:
    """Run the load generator on another core than the servers."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})
