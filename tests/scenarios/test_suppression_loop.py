"""The suppression list end to end through a real server: suppress over the API, inject over SMTP, see the
refusal; bounce hard, see the entry."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from engaged.testing.server import ServerProcess, wait_until
from engaged.testing.sink import SinkServer
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, captured_files, queued_id, stored_events, wait_events

BASE = "/api/v1/suppression-list"
REASON = "554 5.7.1 [internal] recipient address was suppressed due to customer policy"


def message(options: str = "") -> bytes:
    header = f'X-MSYS-API: {{"campaign_id": "loop"{", " + options if options else ""}}}\r\n'.encode()
    return b"From: App <app@example.org>\r\nSubject: loop\r\n" + header + b"\r\nHello\r\n"


def send(server: ServerProcess, rcpts: list[str], data: bytes) -> str:
    client = RawSmtp(server.smtp)
    try:
        client.transaction(rcpts)
        client.command("DATA")
        client.send(data + b".\r\n")
        return client.reply()
    finally:
        client.close()


def api(server: ServerProcess) -> httpx.Client:
    host, port = server.address("api")
    return httpx.Client(base_url=f"http://{host}:{port}", timeout=30)


def test_a_suppressed_recipient_is_refused_and_the_others_go_on(engaged_server: ServerFactory) -> None:
    server = engaged_server()
    with api(server) as client:
        assert client.put(f"{BASE}/bob@example.com", json={"type": "non_transactional"}).status_code == 200
    reply = send(server, ["alice@example.com", "Bob@Example.com"], message())
    message_id = queued_id(reply)
    events = wait_events(server, message_id, {"policy_rejection", "delivery"})
    [rejection] = [event for event in events if event["type"] == "policy_rejection"]
    assert rejection["rcpt_to"] == "bob@example.com" and rejection["raw_rcpt_to"] == "Bob@Example.com"
    assert rejection["error_code"] == "554" and rejection["reason"] == REASON
    assert rejection["message_id"] == message_id
    assert {event["rcpt_to"] for event in events if event["type"] in ("injection", "delivery")} == {
        "alice@example.com"}
    wait_until(lambda: len(captured_files(server)) == 1)

    only_bob = send(server, ["bob@example.com"], message())
    assert only_bob.startswith("550 5.7.1"), only_bob
    wait_until(lambda: sum(e["type"] == "policy_rejection" for e in stored_events(server)) == 2)

    transactional = send(server, ["bob@example.com"], message('"options": {"transactional": true}'))
    assert transactional.startswith("250"), transactional
    skipped = send(server, ["bob@example.com"], message('"options": {"skip_suppression": true}'))
    assert skipped.startswith("250"), skipped


def test_with_the_check_disabled_a_suppressed_recipient_is_sent_to(engaged_server: ServerFactory) -> None:
    server = engaged_server("[suppression]\nenabled = false\n")
    with api(server) as client:
        assert client.put(f"{BASE}/bob@example.com", json={"type": "non_transactional"}).status_code == 200
    assert send(server, ["bob@example.com"], message()).startswith("250")


@pytest.fixture
def sink() -> Iterator[SinkServer]:
    server = SinkServer().start()
    yield server
    server.stop()


def test_a_hard_bounce_suppresses_the_recipient_and_the_next_message_is_refused(
        engaged_server: ServerFactory, sink: SinkServer) -> None:
    sink.rcpt_reply = lambda address: "550 5.1.1 <gone@example.com>: user unknown" if "gone" in address else None
    server = engaged_server(f'[delivery]\nmode = "relay"\nrelay = "{sink.address}"\nretry_base = 0.2\n')
    first = queued_id(send(server, ["gone@example.com", "soft@example.com"], message()))
    wait_events(server, first, {"bounce", "delivery"}, timeout=30)
    with api(server) as client:
        def entry() -> list[dict[str, object]] | None:
            reply = client.get(f"{BASE}/gone@example.com")
            return reply.json()["results"] if reply.status_code == 200 else None

        [found] = wait_until(entry, 30)
        assert found["source"] == "Bounce Rule" and found["type"] == "non_transactional"
        assert "class 10" in str(found["description"])
        assert client.get(f"{BASE}/soft@example.com").status_code == 404
    assert send(server, ["gone@example.com"], message()).startswith("550 5.7.1")
