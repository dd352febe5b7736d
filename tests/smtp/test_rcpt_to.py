"""RCPT TO in the protocol core: order, paths, NOTIFY and ORCPT, application refusals."""

from __future__ import annotations

import pytest

from engaged.smtp import replies
from engaged.smtp.steps import Message, RcptTo, Step
from tests.smtp.conversation import Conversation, accept_all


def _talk() -> Conversation:
    talk = Conversation()
    talk.command("EHLO x")
    talk.command("MAIL FROM:<a@example.org>")
    return talk


def test_rcpt_needs_mail_first() -> None:
    talk = Conversation()
    talk.command("EHLO x")
    assert talk.command("RCPT TO:<b@example.com>") == "503 5.5.1 Error: need MAIL command"


@pytest.mark.parametrize("path", ["<>", "<.b@example.com>", "<b..c@example.com>", "<b@-example.com>", "b@example.com",
                                  "<jörg@example.com>", "<b@example.com"])
def test_bad_paths_get_501_5_1_3(path: str) -> None:
    assert _talk().command(f"RCPT TO:{path}".encode()) == replies.R501_BAD_ADDRESS


def test_a_source_route_is_dropped() -> None:
    talk = _talk()
    assert talk.command("RCPT TO:<@hop1.example,@hop2.example:b@example.com>").startswith("250")
    [step] = [s for s in talk.steps if isinstance(s, RcptTo)]
    assert step.address == "b@example.com"


def test_dsn_notify_and_orcpt_are_kept_per_recipient() -> None:
    talk = _talk()
    assert talk.command("RCPT TO:<b@example.com> NOTIFY=success,FAILURE ORCPT=rfc822;B+40example.com").startswith("250")
    assert talk.command("RCPT TO:<c@example.com> NOTIFY=NEVER").startswith("250")
    assert talk.command("RCPT TO:<d@example.com>").startswith("250")
    talk.command("DATA")
    talk.send(b"x\r\n.\r\n")
    [message] = talk.messages()
    assert message.envelope.notify == ["SUCCESS,FAILURE", "NEVER", ""]
    assert message.envelope.orcpt == ["rfc822;B+40example.com", "", ""]


@pytest.mark.parametrize("params", ["NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "NOTIFY=", "ORCPT=rfc822",
                                    "ORCPT=rfc822;a=b", "NOTIFY=DELAY NOTIFY=DELAY"])
def test_bad_dsn_parameters_are_refused(params: str) -> None:
    assert _talk().command(f"RCPT TO:<b@example.com> {params}").startswith("501")


def test_unknown_parameters_get_555() -> None:
    assert _talk().command("RCPT TO:<b@example.com> FOO=1") == \
        "555 5.5.4 RCPT TO parameters not recognized or not implemented"


def test_a_refused_recipient_is_not_in_the_transaction() -> None:
    def refuse_x(step: Step) -> str | None:
        if isinstance(step, RcptTo) and step.address.startswith("x@"):
            return "550 5.7.1 no"
        return accept_all(step)

    talk = Conversation(refuse_x)
    talk.command("EHLO x")
    talk.command("MAIL FROM:<a@example.org>")
    assert talk.command("RCPT TO:<x@example.com>") == "550 5.7.1 no"
    assert talk.command("DATA") == replies.R503_NEED_RCPT
    assert talk.command("RCPT TO:<y@example.com>").startswith("250")
    talk.command("DATA")
    talk.send(b"x\r\n.\r\n")
    assert [m.envelope.rcpt_tos for m in talk.messages() if isinstance(m, Message)] == [["y@example.com"]]
