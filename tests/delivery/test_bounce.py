"""Bounce classification against SparkPost's classes."""

from __future__ import annotations

import pytest

from engaged.delivery.bounce import classify_bounce


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        ("550", "5.1.1 <x@example.com>: Recipient address rejected: User unknown", "10"),
        ("550", "No such user here", "10"),
        ("552", "5.2.2 Mailbox full", "22"),
        ("452", "4.2.2 The email account that you tried to reach is over quota", "22"),
        ("552", "5.3.4 Message size exceeds fixed limit", "23"),
        ("554", "5.7.1 <x@y>: Relay access denied", "54"),
        ("554", "5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org", "51"),
        ("550", "5.7.1 Message rejected due to content restrictions", "52"),
        ("550", "5.7.1 Delivery not authorized, message refused", "50"),
        ("451", "4.3.0 try again later", "20"),
        ("421", "4.4.2 connection timed out", "20"),
        ("", "4.4.1 connection to 127.0.0.1:25 failed: Connection refused", "24"),
        ("554", "5.1.10 domain nullmx.test does not accept mail (null MX)", "21"),
        ("554", "5.1.2 domain nothere.test does not exist (NXDOMAIN)", "21"),
        ("550", "5.0.0 Something went wrong", "40"),
        ("", "", "1"),
    ],
)
def test_replies_get_sparkposts_bounce_class(code: str, text: str, expected: str) -> None:
    assert classify_bounce(code, text) == expected
