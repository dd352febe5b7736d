"""Story: Lua policy scripts in [policy] scripts steer tracking, data and refusals over real SMTP."""

from __future__ import annotations

import email
import re
import subprocess
import sys
from pathlib import Path

from engaged.keys import load_keyring
from engaged.testing.server import ServerProcess, wait_until
from engaged.tokens import CLICK_KINDS, decode_token
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, stored_events, wait_captured, wait_events

SCRIPTS = Path(__file__).resolve().parents[1] / "policy" / "scripts"
HTML = (b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b'<html><body><a href="https://shop.example/">shop</a></body></html>\r\n')


def policy(*names: str) -> str:
    return "[policy]\nscripts = [" + ", ".join(f'"{SCRIPTS / name}"' for name in names) + "]\n"


def send(server: ServerProcess, message: bytes, rcpts: list[str] | None = None) -> str:
    client = RawSmtp(server.smtp)
    try:
        client.transaction(rcpts)
        client.command("DATA")
        client.send(message + b".\r\n")
        return client.reply()
    finally:
        client.close()


def click_payload_campaign(server: ServerProcess, copy: bytes) -> str:
    payload = email.message_from_bytes(copy).get_payload(decode=True)
    assert isinstance(payload, bytes)
    match = re.search(rb"http://click\.example\.com/f/a/([A-Za-z0-9_-]+)", payload)
    assert match is not None, copy
    keyring = load_keyring(server.config.parent / "data")
    return decode_token(match.group(1).decode(), keyring, expect=CLICK_KINDS).identity.campaign_id


def test_minimal_script_turns_tracking_on_without_a_header(engaged_server: ServerFactory) -> None:
    server = engaged_server(policy("minimal.lua"))
    message_id = queued_id(send(server, HTML))
    [copy] = wait_captured(server, message_id)
    assert b"/q/" in copy and click_payload_campaign(server, copy) == "spring_sale"
    [injection] = [e for e in wait_events(server, message_id, {"injection"}) if e["type"] == "injection"]
    assert (injection["campaign_id"], injection["rcpt_tags"]) == ("spring_sale", ["promo", "eu"])
    assert injection["open_tracking"] is True and injection["click_tracking"] is True


def test_minimal_script_overrides_the_header(engaged_server: ServerFactory) -> None:
    server = engaged_server(policy("minimal.lua"))
    header = b'X-MSYS-API: {"campaign_id": "from_header", "options": {"click_tracking": false}}\r\n'
    message_id = queued_id(send(server, header + HTML))
    [copy] = wait_captured(server, message_id)
    assert click_payload_campaign(server, copy) == "spring_sale"
    assert b"X-MSYS-API" not in copy


def test_campaign_tags_and_metadata_come_from_headers_which_are_removed(engaged_server: ServerFactory) -> None:
    server = engaged_server(policy("campaign_from_headers.lua"))
    message = b"X-Campaign: autumn\r\nX-Tags: a, b\r\nX-User-Id: 77\r\nSubject: s\r\n\r\nbody\r\n"
    message_id = queued_id(send(server, message))
    assert wait_captured(server, message_id) == [b"Subject: s\r\n\r\nbody\r\n"]
    [injection] = [e for e in wait_events(server, message_id, {"injection"}) if e["type"] == "injection"]
    assert (injection["campaign_id"], injection["rcpt_tags"], injection["rcpt_meta"]) == \
        ("autumn", ["a", "b"], {"user_id": "77"})


def test_each_recipient_gets_its_own_campaign(engaged_server: ServerFactory) -> None:
    server = engaged_server(policy("per_recipient.lua"))
    message_id = queued_id(send(server, b"Subject: s\r\n\r\nbody\r\n", ["a@one.example", "b@default.example"]))
    events = wait_events(server, message_id, {"injection"})
    campaigns = {str(e["rcpt_to"]): e["campaign_id"] for e in events if e["type"] == "injection"}
    assert campaigns == {"a@one.example": "campaign-one.example", "b@default.example": "default"}


def test_set_code_refusals_reach_the_client_and_are_recorded(engaged_server: ServerFactory) -> None:
    server = engaged_server(policy("reject.lua"))
    client = RawSmtp(server.smtp)
    try:
        client.command("EHLO x")
        assert client.command("MAIL FROM:<a@later.example>").startswith("451 4.7.1 come back later")
        assert client.command("RSET").startswith("250")
        assert client.command("MAIL FROM:<a@fine.example>").startswith("250")
        reply = client.command("RCPT TO:<x@blocked.example>")
        assert reply.startswith("550 5.7.1 recipient x@blocked.example is blocked by policy"), reply
        assert client.command("RCPT TO:<ok@fine.example>").startswith("250")
    finally:
        client.close()
    [event] = [e for e in stored_events(server) if e["type"] == "policy_rejection"]
    assert (event["rcpt_to"], event["msg_from"], event["error_code"]) == ("x@blocked.example", "a@fine.example", "550")


def test_a_runaway_script_gets_451_and_the_server_goes_on(engaged_server: ServerFactory) -> None:
    server = engaged_server(policy("forever.lua"))
    reply = send(server, b"Subject: s\r\n\r\nbody\r\n")
    assert reply.startswith("451 4.3.0"), reply
    assert not list((server.config.parent / "data" / "spool").glob("*/*.msg"))
    # The worker logs the limit on its own stderr line, which may arrive just after the reply.
    wait_until(lambda: any("instruction budget" in line or "CPU time" in line for line in server.log))


def test_a_script_that_reaches_for_os_stops_startup(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'data_dir = "{tmp_path / "d"}"\n' + policy("escape_os_execute.lua"))
    result = subprocess.run([sys.executable, "-m", "engaged", "check-config", "--config", str(config)],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 2
    assert "escape_os_execute.lua:" in result.stderr
    result = subprocess.run([sys.executable, "-m", "engaged", "serve", "--config", str(config)],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 2 and "escape_os_execute.lua:" in result.stderr


def test_policy_rejection_at_data_time_is_an_event(engaged_server: ServerFactory, tmp_path: Path) -> None:
    script = tmp_path / "refuse_data.lua"
    script.write_text(
        'require("msys.core")\nlocal mod = {}\n'
        "function mod:validate_data(msg, accept, vctx)\n"
        '  vctx:set_code(554, "5.7.1 no thanks")\n  return msys.core.VALIDATE_DONE\nend\n'
        'msys.registerModule("refuse", mod)\n'
    )
    server = engaged_server(f'[policy]\nscripts = ["{script}"]\n')
    assert send(server, b"Subject: s\r\n\r\nbody\r\n").startswith("554 5.7.1 no thanks")
    [event] = [e for e in stored_events(server) if e["type"] == "policy_rejection"]
    assert (event["rcpt_to"], event["error_code"], event["reason"]) == ("bob@example.com", "554", "5.7.1 no thanks")
