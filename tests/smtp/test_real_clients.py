"""Real SMTP clients against the engine: swaks (pipelined, and over a pipe), smtp-source, smtplib with SMTPUTF8."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
from pathlib import Path

from engaged.testing.server import ServerProcess, wait_until
from tests.conftest import ServerFactory, require_tool
from tests.helpers import captured_files


def test_swaks_pipelines_a_message(shared_server: ServerProcess) -> None:
    swaks = require_tool("swaks")
    host, port = shared_server.smtp
    result = subprocess.run([swaks, "--server", f"{host}:{port}", "--pipeline", "--to", "bob@example.com",
                             "--from", "app@example.org", "--body", "pipelined by swaks"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<** " not in result.stdout  # no error replies
    assert "250 2.0.0 OK queued as " in result.stdout


def test_swaks_talks_to_the_core_over_a_pipe(tmp_path: Path) -> None:
    swaks = require_tool("swaks")
    spool = tmp_path / "messages.jsonl"
    for extra in ([], ["--pipeline"]):
        result = subprocess.run([swaks, "--pipe", f"{sys.executable} -m engaged.testing.stdio {spool}",
                                 "--to", "bob@example.com", "--from", "<>", "--body", "over a pipe", *extra],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    messages = [json.loads(line) for line in spool.read_text().splitlines()]
    assert [(m["mail_from"], m["rcpt_tos"]) for m in messages] == [("", ["bob@example.com"])] * 2
    assert all("over a pipe" in m["data"] for m in messages)


def test_smtp_source_injects_over_many_connections(engaged_server: ServerFactory) -> None:
    source = require_tool("smtp-source", "/usr/sbin/smtp-source")
    server = engaged_server()
    host, port = server.smtp
    subprocess.run([source, "-s", "5", "-m", "50", "-l", "1024", "-f", "app@example.org", "-t", "bob@example.com",
                    f"{host}:{port}"], check=True, capture_output=True, timeout=120)
    wait_until(lambda: len(captured_files(server)) == 50, 60)


def test_smtplib_sends_utf8_addresses_with_smtputf8(shared_server: ServerProcess) -> None:
    with smtplib.SMTP(*shared_server.smtp) as client:
        client.ehlo()
        refused = client.sendmail("jörg@bücher.example", ["zoë@example.com"], "Subject: ü\r\n\r\nhi\r\n".encode(),
                                  mail_options=["SMTPUTF8"])
    assert refused == {}
