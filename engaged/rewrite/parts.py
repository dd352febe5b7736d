"""Find the top text/html and text/plain parts of a raw message, as byte offsets into it (④ rewrite).

"Top" (Momentum leaves it undefined; this is our rule): walk from the root along the main body.
  * multipart/alternative: every child, in order (they are versions of the same body);
  * any other multipart (mixed, related, report, signed, digest, …): the first child only; later children are
    attachments, inline images or signatures;
  * message/* (rfc822, delivery-status, …) and parts with `Content-Disposition: attachment` are never entered;
  * a leaf of type text/html or text/plain is taken if none of its type was taken before; a text/x-amp-html leaf
    (AMP for Email) likewise, but only as a child of a multipart/alternative, where AMP clients look for it.
The walk examines at most 100 parts and 20 levels of nesting. A part whose header block is malformed (a line
that is neither a field nor a continuation), or a multipart without a usable boundary, is passed over.

Parsing is our own so that every offset is exact and the rewriter can splice changed bodies back into the
original bytes: headers and every other part are untouched by construction. Field values are unfolded as
the stdlib's compat32 policy does and their parameters read by email.message.Message. Delimiters follow
RFC 2046 as the stdlib reads them: `--boundary`, optional `--`, optional spaces or tabs, then the end of the
line; the line break before a delimiter belongs to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import Message

import msgspec

__all__ = ["MAX_DEPTH", "MAX_PARTS", "TextPart", "TopParts", "find_top_parts"]

MAX_DEPTH = 20
MAX_PARTS = 100

_HEADER_END = re.compile(rb"\n\r?\n")
_DELIMITER_REST = re.compile(rb"(--)?[ \t]*+(?:\r?\n|\Z)")
_CONTENT_FIELD = re.compile(
    rb"^(?P<name>content-(?:type|transfer-encoding|disposition))[ \t]*+:"
    rb"(?P<value>[^\n]*+\n(?:[ \t][^\n]*+\n)*+)",
    re.IGNORECASE | re.MULTILINE,
)
_HEADER_BLOCK = re.compile(rb"(?:From [^\n]*+\n)?(?:[\x21-\x39\x3b-\x7e]++:[^\n]*+\n(?:[ \t][^\n]*+\n)*+)*+")


class TextPart(msgspec.Struct, frozen=True, kw_only=True):
    """One text leaf: where its header block and body are in the raw message, and how the body is encoded."""

    subtype: str  # "html", "plain" or "x-amp-html"
    headers_start: int
    headers_end: int  # just after the last header line; the blank line starts here
    body_start: int
    body_end: int  # the line break before the next delimiter is not part of the body
    charset: str | None  # lower-cased, as declared
    transfer_encoding: str  # lower-cased; "7bit" when absent
    linesep: bytes  # the line break of the blank line after the header block: b"\r\n" or b"\n"


class TopParts(msgspec.Struct, frozen=True, kw_only=True):
    html: TextPart | None
    plain: TextPart | None
    warnings: tuple[str, ...]
    amp: TextPart | None = None


class _Walk:
    """The state of one walk: what was found and how much was examined."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.examined = 0
        self.html: TextPart | None = None
        self.plain: TextPart | None = None
        self.amp: TextPart | None = None
        self.warnings: list[str] = []

    @property
    def done(self) -> bool:
        """Every kind of part found, or the part budget spent: the walk stops."""
        found = self.html is not None and self.plain is not None and self.amp is not None
        return found or self.examined > MAX_PARTS


def find_top_parts(raw: bytes) -> TopParts:
    """The top text/html and text/plain parts of `raw` (see the module docstring for the rule)."""
    walk = _Walk(raw)
    _visit(walk, 0, len(raw), 0, "text/plain")
    return TopParts(html=walk.html, plain=walk.plain, amp=walk.amp, warnings=tuple(dict.fromkeys(walk.warnings)))


def _visit(walk: _Walk, start: int, end: int, depth: int, default_type: str, in_alternative: bool = False) -> None:
    if depth > MAX_DEPTH:
        walk.warnings.append(f"MIME nesting deeper than {MAX_DEPTH} levels: deeper parts not examined")
        return
    walk.examined += 1
    if walk.examined > MAX_PARTS:
        walk.warnings.append(f"more than {MAX_PARTS} MIME parts: the rest not examined")
        return
    raw = walk.raw
    headers_end, body_start, linesep = _split_headers(raw, start, end)
    if body_start == headers_end or not _HEADER_BLOCK.fullmatch(raw, start, headers_end):
        return  # no blank line after the header block, or a line in it that is not a header field
    fields = _parse_fields(raw, start, headers_end, default_type)
    content_type = _content_type(fields)
    if content_type is None or fields.get_content_disposition() == "attachment":
        return
    if content_type.startswith("multipart/"):
        child_type = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
        for child_start, child_end in _children(raw, body_start, end, fields.get_boundary()):
            _visit(walk, child_start, child_end, depth + 1, child_type, content_type == "multipart/alternative")
            if walk.done or content_type != "multipart/alternative":
                return
        return
    if content_type not in ("text/html", "text/plain", "text/x-amp-html"):
        return
    if content_type == "text/x-amp-html" and (not in_alternative or walk.amp is not None):
        return
    part = TextPart(
        subtype=content_type[5:],
        headers_start=start,
        headers_end=headers_end,
        body_start=body_start,
        body_end=end,
        charset=fields.get_content_charset(),
        transfer_encoding=str(fields.get("content-transfer-encoding", "7bit")).strip().lower(),
        linesep=linesep,
    )
    if part.subtype == "html" and walk.html is None:
        walk.html = part
    elif part.subtype == "plain" and walk.plain is None:
        walk.plain = part
    elif part.subtype == "x-amp-html":
        walk.amp = part


def _split_headers(raw: bytes, start: int, end: int) -> tuple[int, int, bytes]:
    """(end of the header block, start of the body, the line break of the blank line) of raw[start:end]."""
    for blank in (b"\r\n", b"\n"):
        if raw.startswith(blank, start, end):
            return start, start + len(blank), blank
    found = _HEADER_END.search(raw, start, end)
    if found is None:
        return end, end, b""  # all header, no body
    return found.start() + 1, found.end(), raw[found.start() + 1 : found.end()]


def _parse_fields(raw: bytes, start: int, end: int, default_type: str) -> Message:
    """The Content-* fields of the header block raw[start:end], unfolded as compat32 does, in a Message
    (only for its parameter parsing: get_content_type, get_boundary, get_content_charset, …)."""
    fields = Message()
    fields.set_default_type(default_type)
    for found in _CONTENT_FIELD.finditer(raw, start, end):
        value = found.group("value").decode("ascii", "surrogateescape").lstrip(" \t").rstrip("\r\n")
        fields[found.group("name").decode("ascii")] = value
    return fields


def _content_type(fields: Message) -> str | None:
    """The part's content type; None when the field is present but unreadable (the part is passed over)."""
    declared = fields.get("content-type")
    if declared is not None and str(declared).split(";", 1)[0].strip().count("/") != 1:
        return None
    return fields.get_content_type()


def _children(raw: bytes, start: int, end: int, boundary: str | None) -> Iterator[tuple[int, int]]:
    """(start, end) of each body part between the delimiters of `boundary` in raw[start:end]."""
    if not boundary:
        return
    try:
        marker = boundary.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return
    child_start = -1
    for line_start, line_end, closing in _delimiters(raw, start, end, b"--" + marker):
        if child_start >= 0:
            yield child_start, max(child_start, _before_line_break(raw, line_start))
        if closing:
            return
        child_start = line_end
    if child_start >= 0:
        yield child_start, end


def _delimiters(raw: bytes, start: int, end: int, marker: bytes) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is the close delimiter) of each line of raw[start:end] that is `marker` plus an optional
    `--` and spaces or tabs; bytes.find does the scanning, which is many times faster than a regex here."""
    pos = start
    while (found := raw.find(marker, pos, end)) >= 0:
        pos = found + 1
        if found > 0 and raw[found - 1] != 0x0A:
            continue
        rest = _DELIMITER_REST.match(raw, found + len(marker), end)
        if rest is not None:
            yield found, rest.end(), rest.group(1) is not None


def _before_line_break(raw: bytes, pos: int) -> int:
    if raw.endswith(b"\r\n", 0, pos):
        return pos - 2
    if raw.endswith(b"\n", 0, pos):
        return pos - 1
    return pos
