"""Story: a worker is SIGKILLed while smtp-source injects; every message that got a 250 is captured once."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import threading

from engaged.testing.server import ServerProcess, wait_until
from tests.conftest import ServerFactory, require_tool
from tests.helpers import RawSmtp, queued_id

_SEQ = re.compile(rb"^X-Test-Seq: (\d+)\r$", re.M)
_ACCEPTED = re.compile(r"^engaged: worker (\d+): accepted ")


class Injector(threading.Thread):
    """Sends numbered messages, one connection each, and remembers which got a 250 (and under which id)."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.address = server.smtp
        self.accepted: dict[int, str] = {}
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            try:
                client = RawSmtp(self.address, timeout=30)
                try:
                    client.transaction()
                    client.command("DATA")
                    client.send(b"Subject: numbered\r\nX-Test-Seq: %d\r\n\r\nbody\r\n.\r\n" % seq)
                    reply = client.reply()
                finally:
                    client.close()
            except (OSError, AssertionError):
                self.failed += 1  # the connection met the killed worker: no 250, nothing promised
                continue
            if reply.startswith("250"):
                self.accepted[seq] = queued_id(reply)


def accepted_count(server: ServerProcess, worker: int) -> int:
    return sum(1 for line in list(server.log) if (m := _ACCEPTED.match(line)) and int(m.group(1)) == worker)


def test_sigkill_of_a_worker_under_load_loses_no_accepted_message(engaged_server: ServerFactory) -> None:
    smtp_source = require_tool("smtp-source", "/usr/sbin/smtp-source")
    server = engaged_server("[server]\nworkers = 2\n")
    host, port = server.smtp
    captured = server.config.parent / "data" / "captured"

    def load() -> subprocess.Popen[bytes]:
        return subprocess.Popen([smtp_source, "-s", "4", "-m", "100000", "-f", "load@example.org",
                                 "-t", "bob@example.com", f"{host}:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    source = load()
    injector = Injector(server)
    injector.start()
    try:
        victim = server.pids()["worker 0"]
        # Kill once worker 0 has accepted plenty, i.e. in the middle of the load.
        wait_until(lambda: accepted_count(server, 0) >= 30, timeout=120)
        os.kill(victim, signal.SIGKILL)
        restarted = wait_until(lambda: server.pids()["worker 0"] != victim and server.pids()["worker 0"],
                               timeout=120)
        before = len(injector.accepted)
        wait_until(lambda: len(injector.accepted) >= before + 30 and accepted_count(server, 0) > 0, timeout=120)
        if source.poll() is not None:  # smtp-source gives up on a reset connection: keep the load on
            source = load()
        # 90 in all, whatever share smtp-source took meanwhile: the assertion below must not depend on speed
        wait_until(lambda: len(injector.accepted) >= max(before + 60, 90), timeout=120)
    finally:
        injector.stop.set()
        injector.join(60)
        if source.poll() is None:
            source.kill()
        source.wait(10)
    assert restarted != victim
    accepted = dict(injector.accepted)
    assert len(accepted) >= 90

    def copies() -> collections.Counter[int] | None:
        seen: collections.Counter[int] = collections.Counter()
        for path in captured.glob("*.eml"):
            try:
                head = path.read_bytes()[:4096]
            except FileNotFoundError:
                continue
            seen.update(int(m.group(1)) for m in _SEQ.finditer(head))
        return seen if all(seen[seq] >= 1 for seq in accepted) else None

    seen = wait_until(copies, timeout=120, interval=0.5)
    assert [seq for seq in accepted if seen[seq] != 1] == []
    assert all(count == 1 for count in seen.values())
    for seq, message_id in accepted.items():
        [copy] = list(captured.glob(f"{message_id}.*.eml"))
        assert b"X-Test-Seq: %d\r\n" % seq in copy.read_bytes()
    assert server.stop() == 0
    assert "Traceback" not in "\n".join(server.log)
