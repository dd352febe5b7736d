"""EHLO and HELO in the protocol core: the extensions offered, policy refusals, 8-bit names, a new EHLO."""

from __future__ import annotations

from engaged.smtp import replies
from engaged.smtp.steps import Hello, Step
from tests.smtp.conversation import Conversation, accept_all


def test_ehlo_advertises_every_extension() -> None:
    reply = Conversation().command("EHLO client.test").split("\n")
    assert reply[0] == "250-mx.test"
    assert [line[4:] for line in reply[1:]] == ["SIZE 10000", "8BITMIME", "SMTPUTF8", "PIPELINING", "CHUNKING", "DSN",
                                                "ENHANCEDSTATUSCODES", "STARTTLS", "AUTH LOGIN PLAIN", "HELP"]


def test_auth_is_offered_only_over_tls_where_required() -> None:
    talk = Conversation(auth_requires_tls=True)
    assert "AUTH" not in talk.command("EHLO x")
    talk.command("STARTTLS")
    offered = talk.command("EHLO x")
    assert "AUTH LOGIN PLAIN" in offered and "STARTTLS" not in offered


def test_a_listener_without_auth_neither_offers_nor_accepts_it() -> None:
    talk = Conversation(auth=False)
    assert "AUTH" not in talk.command("EHLO x")
    assert talk.command("AUTH PLAIN AGFwcABwdw==") == replies.R502_AUTH_NOT_OFFERED
    talk.command("STARTTLS")
    assert "AUTH" not in talk.command("EHLO x")
    assert talk.command("MAIL FROM:<a@example.org>") == "250 2.1.0 Sender OK"


def test_helo_gets_a_plain_reply_and_no_enhanced_codes() -> None:
    talk = Conversation()
    assert talk.command("HELO client.test") == "250 mx.test"
    assert talk.command("MAIL FROM:<a@example.org>") == "250 2.1.0 Sender OK"
    assert talk.command("NOOP") == "250 OK"


def test_a_missing_name_is_a_syntax_error() -> None:
    assert Conversation().command("EHLO") == "501 Syntax: EHLO hostname"
    assert Conversation().command("HELO") == "501 Syntax: HELO hostname"


def test_a_policy_refusal_replaces_the_reply_and_commands_still_need_a_hello() -> None:
    def refuse(step: Step) -> str | None:
        return "550 5.7.1 say who you are" if isinstance(step, Hello) else accept_all(step)

    talk = Conversation(refuse)
    assert talk.command("EHLO localhost") == "550 5.7.1 say who you are"
    assert talk.command("MAIL FROM:<a@example.org>").startswith("503")


def test_eight_bit_bytes_in_ehlo_are_refused_at_the_command() -> None:
    talk = Conversation()
    assert talk.command(b"EHLO caf\xc3\xa9.example") == replies.R501_BAD_CHARACTERS
    assert talk.command(b"EHLO x\x00y") == replies.R501_BAD_CHARACTERS
    assert talk.command("EHLO cafe.example").startswith("250-")


def test_a_new_ehlo_drops_the_transaction() -> None:
    talk = Conversation()
    talk.transaction()
    talk.command("EHLO again")
    assert talk.command("DATA") == replies.R503_NEED_RCPT
