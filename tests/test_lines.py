"""lines_surely_shorter: never True when a run that long is there, whatever the bytes and the bounds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engaged.lines import lines_surely_shorter


def _longest_run(data: bytes) -> int:
    return max(map(len, data.split(b"\n")))


@given(data=st.lists(st.sampled_from([b"\n", b"\r", b"a" * 7, b"b" * 120, b"c" * 333]), max_size=40).map(b"".join),
       length=st.integers(1, 1000), start=st.integers(0, 400), cut=st.integers(0, 400))
def test_true_only_when_no_run_of_that_length_is_there(data: bytes, length: int, start: int, cut: int) -> None:
    end = max(start, len(data) - cut)
    if lines_surely_shorter(data, length, start, end):
        assert _longest_run(data[start:end]) < length


def test_short_lines_are_told_apart_from_one_long_enough_line() -> None:
    short = (b"x" * 60 + b"\r\n") * 50
    assert lines_surely_shorter(short, 999)
    assert lines_surely_shorter(bytearray(short), 999, 10, 2000)
    for length in (998, 999, 1000):
        assert not lines_surely_shorter(short + b"y" * length + b"\r\n" + short, length)
    assert not lines_surely_shorter(b"z" * 999, 999)
