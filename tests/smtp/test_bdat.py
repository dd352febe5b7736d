"""DATA and BDAT in the protocol core: chunk sizes, BDAT mixed with DATA, limits, smuggling, pipelining."""

from __future__ import annotations

from engaged.smtp import replies
from tests.smtp.conversation import Conversation


def _ready() -> Conversation:
    talk = Conversation()
    talk.transaction()
    return talk


def test_chunks_are_joined_exactly_and_answered_each() -> None:
    talk = _ready()
    assert talk.send(b"BDAT 5\r\nSubjeBDAT 9\r\nct: x\r\n\r\n") == ["250 2.0.0 5 octets received",
                                                                    "250 2.0.0 9 octets received"]
    assert talk.send(b"BDAT 4 LAST\r\nhi\r\n") == ["250 2.0.0 OK queued as 18"]
    assert talk.messages()[0].content == b"Subject: x\r\n\r\nhi\r\n"


def test_a_chunk_may_hold_what_looks_like_commands_and_dots() -> None:
    payload = b".\r\nQUIT\r\nMAIL FROM:<x@y.example>\r\n"
    talk = _ready()
    talk.send(b"BDAT %d LAST\r\n" % len(payload) + payload)
    assert talk.messages()[0].content == payload
    assert not talk.core.closing


def test_bdat_before_rcpt_is_refused_but_its_chunk_is_still_read() -> None:
    talk = Conversation()
    talk.command("EHLO x")
    assert talk.send(b"BDAT 6\r\nNOOP\r\nNOOP\r\n") == ["503 5.5.1 Error: need MAIL command", "250 2.0.0 OK"]
    talk.command("MAIL FROM:<a@example.org>")
    assert talk.send(b"BDAT 6 LAST\r\nNOOP\r\n") == [replies.R503_NEED_RCPT]


def test_a_wrong_size_closes_the_connection() -> None:
    for arg in (b"BDAT x", b"BDAT", b"BDAT -1", b"BDAT 5 FIRST", b"BDAT 5 LAST more", b"BDAT 99999999999999999"):
        talk = _ready()
        assert talk.send(arg + b"\r\nhello") == [replies.R501_BDAT_SYNTAX], arg
        assert talk.core.closing


def test_a_huge_size_is_refused_without_reading_it() -> None:
    talk = _ready()
    assert talk.send(b"BDAT 10001 LAST\r\n") == [replies.R552_TOO_BIG]
    assert talk.core.closing
    talk = _ready()
    assert talk.send(b"BDAT 6000\r\n" + b"x" * 6000) == ["250 2.0.0 6000 octets received"]
    assert talk.send(b"BDAT 6000 LAST\r\n") == [replies.R552_TOO_BIG]  # the sum counts


def test_data_after_bdat_is_refused_and_drops_the_transaction() -> None:
    talk = _ready()
    talk.send(b"BDAT 3\r\nabc")
    assert talk.command("DATA") == replies.R503_DATA_WITH_BDAT
    assert talk.send(b"BDAT 3 LAST\r\nabc") == ["503 5.5.1 Error: need MAIL command"]
    assert talk.messages() == []


def test_bare_line_endings_in_chunks_are_refused() -> None:
    talk = _ready()
    assert talk.send(b"BDAT 8 LAST\r\na\nb\r\nc\r\n") == [replies.R550_BARE_LINE_ENDING]
    assert talk.messages() == []


def test_data_ends_only_at_crlf_dot_crlf_and_unstuffs() -> None:
    talk = _ready()
    assert talk.command("DATA") == replies.R354_DATA
    assert talk.send(b"a\n.\nb\r\n..c\r\n.\r\n") == [replies.R550_BARE_LINE_ENDING]
    talk.transaction()
    talk.command("DATA")
    talk.send(b"..c\r\n.\r\n")
    assert talk.messages()[-1].content == b".c\r\n"


def test_oversize_data_is_refused_after_the_end_and_the_session_goes_on() -> None:
    talk = _ready()
    talk.command("DATA")
    assert talk.send((b"x" * 70 + b"\r\n") * 1000) == []
    assert talk.send(b".\r\nNOOP\r\n") == [replies.R552_TOO_BIG, "250 2.0.0 OK"]
