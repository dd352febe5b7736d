"""engaged.rewrite.entities: HTML5 attribute-value character references, and escaping URLs back."""

from __future__ import annotations

import html

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engaged.rewrite.entities import decode_attribute, encode_attribute


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("a=1&amp;b=2", "a=1&b=2"),
        ("a=1&#38;b=2&#x26;c=3&#X26;d", "a=1&b=2&c=3&d"),
        ("&amp", "&"),
        ("&lt;&gt;&quot;&apos;", "<>\"'"),
        ("&copy 2024", "© 2024"),
        ("&copy;=2", "©=2"),
        ("&notin;", "∉"),
        ("&NotEqualTilde;", "≂̸"),
        ("&#128;&#x9F;", "€Ÿ"),
        ("&#0;&#xD800;&#x110000;&#99999999999999999999;", "\ufffd" * 4),
        ("&#38&#x26", "&&"),
    ],
)
def test_references_are_decoded(raw: str, decoded: str) -> None:
    assert decode_attribute(raw) == decoded


@pytest.mark.parametrize(
    "raw",
    [
        "?a=1&notify=1",
        "?x&copy=2",
        "&notit;",
        "&amp=1",
        "&ampx",
        "&copy2",
        "&unknown;",
        "&#;",
        "&#x;",
        "&",
        "&;",
        "&#xZ",
    ],
)
def test_historical_rule_and_non_references_stay_literal(raw: str) -> None:
    assert decode_attribute(raw) == raw


def test_html_unescape_differs_where_attributes_need_the_historical_rule() -> None:
    assert html.unescape("&notify=1") == "¬ify=1"
    assert decode_attribute("&notify=1") == "&notify=1"


def test_a_value_without_ampersand_is_returned_as_is() -> None:
    value = "https://example.com/a"
    assert decode_attribute(value) is value


def test_encode_escapes_the_ampersand_and_the_quote_in_use() -> None:
    assert encode_attribute("a&b\"c'd") == "a&amp;b&quot;c'd"
    assert encode_attribute("a&b\"c'd", "'") == 'a&amp;b"c&#39;d'


@settings(max_examples=300, deadline=None)
@given(value=st.text(), quote=st.sampled_from(['"', "'"]))
def test_decoding_an_encoded_value_gives_it_back(value: str, quote: str) -> None:
    assert decode_attribute(encode_attribute(value, quote)) == value
