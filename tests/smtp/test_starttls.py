"""STARTTLS in the protocol core: pipelined commands are discarded, the session starts over."""

from __future__ import annotations

from engaged.smtp import replies
from engaged.smtp.protocol import Mode, ServerProtocol, Settings
from engaged.smtp.steps import MailFrom, StartTls
from tests.smtp.conversation import Conversation


def test_commands_pipelined_after_starttls_are_never_run() -> None:
    core = ServerProtocol(Settings(hostname="h", max_message_size=100, tls_available=True))
    core.greet()
    core.receive(b"EHLO x\r\n")
    core.next_step()
    core.answer(None)
    core.receive(b"STARTTLS\r\nMAIL FROM:<spoof@x.example>\r\nRCPT TO:<v@y.example>\r\n")
    assert isinstance(core.next_step(), StartTls)
    assert core.data_to_send().endswith(b"220 Ready to start TLS\r\n")
    core.receive(b"MAIL FROM:<also@x.example>\r\n")  # plaintext during the handshake: dropped too
    assert core.mode is Mode.TLS and core.next_step() is None
    core.tls_started()
    assert core.next_step() is None and core.helo == "" and not core.extended
    core.receive(b"MAIL FROM:<a@b.example>\r\n")
    assert core.next_step() is None
    assert core.data_to_send() == b"503 Error: send HELO first\r\n"


def test_starttls_is_refused_when_not_offered_or_already_active() -> None:
    assert Conversation(tls_available=False).command("STARTTLS") == replies.R454_NO_TLS
    talk = Conversation()
    talk.command("EHLO x")
    assert talk.command("STARTTLS") == "220 Ready to start TLS"
    talk.command("EHLO x")
    assert talk.command("STARTTLS") == "454 4.7.0 TLS not available"
    assert talk.command("STARTTLS now") == "501 5.5.4 Syntax: STARTTLS"


def test_a_transaction_does_not_survive_starttls() -> None:
    talk = Conversation()
    talk.transaction()
    talk.command("STARTTLS")
    talk.command("EHLO x")
    assert talk.command("DATA") == replies.R503_NEED_RCPT
    assert not any(isinstance(s, MailFrom) and s.envelope.mail_from == "spoof" for s in talk.steps)
