"""Transfer encodings and charsets of a text part: body bytes to str and back again (④ rewrite).

Decoding is strict where a mistake would corrupt the message (base64 that is not base64, a charset Python does
not know or that does not reproduce its own bytes) and lossless elsewhere: the text is decoded with
`surrogateescape`, so bytes that are invalid in the declared charset come back unchanged. Re-encoding uses the
part's own transfer encoding; quoted-printable goes through binascii with LF line breaks (CRLF normalised
first, restored after), which reproduces what common encoders wrote.
"""

from __future__ import annotations

import binascii
import codecs
import re

__all__ = [
    "IDENTITY_ENCODINGS",
    "MAX_LINE_OCTETS",
    "QUOTED_PRINTABLE",
    "decode_body",
    "decode_text",
    "encode_body",
    "encode_text",
    "has_long_line",
]

MAX_LINE_OCTETS = 998
"""RFC 5322: at most 998 octets per line, line break excluded."""

QUOTED_PRINTABLE = "quoted-printable"
IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})

_BASE64_BODY = re.compile(rb"[A-Za-z0-9+/]*+={0,2}")
_BASE64_WHITESPACE = re.compile(rb"[\t\n\r ]++")
_BARE_CR = re.compile(rb"\r(?!\n)")
_UNSAFE_CODECS = frozenset({"unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined"})
_ASCII_NAMES = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "us"})
_DEFAULT_BASE64_LINE = 76


def decode_body(body: bytes, transfer_encoding: str) -> bytes | None:
    """The octets a body carries, or None if the encoding is unknown or the body is not valid in it."""
    if transfer_encoding in IDENTITY_ENCODINGS:
        return body
    if transfer_encoding == QUOTED_PRINTABLE:
        return binascii.a2b_qp(body)
    if transfer_encoding == "base64":
        compact = _BASE64_WHITESPACE.sub(b"", body)
        if len(compact) % 4 or not _BASE64_BODY.fullmatch(compact):
            return None
        try:
            return binascii.a2b_base64(compact)
        except binascii.Error:
            return None
    return None


def encode_body(data: bytes, transfer_encoding: str, original: bytes, linesep: bytes) -> bytes:
    """`data` in `transfer_encoding`, shaped like `original` (base64 line length, trailing blank lines)."""
    if transfer_encoding == QUOTED_PRINTABLE:
        unix = data.replace(b"\r\n", b"\n")
        encoded = binascii.b2a_qp(unix, istext=True)
        if b"\r" in unix:  # a bare CR: binascii leaves it raw, and SMTP must not carry it
            encoded = _BARE_CR.sub(b"=0D", encoded)
        return encoded if linesep == b"\n" else encoded.replace(b"\n", linesep)
    if transfer_encoding == "base64":
        tail = original[len(original.rstrip(b"\t\n\r ")) :]
        width = _base64_line_length(original)
        chunk = width // 4 * 3
        lines = [binascii.b2a_base64(data[i : i + chunk], newline=False) for i in range(0, len(data), chunk)]
        return linesep.join(lines) + tail
    return data


def has_long_line(data: bytes) -> bool:
    """Whether a line of `data` is longer than 998 octets (then 7bit/8bit must become quoted-printable)."""
    return max(map(len, data.splitlines()), default=0) > MAX_LINE_OCTETS


def decode_text(data: bytes, charset: str | None) -> tuple[str, str] | str:
    """(text, codec) for `data` in `charset`; else a warning saying why the part must be left as it is.

    No charset or US-ASCII: UTF-8 when the bytes are valid UTF-8 (a common omission), else ASCII with every
    other byte kept through `surrogateescape`. The round trip back to bytes must be exact, or the part is
    refused: re-encoding would change bytes that the rewriter did not mean to touch.
    """
    codec = _codec_for(data, charset)
    if codec is None:
        return f"unknown charset {_shown(charset)}"
    try:
        text = data.decode(codec, "surrogateescape")
        exact = text.encode(codec, "surrogateescape") == data
    except (UnicodeError, LookupError):
        return f"body not decodable as {_shown(charset)}"
    if not exact:
        return f"charset {_shown(charset)} does not round-trip"
    return text, codec


def encode_text(text: str, codec: str) -> bytes | None:
    """`text` back to bytes in `codec`; None when it holds characters the charset cannot carry."""
    try:
        return text.encode(codec, "surrogateescape")
    except UnicodeError:
        return None


def _codec_for(data: bytes, charset: str | None) -> str | None:
    if charset is None or charset in _ASCII_NAMES:
        if data.isascii():
            return "ascii"
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return "ascii"
        return "utf-8"
    try:
        name = codecs.lookup(charset).name
    except (LookupError, ValueError, UnicodeError):
        return None
    return None if name.replace("-", "_") in _UNSAFE_CODECS else name


def _base64_line_length(original: bytes) -> int:
    newline = original.find(b"\n")
    if newline < 0 or not original[newline:].strip():
        return _DEFAULT_BASE64_LINE  # a single line: no width to copy
    width = len(original[:newline].rstrip(b"\r"))
    return width if width % 4 == 0 and 4 <= width <= MAX_LINE_OCTETS else _DEFAULT_BASE64_LINE


def _shown(charset: str | None) -> str:
    return repr(charset if charset is None or len(charset) <= 40 else charset[:40] + "…")
