"""X-MSYS-API decoding and validation, header lookup and byte-exact removal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engaged.headers import HeaderBlock
from engaged.smtpapi.header import FIELD_NAME, HeaderError, XMsysApi, decode_xmsysapi, read_xmsysapi


def test_a_full_header_decodes() -> None:
    value = ('{"campaign_id": "spring", "metadata": {"user": "42"}, "tags": ["a"], '
             '"options": {"open_tracking": true, "click_tracking": "false", "transactional": 1, '
             '"sandbox": "0", "ip_pool": "p"}}')
    assert decode_xmsysapi(value) == XMsysApi(
        campaign_id="spring", metadata={"user": "42"}, tags=["a"], open_tracking=True, click_tracking=False,
        transactional=True, sandbox=False, ip_pool="p",
    )


def test_tags_beyond_ten_are_ignored() -> None:
    result = decode_xmsysapi('{"tags": [' + ", ".join(f'"t{i}"' for i in range(15)) + "]}")
    assert isinstance(result, XMsysApi)
    assert result.tags == [f"t{i}" for i in range(10)]


def test_folding_is_undone_before_parsing() -> None:
    assert decode_xmsysapi('{"campaign_id":\r\n "x"}') == XMsysApi(campaign_id="x")


def test_campaign_of_exactly_64_bytes_is_accepted_and_65_refused() -> None:
    assert isinstance(decode_xmsysapi('{"campaign_id": "' + "é" * 32 + '"}'), XMsysApi)
    refused = decode_xmsysapi('{"campaign_id": "' + "é" * 32 + 'x"}')
    assert refused == HeaderError("smtpapi_campaign_id context is limited to 64 bytes")


def test_deep_nesting_is_refused() -> None:
    assert isinstance(decode_xmsysapi('{"metadata": ' + "[" * 40 + "]" * 40 + "}"), HeaderError)


def test_huge_numbers_and_garbage_do_not_raise() -> None:
    for value in ['{"metadata": {"n": ' + "9" * 5000 + "}}", "\x00", "", "{" * 100000, '{"a": NaN}']:
        assert isinstance(decode_xmsysapi(value), XMsysApi | HeaderError)


@given(st.text(max_size=300))
def test_any_text_decodes_to_a_value_or_an_error(value: str) -> None:
    assert isinstance(decode_xmsysapi(value), XMsysApi | HeaderError)


def test_header_values_finds_folded_values_case_insensitively() -> None:
    message = b"Subject: a\r\nx-msys-api: {\"a\":\r\n 1}\r\nX-Other: 2\r\n\r\nX-MSYS-API: body\r\n"
    assert HeaderBlock(message).values(FIELD_NAME) == [b' {"a":\r\n 1}']


def test_read_xmsysapi_reads_the_block_and_refuses_a_repeated_header() -> None:
    assert read_xmsysapi(HeaderBlock(b"Subject: a\r\n\r\nX-MSYS-API: {}\r\n")) is None
    assert read_xmsysapi(HeaderBlock(b'X-MSYS-API: {"campaign_id": "c"}\r\n\r\n')) == XMsysApi(campaign_id="c")
    repeated = read_xmsysapi(HeaderBlock(b"X-MSYS-API: {}\r\nx-msys-api: {}\r\n\r\n"))
    assert isinstance(repeated, HeaderError) and "at most once" in repeated.reason


header_names = st.sampled_from([b"Subject", b"X-Other", b"From", b"X-MSYS-API", b"x-msys-api", b"X-MSYS-APIX"])
header_lines = st.tuples(header_names, st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))


@given(st.lists(header_lines, max_size=8), st.binary(max_size=100))
def test_strip_header_removes_exactly_that_header(headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    message = b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body
    expected = b"".join(
        name + b": " + value + b"\r\n" for name, value in headers if name.lower() != b"x-msys-api"
    ) + b"\r\n" + body
    assert HeaderBlock(message).without(FIELD_NAME) == expected


def test_strip_header_without_the_header_returns_the_same_object() -> None:
    message = b"Subject: a\r\n\r\nbody\r\n"
    assert HeaderBlock(message).without(FIELD_NAME) is message


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ('{"campaign_id": "a\\u0000b"}', "campaign_id"),
        ('{"metadata": {"user": "4\\u00002"}}', "metadata.user"),
        ('{"metadata": {"deep": {"list": [1, "\\u0000"]}}}', "metadata.deep.list[1]"),
        ('{"metadata": {"k\\u0000": 1}}', "metadata.k\\u0000"),
        ('{"tags": ["fine", "\\u0000"]}', "tags[1]"),
        ('{"options": {"ip_pool": "p\\u0000"}}', "options.ip_pool"),
        ('{"options": {"open_tracking": "\\u0000true"}}', "options.open_tracking"),
        ('{"unknown": "\\u0000"}', "unknown"),
    ],
)
def test_a_nul_character_in_any_string_is_refused(value: str, field: str) -> None:
    assert decode_xmsysapi(value) == HeaderError(f"X-MSYS-API '{field}' must not contain a NUL character")


def test_skip_suppression_is_a_boolean_option() -> None:
    assert decode_xmsysapi('{"options": {"skip_suppression": true}}') == XMsysApi(skip_suppression=True)
    assert decode_xmsysapi('{"options": {"skip_suppression": "0"}}') == XMsysApi(skip_suppression=False)
    assert decode_xmsysapi('{"options": {"skip_suppression": "yes"}}') == HeaderError(
        "X-MSYS-API 'options.skip_suppression' must be of type 'boolean'")


def test_inline_css_and_dkim_key_options_are_read_and_type_checked() -> None:
    assert decode_xmsysapi('{"options": {"inline_css": true, "dkim_key": "brand"}}') == XMsysApi(
        inline_css=True, dkim_key="brand")
    assert decode_xmsysapi('{"options": {"inline_css": "yes"}}') == HeaderError(
        "X-MSYS-API 'options.inline_css' must be of type 'boolean'")
    assert decode_xmsysapi('{"options": {"dkim_key": 7}}') == HeaderError(
        "X-MSYS-API 'options.dkim_key' must be of type 'string'")
