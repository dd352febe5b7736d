"""The SMTP engine alone (protocol core + uvloop adapter, a handler that only answers 250) against smtp-sink."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import _pinned, free_port, measure, pin_self, start_smtp_sink

from engaged.smtp.gate import ConnectionGate
from engaged.smtp.handler import Session
from engaged.smtp.listener import Listener, SmtpConnection
from engaged.smtp.protocol import Settings
from engaged.smtp.steps import Authenticate, Hello, MailFrom, Message, RcptTo

BODY = b"From: bench@example.org\r\nTo: bob@example.com\r\nSubject: 1 KB plain\r\n\r\n" + (b"x" * 76 + b"\r\n") * 12


class _Accept:
    """Every step accepted; the message is dropped (the engine's own cost, nothing else)."""

    def is_relay_network(self, ip: str) -> bool:
        return True

    def connect(self, session: Session) -> str | None:
        return None

    def hello(self, session: Session, step: Hello) -> str | None:
        return None

    def mail(self, session: Session, step: MailFrom) -> str:
        return "250 2.1.0 Sender OK"

    def rcpt(self, session: Session, step: RcptTo) -> str:
        return "250 2.1.5 Recipient OK"

    def reset(self, session: Session) -> None:
        return None

    async def authenticate(self, session: Session, step: Authenticate) -> str:
        return "535 5.7.8 Authentication credentials invalid"

    async def message(self, session: Session, step: Message) -> str:
        return "250 2.0.0 OK queued as 0"


async def _serve(port: int) -> None:
    listener = Listener(_Accept(), ConnectionGate(10_000, 10_000),
                        settings=Settings(hostname="bench.example", max_message_size=26214400),
                        tls=None, command_timeout=300, first_command_timeout=300, data_timeout=300)
    server = await asyncio.get_running_loop().create_server(lambda: SmtpConnection(listener), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def _start_engine(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(_pinned([sys.executable, __file__, "--serve", str(port)], 0))
    deadline = time.monotonic() + 10
    import socket

    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the engine did not start")


def _smtp_source(port: int, sessions: int, count: int) -> float | None:
    """smtp-source (Postfix), one message per connection, as msg/s; None when not installed."""
    binary = shutil.which("smtp-source") or ("/usr/sbin/smtp-source" if os.path.exists("/usr/sbin/smtp-source")
                                             else None)
    if binary is None:
        return None
    started = time.perf_counter()
    subprocess.run([binary, "-s", str(sessions), "-m", str(count), "-l", "1024", "-f", "bench@example.org",
                    "-t", "bob@example.com", f"127.0.0.1:{port}"], check=True, capture_output=True)
    return count / (time.perf_counter() - started)


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        import uvloop

        uvloop.run(_serve(int(sys.argv[2])))
        return 0
    pin_self(1)
    ours_port, sink_port = free_port(), free_port()
    engine, sink = _start_engine(ours_port), start_smtp_sink(sink_port)
    print("case                                          engine msg/s   smtp-sink msg/s   ratio   (same run)")
    try:
        for name, run in (("1 KB plain, 20 sessions, reuse (bench client)",
                           lambda p: measure("127.0.0.1", p, BODY, 20, 200)),
                          ("1 KB plain, 20 sessions, new conn (smtp-source)", lambda p: _smtp_source(p, 20, 4000))):
            ours = run(ours_port)
            theirs = run(sink_port) if sink is not None else None
            ratio = f"{ours / theirs:7.2f}" if ours and theirs else "    n/a"
            print(f"{name:46} {ours or float('nan'):12.0f} {theirs or float('nan'):17.0f} {ratio}")
    finally:
        engine.terminate()
        engine.wait(10)
        if sink is not None:
            sink.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
