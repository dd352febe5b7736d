"""An AMP for Email message through engaged: its AMP part tracked with amp-img pixels, which record amp_initial_open
and amp_open, and a click on its link records amp_click."""

from __future__ import annotations

import email
import re

import httpx

from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, wait_captured, wait_events

AMP = (
    "<!doctype html><html \u26a14email><head><meta charset=\"utf-8\">"
    '<script async src="https://cdn.ampproject.org/v0.js"></script>'
    "<style amp4email-boilerplate>body{visibility:hidden}</style></head>"
    '<body><p><a href="https://shop.example/amp-offer" data-msys-linkname="offer">Offer</a></p></body></html>'
)
MESSAGE = (
    "From: Shop <shop@example.com>\r\nTo: bob@example.net\r\nSubject: AMP\r\nMIME-Version: 1.0\r\n"
    'X-MSYS-API: {"campaign_id": "amp", "options": {"open_tracking": true, "click_tracking": true}}\r\n'
    'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOffer: https://shop.example/text-offer\r\n"
    f"--b\r\nContent-Type: text/x-amp-html; charset=utf-8\r\n\r\n{AMP}\r\n"
    '--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><a href="https://shop.example/html">x</a>'
    "</body></html>\r\n--b--\r\n"
).encode()


def test_amp_part_is_tracked_and_a_click_on_its_link_records_amp_click(engaged_server: ServerFactory) -> None:
    server = engaged_server('[smtpapi]\nopen_tracking_scheme = "https"\n')
    client = RawSmtp(server.smtp)
    client.transaction(["bob@example.net"])
    client.command("DATA")
    client.send(MESSAGE + b".\r\n")
    message_id = queued_id(client.reply())
    client.close()
    [copy] = wait_captured(server, message_id)
    [amp] = [part.get_payload(decode=True) for part in email.message_from_bytes(copy).walk()
             if part.get_content_type() == "text/x-amp-html"]
    assert isinstance(amp, bytes)
    assert amp.count(b'<amp-img src="https://localhost:8080/q/') == 2 and b"<img" not in amp
    link = re.search(rb'href="http://localhost:8080(/f/a/[A-Za-z0-9_-]+)"', amp)
    assert link is not None
    host, port = server.tracker
    response = httpx.get(f"http://{host}:{port}{link.group(1).decode()}", follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == "https://shop.example/amp-offer"
    [click] = [event for event in wait_events(server, message_id, {"amp_click"}, timeout=30)
               if event["type"] == "amp_click"]
    assert click["target_link_url"] == "https://shop.example/amp-offer"
    assert click["target_link_name"] == "offer" and click["campaign_id"] == "amp"
    # The pixels carry https URLs (amp-img needs them); the test tracker answers the same paths over http.
    for pixel in re.findall(rb'<amp-img src="https://localhost:8080(/q/[A-Za-z0-9_-]+)"', amp):
        assert httpx.get(f"http://{host}:{port}{pixel.decode()}").status_code == 200
    opens = wait_events(server, message_id, {"amp_initial_open", "amp_open"}, timeout=30)
    assert sorted(str(e["type"]) for e in opens if str(e["type"]).startswith("amp_")) == [
        "amp_click", "amp_initial_open", "amp_open"]
    assert not [e for e in opens if e["type"] in ("open", "initial_open", "click")]
