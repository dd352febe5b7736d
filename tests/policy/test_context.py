"""PolicyMessage header editing (byte-exact outside the edit) and the predefined context variables."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engaged.policy.context import (
    HeaderEditError,
    PolicyMessage,
    connection_variables,
    recipient_variables,
    sender_variables,
    split_address,
)

FOLDED = (
    b"Received: from a\r\n\tby b\r\n"
    b"X-Tag: one\r\n"
    b"Subject: long\r\n subject\r\n"
    b"x-tag: two\r\n"
    b"\r\n"
    b"X-Tag: body line\r\n"
)


def edited(content: bytes, name: bytes, value: bytes, mode: str = "replace") -> bytes:
    message = PolicyMessage(content, "", [])
    message.edit_header(name, value, mode)
    return message.content


def test_reading_unfolds_trims_and_keeps_order() -> None:
    message = PolicyMessage(FOLDED, "", [])
    assert message.header(b"X-TAG") == [b"one", b"two"]
    assert message.header(b"subject") == [b"long subject"]
    assert message.header(b"received") == [b"from a\tby b"]


def test_replace_puts_one_header_where_the_first_was_and_removes_the_others() -> None:
    assert edited(FOLDED, b"X-Tag", b"new") == (
        b"Received: from a\r\n\tby b\r\nX-Tag: new\r\nSubject: long\r\n subject\r\n\r\nX-Tag: body line\r\n"
    )


def test_replace_of_a_folded_header_removes_its_continuation_lines() -> None:
    expected = FOLDED.replace(b"Subject: long\r\n subject\r\n", b"Subject: short\r\n")
    assert edited(FOLDED, b"Subject", b"short") == expected


def test_replace_of_an_absent_header_appends_it_at_the_end_of_the_header_block() -> None:
    assert edited(FOLDED, b"X-New", b"v") == FOLDED.replace(b"\r\n\r\n", b"\r\nX-New: v\r\n\r\n", 1)


def test_delete_removes_every_occurrence_and_leaves_the_body_alone() -> None:
    assert edited(FOLDED, b"x-tag", b"") == (
        b"Received: from a\r\n\tby b\r\nSubject: long\r\n subject\r\n\r\nX-Tag: body line\r\n"
    )


def test_deleting_an_absent_header_changes_nothing() -> None:
    message = PolicyMessage(FOLDED, "", [])
    message.edit_header(b"X-None", b"")
    assert message.content is FOLDED


def test_bare_lf_messages_get_lf_headers() -> None:
    assert edited(b"A: 1\nB: 2\n\nbody\n", b"C", b"3", "prepend") == b"C: 3\nA: 1\nB: 2\n\nbody\n"


def test_headers_only_message_without_final_newline_gets_one_before_the_new_header() -> None:
    assert edited(b"A: 1", b"B", b"2", "append") == b"A: 1\r\nB: 2\r\n"
    assert edited(b"A: 1\n", b"B", b"2", "append") == b"A: 1\nB: 2\n"


def test_message_starting_with_the_body_separator_has_an_empty_header_block() -> None:
    message = PolicyMessage(b"\r\nX-Tag: body\r\n", "", [])
    assert message.header(b"x-tag") == []
    message.edit_header(b"X-Tag", b"head")
    assert message.content == b"X-Tag: head\r\n\r\nX-Tag: body\r\n"


@pytest.mark.parametrize("text", ["Zoë Ångström", "line\u2028separator\x85next", "日本語" * 40])
def test_non_ascii_values_are_rfc2047_encoded_and_read_back(text: str) -> None:
    message = PolicyMessage(FOLDED, "", [])
    message.edit_header(b"X-Name", text.encode())
    assert message.content.isascii()
    assert all(len(line) <= 78 for line in message.content.split(b"\r\n"))
    assert message.header(b"x-name") == [text.encode()]


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        (b"X-A", b"a\r\nBcc: victim@example", "CR, LF or NUL"),
        (b"X-A", b"a\x00", "CR, LF or NUL"),
        (b"X A", b"a", "printable ASCII"),
        (b"X:A", b"a", "printable ASCII"),
        (b"X-A", b"\xff", "not valid UTF-8"),
    ],
)
def test_unsafe_names_and_values_are_refused(name: bytes, value: bytes, error: str) -> None:
    with pytest.raises(HeaderEditError, match=error):
        edited(FOLDED, name, value)


def test_undecodable_encoded_words_are_returned_raw() -> None:
    message = PolicyMessage(b"Subject: =?x-unknown?q?abc?=\r\n\r\n", "", [])
    assert message.header(b"subject") == [b"=?x-unknown?q?abc?="]


def test_copy_is_independent() -> None:
    message = PolicyMessage(FOLDED, "a@b", ["c@d"])
    twin = message.copy()
    twin.edit_header(b"X-Tag", b"")
    twin.rcpt_tos.append("e@f")
    assert message.content == FOLDED
    assert message.rcpt_tos == ["c@d"]
    assert message.header(b"x-tag") == [b"one", b"two"]


_names = st.sampled_from([b"X-A", b"X-B", b"Subject", b"To"])
_values = st.text(st.characters(min_codepoint=32, max_codepoint=0x24F, exclude_characters="\x7f"), max_size=30)


@given(
    headers=st.lists(
        st.tuples(_names, st.binary(max_size=20).map(lambda v: v.translate(None, b"\r\n"))), min_size=1, max_size=6
    ),
    name=_names,
    value=_values,
    mode=st.sampled_from(["replace", "append", "prepend"]),
)
def test_an_edit_never_changes_other_headers_or_the_body(
    headers: list[tuple[bytes, bytes]], name: bytes, value: str, mode: str
) -> None:
    content = b"".join(f"{key.decode()}: ".encode() + raw + b"\r\n" for key, raw in headers) + b"\r\nbody\r\n"
    message = PolicyMessage(content, "", [])
    message.edit_header(name, value.encode(), mode)
    others = [line for line in content.split(b"\r\n") if not line.lower().startswith(name.lower() + b":")]
    after = message.content.split(b"\r\n")
    kept = [line for line in after if not line.lower().startswith(name.lower() + b":") and not line.startswith(b" ")]
    assert kept == others
    assert message.content.endswith(b"\r\nbody\r\n")
    found = message.header(name)
    if value == "":
        assert found == []
    elif mode == "replace":
        assert found == [value.strip(" \t").encode()]
    else:
        assert found[0 if mode == "prepend" else -1] == value.strip(" \t").encode()


def test_predefined_variables() -> None:
    assert connection_variables(peer_ip="::1", listener="l", tls=False, can_relay=False) == {
        "remote_ip": "::1", "listener": "l", "tls": "false", "connection_message_count": "0",
        "connection_rcpt_count": "0",
    }
    assert connection_variables(peer_ip="::1", listener="l", tls=True, can_relay=True)["can_relay"] == "true"
    assert sender_variables("<a@b.example>")["mailfrom_localpart"] == "a"
    assert recipient_variables("x@y")["rcptto_domain"] == "y"
    assert split_address('"odd@local"@host.example') == ('"odd@local"', "host.example")
    assert split_address("postmaster") == ("postmaster", "")
