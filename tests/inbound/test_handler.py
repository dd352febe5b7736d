"""The inbound listener over real sockets: our domains only, its limits, nothing accepted that is not on disk."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engaged.config import Config, InboundConfig
from engaged.events.ids import EventIdGenerator
from engaged.events.store_sqlite import SqliteEventStore
from engaged.inbound.handler import R550_NOT_OURS
from engaged.inbound.service import InboundService
from engaged.keys import Keyring
from engaged.smtp import replies

DOMAIN = "bounces.example.com"


@pytest.fixture
async def inbound(tmp_path: Path) -> AsyncIterator[InboundService]:
    store = SqliteEventStore(tmp_path / "events.sqlite3")
    await store.open()
    config = Config(data_dir=str(tmp_path / "data"), inbound=InboundConfig(
        listen=["127.0.0.1:0"], bounce_domain=DOMAIN, domains=["fbl.example.com"], max_recipients=3,
        max_message_size=100_000))
    service = InboundService(config, store, Keyring(current_id=1, keys={1: b"k" * 32}), ids=EventIdGenerator())
    await service.start()
    yield service
    await service.stop()
    await store.close()


async def talk(service: InboundService, script: Any) -> Any:
    host, _, port = service.addresses[0][1].rpartition(":")

    def run() -> Any:
        with smtplib.SMTP(host, int(port), timeout=30) as client:
            client.ehlo("mx.example")
            return script(client)
    return await asyncio.to_thread(run)


async def test_only_our_domains_are_accepted_and_the_recipient_limit_holds(inbound: InboundService) -> None:
    def script(client: smtplib.SMTP) -> list[tuple[int, bytes]]:
        client.mail("")
        return [client.rcpt(address) for address in (
            "victim@elsewhere.example", f"b-x@{DOMAIN}", f"B-Y@{DOMAIN.upper()}", "fbl@fbl.example.com",
            f"c@{DOMAIN}", f"d@{DOMAIN}")]

    codes = [code for code, _ in await talk(inbound, script)]
    assert codes == [550, 250, 250, 250, 452, 452]
    text = (await talk(inbound, lambda client: (client.mail(""), client.rcpt("x@sub." + DOMAIN))[1]))[1]
    assert text.decode() == R550_NOT_OURS[4:]


async def test_a_message_is_on_disk_before_its_250(inbound: InboundService) -> None:
    def script(client: smtplib.SMTP) -> object:
        return client.sendmail("", [f"postmaster@{DOMAIN}"], b"Subject: hello\r\n\r\njust a note\r\n")

    assert await talk(inbound, script) == {}
    await inbound.processor.idle()
    [kept] = list(inbound.spool.unmatched.glob("*.eml"))  # not a report: kept, never dropped
    assert kept.read_bytes().endswith(b"just a note\r\n")


async def test_an_oversized_message_is_552_and_a_spool_failure_is_451(inbound: InboundService) -> None:
    def big(client: smtplib.SMTP) -> int:
        try:
            client.sendmail("", [f"b-x@{DOMAIN}"], b"Subject: big\r\n\r\n" + b"x" * 200_000 + b"\r\n")
        except smtplib.SMTPResponseException as refused:
            return refused.smtp_code
        except smtplib.SMTPServerDisconnected:
            return 0
        return 250

    assert await talk(inbound, big) == 552
    inbound.spool.new.rmdir()
    inbound.spool.new.write_bytes(b"")  # new/ is not a directory: the rename into it fails

    def small(client: smtplib.SMTP) -> tuple[int, bytes]:
        client.mail("")
        client.rcpt(f"b-x@{DOMAIN}")
        return client.data(b"Subject: x\r\n\r\nx\r\n")

    code, text = await talk(inbound, small)
    assert f"{code} {text.decode()}" == replies.R451_SPOOL_UNAVAILABLE
