"""Helpers shared by the delivery tests: a message to relay, injecting it over SMTP, its events by type."""

from __future__ import annotations

from engaged.testing.server import ServerProcess
from tests.helpers import RawSmtp, queued_id, wait_events

MESSAGE = (b"From: App <app@example.org>\r\nTo: bob@example.com\r\nSubject: relay\r\n"
           b'X-MSYS-API: {"campaign_id": "r"}\r\n\r\nHello\r\n..leading dot\r\n')


def inject(server: ServerProcess, data: bytes = MESSAGE, rcpts: list[str] | None = None) -> str:
    client = RawSmtp(server.smtp)
    try:
        client.transaction(rcpts)
        client.command("DATA")
        client.send(data + b".\r\n")
        return queued_id(client.reply())
    finally:
        client.close()


def events_of(server: ServerProcess, message_id: str, types: set[str]) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for event in wait_events(server, message_id, types, timeout=30):
        found.setdefault(str(event["type"]), []).append(event)
    return found
