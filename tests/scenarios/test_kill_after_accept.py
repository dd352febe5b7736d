"""Story: a message answered 250 survives SIGKILL of the server and is delivered after the restart."""

from __future__ import annotations

import shutil
import subprocess

from engaged.testing.server import wait_until
from tests.conftest import ServerFactory, require_tool
from tests.helpers import RawSmtp, captured_files, queued_id, stored_events, wait_captured, wait_events


def test_sigkill_right_after_250_loses_nothing(engaged_server: ServerFactory) -> None:
    # Delivery is made impossible (the capture directory is a file), so the message must still be in
    # the spool when the server dies; after the restart it is delivered exactly as accepted. A worker
    # may try (and defer) the delivery before it dies: a short retry base brings the retry within the wait.
    server = engaged_server("[delivery]\nretry_base = 0.2\n")
    data = server.config.parent / "data"
    shutil.rmtree(data / "captured", ignore_errors=True)
    (data / "captured").write_bytes(b"not a directory")
    message = b"Subject: durable\r\nX-MSYS-API: {\"campaign_id\": \"d\"}\r\n\r\n" + b"line\r\n" * 500
    client = RawSmtp(server.smtp)
    client.transaction(["a@example.com", "b@example.com"])
    client.command("DATA")
    client.send(message + b".\r\n")
    message_id = queued_id(client.reply())
    server.kill()
    client.close()
    (data / "captured").unlink()
    server.start()
    copies = wait_captured(server, message_id, count=2)
    assert copies == [message.replace(b"X-MSYS-API: {\"campaign_id\": \"d\"}\r\n", b"")] * 2
    # Both recipients' events, however far apart their deliveries land on a busy machine. A worker may
    # try (and fail: captured/ is a file) a delivery before it dies, so delay events may precede them.
    def all_four() -> list[str] | None:
        found = [str(e["type"]) for e in stored_events(server, message_id) if e["type"] != "delay"]
        return found if len(found) >= 4 else None

    types: list[str] = wait_until(all_four)
    assert sorted(types) == ["delivery", "delivery", "injection", "injection"]
    wait_until(lambda: not list((data / "spool").glob("*/*.msg")))


def test_restart_does_not_store_events_twice(engaged_server: ServerFactory) -> None:
    server = engaged_server()
    client = RawSmtp(server.smtp)
    client.transaction()
    client.command("DATA")
    client.send(b"Subject: once\r\n\r\nx\r\n.\r\n")
    message_id = queued_id(client.reply())
    client.close()
    wait_events(server, message_id, {"injection", "delivery"})
    server.stop()
    server.start()
    assert [e["type"] for e in stored_events(server, message_id)] == ["injection", "delivery"]
    assert len(captured_files(server)) == 1


def test_swaks_injection_with_x_msys_api(engaged_server: ServerFactory) -> None:
    swaks = require_tool("swaks")
    server = engaged_server()
    host, port = server.smtp
    result = subprocess.run(
        [swaks, "--server", f"{host}:{port}", "--to", "bob@example.com", "--from", "app@example.org",
         "--header", 'X-MSYS-API: {"campaign_id": "swaks", "metadata": {"user": "7"}}'],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    accepted = [line for line in result.stdout.splitlines() if "queued as" in line]
    message_id = queued_id(accepted[0])
    [copy] = wait_captured(server, message_id)
    assert b"X-MSYS-API" not in copy and b"swaks" in copy
    events = wait_events(server, message_id, {"injection", "delivery"})
    assert {e["campaign_id"] for e in events} == {"swaks"}
