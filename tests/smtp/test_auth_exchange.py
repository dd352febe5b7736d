"""AUTH PLAIN and LOGIN exchanges in the protocol core: initial responses, challenges, aborts, limits."""

from __future__ import annotations

import base64

from engaged.smtp import replies
from engaged.smtp.steps import Authenticate
from tests.smtp.conversation import Conversation


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _talk(**settings: bool) -> Conversation:
    talk = Conversation(**settings)
    talk.command("EHLO x")
    return talk


def test_plain_with_an_initial_response() -> None:
    talk = _talk()
    assert talk.command("AUTH PLAIN " + _b64(b"\x00app\x00pw")) == replies.R235_AUTH_OK
    assert [s for s in talk.steps if isinstance(s, Authenticate)] == [Authenticate("PLAIN", b"app", b"pw")]
    assert talk.command("AUTH PLAIN " + _b64(b"\x00app\x00pw")) == "503 5.5.1 Already authenticated"


def test_plain_after_a_challenge_and_a_wrong_password() -> None:
    talk = _talk()
    assert talk.command("AUTH PLAIN") == "334 "
    assert talk.command(_b64(b"\x00app\x00nope")) == replies.R535_AUTH_FAILED
    assert not talk.core.authenticated


def test_login_asks_for_the_name_then_the_password() -> None:
    talk = _talk()
    assert talk.command("AUTH LOGIN") == "334 " + _b64(b"User Name\x00")
    assert talk.command(_b64(b"app")) == "334 " + _b64(b"Password\x00")
    assert talk.command(_b64(b"pw")) == replies.R235_AUTH_OK
    talk = _talk()
    assert talk.command("AUTH LOGIN " + _b64(b"app")) == "334 " + _b64(b"Password\x00")
    assert talk.command("*") == replies.R501_AUTH_ABORTED


def test_malformed_exchanges() -> None:
    talk = _talk()
    assert talk.command("AUTH PLAIN !!!") == replies.R501_BAD_BASE64
    assert talk.command("AUTH PLAIN " + _b64(b"no-nuls")) == replies.R501_AUTH_SPLIT
    assert talk.command("AUTH CRAM-MD5") == replies.R504_AUTH_MECHANISM
    assert talk.command("AUTH") == "501 5.5.4 Not enough value"
    assert talk.command("AUTH PLAIN a b") == "501 5.5.4 Too many values"
    assert Conversation().command("AUTH PLAIN") == "503 Error: send EHLO first"


def test_auth_needs_tls_where_required() -> None:
    assert _talk(auth_requires_tls=True).command("AUTH PLAIN") == replies.R538_AUTH_NEEDS_TLS


def test_a_megabyte_of_credentials_is_refused_with_bounded_memory() -> None:
    talk = _talk()
    assert talk.command("AUTH PLAIN") == "334 "
    for _ in range(100):
        assert talk.send(b"A" * 10_000) == []
        assert talk.core.buffered < 20_000
    assert talk.send(b"\r\n") == ["500 5.5.2 Command line too long"]
    assert talk.send(b"AUTH PLAIN " + b"A" * 1_000_000 + b"\r\n") == ["500 5.5.2 Command line too long"]
    assert talk.command("NOOP") == "250 2.0.0 OK"
