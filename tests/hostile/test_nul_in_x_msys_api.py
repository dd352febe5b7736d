"""A NUL character anywhere in X-MSYS-API is refused at DATA (550 5.6.0), on both event stores.

Before, `{"campaign_id":"a\\u0000b"}` got 250 and, with PostgreSQL, was never delivered: TEXT cannot hold
NUL, the injection event failed and was retried every minute without an end.
"""

from __future__ import annotations

import pytest

from engaged.smtp import replies
from engaged.testing.server import ServerProcess
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, captured_files

HEADERS = [
    b'{"campaign_id":"a\\u0000b"}',
    b'{"metadata":{"user":"\\u0000"}}',
    b'{"tags":["\\u0000"]}',
    b'{"options":{"ip_pool":"\\u0000"}}',
    b'=?utf-8?b?eyJjYW1wYWlnbl9pZCI6ImFcdTAwMDBiIn0=?=',  # {"campaign_id":"a\u0000b"} as an encoded-word
]


def send(server: ServerProcess, header: bytes) -> str:
    client = RawSmtp(server.smtp)
    try:
        client.transaction()
        assert client.command("DATA").startswith("354")
        client.send(b"X-MSYS-API: " + header + b"\r\nSubject: nul\r\n\r\nbody\r\n.\r\n")
        return client.reply()
    finally:
        client.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_nul_in_x_msys_api_is_refused_and_nothing_is_queued(
        engaged_server: ServerFactory, request: pytest.FixtureRequest, backend: str) -> None:
    extra = "" if backend == "sqlite" else f'[events]\nstore = "{request.getfixturevalue("postgres_dsn")}"\n'
    server = engaged_server(extra)
    replies_seen = [send(server, header) for header in HEADERS]
    refused = [reply for reply in replies_seen if reply.startswith(replies.r550_smtpapi("X-MSYS-API '"))]
    assert len(refused) == len(HEADERS), f"{len(refused)} of {len(HEADERS)} refused: {replies_seen}"
    assert all("must not contain a NUL character" in reply for reply in refused), replies_seen
    assert captured_files(server) == []
    assert list((server.config.parent / "data" / "spool").glob("*.msg")) == []
