"""Transfer encodings and charsets of a text part: body bytes to str and back again (④ rewrite).

Decoding is strict where a mistake would corrupt the message (base64 that is not base64, a charset Python does
not know or that does not reproduce its own bytes) and lossless elsewhere: the text is decoded with
`surrogateescape`, so bytes that are invalid in the declared charset come back unchanged. Re-encoding uses the
part's own transfer encoding; quoted-printable goes through binascii with LF line breaks (CRLF normalised
first, restored after), which reproduces what common encoders wrote.

Large bodies are worked in pieces of about CHUNK octets (cut at line breaks where it matters), with the same
result as one call: a C call holds the GIL for its whole length, and this runs on a delivery thread beside the
event loop, so no single call may take more than a few milliseconds (a 30 MB part held the loop 0.75 s).
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Iterator

from engaged.lines import lines_surely_shorter

__all__ = [
    "CHUNK",
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

CHUNK = 1 << 20
"""Octets (or characters) one C-level step of this module works on at most, about a millisecond of work."""

_BASE64_BODY = re.compile(rb"[A-Za-z0-9+/]*+={0,2}")
_BASE64_CHARS = re.compile(rb"[A-Za-z0-9+/]*+")
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
        return b"".join(binascii.a2b_qp(piece) for piece in _line_pieces(body))  # QP is decoded line by line
    if transfer_encoding == "base64":
        compact = b"".join(_BASE64_WHITESPACE.sub(b"", body[i : i + CHUNK]) for i in range(0, len(body), CHUNK))
        if len(compact) % 4:
            return None
        pieces = [compact[i : i + CHUNK] for i in range(0, len(compact), CHUNK)] or [b""]
        if not all(_BASE64_CHARS.fullmatch(piece) for piece in pieces[:-1]) or not _BASE64_BODY.fullmatch(
                pieces[-1]):
            return None  # padding only at the very end, as one fullmatch over the whole would say
        try:
            return b"".join(binascii.a2b_base64(piece) for piece in pieces)  # CHUNK is a multiple of 4
        except binascii.Error:
            return None
    return None


def encode_body(data: bytes, transfer_encoding: str, original: bytes, linesep: bytes) -> bytes:
    """`data` in `transfer_encoding`, shaped like `original` (base64 line length, trailing blank lines)."""
    if transfer_encoding == QUOTED_PRINTABLE:
        # binascii takes CRLF mode from a piece's first line break: a body where one will follow a CR (what
        # "\r\r\n" leaves) is encoded in one call, as before.
        pieces = [data] if b"\r\r\n" in data else _line_pieces(data, CHUNK // 16)  # b2a_qp: ~40 ms a megabyte
        return b"".join(_encode_qp_piece(piece.replace(b"\r\n", b"\n"), linesep) for piece in pieces)
    if transfer_encoding == "base64":
        content_end = len(original)  # the trailing whitespace is found without copying the original
        while content_end and original[content_end - 1] in b"\t\n\r ":
            content_end -= 1
        width = _base64_line_length(original, content_end)
        chunk = width // 4 * 3
        lines = [binascii.b2a_base64(data[i : i + chunk], newline=False) for i in range(0, len(data), chunk)]
        if lines:
            lines[-1] += original[content_end:]
            return linesep.join(lines)
        return original[content_end:]
    return data


def has_long_line(data: bytes) -> bool:
    """Whether a line of `data` is longer than 998 octets (then 7bit/8bit must become quoted-printable)."""
    # The common case: 19 us for a 30 KB tracked copy (bench/injection.py's), against 41 us to split it.
    if lines_surely_shorter(data, MAX_LINE_OCTETS + 1):
        return False
    # Pieces end after a line feed, so each line lies in one piece whole.
    return any(max(map(len, piece.splitlines()), default=0) > MAX_LINE_OCTETS for piece in _line_pieces(data))


def decode_text(data: bytes, charset: str | None) -> tuple[str, str] | str:
    """(text, codec) for `data` in `charset`; else a warning saying why the part must be left as it is.

    No charset or US-ASCII: UTF-8 when the bytes are valid UTF-8 (a common omission), else ASCII with every
    other byte kept through `surrogateescape`. The round trip back to bytes must be exact, or the part is
    refused: re-encoding would change bytes that the rewriter did not mean to touch.
    """
    if charset is None or charset in _ASCII_NAMES:
        if data.isascii():
            return _decoded(data, "ascii", "strict"), "ascii"
        try:
            return _decoded(data, "utf-8", "strict"), "utf-8"
        except UnicodeDecodeError:
            return _decoded(data, "ascii", "surrogateescape"), "ascii"
    codec = _codec_for(charset)
    if codec is None:
        return f"unknown charset {_shown(charset)}"
    try:
        text = _decoded(data, codec, "surrogateescape")
        # UTF-8 with surrogateescape gives back every byte by construction; other codecs may not.
        exact = codec == "utf-8" or _encodes_to(text, codec, data)
    except (UnicodeError, LookupError):
        return f"body not decodable as {_shown(charset)}"
    if not exact:
        return f"charset {_shown(charset)} does not round-trip"
    return text, codec


def encode_text(text: str, codec: str) -> bytes | None:
    """`text` back to bytes in `codec`; None when it holds characters the charset cannot carry."""
    try:
        encoder = codecs.getincrementalencoder(codec)("surrogateescape")
        pieces = [encoder.encode(text[i : i + CHUNK]) for i in range(0, len(text), CHUNK)]
        pieces.append(encoder.encode("", final=True))
    except UnicodeError:
        return None
    return b"".join(pieces)


def _decoded(data: bytes, codec: str, errors: str) -> str:
    """`data.decode(codec, errors)`, a CHUNK at a time (an incremental decoder keeps split characters whole)."""
    if len(data) <= CHUNK:
        return data.decode(codec, errors)
    decoder = codecs.getincrementaldecoder(codec)(errors)
    pieces = [decoder.decode(data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    pieces.append(decoder.decode(b"", final=True))
    return "".join(pieces)


def _encodes_to(text: str, codec: str, data: bytes) -> bool:
    """Whether `text` encodes back to exactly `data`, compared a piece at a time."""
    encoder = codecs.getincrementalencoder(codec)("surrogateescape")
    position = 0
    for i in range(0, len(text) + 1, CHUNK):
        piece = encoder.encode(text[i : i + CHUNK], final=i + CHUNK > len(text))
        if data[position : position + len(piece)] != piece:
            return False
        position += len(piece)
    return position == len(data)


def _line_pieces(data: bytes, size: int = 0) -> Iterator[bytes]:
    """`data` cut after a line feed about every `size` (CHUNK) octets (the whole of it when it is short), a
    piece at a time: only one piece's copy exists at once."""
    size = size or CHUNK
    start = 0
    while len(data) - start > size:
        cut = data.find(b"\n", start + size)
        if cut < 0:
            break
        yield data[start : cut + 1]
        start = cut + 1
    yield data[start:] if start else data


def _encode_qp_piece(piece: bytes, linesep: bytes) -> bytes:
    encoded = binascii.b2a_qp(piece, istext=True)
    if b"\r" in piece:  # a bare CR: binascii leaves it raw, and SMTP must not carry it
        encoded = _BARE_CR.sub(b"=0D", encoded)
    return encoded if linesep == b"\n" else encoded.replace(b"\n", linesep)


def _codec_for(charset: str) -> str | None:
    try:
        name = codecs.lookup(charset).name
    except (LookupError, ValueError, UnicodeError):
        return None
    return None if name.replace("-", "_") in _UNSAFE_CODECS else name


def _base64_line_length(original: bytes, content_end: int) -> int:
    newline = original.find(b"\n", 0, content_end)
    if newline < 0:
        return _DEFAULT_BASE64_LINE  # a single line: no width to copy
    width = len(original[:newline].rstrip(b"\r"))
    return width if width % 4 == 0 and 4 <= width <= MAX_LINE_OCTETS else _DEFAULT_BASE64_LINE


def _shown(charset: str | None) -> str:
    return repr(charset if charset is None or len(charset) <= 40 else charset[:40] + "…")
