"""The suppression list end to end through a real server: suppress over the API, inject over SMTP, see the
refusal; bounce hard, see the entry."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from engaged.testing.server import ServerProcess, wait_until
from engaged.testing.sink import SinkServer
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, captured_files, queued_id, stored_events, wait_captured, wait_events

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


LOOP = ('[unsubscribe]\nlist_unsubscribe = true\n[inbound]\nbounce_domain = "bounces.example.com"\n'
        '[smtpapi]\ntracking_domain = "TRACKER"\n')


def header(copy: bytes, name: bytes) -> bytes | None:
    head = copy.split(b"\r\n\r\n", 1)[0]
    unfolded = head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    for line in unfolded.split(b"\r\n"):
        if line.lower().startswith(name.lower() + b":"):
            return line.split(b":", 1)[1].strip()
    return None


def test_a_one_click_post_from_a_captured_copy_unsubscribes_and_suppresses(engaged_server: ServerFactory) -> None:
    server = engaged_server(LOOP.replace("TRACKER", "t.example.com"))
    message_id = queued_id(send(server, ["carol@example.com"], message()))
    [copy] = wait_captured(server, message_id)
    value = header(copy, b"List-Unsubscribe")
    assert value is not None and header(copy, b"List-Unsubscribe-Post") == b"List-Unsubscribe=One-Click"
    url = value.split(b">")[0].lstrip(b"<").decode()
    assert url.startswith("http://t.example.com/lu/")
    url = url.replace("t.example.com", "{}:{}".format(*server.tracker))  # the tracker as DNS would find it
    assert b"<mailto:u-" in value and b"@bounces.example.com?subject=unsubscribe>" in value
    assert header(copy, b"X-MSFBL") is not None
    reply = httpx.post(url, content=b"List-Unsubscribe=One-Click", timeout=30,
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 200 and "location" not in reply.headers
    [event] = wait_until(lambda: [e for e in stored_events(server) if e["type"] == "list_unsubscribe"], 30)
    assert event["rcpt_to"] == event["mailfrom"] == "carol@example.com" and event["campaign_id"] == "loop"
    with api(server) as client:
        def entry() -> list[dict[str, object]] | None:
            found = client.get(f"{BASE}/carol@example.com")
            return found.json()["results"] if found.status_code == 200 else None

        [found] = wait_until(entry, 30)
    assert found["source"] == "List Unsubscribe" and found["type"] == "non_transactional"
    assert send(server, ["carol@example.com"], message()).startswith("550 5.7.1")
    assert send(server, ["carol@example.com"], message('"options": {"transactional": true}')).startswith("250")


def test_transactional_copies_and_copies_with_their_own_header_are_left_alone(engaged_server: ServerFactory) -> None:
    server = engaged_server(LOOP.replace("TRACKER", "t.example.com"))
    transactional = queued_id(send(server, ["dan@example.com"], message('"options": {"transactional": true}')))
    [copy] = wait_captured(server, transactional)
    assert header(copy, b"List-Unsubscribe") is None and header(copy, b"X-MSFBL") is not None
    own = b"List-Unsubscribe: <mailto:leave@example.org>\r\n" + message()
    mine = queued_id(send(server, ["dan@example.com"], own))
    [copy] = wait_captured(server, mine)
    assert header(copy, b"List-Unsubscribe") == b"<mailto:leave@example.org>"
    assert header(copy, b"List-Unsubscribe-Post") is None


def test_copies_leave_with_a_signed_verp_return_path(engaged_server: ServerFactory, sink: SinkServer) -> None:
    server = engaged_server(f'[delivery]\nmode = "relay"\nrelay = "{sink.address}"\n'
                            '[inbound]\nbounce_domain = "bounces.example.com"\n')
    message_id = queued_id(send(server, ["erin@example.com"], message()))
    wait_until(sink.received, 30)
    [received] = sink.received()
    local, _, domain = received.mail_from.partition("@")
    assert domain == "bounces.example.com" and local.startswith("b-") and len(local) <= 64
    from engaged.keys import load_keyring
    from engaged.verp import match

    found = match(load_keyring(server.config.parent / "data"), received.mail_from, ("bounces.example.com",))
    assert found is not None and found.message_id == message_id and found.names("erin@example.com")
