"""The bulk DATA reader: end of data, dot-unstuffing, bare line endings, limits, pipelined leftovers."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from engaged.smtp.data import DataProblem, DataRead, DataReader, check_data


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


def _feed(*pieces: bytes, max_size: int = 1000) -> tuple[DataRead | None, bytes]:
    reader = DataReader(max_size)
    reader.start()
    result: tuple[DataRead | None, bytes] = (None, b"")
    for piece in pieces:
        result = reader.feed(piece)
        if result[0] is not None:
            return result
    return result


def test_pipelined_commands_after_the_end_are_handed_back() -> None:
    result, rest = _feed(b"Subject: a\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert result is not None and result.content == b"Subject: a\r\n\r\nbody\r\n"
    assert rest == b"QUIT\r\n"


def test_empty_message_ends_at_the_first_dot() -> None:
    result, rest = _feed(b".\r\nNOOP\r\n")
    assert result is not None and result.content == b""
    assert rest == b"NOOP\r\n"


def test_end_marker_split_across_chunks_is_found() -> None:
    result, rest = _feed(b"hello\r", b"\n.", b"\r", b"\nRSET\r\n")
    assert result is not None and result.content == b"hello\r\n"
    assert rest == b"RSET\r\n"


def test_smuggled_lf_dot_lf_does_not_end_data() -> None:
    result, rest = _feed(b"a\r\n\n.\n\r\nMAIL FROM:<x@y>\r\n.\r\n")
    assert result is not None and result.problem is DataProblem.BARE_LINE_ENDING
    assert rest == b""


def test_oversized_data_is_discarded_to_the_end_with_bounded_memory() -> None:
    reader = DataReader(10_000)
    reader.start()
    body = b"x" * 70 + b"\r\n"
    for _ in range(20_000):
        assert reader.feed(body)[0] is None
        assert len(reader._buffer) < 20_000  # bounded, whatever the client sends
    result, rest = reader.feed(b".\r\nQUIT\r\n")
    assert result is not None and result.problem is DataProblem.TOO_BIG
    assert rest == b"QUIT\r\n"


def test_unfinished_data_gives_nothing_yet() -> None:
    assert _feed(b"partial message\r\n") == (None, b"")


_WIRE = st.lists(st.sampled_from([b"a", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"x" * 500, b"\r\n\r\n"]),
                 max_size=12).map(b"".join)


@given(wire=_WIRE, cuts=st.lists(st.integers(0, 6000), max_size=6), size=st.sampled_from([5, 2000, 10_000]))
@example(wire=b"a" * 600 + b"b" * 600 + b"\r\n", cuts=[600], size=10_000)  # a long line across two chunks
@example(wire=b"a\r", cuts=[2], size=10_000)  # a CR that ends a chunk, then the LF that makes it a CRLF
def test_checking_chunk_by_chunk_decides_like_checking_the_whole(wire: bytes, cuts: list[int], size: int) -> None:
    # The reader validates line endings and lengths as chunks arrive; wherever the chunks are cut, the
    # outcome is what one check of the whole DATA section gives.
    data = wire + b"\r\n.\r\n"
    reader = DataReader(size)
    reader.start()
    points = sorted({cut for cut in cuts if cut < len(data)} | {0, len(data)})
    results = [reader.feed(data[a:b]) for a, b in itertools.pairwise(points)]
    finished = [result for result in results if result[0] is not None]
    buffered = b"\r\n" + data  # as the reader holds it: an empty message ends at once
    end = buffered.find(b"\r\n.\r\n")
    assert finished and finished[0][0] == check_data(buffered[2 : end + 2], size)


@given(before=st.integers(0, 2500), length=st.integers(993, 1003), after=st.integers(0, 1500),
       cuts=st.lists(st.integers(0, 5000), max_size=3))
def test_a_long_line_is_found_wherever_it_falls_and_however_the_chunks_are_cut(
        before: int, length: int, after: int, cuts: list[int]) -> None:
    # Short lines are passed over a window at a time; one line of `length` octets among them, at any
    # offset against those windows and the chunks, is refused from 1,000 octets (999 with a stuffed dot).
    def short_lines(size: int) -> bytes:
        return (b"y" * 70 + b"\r\n") * (size // 72) + b"z" * (size % 72) + b"\r\n"

    data = short_lines(before) + b"a" * length + b"\r\n" + short_lines(after) + b".\r\n"
    reader = DataReader(100_000)
    reader.start()
    points = sorted({cut for cut in cuts if cut < len(data)} | {0, len(data)})
    results = [reader.feed(data[a:b]) for a, b in itertools.pairwise(points)]
    finished = [read for read, _ in results if read is not None]
    assert len(finished) == 1
    assert (finished[0].problem is DataProblem.LINE_TOO_LONG) == (length > 999)
