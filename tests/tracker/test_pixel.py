"""Tests of the open pixel: a valid, transparent, 43-byte 1×1 GIF with headers that defeat caching."""

from __future__ import annotations

import struct

from engaged.tracker.pixel import NO_CACHE, PIXEL_GIF, PIXEL_HEADERS


def test_pixel_is_a_43_byte_gif89a_of_one_by_one_pixel() -> None:
    assert len(PIXEL_GIF) == 43
    assert PIXEL_GIF[:6] == b"GIF89a"
    assert struct.unpack("<HH", PIXEL_GIF[6:10]) == (1, 1)
    assert PIXEL_GIF.endswith(b";")


def test_pixel_marks_its_only_colour_index_transparent() -> None:
    extension = PIXEL_GIF.index(b"!\xf9\x04")
    packed, _delay, transparent_index = struct.unpack("<BHB", PIXEL_GIF[extension + 3:extension + 7])
    assert packed & 0x01 == 1
    assert transparent_index == 0


def test_pixel_headers_forbid_every_cache_and_sniffing() -> None:
    headers = dict(PIXEL_HEADERS)
    assert headers[b"content-type"] == b"image/gif"
    assert headers[b"content-length"] == b"43"
    assert headers[b"cache-control"] == NO_CACHE == b"no-store, no-cache, must-revalidate, private"
    assert headers[b"pragma"] == b"no-cache"
    assert headers[b"expires"] == b"0"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"server"] == b"engaged"
