"""X-MSYS-API cc, bcc and archive: the lists as SparkPost takes them, one copy per address, the Cc/Bcc fields."""

from __future__ import annotations

import json

import pytest

from engaged.smtpapi.addresses import (
    MAX_LISTED,
    ListedAddress,
    added_recipients,
    bcc_field,
    cc_field,
    is_address,
    read_list,
)
from engaged.smtpapi.header import HeaderError, XMsysApi, decode_xmsysapi


def test_sparkposts_documented_example_decodes_into_the_three_lists() -> None:
    header = {"cc": [{"email": "cc_recip_1@gmail.com", "name": "CC 1"}, "cc2@gmail.com"],
              "bcc": [{"email": "bcc_recip_1@gmail.com", "name": "BCC 1"}],
              "archive": [{"email": "archive_recip_1@gmail.com"}]}
    decoded = decode_xmsysapi(json.dumps(header))
    assert isinstance(decoded, XMsysApi)
    assert decoded.cc == (ListedAddress("cc_recip_1@gmail.com", "CC 1"), ListedAddress("cc2@gmail.com"))
    assert decoded.bcc == (ListedAddress("bcc_recip_1@gmail.com", "BCC 1"),)
    assert decoded.archive == (ListedAddress("archive_recip_1@gmail.com"),)


def test_absent_lists_are_empty() -> None:
    decoded = decode_xmsysapi("{}")
    assert isinstance(decoded, XMsysApi) and (decoded.cc, decoded.bcc, decoded.archive) == ((), (), ())


@pytest.mark.parametrize(("value", "reason"), [
    ("a@example.com", "X-MSYS-API 'cc' must be of type 'json array'"),
    ([42], "X-MSYS-API 'cc[0]' must be an email address or an object with 'email'"),
    (["ok@example.com", "not an address"], "X-MSYS-API 'cc[1]' is not a valid email address"),
    ([{"name": "No address"}], "X-MSYS-API 'cc[0].email' must be of type 'string'"),
    ([{"email": "a@example.com", "name": 7}], "X-MSYS-API 'cc[0].name' must be of type 'string'"),
    ([{"email": "a@example.com", "name": "A\r\nBcc: x@evil.example"}],
     "X-MSYS-API 'cc[0].name' must be at most 256 characters, without controls"),
    ([{"email": "a@example.com", "header_to": "b@example.com"}], "X-MSYS-API 'cc[0].header_to' is not supported"),
    (["a@example.com\r\nBcc: x@evil.example"], "X-MSYS-API 'cc[0]' is not a valid email address"),
])
def test_a_broken_list_is_refused_with_the_entry_named(value: object, reason: str) -> None:
    assert read_list("cc", value) == reason
    decoded = decode_xmsysapi(json.dumps({"cc": value}))
    assert isinstance(decoded, HeaderError) and decoded.reason == reason


def test_at_most_1000_listed_recipients_in_all_and_1001_is_refused() -> None:
    emails = [f"r{n}@example.com" for n in range(MAX_LISTED + 1)]
    at_limit = {"cc": emails[:400], "bcc": emails[400:800], "archive": emails[800:MAX_LISTED]}
    assert isinstance(decode_xmsysapi(json.dumps(at_limit)), XMsysApi)
    over = {"cc": emails[:400], "bcc": emails[400:800], "archive": emails[800:]}
    decoded = decode_xmsysapi(json.dumps(over))
    assert decoded == HeaderError("X-MSYS-API cc, bcc and archive may list at most 1000 recipients in all")


@pytest.mark.parametrize("address", ["a@example.com", "first.last+tag@sub.example.co", '"quoted name"@example.com',
                                     "user@[192.0.2.1]", "jörg@bücher.example"])
def test_mailbox_syntax_is_accepted(address: str) -> None:
    assert is_address(address)


@pytest.mark.parametrize("address", ["", "a", "@example.com", "a@", "a b@example.com", "a@exa mple.com",
                                     "<a@example.com>", "a@-example.com", "a..b@example.com",
                                     "x" * 65 + "@example.com", "a@" + "d" * 260 + ".com"])
def test_what_is_not_a_mailbox_is_refused(address: str) -> None:
    assert not is_address(address)


def test_each_address_gets_one_copy_envelope_first_then_cc_bcc_archive() -> None:
    lists = (("cc", (ListedAddress("Ann@Example.com"), ListedAddress("bob@example.com"))),
             ("bcc", (ListedAddress("ann@example.com"), ListedAddress("carl@example.com"))),
             ("archive", (ListedAddress("BOB@example.com"), ListedAddress("vault@example.com"),
                          ListedAddress("to@example.com"))))
    added = added_recipients(["To@Example.com"], lists)
    assert [(kind, entry.email) for kind, entry in added] == [
        ("cc", "Ann@Example.com"), ("cc", "bob@example.com"), ("bcc", "carl@example.com"),
        ("archive", "vault@example.com")]


def test_the_cc_field_lists_every_cc_address_folded_after_each() -> None:
    line = cc_field([], (ListedAddress("cc1@example.com", "CC 1"), ListedAddress("cc2@example.com")))
    assert line == b"Cc: CC 1 <cc1@example.com>,\r\n cc2@example.com\r\n"


def test_the_messages_own_cc_field_keeps_its_addresses_and_gains_the_missing_ones() -> None:
    existing = [b' "Ann" <ann@example.com>,\r\n bob@example.com']
    line = cc_field(existing, (ListedAddress("BOB@example.com"), ListedAddress("carl@example.com"),
                               ListedAddress("ob@example.com")))
    assert line == b'Cc: "Ann" <ann@example.com>, bob@example.com,\r\n carl@example.com,\r\n ob@example.com\r\n'


def test_names_are_quoted_or_encoded_so_the_field_stays_one_mailbox() -> None:
    assert cc_field([], (ListedAddress("a@example.com", "Doe, John"),)) == b'Cc: "Doe, John" <a@example.com>\r\n'
    assert bcc_field(ListedAddress("z@example.com", "Zoë")) == b"Bcc: =?utf-8?q?Zo=C3=AB?= <z@example.com>\r\n"
    assert bcc_field(ListedAddress("jörg@example.com", 'J "x"')) == 'Bcc: "J \\"x\\"" <jörg@example.com>\r\n'.encode()
