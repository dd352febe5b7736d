"""The header block: fields found once, raw values, display text, byte-exact removal, RFC 2047."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engaged.headers import HeaderBlock, decode_words

MESSAGE = (b"Subject: =?utf-8?q?caf=C3=A9?=\r\n   au lait\r\nFrom: App <a@x.example>\r\nX-Tag: 1\r\n"
           b"x-tag: 2\r\n\r\nX-Tag: body\r\n")


def test_fields_stop_at_the_empty_line() -> None:
    block = HeaderBlock(MESSAGE)
    assert [field.name for field in block.fields] == [b"subject", b"from", b"x-tag", b"x-tag"]
    assert block.raw == MESSAGE[: MESSAGE.index(b"\r\n\r\n") + 4]
    assert MESSAGE[block.body_start :] == b"X-Tag: body\r\n"


def test_values_keep_folding_and_every_occurrence_in_order() -> None:
    block = HeaderBlock(MESSAGE)
    assert block.values(b"X-TAG") == [b" 1", b" 2"]
    assert block.values(b"subject") == [b" =?utf-8?q?caf=C3=A9?=\r\n   au lait"]
    assert block.values(b"absent") == []


def test_text_is_unfolded_decoded_and_single_spaced() -> None:
    block = HeaderBlock(MESSAGE)
    assert block.text(b"subject") == "café au lait"
    assert block.text(b"from") == "App <a@x.example>"
    assert block.text(b"absent") == ""


def test_text_replaces_bytes_that_are_not_utf8_and_keeps_undecodable_words() -> None:
    block = HeaderBlock(b"Subject: caf\xe9 =?x-unknown?q?a?=\r\n\r\n")
    assert block.text(b"subject") == "caf\ufffd =?x-unknown?q?a?="
    assert HeaderBlock(b"Subject: =?utf-8?b?A?= sale\r\n\r\n").text(b"subject") == "=?utf-8?b?A?= sale"


def test_without_removes_exactly_that_field_and_returns_the_same_object_when_absent() -> None:
    block = HeaderBlock(MESSAGE)
    assert block.without(b"x-tag") == MESSAGE.replace(b"X-Tag: 1\r\nx-tag: 2\r\n", b"")
    assert block.without(b"absent") is MESSAGE


def test_a_message_without_an_empty_line_is_all_header() -> None:
    block = HeaderBlock(b"Subject: a\r\nX: b")
    assert block.body_start == block.end == len(block.content)
    assert block.values(b"x") == [b" b"]


def test_a_message_starting_with_the_empty_line_has_no_fields() -> None:
    block = HeaderBlock(b"\r\nSubject: body\r\n")
    assert (block.fields, block.end, block.body_start) == ([], 0, 2)


def test_bare_lf_lines_are_read_too() -> None:
    block = HeaderBlock(b"Subject: a\n b\nX: c\n\nbody")
    assert block.values(b"subject") == [b" a\n b"]
    assert block.content[block.body_start :] == b"body"


def test_decode_words_drops_whitespace_between_encoded_words_only() -> None:
    assert decode_words("=?utf-8?q?a?= =?utf-8?q?b?=") == "ab"
    assert decode_words("Hello =?utf-8?b?w6k=?= World") == "Hello é World"
    assert decode_words('{"c": "=?utf-8?q?caf=C3=A9?="}') == '{"c": "café"}'
    assert decode_words("plain") == "plain"
    assert decode_words("=?x-unknown?q?a?=") is None
    assert decode_words("=?utf-8?b?A?=") is None  # base64 of an impossible length: HeaderParseError
    assert decode_words("=?utf-8?b?QQ=?= =?x?b?]a{=?=") is None


def _reference_fields(content: bytes) -> tuple[list[tuple[bytes, int, int, int]], int, int]:
    """The header index as a plain loop over lines (what HeaderBlock did before it matched folded fields whole)."""
    fields: list[tuple[bytes, int, int, int]] = []
    position, size = 0, len(content)
    end = body_start = size
    while position < size:
        newline = content.find(b"\n", position)
        line_end = size if newline < 0 else newline + 1
        if line_end - position <= 2 and content[position:line_end] in (b"\n", b"\r\n"):
            end, body_start = position, line_end
            break
        if content[position : position + 1] in (b" ", b"\t"):
            if fields and fields[-1][3] == position:
                fields[-1] = (*fields[-1][:3], line_end)
        else:
            colon = content.find(b":", position, line_end)
            if colon > position:
                fields.append((content[position:colon].rstrip(b" \t").lower(), position, colon, line_end))
        position = line_end
    return fields, end, body_start


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"Subject", b"X", b":", b" ", b"\t", b"a", b"\r", b"\n", b"\r\n", b": v\r\n",
                                 b"\r\n\r\n", b"\n\n", b" cont\r\n"]), max_size=40).map(b"".join))
def test_fields_are_those_a_line_by_line_reading_finds(content: bytes) -> None:
    block = HeaderBlock(content)
    assert ([tuple(field) for field in block.fields], block.end, block.body_start) == _reference_fields(content)
