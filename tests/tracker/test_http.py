"""The tracker's HTTP server under bad input (wrong tokens, slow, many and hostile clients); pipelining, keep-alive."""

from __future__ import annotations

import asyncio
import random
import re
import time
from urllib.parse import quote

import pytest

from engaged.testing.server import wait_until
from engaged.tracker.http import MAX_URL_BYTES
from engaged.tracker.pixel import PIXEL_GIF
from tests.tracker.conftest import BROWSER_UA, RunningTracker, TrackerFactory

TARGET = "https://shop.example.com/"


async def connect(tracker: RunningTracker) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = tracker.service.address.rpartition(":")
    return await asyncio.open_connection(host, int(port), limit=1 << 20)


def request(path: str, method: str = "GET", *extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: t.example", f"User-Agent: {BROWSER_UA}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names), body (by content-length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(-1), 60)


def path_of(tracker: RunningTracker, url: str) -> str:
    return url.split(tracker.service.address, 1)[1]


# --- HTTP/1.1 behaviour ---------------------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order_each_after_its_event_is_journaled(
        tracker: RunningTracker) -> None:
    links = tracker.links()
    reader, writer = await connect(tracker)
    writer.write(request(path_of(tracker, links.open_url(True))) + request("/robots.txt")
                 + request(path_of(tracker, links.click_url(TARGET, "x", None, False)), "HEAD")
                 + request("/nothing") + request(path_of(tracker, links.open_url(False))))
    answers = [await read_response(reader) for _ in range(5)]
    writer.close()
    assert [status for status, _, _ in answers] == [200, 200, 302, 404, 200]
    assert answers[0][2] == PIXEL_GIF and answers[2][2] == b"" and answers[2][1]["location"] == TARGET
    assert [type(event).__name__ for event in await tracker.events()] == ["InitialOpenEvent", "ClickEvent",
                                                                          "OpenEvent"]


async def test_keep_alive_serves_many_requests_on_one_connection_and_close_is_honoured(
        tracker: RunningTracker) -> None:
    reader, writer = await connect(tracker)
    for _ in range(50):
        writer.write(request("/robots.txt"))
        status, headers, _ = await read_response(reader)
        assert status == 200 and "connection" not in headers
    writer.write(request("/robots.txt", "GET", "Connection: close"))
    status, headers, _ = await read_response(reader)
    assert (status, headers["connection"]) == (200, "close")
    assert await read_until_closed(reader) == b""


async def test_http_1_0_without_keep_alive_is_answered_and_closed(tracker: RunningTracker) -> None:
    reader, writer = await connect(tracker)
    writer.write(b"GET /robots.txt HTTP/1.0\r\n\r\n")
    data = await read_until_closed(reader)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"Disallow: /\n")


async def test_every_response_carries_a_date(tracker: RunningTracker) -> None:
    response = await tracker.get(f"{tracker.base}/robots.txt")
    assert response.headers["date"].endswith(" GMT")


# --- tokens of every wrong shape ------------------------------------------------------------------


async def test_tokens_of_every_wrong_shape_are_4xx_never_a_redirect_and_record_nothing(
        tracker: RunningTracker) -> None:
    links = tracker.links()
    click = links.click_url(TARGET, "x", None, False)
    head, _, token = click.rpartition("/")
    _, _, open_token = links.open_url(True).rpartition("/")
    shapes = {
        "truncated": f"{head}/{token[:len(token) // 2]}",
        "one short": f"{head}/{token[:-1]}",
        "standard base64": f"{head}/{token.replace('-', '+').replace('_', '/')}x",
        "percent-encoded junk": f"{head}/{quote('%' + token[:10] + chr(0) + token[10:], safe='')}",
        "wrong kind": f"{head}/{open_token}",
        "forged": f"{head}/AQED{'forged' * 10}",
        "100 KB": f"{head}/{'A' * 100_000}",
        "100 KB of re-encoding": f"{head}/{'%2541' * 20_000}",
        "NUL inside": f"{head}/{token[:10]}%00{token[10:]}",
        "no token": f"{head}/",
    }
    statuses = {}
    for name, url in shapes.items():
        reader, writer = await connect(tracker)
        writer.write(request(path_of(tracker, url)))
        status, headers, _ = await read_response(reader)
        writer.close()
        assert "location" not in headers, name
        statuses[name] = status
    assert statuses == {name: 414 if name.startswith("100 KB") else 404 for name in shapes}
    assert await tracker.events() == []


# --- slow, many and hostile clients ---------------------------------------------------------------


async def test_a_client_trickling_its_header_is_answered_408_and_closed_while_others_are_served(
        start_tracker: TrackerFactory) -> None:
    tracker = await start_tracker(header_timeout=0.5)
    reader, writer = await connect(tracker)
    text = request("/robots.txt")
    writer.write(text[:1])
    assert (await tracker.get(f"{tracker.base}/robots.txt")).status_code == 200
    closed = asyncio.ensure_future(read_until_closed(reader))
    sent = 1
    while not closed.done() and sent < len(text) - 4:  # never completes the head, whatever the pace
        writer.write(text[sent:sent + 1])
        sent += 1
        await asyncio.wait({closed}, timeout=0.1)
    data = await closed
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert tracker.service.metrics()["requests_timeouts"] == 1
    assert (await tracker.get(f"{tracker.base}/robots.txt")).status_code == 200


async def test_an_idle_keep_alive_connection_is_closed(start_tracker: TrackerFactory) -> None:
    tracker = await start_tracker(idle_timeout=0.2)
    reader, writer = await connect(tracker)
    writer.write(request("/robots.txt"))
    assert (await read_response(reader))[0] == 200
    assert await read_until_closed(reader) == b""


async def test_a_thousand_idle_connections_do_not_stop_others_being_served(tracker: RunningTracker) -> None:
    opened = [await connect(tracker) for _ in range(1000)]
    for _, writer in opened[::10]:
        writer.write(b"GET /robo")  # half a request line on some of them
    url = tracker.links().open_url(False)
    response = await tracker.get(url)
    assert response.status_code == 200
    await tracker.flush()
    assert tracker.service.metrics()["connections_open"] >= 1000
    for _, writer in opened:
        writer.close()
    assert len(await tracker.events()) == 1


async def test_connections_past_max_connections_are_closed_at_once_and_served_again_later(
        start_tracker: TrackerFactory) -> None:
    tracker = await start_tracker(max_connections=20)
    held = [await connect(tracker) for _ in range(20)]
    for reader, writer in held:  # each is accepted and served
        writer.write(request("/robots.txt"))
        assert (await read_response(reader))[0] == 200
    reader, writer = await connect(tracker)
    assert await read_until_closed(reader) == b""  # refused: closed without an answer
    assert tracker.service.metrics()["requests_refused_connections"] >= 1
    for _, held_writer in held:
        held_writer.close()
    deadline = time.monotonic() + 60
    while True:  # the server notices the closes on its own time
        response = await tracker.get(f"{tracker.base}/robots.txt") if tracker.service.metrics()[
            "connections_open"] < 20 else None
        if response is not None:
            assert response.status_code == 200
            break
        assert time.monotonic() < deadline, "the held connections were never released"
        await asyncio.sleep(0.01)


_NOISE = random.Random(4096)  # seeded: every test process must collect the same test ids (pytest-xdist)


@pytest.mark.parametrize("garbage", [
    _NOISE.randbytes(4096),
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + _NOISE.randbytes(64),  # a TLS ClientHello on the plain port
    b"GET / HTTP/9.9\r\n\r\n",
    b"\x00\x00\x00\x00\r\n\r\n",
    b"GET /q/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /robots.txt HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
    b"GET /" + b"A" * (MAX_URL_BYTES + 10) + b" HTTP/1.1\r\n\r\n",
    b"GET /robots.txt HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
    b"GET /robots.txt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
])
async def test_garbage_gets_a_4xx_or_a_close_and_the_server_keeps_serving(
        tracker: RunningTracker, garbage: bytes) -> None:
    reader, writer = await connect(tracker)
    writer.write(garbage)
    data = await read_until_closed(reader)
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]
    assert statuses[-1:] in ([], [400], [414]), data  # a valid request before the garbage may be answered first
    assert (await tracker.get(f"{tracker.base}/robots.txt")).status_code == 200


async def test_a_valid_request_after_garbage_on_the_same_connection_records_nothing(tracker: RunningTracker) -> None:
    url = tracker.links().open_url(True)
    reader, writer = await connect(tracker)
    writer.write(b"BREW /pot HTCPCP/1.0\r\n\r\n" + request(path_of(tracker, url)))
    data = await read_until_closed(reader)
    assert data.startswith(b"HTTP/1.1 400 ") and data.count(b"HTTP/1.1") == 1
    assert await tracker.events() == []


async def test_a_refused_client_that_goes_on_sending_still_reads_its_answer(tracker: RunningTracker) -> None:
    # Closed at once, the server's kernel would answer the bytes that follow with a reset, and the reset
    # discards the 400 the client has not read yet; the lingering close drains them instead.
    reader, writer = await connect(tracker)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    await asyncio.to_thread(wait_until, lambda: tracker.service.metrics()["requests_bad_requests"] == 1)
    for _ in range(8):
        writer.write(b"x" * 8192)
        await writer.drain()
    data = await read_until_closed(reader)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    writer.close()
