"""Relay delivery to real receivers: success, temporary and permanent failures, TLS, sandbox, timeouts."""

from __future__ import annotations

import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from engaged.config import load_config
from engaged.errors import ConfigError
from engaged.smtp.auth import hash_password
from engaged.testing.server import wait_until
from engaged.testing.sink import SinkServer, free_port
from tests.conftest import ServerFactory, require_tool
from tests.delivery.support import MESSAGE, events_of, inject
from tests.helpers import captured_files

DELIVERED = MESSAGE.replace(b'X-MSYS-API: {"campaign_id": "r"}\r\n', b"").replace(b"\r\n..", b"\r\n.")


@pytest.fixture
def sink() -> Iterator[SinkServer]:
    server = SinkServer().start()
    yield server
    server.stop()


def relay_config(address: str, extra: str = "") -> str:
    return (f'[delivery]\nmode = "relay"\nrelay = "{address}"\nretry_base = 0.2\nconnect_timeout = 2\n'
            f"command_timeout = 3\n{extra}")


def test_relayed_message_arrives_byte_for_byte_as_captured(engaged_server: ServerFactory, sink: SinkServer) -> None:
    server = engaged_server(relay_config(sink.address))
    message_id = inject(server)
    wait_until(sink.received, 15)
    [received] = sink.received()
    assert received.data == DELIVERED
    assert received.mail_from == "app@example.org" and received.rcpt_tos == ["bob@example.com"]
    [delivery] = events_of(server, message_id, {"delivery"})["delivery"]
    assert delivery["ip_address"] == "127.0.0.1" and delivery["sending_ip"] == "127.0.0.1"  # both ends
    assert delivery["num_retries"] == "0"
    assert delivery["outbound_tls"] == "0"
    assert delivery["delv_method"] == "esmtp"
    assert delivery["campaign_id"] == "r"
    assert captured_files(server) == []


TRACKED = (b"From: App <app@example.org>\r\nSubject: bound\r\nContent-Type: text/html\r\n"
           b'X-MSYS-API: {"options": {"click_tracking": true}}\r\n\r\n'
           b'<a href="https://shop.example/offer">offer</a>\r\n')


def test_a_source_address_binds_delivery_and_is_the_sending_ip_of_its_events(engaged_server: ServerFactory,
                                                                             sink: SinkServer) -> None:
    server = engaged_server(relay_config(sink.address, 'source_address = "127.0.0.2"\n'))
    message_id = inject(server, TRACKED)
    wait_until(sink.received, 15)
    [received] = sink.received()
    assert received.peer == "127.0.0.2"  # the connection left from the configured address
    [delivery] = events_of(server, message_id, {"delivery"})["delivery"]
    assert delivery["sending_ip"] == "127.0.0.2" and delivery["ip_address"] == "127.0.0.1"
    [path] = re.findall(rb'href="http://localhost:8080(/f/[A-Za-z0-9_/-]+)"', received.data)
    host, port = server.tracker
    answer = httpx.get(f"http://{host}:{port}{path.decode()}", follow_redirects=False)
    assert answer.status_code == 302 and answer.headers["location"] == "https://shop.example/offer"
    [click] = events_of(server, message_id, {"click"})["click"]
    assert click["sending_ip"] == "127.0.0.2"  # carried by the link: opens and clicks say where the copy left from


def test_a_source_address_must_be_an_ip_address(tmp_path: Path) -> None:
    config = tmp_path / "engaged.toml"
    config.write_text('[delivery]\nsource_address = "mail.example.com"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(str(config))
    assert any("delivery.source_address: expected an IP address, got 'mail.example.com'" in line
               for line in raised.value.problems)


def test_temporary_failure_gives_delay_then_delivery(engaged_server: ServerFactory, sink: SinkServer) -> None:
    calls: list[str] = []

    def first_refused(address: str) -> str | None:
        calls.append(address)
        return "451 4.3.0 try again later" if len(calls) == 1 else None

    sink.rcpt_reply = first_refused
    server = engaged_server(relay_config(sink.address))
    message_id = inject(server)
    found = events_of(server, message_id, {"delay", "delivery"})
    [delay] = found["delay"]
    assert delay["error_code"] == "451"
    assert delay["raw_reason"] == "4.3.0 try again later"
    assert delay["bounce_class"] == "20"
    assert found["delivery"][0]["num_retries"] == "1"
    assert len(sink.received()) == 1


def test_permanent_failure_bounces_with_its_class(engaged_server: ServerFactory, sink: SinkServer) -> None:
    sink.rcpt_reply = lambda address: "550 5.1.1 <nobody@example.com>: user unknown"
    server = engaged_server(relay_config(sink.address))
    message_id = inject(server, rcpts=["nobody@example.com"])
    [bounce] = events_of(server, message_id, {"bounce"})["bounce"]
    assert bounce["bounce_class"] == "10" and bounce["sending_ip"] == "127.0.0.1"
    assert bounce["error_code"] == "550"
    assert bounce["raw_reason"] == "5.1.1 <nobody@example.com>: user unknown"
    assert bounce["reason"] == "5.1.1 ...@...: user unknown"
    wait_until(lambda: not list((server.config.parent / "data" / "spool").glob("*/*.msg")))


def test_unreachable_relay_delays_then_bounces_when_too_old(engaged_server: ServerFactory) -> None:
    server = engaged_server(relay_config(f"127.0.0.1:{free_port()}", "max_attempt_age = 2\n"))
    message_id = inject(server)
    found = events_of(server, message_id, {"delay", "bounce"})
    assert all(e["error_code"] == "" and "failed" in str(e["reason"]) for e in found["delay"])
    assert found["bounce"][0]["bounce_class"] == "24"
    assert "expired" in str(found["bounce"][0]["raw_reason"])


def test_a_receiver_that_hangs_is_a_timeout(engaged_server: ServerFactory, sink: SinkServer) -> None:
    sink.data_delay = 8
    server = engaged_server(relay_config(sink.address))
    message_id = inject(server)
    [delay, *_] = events_of(server, message_id, {"delay"})["delay"]
    assert delay["bounce_class"] in ("20", "24")


def test_starttls_is_used_when_offered(engaged_server: ServerFactory, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    sink = SinkServer(tls_context=context).start()
    try:
        server = engaged_server(relay_config(sink.address))
        message_id = inject(server)
        wait_until(sink.received, 15)
        assert sink.received()[0].tls is True
        assert events_of(server, message_id, {"delivery"})["delivery"][0]["outbound_tls"] == "1"
    finally:
        sink.stop()


def test_tls_required_but_not_offered_is_deferred(engaged_server: ServerFactory, sink: SinkServer) -> None:
    server = engaged_server(relay_config(sink.address, 'tls = "required"\n'))
    message_id = inject(server)
    [delay, *_] = events_of(server, message_id, {"delay"})["delay"]
    assert "TLS is required" in str(delay["raw_reason"])
    assert sink.received() == []


def test_sandbox_messages_are_captured_never_sent(engaged_server: ServerFactory, sink: SinkServer) -> None:
    server = engaged_server(relay_config(sink.address))
    message_id = inject(server, MESSAGE.replace(b'{"campaign_id": "r"}', b'{"options": {"sandbox": true}}'))
    events_of(server, message_id, {"delivery"})
    assert len(captured_files(server)) == 1
    assert sink.received() == []


def test_eight_bit_mail_to_a_receiver_without_8bitmime_bounces(engaged_server: ServerFactory) -> None:
    smtp_sink = require_tool("smtp-sink", "/usr/sbin/smtp-sink")
    port = free_port()
    process = subprocess.Popen([smtp_sink, "-u", "nobody", "-8", f"127.0.0.1:{port}", "16"])
    try:
        wait_until(lambda: _listening(port), 10)
        server = engaged_server(relay_config(f"127.0.0.1:{port}"))
        message_id = inject(server, MESSAGE.replace(b"Hello", b"Gr\xc3\xbc\xc3\x9fe"))
        [bounce] = events_of(server, message_id, {"bounce"})["bounce"]
        assert "8BITMIME" in str(bounce["raw_reason"])
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize(("flag", "kind"), [("-r", "delay"), ("-f", "bounce"), ("-Q", "delay"), ("-q", "delay")])
def test_smtp_sink_refusing_data_gives_the_right_event(engaged_server: ServerFactory, flag: str, kind: str) -> None:
    smtp_sink = require_tool("smtp-sink", "/usr/sbin/smtp-sink")
    port = free_port()
    process = subprocess.Popen([smtp_sink, "-u", "nobody", flag, "data", f"127.0.0.1:{port}", "16"])
    try:
        wait_until(lambda: _listening(port), 10)
        server = engaged_server(relay_config(f"127.0.0.1:{port}", "max_attempt_age = 600\n"))
        message_id = inject(server)
        assert events_of(server, message_id, {kind})[kind]
    finally:
        process.kill()
        process.wait()


def test_relay_with_auth_credentials(engaged_server: ServerFactory) -> None:
    # engaged itself is the receiver: a second instance that requires AUTH (loopback may AUTH in clear).
    receiver = engaged_server(f'[smtp]\nrelay_networks = []\n[[smtp.users]]\nname = "relay"\n'
                              f'password_hash = "{hash_password("pw", iterations=1000)}"\n')
    host, port = receiver.smtp
    server = engaged_server(relay_config(f"{host}:{port}", 'relay_username = "relay"\nrelay_password = "pw"\n'))
    message_id = inject(server)
    events_of(server, message_id, {"delivery"})
    wait_until(lambda: captured_files(receiver), 15)
    assert captured_files(receiver)[0].read_bytes() == DELIVERED


def test_kill_during_delivery_delivers_at_least_once(engaged_server: ServerFactory, sink: SinkServer) -> None:
    sink.data_delay = 1.0
    server = engaged_server(relay_config(sink.address))
    ids = [inject(server, MESSAGE.replace(b"Hello", f"Hello {n}".encode())) for n in range(5)]
    server.kill()
    server.start()
    wait_until(lambda: len({m.data for m in sink.received()}) == 5, 30)
    for message_id in ids:
        events_of(server, message_id, {"delivery"})


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False
