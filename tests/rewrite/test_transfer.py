"""engaged.rewrite.transfer: transfer encodings and charsets of one part, there and back."""

from __future__ import annotations

import base64
import binascii
import re
from unittest.mock import patch

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engaged.rewrite import transfer
from engaged.rewrite.transfer import decode_body, decode_text, encode_body, encode_text, has_long_line


def test_quoted_printable_soft_breaks_are_joined() -> None:
    assert (
        decode_body(b"http://exa=\r\nmple.com/?a=3Db\r\n", "quoted-printable")
        == b"http://example.com/?a=b\r\n"
    )


def test_quoted_printable_round_trips_what_binascii_wrote() -> None:
    text = ("Caf\xe9 " * 40 + "\r\nline = two\t\r\n.dot\r\nend").encode("latin-1")
    encoded = binascii.b2a_qp(text.replace(b"\r\n", b"\n"), istext=True).replace(b"\n", b"\r\n")
    decoded = decode_body(encoded, "quoted-printable")
    assert decoded == text
    assert encode_body(text, "quoted-printable", encoded, b"\r\n") == encoded


def test_quoted_printable_output_has_no_bare_carriage_return() -> None:
    encoded = encode_body(b"a\rb\r\nc", "quoted-printable", b"", b"\r\n")
    assert encoded == b"a=0Db\r\nc"


def test_base64_keeps_the_original_line_width_and_trailing_line_breaks() -> None:
    data = bytes(range(256)) * 3
    original = base64.encodebytes(data).replace(b"\n", b"\r\n")  # 76 characters per line
    assert decode_body(original, "base64") == data
    assert encode_body(data, "base64", original, b"\r\n") == original
    narrow = b"\r\n".join(base64.b64encode(data)[i : i + 64] for i in range(0, 1024, 64)) + b"\r\n\r\n"
    assert encode_body(data, "base64", narrow, b"\r\n") == narrow


@pytest.mark.parametrize("body", [b"not base64!", b"QUJD=", b"QU=JD", b"QUJDRA==QUJD", b"Q", b"===="])
def test_invalid_base64_is_refused(body: bytes) -> None:
    assert decode_body(body, "base64") is None


@pytest.mark.parametrize("encoding", ["x-uuencode", "binhex", ""])
def test_unknown_transfer_encodings_are_refused(encoding: str) -> None:
    assert decode_body(b"abc", encoding) is None


@pytest.mark.parametrize("encoding", ["7bit", "8bit", "binary"])
def test_identity_encodings_pass_through(encoding: str) -> None:
    body = b"caf\xc3\xa9\r\n"
    assert decode_body(body, encoding) is body and encode_body(body, encoding, body, b"\r\n") is body


def test_charsets_are_decoded_and_encoded_back() -> None:
    assert decode_text("café".encode("iso-8859-1"), "iso-8859-1") == ("café", "iso8859-1")
    jis = "こんにちは http://a.example/".encode("iso-2022-jp")
    assert decode_text(jis, "iso-2022-jp") == ("こんにちは http://a.example/", "iso2022_jp")
    assert encode_text("こんにちは", "iso2022_jp") == "こんにちは".encode("iso-2022-jp")


def test_missing_or_ascii_charset_reads_valid_utf8_as_utf8_and_keeps_other_bytes() -> None:
    assert decode_text("é".encode(), None) == ("é", "utf-8")
    assert decode_text(b"\xe9", "us-ascii") == ("\udce9", "ascii")
    assert encode_text("\udce9", "ascii") == b"\xe9"


@pytest.mark.parametrize("charset", ["x-unknown", "unicode_escape", "idna", "a\x00b", "x" * 100])
def test_unknown_or_unsafe_charsets_are_refused(charset: str) -> None:
    assert isinstance(decode_text(b"abc", charset), str)


def test_charset_that_does_not_round_trip_is_refused() -> None:
    assert decode_text(b"\x1b$B\x1b(Babc", "iso-2022-jp") == "charset 'iso-2022-jp' does not round-trip"


def test_characters_outside_the_charset_cannot_be_encoded() -> None:
    assert encode_text("€", "iso8859-1") is None


def test_long_lines_are_detected_at_999_octets() -> None:
    assert not has_long_line(b"a" * 998 + b"\r\n" + b"b" * 998)
    assert has_long_line(b"x\r\n" + b"a" * 999)


@settings(max_examples=300, deadline=None)
@given(before=st.integers(0, 1500), length=st.integers(990, 1002), after=st.integers(0, 1500),
       breaks=st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_a_line_anywhere_is_long_from_999_octets(before: int, length: int, after: int, breaks: bytes) -> None:
    # short lines around one line of `length` octets, wherever it falls against the windows looked at first
    def around(size: int) -> bytes:
        return (b"y" * 70 + breaks) * (size // 72) + b"z" * (size % 72)

    data = around(before) + breaks + b"a" * length + breaks + around(after)
    assert has_long_line(data) == (max(map(len, data.splitlines()), default=0) > 998)
    assert has_long_line(data) == (length > 998)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300), encoding=st.sampled_from(["base64", "quoted-printable", "7bit", "x"]))
def test_decoding_any_bytes_never_raises(body: bytes, encoding: str) -> None:
    decoded = decode_body(body, encoding)
    if decoded is not None:
        assert isinstance(decode_text(decoded, "utf-8"), tuple)


# Large bodies are worked a CHUNK at a time; with a CHUNK of a few octets every cut is exercised, and each
# result must be what one call over the whole body gives (the reference functions below are the one-call
# versions this module had before).
_LINES = st.lists(st.sampled_from([b"a", b"=", b" ", b"\t", b".", b"\r", b"\n", b"\r\n", b"=\r\n", b"\xe9", b"=3D",
                                   b"AB", b"+/", b"==", b"x" * 80]), max_size=60).map(b"".join)


def _reference_qp(data: bytes, linesep: bytes) -> bytes:
    unix = data.replace(b"\r\n", b"\n")
    encoded = binascii.b2a_qp(unix, istext=True)
    if b"\r" in unix:
        encoded = re.sub(rb"\r(?!\n)", b"=0D", encoded)
    return encoded if linesep == b"\n" else encoded.replace(b"\n", linesep)


def _reference_base64(body: bytes) -> bytes | None:
    compact = re.sub(rb"[\t\n\r ]++", b"", body)
    if len(compact) % 4 or not re.fullmatch(rb"[A-Za-z0-9+/]*+={0,2}", compact):
        return None
    try:
        return binascii.a2b_base64(compact)
    except binascii.Error:
        return None


@settings(max_examples=300, deadline=None)
@given(data=_LINES, chunk=st.integers(1, 9), linesep=st.sampled_from([b"\n", b"\r\n"]))
@example(data=b"aaaa\nb\r\r\n", chunk=1, linesep=b"\n")  # binascii takes CRLF mode from a piece's first line
def test_pieces_give_what_one_call_gives(data: bytes, chunk: int, linesep: bytes) -> None:
    with patch.object(transfer, "CHUNK", chunk * 4):
        assert encode_body(data, "quoted-printable", b"", linesep) == _reference_qp(data, linesep)
        assert decode_body(data, "quoted-printable") == binascii.a2b_qp(data)
        assert decode_body(data, "base64") == _reference_base64(data)
        assert has_long_line(data * 20) == (max(map(len, (data * 20).splitlines()), default=0) > 998)


def _reference_text(data: bytes, charset: str | None) -> str | None:
    codec = charset or "utf-8"
    if charset is None and not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            codec = "ascii"
    try:
        text = data.decode(codec, "surrogateescape")
        return text if text.encode(codec, "surrogateescape") == data else None
    except UnicodeError:
        return None


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80), junk=st.binary(max_size=3), chunk=st.integers(1, 9),
       charset=st.sampled_from([None, "utf-8", "iso-8859-1", "utf-16", "shift_jis", "iso-2022-jp"]))
def test_charset_pieces_give_what_one_call_gives(text: str, junk: bytes, chunk: int, charset: str | None) -> None:
    data = text.encode(charset or "utf-8", "replace") + junk
    with patch.object(transfer, "CHUNK", chunk):
        decoded = decode_text(data, charset)
        reference = _reference_text(data, charset)
        if reference is None:
            assert isinstance(decoded, str), decoded
        else:
            assert isinstance(decoded, tuple) and decoded[0] == reference
            assert encode_text(decoded[0], decoded[1]) == data


def test_a_long_line_across_a_piece_boundary_is_seen() -> None:
    with patch.object(transfer, "CHUNK", 500):
        assert has_long_line(b"a" * 400 + b"\n" + b"b" * 999)
        assert not has_long_line((b"c" * 998 + b"\n") * 3)
