"""MAIL FROM in the protocol core: paths, the null sender, SIZE, BODY, SMTPUTF8, RET and ENVID."""

from __future__ import annotations

import pytest

from engaged.smtp import replies
from engaged.smtp.steps import MailFrom
from tests.smtp.conversation import Conversation


def _mail(arg: str | bytes, *, ehlo: str = "EHLO x") -> tuple[str, Conversation]:
    talk = Conversation()
    talk.command(ehlo)
    line = arg if isinstance(arg, bytes) else arg.encode()
    return talk.command(b"MAIL FROM:" + line), talk


def test_mail_needs_a_hello_first() -> None:
    assert Conversation().command("MAIL FROM:<a@example.org>") == "503 Error: send HELO first"


def test_the_null_sender_is_accepted() -> None:
    reply, talk = _mail("<>")
    assert reply == "250 2.1.0 Sender OK"
    [step] = [s for s in talk.steps if isinstance(s, MailFrom)]
    assert step.envelope.mail_from == ""


@pytest.mark.parametrize("path", ["<a@example.org>", "<First.Last+tag@Example.COM>", '<"quoted name"@b.example>',
                                  "<a@[192.0.2.1]>", "<a@[IPv6:2001:db8::1]>", "<@relay.example:a@b.example>",
                                  "<a@localhost>", " <a@b.example>"])
def test_valid_paths_are_accepted(path: str) -> None:
    assert _mail(path)[0] == "250 2.1.0 Sender OK"


@pytest.mark.parametrize("path", ["<.user@x.example>", "<us..er@x.example>", "<user.@x.example>", "<user@-x.example>",
                                  "<user@x-.example>", "user@x.example", "<user@x.example", "<a@b.example>junk",
                                  "<a b@c.example>", "<@:a@b.example>", "<a@b..example>", "<a@[300.1.1.1]>",
                                  "<" + "l" * 65 + "@x.example>", "<a@" + "d" * 250 + ".example>", "<a@>", "<@b>"])
def test_paths_rfc_5321_does_not_allow_are_refused(path: str) -> None:
    assert _mail(path)[0] == replies.R501_BAD_SENDER


def test_utf8_senders_need_smtputf8() -> None:
    assert _mail("<jörg@example.org>".encode())[0] == replies.R501_BAD_SENDER
    reply, talk = _mail("<jörg@bücher.example> SMTPUTF8".encode())
    assert reply == "250 2.1.0 Sender OK"
    assert talk.command("RCPT TO:<zoë@example.com>".encode()) == "250 2.1.5 Recipient OK"


def test_bytes_that_are_not_utf8_are_refused_at_the_command() -> None:
    assert _mail(b"<caf\xe9@example.org> SMTPUTF8")[0] == replies.R501_BAD_CHARACTERS
    assert _mail(b"<a\x00b@example.org>")[0] == replies.R501_BAD_CHARACTERS


def test_declared_size_over_the_limit_is_refused() -> None:
    assert _mail("<a@b.example> SIZE=10001")[0].startswith("552 5.3.4")
    assert _mail("<a@b.example> SIZE=10000")[0].startswith("250")
    assert _mail("<a@b.example> SIZE=big")[0].startswith("501")


def test_body_smtputf8_and_unknown_parameters() -> None:
    assert _mail("<a@b.example> BODY=8BITMIME")[0].startswith("250")
    assert _mail("<a@b.example> BODY=BINARYMIME")[0] == "501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME"
    assert _mail("<a@b.example> SMTPUTF8=yes")[0] == "501 5.5.4 Error: SMTPUTF8 takes no arguments"
    assert _mail("<a@b.example> FOO=1")[0] == "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
    assert _mail("<a@b.example> AUTH=<>")[0].startswith("250")


def test_dsn_ret_and_envid_are_kept_on_the_envelope() -> None:
    reply, talk = _mail("<a@b.example> RET=hdrs ENVID=QQ314159+2B1")
    assert reply.startswith("250")
    [step] = [s for s in talk.steps if isinstance(s, MailFrom)]
    assert (step.envelope.ret, step.envelope.envid) == ("HDRS", "QQ314159+2B1")
    assert _mail("<a@b.example> RET=ALL")[0].startswith("501")
    assert _mail("<a@b.example> ENVID=" + "x" * 101)[0].startswith("501")


def test_parameters_need_ehlo() -> None:
    assert _mail("<a@b.example> SIZE=10", ehlo="HELO x")[0] == "501 Syntax: MAIL FROM: <address>"


def test_a_second_mail_is_nested() -> None:
    _, talk = _mail("<a@b.example>")
    assert talk.command("MAIL FROM:<c@d.example>") == "503 5.5.1 Error: nested MAIL command"


def test_the_keyword_is_required() -> None:
    assert _mail("")[0].startswith("501")
    talk = Conversation()
    talk.command("EHLO x")
    assert talk.command("MAIL TO:<a@b.example>") == "501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"
