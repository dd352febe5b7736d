"""The protocol core without sockets: framing, pipelining, limits, and properties over arbitrary input."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from engaged.smtp import replies
from tests.smtp.conversation import Conversation

SESSION = (b"EHLO client.test\r\nMAIL FROM:<a@example.org> SIZE=20\r\nRCPT TO:<b@example.com>\r\n"
           b"RCPT TO:<bad address>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\n.\r\nNOOP\r\n"
           b"MAIL FROM:<> BODY=8BITMIME\r\nRCPT TO:<c@example.com> NOTIFY=NEVER\r\nBDAT 6\r\nab\r\ncdBDAT 0 LAST\r\n"
           b"RSET\r\nFOO\r\nQUIT\r\n")


def test_the_greeting_names_the_host() -> None:
    assert Conversation().greeting == "220 mx.test engaged ESMTP"


def test_a_whole_pipelined_session_in_one_write_is_answered_in_order() -> None:
    talk = Conversation()
    answers = talk.send(SESSION)
    assert [a.split("\n")[-1][:3] for a in answers] == [
        "250", "250", "250", "501", "354", "250", "250", "250", "250", "250", "250", "250", "500", "221"]
    first, second = talk.messages()
    assert first.content == b"Subject: x\r\n\r\n.dot\r\n"
    assert second.content == b"ab\r\ncd" and second.envelope.mail_from == ""
    assert talk.core.closing


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(SESSION) - 1), unique=True, max_size=40))
def test_any_split_of_the_input_gives_the_same_replies(cuts: list[int]) -> None:
    whole = Conversation().send(SESSION)
    talk = Conversation()
    answers: list[str] = []
    bounds = [0, *sorted(cuts), len(SESSION)]
    for start, end in itertools.pairwise(bounds):
        answers += talk.send(SESSION[start:end])
    assert answers == whole


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_no_input_crashes_the_core(data: bytes) -> None:
    talk = Conversation()
    talk.send(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    for answer in talk.send(data):
        assert answer[:1] in "2345", answer


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"EHLO x", b"HELO x", b"MAIL FROM:<a@b.example>", b"RCPT TO:<c@d.example>",
                                 b"DATA", b"x", b".", b"BDAT 3", b"BDAT 2 LAST", b"RSET", b"NOOP", b"AUTH PLAIN",
                                 b"AGFwcABwdw==", b"*", b"STARTTLS", b"VRFY a", b"", b"\xff\xfe", b"MAIL FROM:<>"]),
                max_size=30))
def test_every_command_sequence_gets_one_reply_per_line_until_close(lines: list[bytes]) -> None:
    talk = Conversation()
    for answer in talk.send(b"".join(line + b"\r\n" for line in lines)):
        assert answer[:1] in "2345", answer


def test_a_command_split_mid_line_waits_for_its_end() -> None:
    talk = Conversation()
    assert talk.send(b"EHL") == []
    assert talk.send(b"O x\r") == []
    assert talk.send(b"\n")[0].startswith("250-mx.test")


def test_an_overlong_line_is_refused_once_with_bounded_memory() -> None:
    talk = Conversation()
    talk.command("EHLO x")
    for _ in range(100):
        assert talk.send(b"NOOP " + b"x" * 10_000) == []
        assert talk.core.buffered < 20_000
    assert talk.send(b"\r\n") == ["500 5.5.2 Command line too long"]
    assert talk.command("NOOP") == "250 2.0.0 OK"


def test_pipelined_garbage_after_a_valid_command_is_refused_and_then_the_connection_closed() -> None:
    talk = Conversation(max_errors=5)
    answers = talk.send(b"EHLO x\r\n" + b"\x01\x02garbage\r\n" * 2 + b"NOOP \xff\r\nGARBAGE\r\nNOPE\r\nNOOP\r\n")
    assert answers[1:] == ["500 5.5.2 Error: bad syntax"] * 2 + [replies.R501_BAD_CHARACTERS] + [
        '500 5.5.2 Error: command "GARBAGE" not recognized', replies.R502_TOO_MANY_ERRORS]
    assert talk.core.closing


def test_a_verb_over_its_call_limit_closes_the_connection() -> None:
    talk = Conversation(max_commands=3)
    assert talk.send(b"NOOP\r\n" * 4)[-1] == "421 4.7.0 NOOP sent too many times"
    assert talk.core.closing


def test_replies_have_enhanced_codes_only_after_ehlo() -> None:
    talk = Conversation()
    assert talk.command("NOOP") == "250 OK"
    talk.command("EHLO x")
    assert talk.command("NOOP") == "250 2.0.0 OK"
    assert talk.command("DATA") == replies.R503_NEED_RCPT


def test_nothing_is_processed_while_a_step_is_undecided() -> None:
    from engaged.smtp.protocol import ServerProtocol, Settings
    from engaged.smtp.steps import Hello, MailFrom

    core = ServerProtocol(Settings(hostname="h", max_message_size=100))
    core.greet()
    core.receive(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nNOOP\r\n")
    assert isinstance(core.next_step(), Hello)
    assert core.next_step() is None and core.waiting  # undecided: MAIL is not looked at yet
    core.answer(None)
    assert isinstance(core.next_step(), MailFrom)
    core.answer("250 2.1.0 Sender OK")
    assert core.next_step() is None
    assert core.data_to_send().endswith(b"250 2.1.0 Sender OK\r\n250 2.0.0 OK\r\n")
