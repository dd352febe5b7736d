"""The header block of a message, indexed once and handed along the path; the one RFC 2047 decoder.

Injection builds a `HeaderBlock` of the DATA content (policy's `PolicyMessage` keeps one of the
content it edits), reads X-MSYS-API (`smtpapi/header.py`), Subject and From from it; delivery
builds one of each spooled copy to strip X-MSYS-API. Lines end in CRLF or a bare LF; the block
ends at the first empty line (or at the end of the content). A leaf module: it imports nothing
from engaged.
"""

from __future__ import annotations

import re
from email.errors import HeaderParseError
from email.header import decode_header
from typing import NamedTuple

TEXT_LIMIT = 16384
"""Octets of a field value `HeaderBlock.text` reads (a subject is a line of text; RFC 5322 lines end at 998)."""

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_UNIT = re.compile(rb"([^\n]*+(?:\n|\Z))(?:[ \t][^\n]*+(?:\n|\Z))*+")  # a line (group 1), then its continuations


class HeaderField(NamedTuple):
    """One field: its lower-cased name and byte offsets (start of the line, the colon, after its last line)."""

    name: bytes
    start: int
    colon: int
    end: int


class HeaderBlock:
    """The fields of `content`'s header block, found once; values are read from the original bytes."""

    __slots__ = ("body_start", "content", "end", "fields")

    def __init__(self, content: bytes) -> None:
        self.content = content
        fields: list[HeaderField] = []
        position, size = 0, len(content)
        end = body_start = size
        while position < size:
            # One match is a line and its continuation lines: a folded field costs one C-level scan however
            # many lines it has (a 10 MB folded field used to cost 150,000 turns of this loop).
            unit = _UNIT.match(content, position)
            if unit is None:  # unreachable: the pattern matches at every position before the end
                break
            line_end, unit_end = unit.end(1), unit.end()
            if line_end - position <= 2 and content[position:line_end] in (b"\n", b"\r\n"):
                end, body_start = position, line_end
                break
            if content[position : position + 1] not in (b" ", b"\t"):  # else: continuation of no field
                colon = content.find(b":", position, line_end)
                if colon > position:
                    fields.append(HeaderField(content[position:colon].rstrip(b" \t").lower(), position, colon,
                                              unit_end))
            position = unit_end
        self.end = end  # where the empty line starts (len(content) when there is none)
        self.body_start = body_start  # just after the empty line
        self.fields = fields

    @property
    def raw(self) -> bytes:
        """The header block with the empty line that ends it, byte for byte."""
        return self.content[: self.body_start]

    def values(self, name: bytes) -> list[bytes]:
        """The raw value of every field `name` (any case), in order: folding kept, the final line break not."""
        key = name.lower()
        content = self.content
        values = []
        for field in self.fields:
            if field.name == key:
                value = content[field.colon + 1 : field.end]
                values.append(value[:-2] if value.endswith(b"\r\n") else value.removesuffix(b"\n"))
        return values

    def text(self, name: bytes) -> str:
        """The first field `name` as display text: unfolded, RFC 2047 decoded, runs of whitespace made one
        space, bytes that are not UTF-8 replaced (SparkPost's subject and friendly_from); "" if absent.

        Only the first TEXT_LIMIT octets of the value are read (cut at whitespace where there is some): the
        text goes into every event of the message, and decoding a 10 MB field held the event loop for ~0.5 s.
        """
        key = name.lower()
        field = next((field for field in self.fields if field.name == key), None)
        if field is None:
            return ""
        value = self.content[field.colon + 1 : min(field.end, field.colon + 1 + TEXT_LIMIT)]
        if field.end - field.colon - 1 > TEXT_LIMIT:
            space = max(value.rfind(b" "), value.rfind(b"\t"))
            value = value[:space] if space > TEXT_LIMIT // 2 else value
        raw = unfold(value).decode("utf-8", "surrogateescape")
        text = decode_words(raw)
        text = raw if text is None else text
        return " ".join(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").split())

    def without(self, name: bytes) -> bytes:
        """The content without every field `name` (and its folded lines); every other byte as it was."""
        key = name.lower()
        spans = [(field.start, field.end) for field in self.fields if field.name == key]
        if not spans:
            return self.content
        content = self.content
        parts, position = [], 0
        for start, end in spans:
            parts.append(content[position:start])
            position = end
        parts.append(content[position:])
        return b"".join(parts)


def unfold(value: bytes) -> bytes:
    """A field value with its folding line breaks removed (RFC 5322 §2.2.3)."""
    return _FOLD.sub(b"", value)


def decode_words(text: str) -> str | None:
    """`text` with its RFC 2047 encoded-words decoded; None when one cannot be (unknown charset, bad bytes,
    base64 that does not decode: `=?utf-8?b?A?=` raises HeaderParseError, which is no ValueError).

    Whitespace between adjacent encoded-words is dropped (RFC 2047 §6.2); everything else is kept as it is.
    """
    if "=?" not in text:
        return text
    try:
        return "".join(part.decode(charset or "ascii") if isinstance(part, bytes) else part
                       for part, charset in decode_header(text))
    except (LookupError, UnicodeDecodeError, ValueError, HeaderParseError):
        return None
