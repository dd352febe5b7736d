"""Story: X-MSYS-API cc, bcc and archive over real SMTP: a copy per address, the Cc/Bcc fields, own or replicated
tracked links, clicks through the tracker, and rcpt_type on every event of the added copies."""

from __future__ import annotations

import email
import json
import re
from collections.abc import Mapping
from pathlib import Path

import httpx

from engaged.testing.server import ServerProcess, wait_until
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, stored_events, wait_captured

API = {
    "campaign_id": "quarterly",
    "options": {"open_tracking": True, "click_tracking": True},
    "cc": [{"email": "CC1@example.net", "name": "CC One"}, "cc2@example.net", "to@example.net"],
    "bcc": [{"email": "bcc@example.net", "name": "Hidden"}, "cc2@example.net"],
    "archive": ["vault@example.net", "bcc@example.net"],
}
BODY = (b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b'<html><body><a href="https://shop.example/offer">offer</a></body></html>\r\n')


def header(api: Mapping[str, object]) -> bytes:
    """An X-MSYS-API field, folded after each comma so no line passes 998 octets."""
    return b"X-MSYS-API: " + json.dumps(api).replace(", ", ",\r\n ").encode() + b"\r\n"


def send(server: ServerProcess, message: bytes, rcpts: list[str]) -> str:
    client = RawSmtp(server.smtp)
    try:
        client.transaction(rcpts)
        client.command("DATA")
        client.send(message + b".\r\n")
        return client.reply()
    finally:
        client.close()


def copies_by_recipient(server: ServerProcess, message_id: str, count: int) -> dict[str, bytes]:
    wait_captured(server, message_id, count)
    directory = server.config.parent / "data" / "captured"
    copies: dict[str, bytes] = {}
    for meta in directory.glob(f"{message_id}.*.json"):
        rcpt = json.loads(meta.read_text())["rcpt_to"]
        copies[rcpt] = Path(str(meta)[: -len(".json")] + ".eml").read_bytes()
    return copies


def links(copy: bytes) -> list[str]:
    html = email.message_from_bytes(copy).get_payload(decode=True)
    assert isinstance(html, bytes)
    return re.findall(r'href="http://localhost:8080(/f/a/[A-Za-z0-9_-]+)"', html.decode())


def click(server: ServerProcess, path: str) -> None:
    host, port = server.tracker
    response = httpx.get(f"http://{host}:{port}{path}", follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == "https://shop.example/offer"


def test_each_listed_address_gets_its_copy_headers_links_and_events(engaged_server: ServerFactory) -> None:
    server = engaged_server()
    message = b"From: shop@example.com\r\nTo: to@example.net\r\nSubject: Q3\r\n" + header(API) + BODY
    message_id = queued_id(send(server, message, ["to@example.net"]))
    copies = copies_by_recipient(server, message_id, 5)
    assert sorted(copies) == ["CC1@example.net", "bcc@example.net", "cc2@example.net", "to@example.net",
                              "vault@example.net"]  # one copy per address, whatever lists repeat it
    parsed = {rcpt: email.message_from_bytes(copy) for rcpt, copy in copies.items()}
    for rcpt, copy in parsed.items():
        assert copy["To"] == "to@example.net" and "X-MSYS-API" not in copy, rcpt
        assert copy["Cc"] == "CC One <CC1@example.net>,\r\n cc2@example.net,\r\n to@example.net", rcpt
        assert copy.get_all("Bcc") == (["Hidden <bcc@example.net>"] if rcpt == "bcc@example.net" else None), rcpt
    # The archive copy is the envelope recipient's, byte for byte; cc and bcc copies have links of their own.
    assert copies["vault@example.net"] == copies["to@example.net"]
    own = {rcpt: links(copy) for rcpt, copy in copies.items()}
    assert len({own[rcpt][0] for rcpt in ("to@example.net", "CC1@example.net", "cc2@example.net",
                                          "bcc@example.net")}) == 4

    expected = {"to@example.net": None, "cc1@example.net": "cc", "cc2@example.net": "cc", "bcc@example.net": "bcc",
                "vault@example.net": "archive"}
    def all_stored() -> bool:
        found = [e["type"] for e in stored_events(server, message_id)]
        return found.count("injection") == 5 and found.count("delivery") == 5

    wait_until(all_stored, 30)
    events = stored_events(server, message_id)
    kinds = {(e["type"], e["rcpt_to"]): e.get("rcpt_type") for e in events}
    assert kinds == {(kind, rcpt): rcpt_type for kind in ("injection", "delivery")
                     for rcpt, rcpt_type in expected.items()}
    assert {e["transmission_id"] for e in events} == {events[0]["transmission_id"]}
    assert {e["campaign_id"] for e in events} == {"quarterly"}

    click(server, own["CC1@example.net"][0])
    click(server, own["vault@example.net"][0])  # the archive's link is the envelope recipient's

    def clicks() -> list[dict[str, object]] | None:
        found = [e for e in stored_events(server, message_id) if e["type"] == "click"]
        return found if len(found) == 2 else None

    by_rcpt = {str(e["rcpt_to"]): e for e in wait_until(clicks, 30)}
    assert by_rcpt["cc1@example.net"]["rcpt_type"] == "cc"
    assert "rcpt_type" not in by_rcpt["to@example.net"]


def test_more_than_1000_listed_recipients_are_refused_and_nothing_is_queued(engaged_server: ServerFactory) -> None:
    server = engaged_server()
    api = {"cc": [f"c{n}@example.net" for n in range(500)], "bcc": [f"b{n}@example.net" for n in range(500)],
           "archive": ["one-too-many@example.net"]}
    reply = send(server, header(api) + BODY, ["to@example.net"])
    assert reply == "550 5.6.0 X-MSYS-API cc, bcc and archive may list at most 1000 recipients in all"
    assert not list((server.config.parent / "data" / "captured").glob("*.eml"))
    assert stored_events(server) == []
