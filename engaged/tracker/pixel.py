"""The open pixel: a 43-byte transparent 1×1 GIF and the headers that keep every cache from storing it."""

from __future__ import annotations

from typing import Final

# GIF89a, 1×1, a two-colour global table, a graphic control extension marking index 0 transparent.
PIXEL_GIF: Final = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)

NO_CACHE: Final = b"no-store, no-cache, must-revalidate, private"

# Every response of the tracker carries these (uvicorn's own Server header is turned off).
COMMON_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"server", b"engaged"),
    (b"x-content-type-options", b"nosniff"),
)

PIXEL_HEADERS: Final[list[tuple[bytes, bytes]]] = [
    *COMMON_HEADERS,
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(PIXEL_GIF)).encode("ascii")),
    (b"cache-control", NO_CACHE),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
]
