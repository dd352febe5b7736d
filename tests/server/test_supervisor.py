"""The process model: workers share the ports, each owns a shard; restarts, drains and early signals."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from engaged.testing.server import ServerProcess, wait_until, write_config
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, wait_captured

_ACCEPTED = re.compile(r"^engaged: worker (\d+): accepted (\w+) ")


def send(server: ServerProcess, subject: str = "hello") -> str:
    client = RawSmtp(server.smtp)
    try:
        client.transaction()
        client.command("DATA")
        client.send(f"Subject: {subject}\r\n\r\nbody\r\n.\r\n".encode())
        return queued_id(client.reply())
    finally:
        client.close()


def accepted_by(server: ServerProcess) -> dict[str, int]:
    """message id -> index of the worker whose log says it accepted it."""
    return {m.group(2): int(m.group(1)) for line in list(server.log) if (m := _ACCEPTED.match(line))}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def data_dir_free(data: Path) -> bool:
    """No process of a server holds the data directory's lock any more."""
    fd = os.open(data / ".serve.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_two_workers_both_accept_and_each_fills_its_own_shard(engaged_server: ServerFactory) -> None:
    server = engaged_server("[server]\nworkers = 2\n")
    assert set(server.pids()) == {"node", "worker 0", "worker 1"}
    data = server.config.parent / "data"
    sent: list[str] = []
    # SO_REUSEPORT spreads connections by a hash of the client's address and port: each new
    # connection reaches either worker, so both are reached after a few (all on one: 2^-199).
    for number in range(200):
        message_id = send(server, f"m{number}")
        sent.append(message_id)
        wait_until(lambda m=message_id: m in accepted_by(server))  # type: ignore[misc]
        owners = accepted_by(server)
        if {owners[m] for m in sent} == {0, 1}:
            break
    owners = accepted_by(server)
    assert {owners[message_id] for message_id in sent} == {0, 1}
    for message_id in sent:
        wait_captured(server, message_id)
    assert sorted(p.name for p in (data / "spool").iterdir() if p.is_dir()) == ["0", "1"]
    # The node's /metrics counts what both workers stored and sums their tracker counters.
    host, port = server.address("api")

    def injections() -> float:
        text = httpx.get(f"http://{host}:{port}/metrics", timeout=10).text
        found = re.search(r'^engaged_events_messages_total\{type="injection"\} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    wait_until(lambda: injections() >= len(sent), timeout=30)
    assert sorted(p.name for p in (data / "run").glob("tracker-*.json")) == ["tracker-0.json", "tracker-1.json"]
    assert server.stop() == 0


def test_a_killed_worker_is_restarted_with_backoff_and_resumes_its_shard(engaged_server: ServerFactory) -> None:
    # The relay refuses connections, so what worker 0 accepted stays deferred in its shard.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        relay = f"127.0.0.1:{closed.getsockname()[1]}"
    server = engaged_server(f'[server]\nworkers = 1\n[delivery]\nmode = "relay"\nrelay = "{relay}"\n'
                            "retry_base = 3600\n")
    data = server.config.parent / "data"
    message_id = send(server)
    assert (data / "spool" / "0" / f"{message_id}.msg").exists()
    first = server.pids()["worker 0"]
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: any(f"worker 0 (pid {first}) killed by SIGKILL; restarting in 0.5 s" in line
                           for line in server.log), timeout=30)
    second = wait_until(lambda: server.pids()["worker 0"] != first and server.pids()["worker 0"], timeout=30)
    assert any(f"worker 0 (pid {second}) ready: spool shard 0 (1 message(s) resumed)" in line for line in server.log)
    os.kill(second, signal.SIGKILL)  # again, soon after: the delay doubles
    wait_until(lambda: any(f"worker 0 (pid {second}) killed by SIGKILL; restarting in 1.0 s" in line
                           for line in server.log), timeout=30)
    third = wait_until(lambda: server.pids()["worker 0"] not in (first, second) and server.pids()["worker 0"],
                       timeout=30)
    assert any(f"worker 0 (pid {third}) ready: spool shard 0 (1 message(s) resumed)" in line for line in server.log)
    assert send(server, "after the restarts")
    assert server.stop() == 0


def test_sigterm_drains_every_process_and_exits_0(engaged_server: ServerFactory) -> None:
    server = engaged_server("[server]\nworkers = 2\n")
    children = server.pids()
    idle = RawSmtp(server.smtp)  # an open, idle session does not hold the shutdown up
    message_id = send(server)
    wait_captured(server, message_id)
    assert server.stop() == 0
    idle.close()
    assert all(gone(pid) for pid in children.values())
    log = "\n".join(server.log)
    for name in ("node", "worker 0", "worker 1"):
        assert f"engaged: {name}: stopped" in log
    assert server.log[-1] == "engaged: stopped"
    assert "Traceback" not in log


@pytest.mark.parametrize(("when", "signum"), [("supervisor", signal.SIGTERM), ("node (pid", signal.SIGINT)])
def test_a_signal_during_startup_stops_every_process(tmp_path: Path, when: str, signum: int) -> None:
    """A stop signal as the supervisor starts, or as the workers are forked (tests/faults has other moments)."""
    config = write_config(tmp_path, "[server]\nworkers = 2\n")
    process = subprocess.Popen([sys.executable, "-m", "engaged", "serve", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines: list[str] = []
    for line in process.stderr:
        lines.append(line.rstrip("\n"))
        if line.startswith(f"engaged: {when}"):
            process.send_signal(signum)
            break
    lines.extend(line.rstrip("\n") for line in process.stderr)
    assert process.wait(60) == 0, "\n".join(lines)
    assert lines[-1] == "engaged: stopped", "\n".join(lines)
    assert "Traceback" not in "\n".join(lines)
    assert data_dir_free(tmp_path / "data")


def test_workers_flag_overrides_the_setting(tmp_path: Path) -> None:
    with ServerProcess(write_config(tmp_path, "[server]\nworkers = 2\n"), args=["--workers", "1"]) as server:
        assert set(server.pids()) == {"node", "worker 0"}
