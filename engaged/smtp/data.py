"""DATA and BDAT content, sans-I/O: smuggling-safe end of data, dot-unstuffing, size and line limits."""

from __future__ import annotations

import enum

import msgspec

from engaged.lines import lines_surely_shorter

_END = b"\r\n.\r\n"
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


class DataReader:
    """Collects one DATA section from successive input chunks up to the first CRLF.CRLF.

    Only CRLF.CRLF ends DATA; a bare CR or LF anywhere refuses the message (SMTP smuggling). Past
    `max_size` the data is discarded up to the end marker so memory stays bounded. Line endings and
    lengths are checked as the chunks come, so the end of a large message costs the event loop its
    last chunk and one unstuffing pass, not a scan of the whole (a 30 MB DATA took ~150 ms at its end).
    """

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._buffer = bytearray()
        self._search_from = 0
        self._discarded = 0
        self._checked = 2  # the buffer is validated up to here (never between a CR and its LF)
        self._line = 0  # octets of the line in progress at _checked
        self._longest = 0  # the longest complete line so far
        self._bare = False  # a bare CR or LF seen

    def start(self) -> None:
        # The leading CRLF lets an empty message (".\r\n" straight after 354) match the end marker.
        self._buffer = bytearray(b"\r\n")
        self._search_from = 0
        self._discarded = 0
        self._checked, self._line, self._longest, self._bare = 2, 0, 0, False

    def feed(self, chunk: bytes | bytearray | memoryview) -> tuple[DataRead | None, bytes]:
        """Add input; (the section, the bytes after its end marker) once complete, else (None, b"")."""
        buffer = self._buffer
        buffer += chunk
        end = buffer.find(_END, self._search_from)
        if end >= 0:
            leftover = bytes(buffer[end + len(_END) :])
            discarded = self._discarded
            self._check(end + 2)  # the wire ends with the CRLF that starts the end marker
            with memoryview(buffer) as view:
                wire = bytes(view[2 : end + 2])  # one copy (a bytearray slice would be a second)
            self._buffer = bytearray()
            if discarded:
                return DataRead(b"", DataProblem.TOO_BIG), leftover
            return self._finish(wire), leftover
        self._search_from = max(len(buffer) - len(_END) + 1, 0)
        if len(buffer) > self._max_size + 4096:
            keep = bytes(buffer[-(len(_END) - 1) :])
            self._discarded += len(buffer) - len(keep)
            self._buffer = bytearray(keep)
            self._search_from = 0
            self._checked = len(keep)  # what is discarded is refused as too big: nothing more to check
        else:
            self._check(len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer))
        return None, b""

    def _check(self, limit: int) -> None:
        """Validate the buffer from _checked up to `limit`, which never falls between a CR and its LF."""
        start = self._checked
        if limit <= start:
            return
        buffer = self._buffer  # searched in place: a slice of the region would copy it
        self._checked = limit
        crlf = buffer.count(b"\r\n", start, limit)
        if buffer.count(b"\r", start, limit) != crlf or buffer.count(b"\n", start, limit) != crlf:
            self._bare = True
        if not crlf:
            self._line += limit - start
            return
        first = buffer.find(b"\r\n", start, limit)
        last = buffer.rfind(b"\r\n", start, limit)
        self._longest = max(self._longest, self._line + first - start, _long_line(buffer, first + 2, last))
        self._line = limit - last - 2

    def _finish(self, wire: bytes) -> DataRead:
        """check_data for a wire whose line endings and lengths _check has already seen."""
        if len(wire) > self._max_size:
            return DataRead(b"", DataProblem.TOO_BIG)
        if self._bare:
            return DataRead(b"", DataProblem.BARE_LINE_ENDING)
        if len(wire) > _MAX_WIRE_LINE and self._longest > _MAX_WIRE_LINE:
            return DataRead(b"", DataProblem.LINE_TOO_LONG)
        return DataRead(_unstuffed(wire))


def _long_line(buffer: bytearray, start: int, end: int) -> int:
    """The longest CRLF-delimited line of buffer[start:end] when one may be longer than _MAX_WIRE_LINE; else 0
    (the common case, found without splitting the region)."""
    if lines_surely_shorter(buffer, _MAX_WIRE_LINE + 1, start, end):
        return 0  # (a bare LF would leave a longer CRLF line, but it refuses the message before any length does)
    return max(map(len, buffer[start:end].split(b"\r\n")))


def check_data(wire: bytes, max_size: int) -> DataRead:
    """Validate and unstuff one DATA section as it came off the wire (without the final `.CRLF`)."""
    problem = _problem(wire, max_size)
    if problem is not None:
        return DataRead(b"", problem)
    return DataRead(_unstuffed(wire))


def _unstuffed(wire: bytes) -> bytes:
    content = wire.replace(b"\r\n.", b"\r\n") if b"\r\n." in wire else wire
    return content[1:] if content.startswith(b".") else content


def check_chunks(content: bytes, max_size: int) -> DataProblem | None:
    """The same limits for BDAT content (RFC 3030: no dot-stuffing, so nothing to undo)."""
    return _problem(content, max_size)


def _problem(wire: bytes, max_size: int) -> DataProblem | None:
    if len(wire) > max_size:
        return DataProblem.TOO_BIG
    crlf = wire.count(b"\r\n")
    if wire.count(b"\r") != crlf or wire.count(b"\n") != crlf:
        return DataProblem.BARE_LINE_ENDING
    if len(wire) > _MAX_WIRE_LINE and max(map(len, wire.split(b"\r\n"))) > _MAX_WIRE_LINE:
        return DataProblem.LINE_TOO_LONG
    return None
