"""The bulk DATA reader: end of data, dot-unstuffing, bare line endings, limits, pipelined leftovers."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engaged.smtp.data import DataProblem, DataTimeout, check_data, read_data


def stuff(content: bytes) -> bytes:
    """What a client puts on the wire for `content` (RFC 5321 4.5.2), end marker excluded."""
    lines = content.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


lines = st.lists(st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=30)


@given(lines)
def test_unstuffing_gives_back_what_the_client_stuffed(parts: list[bytes]) -> None:
    content = b"".join(part + b"\r\n" for part in parts)
    result = check_data(stuff(content), 10_000_000)
    assert result.problem is None
    assert result.content == content


@pytest.mark.parametrize("wire", [b"a\nb\r\n", b"a\rb\r\n", b"a\r\n\n.\r\n", b"x\r\n.\n", b"\n.\r\n", b"a\r\r\n"])
def test_bare_cr_or_lf_is_refused(wire: bytes) -> None:
    assert check_data(wire, 1000).problem is DataProblem.BARE_LINE_ENDING


def test_a_line_over_998_octets_is_refused() -> None:
    assert check_data(b"x" * 998 + b"\r\n", 10_000).problem is None
    assert check_data(b"." + b"x" * 998 + b"\r\n", 10_000).problem is None
    assert check_data(b"x" * 1000 + b"\r\n", 10_000).problem is DataProblem.LINE_TOO_LONG


def test_size_over_the_limit_is_refused() -> None:
    assert check_data(b"x\r\n" * 10, 29).problem is DataProblem.TOO_BIG
    assert check_data(b"x\r\n" * 10, 30).problem is None


def _reader(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_pipelined_commands_after_the_end_stay_in_the_reader() -> None:
    reader = _reader(b"Subject: a\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    result = await read_data(reader, max_size=1000, timeout=5)
    assert result.content == b"Subject: a\r\n\r\nbody\r\n"
    assert await reader.readline() == b"QUIT\r\n"


async def test_empty_message_ends_at_the_first_dot() -> None:
    reader = _reader(b".\r\nNOOP\r\n")
    result = await read_data(reader, max_size=1000, timeout=5)
    assert result.content == b""
    assert await reader.readline() == b"NOOP\r\n"


async def test_end_marker_split_across_chunks_is_found() -> None:
    reader = asyncio.StreamReader()
    task = asyncio.ensure_future(read_data(reader, max_size=1000, timeout=5))
    for piece in (b"hello\r", b"\n.", b"\r", b"\nRSET\r\n"):
        reader.feed_data(piece)
        await asyncio.sleep(0)
    result = await task
    assert result.content == b"hello\r\n"


async def test_smuggled_lf_dot_lf_does_not_end_data() -> None:
    reader = _reader(b"a\r\n\n.\n\r\nMAIL FROM:<x@y>\r\n.\r\n")
    result = await read_data(reader, max_size=1000, timeout=5)
    assert result.problem is DataProblem.BARE_LINE_ENDING
    assert await reader.read() == b""


async def test_oversized_data_is_discarded_to_the_end_with_bounded_memory() -> None:
    body = b"x" * 70 + b"\r\n"
    reader = _reader(body * 20_000 + b".\r\nQUIT\r\n")
    result = await read_data(reader, max_size=10_000, timeout=5)
    assert result.problem is DataProblem.TOO_BIG
    assert await reader.readline() == b"QUIT\r\n"


async def test_disconnect_mid_data_raises() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await read_data(_reader(b"partial message\r\n"), max_size=1000, timeout=5)


async def test_silence_raises_data_timeout() -> None:
    with pytest.raises(DataTimeout):
        await read_data(_reader(b"x", eof=False), max_size=1000, timeout=0.05)
