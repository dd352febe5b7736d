"""Story: a webhook receiver is down while mail flows and the server is killed; afterwards it has every event."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import ClassVar

import msgspec
import pytest

from engaged.sinks.signing import verify
from engaged.testing.server import wait_until
from engaged.webhook_rules import config_webhook_id
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, stored_events


class _Hook(http.server.BaseHTTPRequestHandler):
    status: ClassVar[list[int]]
    batches: ClassVar[list[tuple[int, dict[str, str], bytes]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status = self.status[0]
        self.batches.append((status, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


class Hook:
    """A threaded HTTP receiver whose answer can be switched."""

    def __init__(self) -> None:
        self.status = [503]
        self.batches: list[tuple[int, dict[str, str], bytes]] = []
        handler = type("Handler", (_Hook,), {"status": self.status, "batches": self.batches})
        self.site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.site.server_address[1]}/hook"

    def event_ids(self) -> set[str]:
        return {str(next(iter(item["msys"].values()))["event_id"])
                for status, _, body in self.batches if status == 200 for item in msgspec.json.decode(body)}


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    threading.Thread(target=receiver.site.serve_forever, daemon=True).start()
    yield receiver
    receiver.site.shutdown()
    receiver.site.server_close()


def send(server_smtp: tuple[str, int], count: int) -> list[str]:
    ids = []
    for n in range(count):
        client = RawSmtp(server_smtp)
        client.transaction([f"r{n}@example.com"])
        client.command("DATA")
        client.send(f"Subject: n{n}\r\n\r\nbody\r\n.\r\n".encode())
        ids.append(queued_id(client.reply()))
        client.close()
    return ids


def test_a_receiver_down_across_a_server_crash_gets_every_event_signed(
        engaged_server: ServerFactory, hook: Hook) -> None:
    server = engaged_server(f'[[webhooks]]\nname = "sink"\ntarget = "{hook.url}"\nallow_private_targets = true\n')
    if "api" not in server.addresses:
        pytest.skip("engaged serve does not run the API yet (no 'api listening on' line)")
    send(server.smtp, 3)
    wait_until(lambda: hook.batches, 20)  # the first batch was refused (503) and is now retrying
    server.kill()
    hook.status[0] = 200
    server.start()
    send(server.smtp, 2)
    wait_until(lambda: len(stored_events(server)) == 10, 20)
    wanted = {str(event["event_id"]) for event in stored_events(server)}
    wait_until(lambda: hook.event_ids() >= wanted, 30)
    first_refused = hook.batches[0][1]["x-messagesystems-batch-id"]
    assert first_refused in {headers["x-messagesystems-batch-id"] for status, headers, _ in hook.batches
                             if status == 200}
    host, port = server.address("api")
    url = f"http://{host}:{port}/api/v1/webhooks/{config_webhook_id('sink')}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        secret = msgspec.json.decode(answer.read())["results"]["signing_secret"]
    assert all(verify(secret, headers["x-engaged-signature"], body, now=time.time())
               for _, headers, body in hook.batches)
