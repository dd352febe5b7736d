"""Bulk DATA reader: chunked reads, smuggling-safe end of data, dot-unstuffing, size and line limits."""

from __future__ import annotations

import asyncio
import enum

import msgspec

_END = b"\r\n.\r\n"
_CHUNK = 262144
_MAX_WIRE_LINE = 999  # 998 octets of text plus a transparency dot, CRLF not counted (RFC 5321 4.5.3.1.6)


class DataProblem(enum.Enum):
    """Why a complete DATA section is refused."""

    TOO_BIG = "too_big"
    BARE_LINE_ENDING = "bare_line_ending"
    LINE_TOO_LONG = "line_too_long"


class DataRead(msgspec.Struct, frozen=True):
    """The outcome of reading one DATA section: the unstuffed content, or why it was refused."""

    content: bytes
    problem: DataProblem | None = None


class DataTimeout(Exception):
    """The client sent nothing for longer than the data timeout."""


async def read_data(reader: asyncio.StreamReader, *, max_size: int, timeout: float) -> DataRead:
    """Read up to the first CRLF.CRLF and return the message, or the reason it is refused.

    Only CRLF.CRLF ends DATA; a bare CR or LF anywhere refuses the message (SMTP smuggling).
    Bytes after the end marker (pipelined commands) go back into the reader. Past `max_size` the
    data is read and discarded so memory stays bounded. Raises DataTimeout, or
    asyncio.IncompleteReadError when the client disconnects.
    """
    buffer = bytearray(b"\r\n")
    search_from = 0
    discarded = 0
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(_CHUNK), timeout)
        except TimeoutError:
            raise DataTimeout from None
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(buffer[-64:]), None)
        buffer += chunk
        end = buffer.find(_END, search_from)
        if end >= 0:
            _unread(reader, bytes(buffer[end + len(_END) :]))
            if discarded:
                return DataRead(b"", DataProblem.TOO_BIG)
            return check_data(bytes(buffer[2 : end + 2]), max_size)
        search_from = max(len(buffer) - len(_END) + 1, 0)
        if len(buffer) > max_size + 4096:
            keep = bytes(buffer[-(len(_END) - 1) :])
            discarded += len(buffer) - len(keep)
            buffer = bytearray(keep)
            search_from = 0


def check_data(wire: bytes, max_size: int) -> DataRead:
    """Validate and unstuff one DATA section as it came off the wire (without the final `.CRLF`)."""
    if len(wire) > max_size:
        return DataRead(b"", DataProblem.TOO_BIG)
    crlf = wire.count(b"\r\n")
    if wire.count(b"\r") != crlf or wire.count(b"\n") != crlf:
        return DataRead(b"", DataProblem.BARE_LINE_ENDING)
    if len(wire) > _MAX_WIRE_LINE and max(map(len, wire.split(b"\r\n"))) > _MAX_WIRE_LINE:
        return DataRead(b"", DataProblem.LINE_TOO_LONG)
    content = wire.replace(b"\r\n.", b"\r\n") if b"\r\n." in wire else wire
    if content.startswith(b"."):
        content = content[1:]
    return DataRead(content)


def _unread(reader: asyncio.StreamReader, data: bytes) -> None:
    # StreamReader has no public push-back; pipelined commands after the end marker must be
    # read next by the command loop, so they go back to the front of its buffer.
    if data:
        buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
        buffer[0:0] = data
