"""Injection throughput: messages/s accepted by engaged (durable spool on) against Postfix smtp-sink."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import free_port, measure, pin_self, start_engaged, start_smtp_sink

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "html"


def plain_1k() -> bytes:
    head = b"From: bench@example.org\r\nTo: bob@example.com\r\nSubject: 1 KB plain\r\n\r\n"
    return head + (b"x" * 76 + b"\r\n") * ((1024 - len(head)) // 78)


def html_20k(tracking: bool = False) -> bytes:
    api = b'X-MSYS-API: {"campaign_id": "bench", "options": {"open_tracking": true, "click_tracking": true}}\r\n'
    head = (api if tracking else b"") + (
        b"From: bench@example.org\r\nTo: bob@example.com\r\nSubject: 20 KB HTML\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    )
    links = b"".join(b'<p><a href="https://shop.example.com/item/%d?utm_source=mail&amp;x=1">Item %d</a></p>\r\n'
                     % (i, i) for i in range(40))
    body = b"<html><body>\r\n" + links
    filler = b"<p>" + b"Lorem ipsum dolor sit amet. " * 2 + b"</p>\r\n"
    while len(head) + len(body) < 20 * 1024:
        body += filler
    return head + body + b"</body></html>\r\n"


CASES = [
    ("1 KB plain, 1 session", plain_1k(), 1, 600),
    ("1 KB plain, 20 sessions", plain_1k(), 20, 60),
    ("20 KB HTML, 1 session", html_20k(), 1, 400),
    ("20 KB HTML, 20 sessions", html_20k(), 20, 40),
    ("20 KB HTML tracked, 20 sessions", html_20k(True), 20, 40),
]


def main() -> int:
    pin_self(1)
    sink_port = free_port()
    sink = start_smtp_sink(sink_port)
    server, tmp = start_engaged()
    host, port = server.smtp
    print(f"{'case':36} {'engaged msg/s':>14} {'smtp-sink msg/s':>16} {'ratio':>7}")
    try:
        for name, body, sessions, per_session in CASES:
            ours = measure(host, port, body, sessions, per_session)
            theirs = measure("127.0.0.1", sink_port, body, sessions, per_session) if sink else float("nan")
            ratio = ours / theirs if sink else float("nan")
            print(f"{name:36} {ours:14.0f} {theirs:16.0f} {ratio:7.2f}")
    finally:
        server.stop()
        tmp.cleanup()
        if sink is not None:
            sink.kill()
    if sink is None:
        print("smtp-sink not installed (Debian package postfix): no baseline measured")
    print("engaged: durable spool on (default [smtp] sync = \"syncfs\": written, renamed and synced before every")
    print("250, one filesystem sync shared by concurrent sessions), capture delivery running; goal ratio >= 0.3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
