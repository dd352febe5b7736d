"""MX delivery against a local DNS server: preference order, fallback, null MX, NXDOMAIN."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engaged.testing.dns import DnsServer
from engaged.testing.server import wait_until
from engaged.testing.sink import SinkServer
from tests.conftest import ServerFactory
from tests.delivery.support import MESSAGE, events_of, inject


@pytest.fixture
def sink() -> Iterator[SinkServer]:
    server = SinkServer().start()
    yield server
    server.stop()


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer({
        ("example.test", "MX"): ["10 mx-b.example.test.", "5 mx-a.example.test."],
        ("mx-a.example.test", "A"): ["127.0.0.9"],  # preferred, but nothing listens there
        ("mx-b.example.test", "A"): ["127.0.0.1"],
        ("aonly.test", "A"): ["127.0.0.1"],
        ("nullmx.test", "MX"): ["0 ."],
    }).start()
    yield server
    server.stop()


def mx_config(dns_server: DnsServer, sink: SinkServer) -> str:
    return (f'[delivery]\nmode = "mx"\ndns_servers = ["{dns_server.address}"]\nmx_port = {sink.port}\n'
            "retry_base = 0.2\nconnect_timeout = 1\n")


def test_mail_goes_to_the_mx_that_answers_in_preference_order(
    engaged_server: ServerFactory, sink: SinkServer, dns_server: DnsServer
) -> None:
    server = engaged_server(mx_config(dns_server, sink))
    message_id = inject(server, MESSAGE, ["carol@example.test", "dave@aonly.test"])
    wait_until(lambda: len(sink.received()) == 2, 20)
    assert sorted(r.rcpt_tos[0] for r in sink.received()) == ["carol@example.test", "dave@aonly.test"]
    deliveries = events_of(server, message_id, {"delivery"})["delivery"]
    wait_until(lambda: len(events_of(server, message_id, {"delivery"})["delivery"]) == 2, 10)
    assert {d["ip_address"] for d in deliveries} == {"127.0.0.1"}


def test_null_mx_and_missing_domains_bounce_at_once(
    engaged_server: ServerFactory, sink: SinkServer, dns_server: DnsServer
) -> None:
    server = engaged_server(mx_config(dns_server, sink))
    message_id = inject(server, MESSAGE, ["x@nullmx.test", "y@nothere.test"])
    wait_until(lambda: len(events_of(server, message_id, {"bounce"})["bounce"]) == 2, 20)
    bounces = events_of(server, message_id, {"bounce"})["bounce"]
    reasons = sorted(str(b["raw_reason"]) for b in bounces)
    assert "null MX" in reasons[1] or "null MX" in reasons[0]
    assert any("NXDOMAIN" in r for r in reasons)
    assert {b["bounce_class"] for b in bounces} == {"21"}
    assert sink.received() == []
