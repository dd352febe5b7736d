"""Paths and ESMTP parameters: RFC 5321 4.1.2 and RFC 6531 syntax, RFC 3461 values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engaged.smtp.address import Path, is_valid_mailbox, parse_notify, parse_params, parse_path


def test_paths() -> None:
    assert parse_path("<a@b.example> SIZE=1", smtputf8=False) == Path("a@b.example", "SIZE=1")
    assert parse_path("<>", smtputf8=False) == Path("", "")
    assert parse_path("<@x.example,@y.example:a@b.example>", smtputf8=False) == Path("a@b.example", "", True)
    assert parse_path("<@x.example:>", smtputf8=False) is None
    assert parse_path("a@b.example", smtputf8=False) is None


@pytest.mark.parametrize("mailbox", ['"a b"@c.example', '"a\\"b"@c.example', "a@[192.0.2.1]", "a@[IPv6:::1]",
                                     "x!#$%&'*+/=?^_`{|}~-@y.example", "a@b-c.example"])
def test_valid_mailboxes(mailbox: str) -> None:
    assert is_valid_mailbox(mailbox, smtputf8=False)


def test_utf8_only_under_smtputf8() -> None:
    assert not is_valid_mailbox("jörg@bücher.example", smtputf8=False)
    assert is_valid_mailbox("jörg@bücher.example", smtputf8=True)
    assert not is_valid_mailbox("jö rg@bücher.example", smtputf8=True)


def test_params() -> None:
    assert parse_params("size=10 BODY=8BITMIME SMTPUTF8") == {"SIZE": "10", "BODY": "8BITMIME", "SMTPUTF8": ""}
    assert parse_params("SIZE=") is None and parse_params("SI?E=1") is None and parse_params("A=1 a=2") is None
    assert parse_notify("delay,success") == "DELAY,SUCCESS"
    assert parse_notify("NEVER,DELAY") is None


@given(st.text(max_size=300))
def test_no_text_crashes_the_path_parser(text: str) -> None:
    for utf8 in (False, True):
        path = parse_path(text, smtputf8=utf8)
        if path is not None and path.address:
            assert is_valid_mailbox(path.address, smtputf8=utf8)
