"""Test helpers: raw SMTP conversations, captured-copy lookups, stored events, tracking servers, journal lines."""

from __future__ import annotations

import email
import http.server
import socket
import sqlite3
from email.message import Message
from email.policy import compat32
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest

from engaged.events.model import OpenEvent, encode_event
from engaged.testing.server import ServerProcess, wait_until
from engaged.testing.sink import free_port

if TYPE_CHECKING:
    from tests.conftest import ServerFactory


class RawSmtp:
    """A byte-level SMTP client for conversations smtplib refuses to have (smuggling, bad input)."""

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buffer = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        """One complete (possibly multi-line) reply."""
        lines: list[str] = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed: " + "|".join(lines))
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "\n".join(lines)

    def command(self, line: str | bytes) -> str:
        data = line if isinstance(line, bytes) else line.encode()
        self.send(data + b"\r\n")
        return self.reply()

    def transaction(self, rcpts: list[str] | None = None, sender: str = "app@example.org") -> None:
        """EHLO, MAIL and RCPT, each expected to succeed."""
        if not self.command("EHLO client.example").startswith("250"):
            raise AssertionError("EHLO failed")
        reply = self.command(f"MAIL FROM:<{sender}>")
        if not reply.startswith("250"):
            raise AssertionError(reply)
        for rcpt in rcpts or ["bob@example.com"]:
            reply = self.command(f"RCPT TO:<{rcpt}>")
            if not reply.startswith("250"):
                raise AssertionError(reply)

    def close(self) -> None:
        self.sock.close()


def captured_files(server: ServerProcess) -> list[Path]:
    directory = server.config.parent / "data" / "captured"
    return sorted(directory.glob("*.eml")) if directory.is_dir() else []


def wait_captured(server: ServerProcess, message_id: str, count: int = 1, timeout: float = 15.0) -> list[bytes]:
    """The captured copies of a message, once `count` of them exist."""
    directory = server.config.parent / "data" / "captured"

    def ready() -> list[Path] | None:
        files = sorted(directory.glob(f"{message_id}.*.eml")) if directory.is_dir() else []
        return files if len(files) >= count else None

    files: list[Path] = wait_until(ready, timeout)
    return [path.read_bytes() for path in files]


def stored_events(server: ServerProcess, message_id: str | None = None) -> list[dict[str, object]]:
    """Events in the server's SQLite store, oldest first."""
    path = server.config.parent / "data" / "events.sqlite3"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if message_id is None:
            rows = conn.execute("SELECT body FROM events ORDER BY seq").fetchall()
        else:
            rows = conn.execute("SELECT body FROM events WHERE message_id = ? ORDER BY seq", (message_id,)).fetchall()
    finally:
        conn.close()
    return [msgspec.json.decode(row[0]) for row in rows]


def wait_events(
    server: ServerProcess, message_id: str, types: set[str], timeout: float = 15.0
) -> list[dict[str, object]]:
    """The message's events once every type in `types` is present."""

    def ready() -> list[dict[str, object]] | None:
        events = stored_events(server, message_id)
        return events if types <= {str(e["type"]) for e in events} else None

    result: list[dict[str, object]] = wait_until(ready, timeout)
    return result


def queued_id(reply: str) -> str:
    """The message id in a `250 … queued as <id>` reply."""
    if "queued as " not in reply:
        raise AssertionError(f"not accepted: {reply}")
    return reply.rsplit("queued as ", 1)[1].split()[0]


def tracking_server(engaged_server: ServerFactory) -> tuple[ServerProcess, str]:
    """`engaged serve` with open and click tracking on, links pointing at its own tracker."""
    port = free_port()
    server = engaged_server(
        f'[engagement_tracker]\nlisten = "127.0.0.1:{port}"\n'
        f'[smtpapi]\nopen_tracking_enabled = true\nclick_tracking_enabled = true\n'
        f'tracking_domain = "127.0.0.1:{port}"\n'
    )
    if "tracker" not in server.addresses:
        pytest.skip("engaged serve does not run the tracker yet (no 'tracker listening on' line)")
    return server, f"127.0.0.1:{port}"


def html_part(copy: bytes) -> str:
    message: Message = email.message_from_bytes(copy, policy=compat32)
    for part in message.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no HTML part in the captured copy")


def event_line(n: int) -> bytes:
    """A tracker journal line: open event number `n` (timestamp 1_700_000_000 + n)."""
    event = OpenEvent(event_id=str(1_000_000 + n), timestamp=f"{1_700_000_000 + n}.000", message_id=f"m{n}",
                      transmission_id="t", campaign_id="c", customer_id="1", rcpt_to="ann@example.com",
                      raw_rcpt_to="ann@example.com", rcpt_meta={"n": n}, rcpt_tags=[])
    return encode_event(event) + b"\n"


def segments(directory: Path) -> list[Path]:
    """A journal directory's segment files, oldest first."""
    return sorted(directory.glob("*.jsonl"))


def journal_bytes(directory: Path) -> bytes:
    """Everything a journal directory holds, segment after segment."""
    return b"".join(segment_bytes(path) for path in segments(directory))


def segment_bytes(path: Path) -> bytes:
    """The events of one journal segment: its bytes before the zeros its writer keeps written ahead."""
    return path.read_bytes().partition(b"\0")[0]


LANDED = "landed-here"
"""Text of the landing page, so a test can tell that a browser followed a tracked link to it."""


class LandingSite(http.server.ThreadingHTTPServer):
    """The page tracked links point to, on 127.0.0.1: remembers each request's path and User-Agent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _LandingHandler)
        self.hits: list[str] = []
        self.requests: list[tuple[str, str]] = []

    @property
    def base(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _LandingHandler(http.server.BaseHTTPRequestHandler):
    server: LandingSite

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        self.server.requests.append((self.path, self.headers.get("User-Agent", "")))
        body = f"<!doctype html><title>landed</title><p id='landed'>{LANDED}</p>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None
