"""DSN parameters given at injection are kept on the spool record, shown in events and passed to the next hop."""

from __future__ import annotations

from engaged.testing.server import wait_until
from engaged.testing.sink import SinkServer
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, wait_events

MESSAGE = b"Subject: dsn\r\n\r\nHello\r\n"


def _inject(address: tuple[str, int]) -> str:
    client = RawSmtp(address)
    try:
        client.command("EHLO client.example")
        assert client.command("MAIL FROM:<app@example.org> RET=HDRS ENVID=QQ314159").startswith("250")
        assert client.command("RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40example.com") \
            .startswith("250")
        assert client.command("RCPT TO:<carol@example.com>").startswith("250")
        client.command("DATA")
        client.send(MESSAGE + b".\r\n")
        return queued_id(client.reply())
    finally:
        client.close()


def _relay(address: str) -> str:
    return f'[delivery]\nmode = "relay"\nrelay = "{address}"\nretry_base = 0.2\nconnect_timeout = 2\n'


def test_dsn_parameters_reach_a_next_hop_that_offers_dsn(engaged_server: ServerFactory) -> None:
    sink = SinkServer().start()
    try:
        server = engaged_server(_relay(sink.address))
        message_id = _inject(server.smtp)
        wait_until(lambda: len(sink.received()) == 2, 30)
        by_rcpt = {r.rcpt_tos[0]: r for r in sink.received()}
        bob, carol = by_rcpt["bob@example.com"], by_rcpt["carol@example.com"]
        assert "RET=HDRS" in bob.mail_options and "ENVID=QQ314159" in bob.mail_options
        assert bob.notify == ["SUCCESS,FAILURE"] and bob.orcpt == ["rfc822;bob+40example.com"]
        assert carol.notify == [""] and carol.orcpt == [""]
        events = wait_events(server, message_id, {"injection", "delivery"}, timeout=30)
        bob_events = [e for e in events if e["rcpt_to"] == "bob@example.com"]
        assert {e["type"] for e in bob_events} == {"injection", "delivery"}
        assert all(e["dsn_notify"] == "SUCCESS,FAILURE" and e["dsn_orcpt"] == "rfc822;bob+40example.com"
                   and e["dsn_ret"] == "HDRS" and e["dsn_envid"] == "QQ314159" for e in bob_events)
        assert all("dsn_notify" not in e for e in events if e["rcpt_to"] == "carol@example.com")
    finally:
        sink.stop()


def test_dsn_parameters_are_dropped_for_a_next_hop_without_dsn(engaged_server: ServerFactory) -> None:
    sink = SinkServer(dsn=False).start()
    try:
        server = engaged_server(_relay(sink.address))
        _inject(server.smtp)
        wait_until(lambda: len(sink.received()) == 2, 30)
        assert all(r.mail_options == [] and r.notify == [""] for r in sink.received())
    finally:
        sink.stop()
