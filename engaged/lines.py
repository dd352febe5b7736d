"""A cheap test that no line of some bytes reaches a length: one line-feed search per window, not a split."""

from __future__ import annotations


def lines_surely_shorter(data: bytes | bytearray, length: int, start: int = 0, end: int | None = None) -> bool:
    """True when data[start:end] certainly has no `length` octets in a row without a line feed; False when it
    may (the caller then measures its lines exactly).

    A run of `length` or more octets covers a whole window of (length + 1) // 2 octets that begins a whole
    number of windows after `start`, so a line feed in every such window rules it out. Mail lines are far
    shorter than the limits checked here, so that search usually ends within each window's first line.
    """
    end = len(data) if end is None else end
    width = (length + 1) // 2
    find = data.find
    return all(find(b"\n", window, window + width) >= 0 for window in range(start, end - width + 1, width))
