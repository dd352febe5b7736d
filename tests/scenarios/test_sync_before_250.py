"""Story: under strace, the spool file is renamed in and the filesystem synced before 250 is sent."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from engaged.testing.server import ServerProcess, write_config
from tests.conftest import require_tool
from tests.helpers import RawSmtp, queued_id


def stop_traced(server: ServerProcess) -> None:
    """SIGTERM the traced server itself (strace's child), then wait for strace to finish."""
    process = server.process
    if process is None:
        return
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    for child in children:
        os.kill(int(child), signal.SIGTERM)
    process.wait(30)
    server.process = None


def test_the_250_is_written_only_after_the_message_is_durable(tmp_path: Path) -> None:
    strace = require_tool("strace")
    trace = tmp_path / "trace.txt"
    config = write_config(tmp_path)
    server = ServerProcess(config)
    original = subprocess.Popen

    def traced(args: list[str], **kwargs: object) -> subprocess.Popen[str]:
        command = [strace, "-f", "-qq", "-s", "200", "-o", str(trace),
                   "-e", "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2,write,writev,sendto,sendmsg", *args]
        return original(command, **kwargs)  # type: ignore[call-overload, no-any-return]

    subprocess.Popen = traced  # type: ignore[misc, assignment]
    try:
        server.start(timeout=60)
    finally:
        subprocess.Popen = original  # type: ignore[misc]
    try:
        client = RawSmtp(server.smtp)
        client.transaction()
        client.command("DATA")
        client.send(b"Subject: traced\r\n\r\nx\r\n.\r\n")
        message_id = queued_id(client.reply())
        client.close()
    finally:
        stop_traced(server)
    lines = trace.read_text().splitlines()

    def first(pattern: str) -> int:
        found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        assert found, f"no {pattern!r} in the trace"
        return found[0]

    renamed = first(rf'rename\w*\(.*spool/\d+/tmp/{message_id}\.msg".*spool/\d+/{message_id}\.msg"')
    replied = first(rf"(write|writev|sendto|sendmsg)\(.*250 2\.0\.0 OK queued as {message_id}")
    syncs = [i for i, line in enumerate(lines)
             if re.search(r"(syncfs|fsync)\(", line) or re.search(r"<\.\.\. (syncfs|fsync) resumed>", line)]
    completed = [i for i in syncs if renamed < i < replied and re.search(r"= 0$", lines[i])]
    assert completed, "no sync completed between the rename and the 250"
